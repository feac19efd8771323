/* SPDX-License-Identifier: MIT */
/*
 * HAL-private declarations shared among hal/ files.
 */
#pragma once

#include "hal/hal.h"

/* Local APIC registers, as xAPIC MMIO offsets (SDM vol. 3A table 10-1). */
#define LAPIC_REG_ID            0x020 // local APIC ID
#define LAPIC_REG_VERSION       0x030 // version, max LVT entry
#define LAPIC_REG_TPR           0x080 // task priority (CR8 aliases bits 7:4)
#define LAPIC_REG_EOI           0x0b0 // end of interrupt
#define LAPIC_REG_SVR           0x0f0 // spurious vector, software enable
#define LAPIC_REG_ISR0          0x100 // in-service, 8 x 32 bits
#define LAPIC_REG_IRR0          0x200 // interrupt request, 8 x 32 bits
#define LAPIC_REG_ESR           0x280 // error status
#define LAPIC_REG_ICR_LOW       0x300 // interrupt command, low half
#define LAPIC_REG_ICR_HIGH      0x310 // interrupt command, destination (xAPIC)
#define LAPIC_REG_LVT_TIMER     0x320 // timer LVT
#define LAPIC_REG_LVT_LINT0     0x350 // LINT0 LVT
#define LAPIC_REG_LVT_LINT1     0x360 // LINT1 LVT
#define LAPIC_REG_LVT_ERROR     0x370 // error LVT
#define LAPIC_REG_TIMER_INITIAL 0x380 // timer initial count
#define LAPIC_REG_TIMER_CURRENT 0x390 // timer current count
#define LAPIC_REG_TIMER_DIVIDE  0x3e0 // timer divide configuration

#define LAPIC_SVR_ENABLE       0x100
#define LAPIC_LVT_MASKED       0x10000
#define LAPIC_LVT_PERIODIC     0x20000
#define LAPIC_ICR_FIXED        0x000
#define LAPIC_ICR_NMI          0x400
#define LAPIC_ICR_INIT         0x500
#define LAPIC_ICR_STARTUP      0x600
#define LAPIC_ICR_PENDING      0x1000 // delivery status (xAPIC only)
#define LAPIC_ICR_ASSERT       0x4000
#define LAPIC_ICR_LEVEL        0x8000
#define LAPIC_ICR_SELF         0x40000
#define LAPIC_ICR_ALL          0x80000
#define LAPIC_ICR_ALL_BUT_SELF 0xc0000

uint32_t HalpApicRead(uint32_t Register);
VOID HalpApicWrite(uint32_t Register, uint32_t Value);
VOID HalpApicSendIcr(uint32_t Destination, uint32_t Command);
BOOLEAN HalpApicIsReady(VOID);
