/* SPDX-License-Identifier: MIT */
/*
 * 16550 UART on COM1, 115200 8N1, polled. The kernel debugger port.
 */
#include "hal/hal.h"

#define COM1_BASE 0x3f8

#define UART_THR 0 // transmit holding (DLAB = 0)
#define UART_IER 1 // interrupt enable (DLAB = 0)
#define UART_DLL 0 // divisor latch low (DLAB = 1)
#define UART_DLM 1 // divisor latch high (DLAB = 1)
#define UART_FCR 2 // FIFO control
#define UART_LCR 3 // line control
#define UART_MCR 4 // modem control
#define UART_LSR 5 // line status

#define UART_LCR_DLAB         0x80
#define UART_LCR_8N1          0x03
#define UART_LSR_THRE         0x20 // transmit holding register empty
#define UART_FCR_FIFO         0xc7 // enable and clear FIFOs, 14-byte threshold
#define UART_MCR_DTR_RTS_OUT2 0x0b

/* Bounded so that a missing UART cannot hang the kernel (~1 ms per byte is plenty). */
#define UART_SPIN_LIMIT 100000

static VOID
HalpUartPut(char Character)
{
    for (ULONG Spin = 0; Spin < UART_SPIN_LIMIT; Spin++)
    {
        if (x86_inb(COM1_BASE + UART_LSR) & UART_LSR_THRE)
        {
            break;
        }
        x86_pause();
    }
    x86_outb(COM1_BASE + UART_THR, (uint8_t)Character);
}

VOID
HalInitializeDebugPort(VOID)
{
    x86_outb(COM1_BASE + UART_IER, 0);
    x86_outb(COM1_BASE + UART_LCR, UART_LCR_DLAB);
    x86_outb(COM1_BASE + UART_DLL, 1); // 115200 / 1
    x86_outb(COM1_BASE + UART_DLM, 0);
    x86_outb(COM1_BASE + UART_LCR, UART_LCR_8N1);
    x86_outb(COM1_BASE + UART_FCR, UART_FCR_FIFO);
    x86_outb(COM1_BASE + UART_MCR, UART_MCR_DTR_RTS_OUT2);
}

VOID
HalDebugWrite(const char *Text, SIZE_T Length)
{
    for (SIZE_T i = 0; i < Length; i++)
    {
        if (Text[i] == '\n')
        {
            HalpUartPut('\r');
        }
        HalpUartPut(Text[i]);
    }
}
