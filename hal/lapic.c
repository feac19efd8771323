/* SPDX-License-Identifier: MIT */
/*
 * Local APIC: a register-access layer (xAPIC MMIO, or x2APIC MSRs when the
 * firmware handed over with x2APIC already enabled, as on large machines,
 * where xAPIC MMIO no longer answers), per-processor enable, EOI and the
 * interrupt command register used for IPIs, self-IPIs and the freeze NMI.
 * QEMU 7.2's TCG offers xAPIC only: there the x2APIC translation is checked
 * by the HalLapic white-box tests, and the path itself runs on machines whose
 * firmware hands over in x2APIC mode.
 */
#include "hal/halp.h"

#define X2APIC_MSR_BASE   0x800
#define X2APIC_MSR_ICR    0x830
#define APIC_BASE_ENABLE  (1ull << 11)
#define APIC_BASE_X2APIC  (1ull << 10)
#define APIC_BASE_ADDRESS 0xfffff000ull
#define ICR_SPIN_LIMIT    1000000

/* Set once on the boot processor before any other processor starts. */
static volatile uint32_t *HalpApicMmio;
static BOOLEAN HalpX2Apic;

/*
 * TRUE when IA32_APIC_BASE value ApicBase says the local APIC is enabled in
 * x2APIC mode (SDM vol. 3A §10.12.1: EN and EXTD both set), the state in
 * which the HAL must keep using x2APIC. Pure; any IRQL.
 */
BOOLEAN
HalpApicBaseSelectsX2Apic(ULONG64 ApicBase)
{
    return (ApicBase & (APIC_BASE_ENABLE | APIC_BASE_X2APIC)) ==
           (APIC_BASE_ENABLE | APIC_BASE_X2APIC);
}

/*
 * The x2APIC MSR that holds the register at xAPIC MMIO offset Register:
 * 0x800 + Register / 16 (SDM vol. 3A §10.12.1.2, table 10-6). Pure; any IRQL.
 */
ULONG
HalpX2ApicMsr(uint32_t Register)
{
    return X2APIC_MSR_BASE + (Register >> 4);
}

/*
 * The 64-bit x2APIC ICR value (one WRMSR to MSR 0x830) for an xAPIC command
 * word (ICR low half) and a 32-bit destination APIC ID in bits 63:32 (SDM
 * vol. 3A §10.12.9). Pure; any IRQL.
 */
ULONG64
HalpX2ApicIcr(uint32_t Destination, uint32_t Command)
{
    return ((ULONG64)Destination << 32) | Command;
}

uint32_t
HalpApicRead(uint32_t Register)
{
    if (HalpX2Apic)
    {
        return (uint32_t)x86_rdmsr(HalpX2ApicMsr(Register));
    }
    return HalpApicMmio[Register / 4];
}

VOID
HalpApicWrite(uint32_t Register, uint32_t Value)
{
    if (HalpX2Apic)
    {
        x86_wrmsr(HalpX2ApicMsr(Register), Value);
        return;
    }
    HalpApicMmio[Register / 4] = Value;
}

/*
 * Sends an IPI. Destination is an APIC ID (ignored with a shorthand). In xAPIC
 * mode the previous command must have left the ICR (delivery status idle);
 * the wait is bounded, and a stuck ICR is reported rather than spun on forever.
 */
VOID
HalpApicSendIcr(uint32_t Destination, uint32_t Command)
{
    ULONG64 Flags = x86_save_disable();

    if (HalpX2Apic)
    {
        /*
         * WRMSR to the x2APIC ICR is not serializing: the fence makes this
         * processor's earlier stores (a queued DPC, a released lock) visible
         * before the IPI that tells the target to look (SDM vol. 3A §10.12.3).
         */
        x86_mfence();
        x86_wrmsr(X2APIC_MSR_ICR, HalpX2ApicIcr(Destination, Command));
        x86_restore_flags(Flags);
        return;
    }
    for (ULONG Spin = 0; HalpApicRead(LAPIC_REG_ICR_LOW) & LAPIC_ICR_PENDING; Spin++)
    {
        if (Spin == ICR_SPIN_LIMIT)
        {
            DbgPrint("Spindle: local APIC ICR stuck busy; sending anyway\n");
            break;
        }
        x86_pause();
    }
    HalpApicWrite(LAPIC_REG_ICR_HIGH, Destination << 24);
    HalpApicWrite(LAPIC_REG_ICR_LOW, Command); // this write sends the IPI
    x86_restore_flags(Flags);
}

BOOLEAN
HalpApicIsReady(VOID)
{
    return HalpX2Apic || HalpApicMmio != NULL;
}

