/* SPDX-License-Identifier: MIT */
/*
 * DbgPrint: formatted output on the debug port from any processor at any
 * IRQL. A whole call is written under one console lock with interrupts off, so
 * lines from different processors never interleave. The lock wait is bounded:
 * during a bug check (or if a processor died holding it) output goes ahead.
 */
#include "kernel/ke/ke.h"

#include "hal/hal.h"
#include "lib/lib.h"

#define CONSOLE_SPIN_LIMIT        (1u << 26)
#define CONSOLE_BUSTED_SPIN_LIMIT (1u << 16)

typedef struct _CONSOLE_BUFFER
{
    char Text[128];
    ULONG Length;
    ULONG Total;
} CONSOLE_BUFFER;

static volatile LONG KiConsoleLock;
volatile BOOLEAN KiDebugConsoleBusted;

/*
 * The last KI_LOG_RING_SIZE characters printed, for a debugger (scripts/gdb's
 * spindle-log, as Linux's lx-dmesg): character number N of the run is at
 * KiLogRing[N % KI_LOG_RING_SIZE], and KiLogRingWritten counts every character
 * ever printed. Nothing in the kernel reads them.
 */
#define KI_LOG_RING_SIZE 16384
__attribute__((used)) static char KiLogRing[KI_LOG_RING_SIZE];
__attribute__((used)) static volatile ULONG64 KiLogRingWritten;

static BOOLEAN
KiAcquireConsole(VOID)
{
    ULONG Limit = KiDebugConsoleBusted ? CONSOLE_BUSTED_SPIN_LIMIT : CONSOLE_SPIN_LIMIT;

    for (ULONG Spin = 0; Spin < Limit; Spin++)
    {
        /* Acquire ordering pairs with the release store in KiReleaseConsole. */
        if (__atomic_load_n(&KiConsoleLock, __ATOMIC_RELAXED) == 0 &&
            __atomic_exchange_n(&KiConsoleLock, 1, __ATOMIC_ACQUIRE) == 0)
        {
            return TRUE;
        }
        x86_pause();
    }
    return FALSE; // write without the lock rather than hang
}

static VOID
KiReleaseConsole(BOOLEAN Held)
{
    if (Held)
    {
        __atomic_store_n(&KiConsoleLock, 0, __ATOMIC_RELEASE);
    }
}

static void
KiConsolePut(char Character, void *Context)
{
    CONSOLE_BUFFER *Buffer = Context;
    /* Relaxed: a slot per character even when a bug check broke the console lock open; no
     * ordering is needed, the only reader is a debugger with every processor stopped. */
    ULONG64 At = __atomic_fetch_add(&KiLogRingWritten, 1, __ATOMIC_RELAXED);

    KiLogRing[At % KI_LOG_RING_SIZE] = Character;
    Buffer->Text[Buffer->Length++] = Character;
    Buffer->Total++;
    if (Buffer->Length == sizeof(Buffer->Text))
    {
        HalDebugWrite(Buffer->Text, Buffer->Length);
        Buffer->Length = 0;
    }
}

/*
 * Prints a printf-style message on the debug port. Any IRQL, any processor.
 * Returns the number of characters written.
 */
ULONG
vDbgPrintEx(PCSTR Format, va_list Arguments)
{
    CONSOLE_BUFFER Buffer;
    ULONG64 Flags = x86_save_disable();
    BOOLEAN Held = KiAcquireConsole();

    Buffer.Length = 0;
    Buffer.Total = 0;
    vcbprintf(KiConsolePut, &Buffer, Format, Arguments);
    HalDebugWrite(Buffer.Text, Buffer.Length);
    KiReleaseConsole(Held);
    x86_restore_flags(Flags);
    return Buffer.Total;
}

/*
 * printf-style output on the kernel debugger port (COM1), the whole message
 * at once under the console lock; returns the characters written. Any IRQL, any
 * processor.
 */
ULONG
DbgPrint(PCSTR Format, ...)
{
    va_list Arguments;
    ULONG Written;

    va_start(Arguments, Format);
    Written = vDbgPrintEx(Format, Arguments);
    va_end(Arguments);
    return Written;
}

/*
 * Reports a failed ASSERT (checked builds) on the debug port, then bug-checks
 * MANUALLY_INITIATED_CRASH (P1 the expression, P2 the file, P3 the line). Any
 * IRQL; does not return unless a bug-check catcher takes it.
 */
VOID
RtlAssert(PVOID FailedAssertion, PVOID FileName, ULONG LineNumber, PCHAR Message)
{
    DbgPrint("*** Assertion failed: %s%s%s\n***   Source: %s:%u\n", (const char *)FailedAssertion,
             Message ? " - " : "", Message ? Message : "", (const char *)FileName, LineNumber);
    KeBugCheckEx(MANUALLY_INITIATED_CRASH, (ULONG_PTR)FailedAssertion, (ULONG_PTR)FileName,
                 LineNumber, 0);
}
