/* SPDX-License-Identifier: MIT */
/*
 * Run-time library string routines the I/O manager and drivers use.
 */
#include "kernel/ke/ke.h"

/*
 * Points DestinationString at the NUL-terminated SourceString without copying:
 * Length = its size in bytes without the terminator, MaximumLength = Length +
 * sizeof(WCHAR). A NULL source gives an empty string (Buffer NULL, both
 * lengths 0). IRQL <= DISPATCH_LEVEL on resident data.
 */
VOID
RtlInitUnicodeString(PUNICODE_STRING DestinationString, PCWSTR SourceString)
{
    SIZE_T Length = 0;

    DestinationString->Buffer = (PWSTR)SourceString;
    if (SourceString == NULL)
    {
        DestinationString->Length = 0;
        DestinationString->MaximumLength = 0;
        return;
    }
    while (SourceString[Length] != 0)
    {
        Length++;
    }
    Length *= sizeof(WCHAR);
    if (Length > MAXUSHORT - sizeof(WCHAR))
    {
        Length = MAXUSHORT - sizeof(WCHAR) - 1; // the DDK's cap: an even byte count that fits
    }
    DestinationString->Length = (USHORT)Length;
    DestinationString->MaximumLength = (USHORT)(Length + sizeof(WCHAR));
}