VOID
HalpConfigureLocalNmi(VOID)
{
    static const uint32_t Registers[2] = {LAPIC_REG_LVT_LINT0, LAPIC_REG_LVT_LINT1};
    ULONG ApicId = HalGetCurrentApicId();

    for (ULONG Lint = 0; Lint < 2; Lint++)
    {
        USHORT Flags;
        uint32_t Value = LAPIC_LVT_MASKED;

        if (HalQueryLocalNmi(ApicId, Lint, &Flags))
        {
            /* MPS INTI polarity 3 = active low; 0 (bus default) and 1 = active high for LINT. */
            Value = LAPIC_LVT_NMI | ((Flags & 3) == 3 ? LAPIC_LVT_ACTIVE_LOW : 0);
        }
        HalpApicWrite(Registers[Lint], Value);
    }
}

/*
 * Enables this processor's local APIC: software enable with the spurious
 * vector, error LVT, TPR 0; LINT0/LINT1 masked (the 8259 PIC is not used)
 * except a pin the MADT wires to NMI (on QEMU LINT1 of every processor: the
 * monitor's `nmi` command arrives there). Called on every processor; the
 * first call picks the access method.
 */
VOID
HalInitializeLocalApic(VOID)
{
    uint64_t Base = x86_rdmsr(X86_MSR_APIC_BASE);

    if (!HalpApicIsReady())
    {
        /* The boot processor picks the mode: x2APIC if the firmware left it on. */
        HalpX2Apic = HalpApicBaseSelectsX2Apic(Base);
        if (!HalpX2Apic)
        {
            HalpApicMmio = (volatile uint32_t *)(Base & APIC_BASE_ADDRESS); // identity, uncached
        }
    }
    if (HalpX2Apic)
    {
        Base |= APIC_BASE_ENABLE | APIC_BASE_X2APIC;
    }
    else
    {
        Base |= APIC_BASE_ENABLE;
    }
    x86_wrmsr(X86_MSR_APIC_BASE, Base);

    HalpApicWrite(LAPIC_REG_SVR, LAPIC_SVR_ENABLE | HAL_SPURIOUS_VECTOR);
    HalpConfigureLocalNmi();
    HalpApicWrite(LAPIC_REG_LVT_ERROR, HAL_ERROR_VECTOR);
    HalpApicWrite(LAPIC_REG_ESR, 0); // back-to-back writes clear it (SDM §10.5.3)
    HalpApicWrite(LAPIC_REG_ESR, 0);
    HalpApicWrite(LAPIC_REG_TPR, 0);
    HalpApicWrite(LAPIC_REG_EOI, 0);
}

ULONG
HalGetCurrentApicId(VOID)
{
    uint32_t Id = HalpApicRead(LAPIC_REG_ID);
    return HalpX2Apic ? Id : Id >> 24;
}

VOID
HalEndOfInterrupt(VOID)
{
    HalpApicWrite(LAPIC_REG_EOI, 0);
}

VOID
HalFreezeOtherProcessors(VOID)
{
    if (HalpApicIsReady())
    {
        HalpApicSendIcr(0, LAPIC_ICR_NMI | LAPIC_ICR_ASSERT | LAPIC_ICR_ALL_BUT_SELF);
    }
}

/* TRUE while Vector is requested (IRR) or in service (ISR) on this processor. */
static BOOLEAN
HalpApicVectorLatched(ULONG Vector)
{
    uint32_t Bit = 1U << (Vector % 32);
    uint32_t Offset = (Vector / 32) * 0x10;
    return ((HalpApicRead(LAPIC_REG_IRR0 + Offset) | HalpApicRead(LAPIC_REG_ISR0 + Offset)) &
            Bit) != 0;
}

/*
 * Requests a software interrupt on this processor by a self-IPI on Vector.
 * The APIC holds it in the IRR while CR8 masks its class and delivers it the
 * moment IRQL drops below. Waits (bounded) until the request is latched, so a
 * caller that lowers IRQL right after cannot overtake it.
 */
VOID
HalRequestSelfInterrupt(ULONG Vector)
{
    ULONG64 Flags = x86_save_disable();

    HalpApicSendIcr(0, LAPIC_ICR_FIXED | LAPIC_ICR_ASSERT | LAPIC_ICR_SELF | Vector);
    for (ULONG Spin = 0; Spin < ICR_SPIN_LIMIT && !HalpApicVectorLatched(Vector); Spin++)
    {
        x86_pause();
    }
    x86_restore_flags(Flags);
}

/* Sends Vector as a fixed IPI to the processor with the given APIC ID. */
VOID
HalSendIpi(ULONG ApicId, ULONG Vector)
{
    HalpApicSendIcr(ApicId, LAPIC_ICR_FIXED | LAPIC_ICR_ASSERT | Vector);
}

/* Sends an NMI to the processor with the given APIC ID. */
VOID
HalSendNmi(ULONG ApicId)
{
    HalpApicSendIcr(ApicId, LAPIC_ICR_NMI | LAPIC_ICR_ASSERT);
}
