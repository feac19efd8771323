/* SPDX-License-Identifier: MIT */
/*
 * Address-to-symbol lookup for reports and backtraces, over the table that
 * scripts/gen-ksyms.sh generates from the kernel's own symbols (section .ksyms).
 */
#include "kernel/ke/ke.h"
#include "kernel/mm/mm.h"

#include "lib/lib.h"

typedef struct _KSYMBOL_TABLE
{
    ULONG64 Count;
    ULONG64 Entries[][2]; // {address, offset of the name}, sorted by address; names follow
} KSYMBOL_TABLE;

extern const char __ksyms_start[];
extern const char __ksyms_end[];
extern const char __text_start[];
extern const char __text_end[];

#define KI_BACKTRACE_DEPTH 24

const char *
KiLookupSymbol(ULONG64 Address, ULONG64 *Offset)
{
    const KSYMBOL_TABLE *Table = (const KSYMBOL_TABLE *)__ksyms_start;
    const char *Names;
    ULONG64 Low = 0;
    ULONG64 High;

    if (__ksyms_end - __ksyms_start < (long)sizeof(ULONG64) || Table->Count == 0 ||
        Address < (ULONG64)__text_start || Address >= (ULONG64)__text_end)
    {
        return NULL;
    }
    High = Table->Count;
    while (High - Low > 1) // invariant: Entries[Low].address <= Address, if any is
    {
        ULONG64 Middle = (Low + High) / 2;
        if (Table->Entries[Middle][0] <= Address)
        {
            Low = Middle;
        }
        else
        {
            High = Middle;
        }
    }
    if (Table->Entries[Low][0] > Address)
    {
        return NULL;
    }
    Names = (const char *)&Table->Entries[Table->Count];
    *Offset = Address - Table->Entries[Low][0];
    return Names + Table->Entries[Low][1];
}

VOID
KiPrintAddress(const char *Prefix, ULONG64 Address)
{
    ULONG64 Offset;
    const char *Name = KiLookupSymbol(Address, &Offset);

    if (Name != NULL)
    {
        DbgPrint("%s%016llx %s+%#llx\n", Prefix, Address, Name, Offset);
    }
    else
    {
        DbgPrint("%s%016llx ?\n", Prefix, Address);
    }
}

/* A frame pointer is worth following if it lies in mapped kernel memory. */
static BOOLEAN
KiIsPlausibleFrame(ULONG64 Rbp)
{
    if (Rbp % 8 != 0)
    {
        return FALSE;
    }
    return MmIsAddressValid(Rbp) && MmIsAddressValid(Rbp + 8);
}

/* Prints the return addresses of the frame chain from Rbp on, numbered from Depth. */
static VOID
KiPrintFrames(ULONG64 Rbp, int Depth)
{
    for (; Depth < KI_BACKTRACE_DEPTH && KiIsPlausibleFrame(Rbp); Depth++)
    {
        const ULONG64 *Frame = (const ULONG64 *)Rbp;
        char Prefix[16];
        if (Frame[1] == 0)
        {
            break;
        }
        (void)snprintf(Prefix, sizeof(Prefix), "  #%-2d ", Depth); // fits
        KiPrintAddress(Prefix, Frame[1]);
        if (Frame[0] <= Rbp) // frames grow toward higher addresses
        {
            break;
        }
        Rbp = Frame[0];
    }
}

VOID
KiPrintBacktrace(ULONG64 Rip, ULONG64 Rbp)
{
    DbgPrint("Backtrace:\n");
    KiPrintAddress("  #0  ", Rip);
    KiPrintFrames(Rbp, 1);
}

/*
 * TRUE if the function holding Rip has no frame of its own there: it does not
 * start with push %rbp (0x55; gcc gives leaf functions no frame even with
 * -fno-omit-frame-pointer), or Rip is its first instruction.
 */
static BOOLEAN
KiIsFramelessAt(ULONG64 Rip)
{
    ULONG64 Offset;

    if (KiLookupSymbol(Rip, &Offset) == NULL)
    {
        return FALSE;
    }
    return Offset == 0 || *(const UCHAR *)(Rip - Offset) != 0x55;
}

VOID
KiPrintTrapBacktrace(ULONG64 Rip, ULONG64 Rsp, ULONG64 Rbp)
{
    ULONG64 Offset;

    /*
     * A frameless function left its return address at RSP, and RBP still names
     * its caller's frame: print the return address as frame #1, or the caller
     * would be missing. RSP must be a plausible stack address (the caller does
     * not pass one a stack overflow left in a guard page).
     */
    if (KiIsPlausibleFrame(Rsp) && KiIsFramelessAt(Rip) &&
        KiLookupSymbol(*(const ULONG64 *)Rsp, &Offset) != NULL)
    {
        DbgPrint("Backtrace:\n");
        KiPrintAddress("  #0  ", Rip);
        KiPrintAddress("  #1  ", *(const ULONG64 *)Rsp);
        KiPrintFrames(Rbp, 2);
        return;
    }
    KiPrintBacktrace(Rip, Rbp);
}
