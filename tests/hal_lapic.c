/* SPDX-License-Identifier: MIT */
/*
 * The local APIC's x2APIC back end (hal/lapic.c), white-box: QEMU 7.2's TCG
 * offers xAPIC only, so the x2APIC register translation and the mode choice
 * are checked as the pure functions the back end uses, and the running mode
 * against what IA32_APIC_BASE says.
 */
#include <ktest.h>
#include <wdm.h>

#include "arch/x86_64/x86.h"
#include "hal/hal.h"
#include "hal/halp.h" // white-box: the x2APIC translation

#define KT_APIC_BASE_ENABLE 0x800ull // IA32_APIC_BASE.EN
#define KT_APIC_BASE_X2APIC 0x400ull // IA32_APIC_BASE.EXTD

/* Every register the HAL touches maps to MSR 0x800 + offset / 16 (SDM vol. 3A table 10-6). */
KTEST(HalLapic, x2apic_msr_of_each_register_the_hal_uses)
{
    static const struct
    {
        uint32_t Register;
        ULONG Msr;
    } Map[] = {
        {LAPIC_REG_ID, 0x802},
        {LAPIC_REG_VERSION, 0x803},
        {LAPIC_REG_TPR, 0x808},
        {LAPIC_REG_EOI, 0x80b},
        {LAPIC_REG_SVR, 0x80f},
        {LAPIC_REG_ISR0, 0x810},
        {LAPIC_REG_ISR0 + 0x70, 0x817},
        {LAPIC_REG_IRR0, 0x820},
        {LAPIC_REG_ESR, 0x828},
        {LAPIC_REG_ICR_LOW, 0x830},
        {LAPIC_REG_LVT_TIMER, 0x832},
        {LAPIC_REG_LVT_LINT0, 0x835},
        {LAPIC_REG_LVT_LINT1, 0x836},
        {LAPIC_REG_LVT_ERROR, 0x837},
        {LAPIC_REG_TIMER_INITIAL, 0x838},
        {LAPIC_REG_TIMER_CURRENT, 0x839},
        {LAPIC_REG_TIMER_DIVIDE, 0x83e},
    };

    for (ULONG i = 0; i < sizeof(Map) / sizeof(Map[0]); i++)
    {
        KT_EXPECT_EQ(HalpX2ApicMsr(Map[i].Register), Map[i].Msr);
    }
}

/* The ICR is one 64-bit MSR: destination APIC ID in bits 63:32, the xAPIC command word below. */
KTEST(HalLapic, x2apic_icr_is_one_64_bit_value)
{
    KT_EXPECT_EQ(HalpX2ApicIcr(5, LAPIC_ICR_FIXED | LAPIC_ICR_ASSERT | 0xe1),
                 0x00000005000040e1ull);
    KT_EXPECT_EQ(HalpX2ApicIcr(0x12345678, LAPIC_ICR_NMI | LAPIC_ICR_ASSERT),
                 0x1234567800004400ull);
    KT_EXPECT_EQ(HalpX2ApicIcr(0, LAPIC_ICR_FIXED | LAPIC_ICR_ASSERT | LAPIC_ICR_SELF | 0x2f),
                 0x000000000004402full);
    /* A 32-bit x2APIC ID is kept whole (xAPIC had 8 bits in ICR_HIGH[31:24]). */
    KT_EXPECT_EQ(HalpX2ApicIcr(0xffffffff, 0) >> 32, 0xffffffffull);
}

/* x2APIC is chosen exactly when the firmware left EN and EXTD both set. */
KTEST(HalLapic, x2apic_chosen_when_the_firmware_left_it_on)
{
    KT_EXPECT(HalpApicBaseSelectsX2Apic(0xfee00000ull | KT_APIC_BASE_ENABLE | KT_APIC_BASE_X2APIC));
    KT_EXPECT(!HalpApicBaseSelectsX2Apic(0xfee00000ull | KT_APIC_BASE_ENABLE));
    KT_EXPECT(!HalpApicBaseSelectsX2Apic(0xfee00000ull));
    KT_EXPECT(!HalpApicBaseSelectsX2Apic(0xfee00000ull | KT_APIC_BASE_X2APIC)); // invalid state
}

/* The running mode agrees with this processor's IA32_APIC_BASE (xAPIC under TCG). */
KTEST(HalLapic, running_mode_matches_ia32_apic_base)
{
    ULONG64 Base = x86_rdmsr(X86_MSR_APIC_BASE);

    KT_EXPECT((Base & KT_APIC_BASE_ENABLE) != 0);
    if (HalpApicBaseSelectsX2Apic(Base))
    {
        KT_EXPECT_EQ(HalGetCurrentApicId(), (ULONG)x86_rdmsr(HalpX2ApicMsr(LAPIC_REG_ID)));
    }
    else
    {
        volatile uint32_t *Mmio = (volatile uint32_t *)(Base & 0xfffff000ull);
        KT_EXPECT_EQ(HalGetCurrentApicId(), Mmio[LAPIC_REG_ID / 4] >> 24);
    }
}
