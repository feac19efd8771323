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

VOID
KiPrintBacktrace(ULONG64 Rip, ULONG64 Rbp)
{
    DbgPrint("Backtrace:\n");
    KiPrintAddress("  #0  ", Rip);
    for (int Depth = 1; Depth < KI_BACKTRACE_DEPTH && KiIsPlausibleFrame(Rbp); Depth++)
    {
        const ULONG64 *Frame = (const ULONG64 *)Rbp;
        char Prefix[16];
        if (Frame[1] == 0)
        {
            break;
        }
        snprintf(Prefix, sizeof(Prefix), "  #%-2d ", Depth);
        KiPrintAddress(Prefix, Frame[1]);
        if (Frame[0] <= Rbp) // frames grow toward higher addresses
        {
            break;
        }
        Rbp = Frame[0];
    }
}
