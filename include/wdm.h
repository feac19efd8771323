/* SPDX-License-Identifier: MIT */
/*
 * Spindle's driver-facing DDK header: NT types, constants and the Ke/Ex/Io/Rtl
 * routines a driver may call. Compiles on its own (no other header needed).
 * Names, signatures and x64 layouts follow the Windows DDK; API.md is the contract.
 * Each routine's contract (what it does, IRQL in and out, return, misuse) is
 * written once, above its definition in kernel/: the one-line pointers below
 * name the file. Inline routines and macros defined here carry theirs here.
 */
#pragma once

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- basic types */

#define VOID  void
#define CONST const
typedef void *PVOID;
typedef const void *PCVOID;
typedef char CHAR, CCHAR, *PCHAR;
typedef CCHAR *PCCHAR;
typedef char *PSTR;
typedef unsigned char UCHAR, *PUCHAR;
typedef short SHORT, CSHORT;
typedef SHORT *PSHORT;
typedef unsigned short USHORT, *PUSHORT;
typedef int LONG, *PLONG;
typedef unsigned int ULONG, *PULONG;
typedef long long LONGLONG, LONG64, *PLONGLONG, *PLONG64;
typedef unsigned long long ULONGLONG, ULONG64, *PULONGLONG, *PULONG64;
typedef int64_t LONG_PTR;
typedef LONG_PTR *PLONG_PTR;
typedef uint64_t ULONG_PTR, SIZE_T, *PULONG_PTR, *PSIZE_T;
typedef UCHAR BOOLEAN, *PBOOLEAN;
typedef ULONG LOGICAL, *PLOGICAL; // a 32-bit truth value (TRUE or FALSE)
typedef LONG NTSTATUS;
typedef const char *PCSTR, *PCCH;
typedef unsigned short WCHAR, *PWCHAR, *PWSTR;
typedef const WCHAR *PCWSTR;

#define TRUE  1
#define FALSE 0
#ifndef NULL
#define NULL ((void *)0)
#endif

#define IN
#define OUT
#define OPTIONAL
#define UNREFERENCED_PARAMETER(P) ((void)(P))

#define ANYSIZE_ARRAY               1
#define DECLSPEC_ALIGN(Bytes)       __attribute__((aligned(Bytes)))
#define POINTER_ALIGNMENT           DECLSPEC_ALIGN(8) // x64: a member starts on an 8-byte boundary
#define MEMORY_ALLOCATION_ALIGNMENT 16                // pool blocks, SLIST entries, IRPs
#define C_ASSERT(Expression)        _Static_assert(Expression, #Expression)

/*
 * Limits. Unlike the DDK's untyped hex literals, the signed minimums and
 * maximums are typed, so MINLONG compares equal to a LONG holding it even after
 * both are widened to 64 bits (as KT_EXPECT_EQ does).
 */
#define MINCHAR      ((CHAR)(-0x7F - 1))
#define MAXCHAR      ((CHAR)0x7F)
#define MINSHORT     ((SHORT)(-0x7FFF - 1))
#define MAXSHORT     ((SHORT)0x7FFF)
#define MINLONG      ((LONG)(-0x7FFFFFFF - 1))
#define MAXLONG      ((LONG)0x7FFFFFFF)
#define MAXUCHAR     ((UCHAR)0xFF)
#define MAXUSHORT    ((USHORT)0xFFFF)
#define MAXULONG     ((ULONG)0xFFFFFFFFu)
#define MINLONGLONG  ((LONGLONG)(-0x7FFFFFFFFFFFFFFFll - 1))
#define MAXLONGLONG  ((LONGLONG)0x7FFFFFFFFFFFFFFFll)
#define MAXULONGLONG ((ULONGLONG)0xFFFFFFFFFFFFFFFFull)
#define MINLONG64    MINLONGLONG
#define MAXLONG64    MAXLONGLONG
#define MAXULONG64   MAXULONGLONG
#define MINLONG_PTR  ((LONG_PTR)(-0x7FFFFFFFFFFFFFFFll - 1))
#define MAXLONG_PTR  ((LONG_PTR)0x7FFFFFFFFFFFFFFFll)
#define MAXULONG_PTR ((ULONG_PTR)0xFFFFFFFFFFFFFFFFull)
#define MAXSIZE_T    ((SIZE_T)0xFFFFFFFFFFFFFFFFull)

typedef union _LARGE_INTEGER
{
    struct
    {
        ULONG LowPart;
        LONG HighPart;
    };
    struct
    {
        ULONG LowPart;
        LONG HighPart;
    } u;
    LONGLONG QuadPart;
} LARGE_INTEGER, *PLARGE_INTEGER;

typedef union _ULARGE_INTEGER
{
    struct
    {
        ULONG LowPart;
        ULONG HighPart;
    };
    struct
    {
        ULONG LowPart;
        ULONG HighPart;
    } u;
    ULONGLONG QuadPart;
} ULARGE_INTEGER, *PULARGE_INTEGER;

#define NT_SUCCESS(Status)     (((NTSTATUS)(Status)) >= 0)
#define NT_INFORMATION(Status) ((((ULONG)(Status)) >> 30) == 1)
#define NT_WARNING(Status)     ((((ULONG)(Status)) >> 30) == 2)
#define NT_ERROR(Status)       ((((ULONG)(Status)) >> 30) == 3)

#define STATUS_SUCCESS                  ((NTSTATUS)0x00000000)
#define STATUS_WAIT_0                   ((NTSTATUS)0x00000000)
#define STATUS_ALERTED                  ((NTSTATUS)0x00000101)
#define STATUS_TIMEOUT                  ((NTSTATUS)0x00000102)
#define STATUS_PENDING                  ((NTSTATUS)0x00000103)
#define STATUS_BUFFER_OVERFLOW          ((NTSTATUS)0x80000005)
#define STATUS_DEVICE_BUSY              ((NTSTATUS)0x80000011)
#define STATUS_NO_MORE_ENTRIES          ((NTSTATUS)0x8000001A)
#define STATUS_UNSUCCESSFUL             ((NTSTATUS)0xC0000001)
#define STATUS_NOT_IMPLEMENTED          ((NTSTATUS)0xC0000002)
#define STATUS_INVALID_HANDLE           ((NTSTATUS)0xC0000008)
#define STATUS_INVALID_PARAMETER        ((NTSTATUS)0xC000000D)
#define STATUS_NO_SUCH_DEVICE           ((NTSTATUS)0xC000000E)
#define STATUS_INVALID_DEVICE_REQUEST   ((NTSTATUS)0xC0000010)
#define STATUS_MORE_PROCESSING_REQUIRED ((NTSTATUS)0xC0000016)
#define STATUS_NO_MEMORY                ((NTSTATUS)0xC0000017)
#define STATUS_BUFFER_TOO_SMALL         ((NTSTATUS)0xC0000023)
#define STATUS_OBJECT_NAME_COLLISION    ((NTSTATUS)0xC0000035)
#define STATUS_DELETE_PENDING           ((NTSTATUS)0xC0000056)
#define STATUS_INSUFFICIENT_RESOURCES   ((NTSTATUS)0xC000009A)
#define STATUS_DEVICE_NOT_READY         ((NTSTATUS)0xC00000A3)
#define STATUS_IO_TIMEOUT               ((NTSTATUS)0xC00000B5)
#define STATUS_NOT_SUPPORTED            ((NTSTATUS)0xC00000BB)
#define STATUS_CANCELLED                ((NTSTATUS)0xC0000120)
#define STATUS_INVALID_DEVICE_STATE     ((NTSTATUS)0xC0000184)

#define FIELD_OFFSET(type, field)             ((LONG)offsetof(type, field))
#define RTL_FIELD_SIZE(type, field)           (sizeof(((type *)0)->field))
#define RTL_SIZEOF_THROUGH_FIELD(type, field) (offsetof(type, field) + RTL_FIELD_SIZE(type, field))
#define RTL_NUMBER_OF(Array)                  (sizeof(Array) / sizeof((Array)[0]))
#define ARRAYSIZE(Array)                      RTL_NUMBER_OF(Array)

#define CONTAINING_RECORD(address, type, field)                                                    \
    ((type *)((PCHAR)(address) - (ULONG_PTR)(&((type *)0)->field)))

/* Kernel object types shared by several sections below. */
typedef ULONG_PTR KSPIN_LOCK, *PKSPIN_LOCK; // 0 = free (API.md §3, §4)
typedef ULONG_PTR KAFFINITY, *PKAFFINITY;   // bit n = processor n (single group)
typedef LONG KPRIORITY;
typedef CCHAR KPROCESSOR_MODE;

typedef enum _MODE
{
    KernelMode,
    UserMode,
    MaximumMode
} MODE;

/* ---------------------------------------------------------------- IRQL */

typedef UCHAR KIRQL, *PKIRQL;

#define PASSIVE_LEVEL  0
#define LOW_LEVEL      0
#define APC_LEVEL      1
#define DISPATCH_LEVEL 2
#define CMCI_LEVEL     5
#define SYNCH_LEVEL    12
#define CLOCK_LEVEL    13
#define IPI_LEVEL      14
#define DRS_LEVEL      14
#define POWER_LEVEL    14
#define PROFILE_LEVEL  15
#define HIGH_LEVEL     15

/* Defined, each with its contract above it, in kernel/ke/irql.c. */
KIRQL KeGetCurrentIrql(VOID);

VOID KeRaiseIrql(KIRQL NewIrql, PKIRQL OldIrql);

VOID KeLowerIrql(KIRQL NewIrql);

KIRQL KfRaiseIrql(KIRQL NewIrql);

KIRQL KeRaiseIrqlToDpcLevel(VOID);

KIRQL KeRaiseIrqlToSynchLevel(VOID);

/* ---------------------------------------------------------------- bug checks */

#define DEVICE_QUEUE_NOT_BUSY               0x00000002
#define INVALID_SOFTWARE_INTERRUPT          0x00000007
#define IRQL_NOT_DISPATCH_LEVEL             0x00000008
#define IRQL_NOT_GREATER_OR_EQUAL           0x00000009
#define IRQL_NOT_LESS_OR_EQUAL              0x0000000A
#define SPIN_LOCK_ALREADY_OWNED             0x0000000F
#define SPIN_LOCK_NOT_OWNED                 0x00000010
#define NO_MORE_IRP_STACK_LOCATIONS         0x00000035
#define MULTIPLE_IRP_COMPLETE_REQUESTS      0x00000044
#define CANCEL_STATE_IN_COMPLETED_IRP       0x00000048
#define KMODE_EXCEPTION_NOT_HANDLED         0x0000001E
#define PAGE_FAULT_IN_NONPAGED_AREA         0x00000050
#define UNEXPECTED_KERNEL_MODE_TRAP         0x0000007F
#define ATTEMPTED_SWITCH_FROM_DPC           0x000000B8
#define DRIVER_VERIFIER_DETECTED_VIOLATION  0x000000C4
#define IRQL_UNEXPECTED_VALUE               0x000000C8
#define DRIVER_VERIFIER_IOMANAGER_VIOLATION 0x000000C9
#define DRIVER_IRQL_NOT_LESS_OR_EQUAL       0x000000D1
#define DRIVER_RETURNED_HOLDING_CANCEL_LOCK 0x0000011B
#define DPC_WATCHDOG_VIOLATION              0x00000133
#define KERNEL_SECURITY_CHECK_FAILURE       0x00000139
#define BAD_POOL_CALLER                     0x000000C2
#define BAD_POOL_HEADER                     0x00000019
#define MANUALLY_INITIATED_CRASH            0x000000E2

/* Memory protection and special pool. */
#define ATTEMPTED_WRITE_TO_READONLY_MEMORY         0x000000BE
#define ATTEMPTED_EXECUTE_OF_NOEXECUTE_MEMORY      0x000000FC
#define DRIVER_PAGE_FAULT_BEYOND_END_OF_ALLOCATION 0x000000D6
/* The checked pool's trailer check (kernel/ex/pool.c); an NMI from outside (LINT1). */
#define SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION 0x000000C1
#define NMI_HARDWARE_FAILURE                    0x00000080

/* KERNEL_SECURITY_CHECK_FAILURE's first parameter for a corrupt LIST_ENTRY. */
#define FAST_FAIL_CORRUPT_LIST_ENTRY 3

/* Defined, each with its contract above it, in kernel/ke/bugcheck.c. */
__attribute__((noreturn)) VOID KeBugCheckEx(ULONG BugCheckCode, ULONG_PTR BugCheckParameter1,
                                            ULONG_PTR BugCheckParameter2,
                                            ULONG_PTR BugCheckParameter3,
                                            ULONG_PTR BugCheckParameter4);

__attribute__((noreturn)) VOID KeBugCheck(ULONG BugCheckCode);

/* ---------------------------------------------------------------- debug output */

/* Defined, each with its contract above it, in kernel/ke/dbgprint.c. */
ULONG DbgPrint(PCSTR Format, ...) __attribute__((format(printf, 1, 2)));

/* DbgPrint with a va_list. Any IRQL, any CPU; returns as DbgPrint. */
ULONG vDbgPrintEx(PCSTR Format, va_list Arguments) __attribute__((format(printf, 1, 0)));

#if DBG
#define ASSERT(exp)                                                                                \
    ((!(exp)) ? (RtlAssert((PVOID) #exp, (PVOID)__FILE__, __LINE__, NULL), FALSE) : TRUE)
#else
#define ASSERT(exp) ((void)0)
#endif

VOID RtlAssert(PVOID FailedAssertion, PVOID FileName, ULONG LineNumber, PCHAR Message);

/* ---------------------------------------------------------------- memory helpers */

#define RtlCopyMemory(Destination, Source, Length)                                                 \
    __builtin_memcpy((Destination), (Source), (Length))
#define RtlMoveMemory(Destination, Source, Length)                                                 \
    __builtin_memmove((Destination), (Source), (Length))
#define RtlFillMemory(Destination, Length, Fill) __builtin_memset((Destination), (Fill), (Length))
#define RtlZeroMemory(Destination, Length)       __builtin_memset((Destination), 0, (Length))
#define RtlEqualMemory(Source1, Source2, Length)                                                   \
    (__builtin_memcmp((Source1), (Source2), (Length)) == 0)

/*
 * Returns how many leading bytes of Source1 and Source2 are equal (Length when
 * all are). Any IRQL on resident memory.
 */
static inline SIZE_T
RtlCompareMemory(const VOID *Source1, const VOID *Source2, SIZE_T Length)
{
    const UCHAR *Left = (const UCHAR *)Source1;
    const UCHAR *Right = (const UCHAR *)Source2;
    SIZE_T Index = 0;

    while (Index < Length && Left[Index] == Right[Index])
    {
        Index++;
    }
    return Index;
}

/* ---------------------------------------------------------------- lists */

typedef struct _LIST_ENTRY
{
    struct _LIST_ENTRY *Flink;
    struct _LIST_ENTRY *Blink;
} LIST_ENTRY, *PLIST_ENTRY, *PRLIST_ENTRY;

_Static_assert(sizeof(LIST_ENTRY) == 16, "LIST_ENTRY is 16 bytes");
_Static_assert(offsetof(LIST_ENTRY, Blink) == 8, "LIST_ENTRY.Blink@8");

typedef struct _SINGLE_LIST_ENTRY
{
    struct _SINGLE_LIST_ENTRY *Next;
} SINGLE_LIST_ENTRY, *PSINGLE_LIST_ENTRY;

_Static_assert(sizeof(SINGLE_LIST_ENTRY) == 8, "SINGLE_LIST_ENTRY is 8 bytes");

/*
 * The doubly linked helpers below check the links they are about to rewrite,
 * in checked and free builds alike (as newer Windows headers do). A corrupt
 * list raises bug check 0x139 KERNEL_SECURITY_CHECK_FAILURE with P1 = 3
 * (FAST_FAIL_CORRUPT_LIST_ENTRY), P2 = the entry being inserted or removed.
 * None of them takes a lock: the caller serialises. Any IRQL on resident lists.
 */

/* Raises 0x139/3 for a corrupt LIST_ENTRY; P2..P4 = P1..P3. Never returns. */
__attribute__((noreturn)) static inline VOID
FatalListEntryError(PVOID P1, PVOID P2, PVOID P3)
{
    KeBugCheckEx(KERNEL_SECURITY_CHECK_FAILURE, FAST_FAIL_CORRUPT_LIST_ENTRY, (ULONG_PTR)P1,
                 (ULONG_PTR)P2, (ULONG_PTR)P3);
}

/* Checks that Entry's neighbours point back at it; raises 0x139/3 if not. */
static inline VOID
RtlpCheckListEntry(PLIST_ENTRY Entry)
{
    if (__builtin_expect(Entry->Flink->Blink != Entry || Entry->Blink->Flink != Entry, 0))
    {
        FatalListEntryError(Entry, NULL, NULL);
    }
}

/* Makes ListHead an empty list (both links point at itself). */
static inline VOID
InitializeListHead(PLIST_ENTRY ListHead)
{
    ListHead->Flink = ListHead;
    ListHead->Blink = ListHead;
}

/* Returns TRUE if the list headed by ListHead has no entries. */
static inline BOOLEAN
IsListEmpty(const LIST_ENTRY *ListHead)
{
    return (BOOLEAN)(ListHead->Flink == ListHead);
}

/*
 * Unlinks Entry from whatever list holds it. Returns TRUE if that list is now
 * empty. Entry's own links are left as they were.
 */
static inline BOOLEAN
RemoveEntryList(PLIST_ENTRY Entry)
{
    PLIST_ENTRY Next = Entry->Flink;
    PLIST_ENTRY Previous = Entry->Blink;

    if (__builtin_expect(Next->Blink != Entry || Previous->Flink != Entry, 0))
    {
        FatalListEntryError(Entry, NULL, NULL);
    }
    Previous->Flink = Next;
    Next->Blink = Previous;
    return (BOOLEAN)(Previous == Next);
}

/*
 * Unlinks and returns the first entry. On an empty list this returns ListHead
 * itself (not NULL) and changes nothing.
 */
static inline PLIST_ENTRY
RemoveHeadList(PLIST_ENTRY ListHead)
{
    PLIST_ENTRY Entry = ListHead->Flink;
    PLIST_ENTRY Next = Entry->Flink;

    if (__builtin_expect(Entry->Blink != ListHead || Next->Blink != Entry, 0))
    {
        FatalListEntryError(Entry, NULL, NULL);
    }
    ListHead->Flink = Next;
    Next->Blink = ListHead;
    return Entry;
}

/* Unlinks and returns the last entry; ListHead itself when the list is empty. */
static inline PLIST_ENTRY
RemoveTailList(PLIST_ENTRY ListHead)
{
    PLIST_ENTRY Entry = ListHead->Blink;
    PLIST_ENTRY Previous = Entry->Blink;

    if (__builtin_expect(Entry->Flink != ListHead || Previous->Flink != Entry, 0))
    {
        FatalListEntryError(Entry, NULL, NULL);
    }
    ListHead->Blink = Previous;
    Previous->Flink = ListHead;
    return Entry;
}

/* Links Entry at the tail of the list headed by ListHead. */
static inline VOID
InsertTailList(PLIST_ENTRY ListHead, PLIST_ENTRY Entry)
{
    PLIST_ENTRY Previous = ListHead->Blink;

    if (__builtin_expect(Previous->Flink != ListHead, 0))
    {
        FatalListEntryError(Entry, NULL, NULL);
    }
    Entry->Flink = ListHead;
    Entry->Blink = Previous;
    Previous->Flink = Entry;
    ListHead->Blink = Entry;
}

/* Links Entry at the head of the list headed by ListHead. */
static inline VOID
InsertHeadList(PLIST_ENTRY ListHead, PLIST_ENTRY Entry)
{
    PLIST_ENTRY Next = ListHead->Flink;

    if (__builtin_expect(Next->Blink != ListHead, 0))
    {
        FatalListEntryError(Entry, NULL, NULL);
    }
    Entry->Flink = Next;
    Entry->Blink = ListHead;
    Next->Blink = Entry;
    ListHead->Flink = Entry;
}

/*
 * Appends a headless circular chain, whose first entry is ListToAppend, at the
 * tail of the list headed by ListHead. ListToAppend becomes an ordinary entry.
 */
static inline VOID
AppendTailList(PLIST_ENTRY ListHead, PLIST_ENTRY ListToAppend)
{
    PLIST_ENTRY ListEnd = ListHead->Blink;

    RtlpCheckListEntry(ListHead);
    RtlpCheckListEntry(ListToAppend);
    ListHead->Blink->Flink = ListToAppend;
    ListHead->Blink = ListToAppend->Blink;
    ListToAppend->Blink->Flink = ListHead;
    ListToAppend->Blink = ListEnd;
}

/* Pushes Entry on the front of the singly linked list ListHead. No return value. */
static inline VOID
PushEntryList(PSINGLE_LIST_ENTRY ListHead, PSINGLE_LIST_ENTRY Entry)
{
    Entry->Next = ListHead->Next;
    ListHead->Next = Entry;
}

/* Pops the first entry of ListHead; returns it, or NULL if the list is empty. */
static inline PSINGLE_LIST_ENTRY
PopEntryList(PSINGLE_LIST_ENTRY ListHead)
{
    PSINGLE_LIST_ENTRY First = ListHead->Next;

    if (First != NULL)
    {
        ListHead->Next = First->Next;
    }
    return First;
}

/* ---------------------------------------------------------------- interlocked operations */

/*
 * API.md §7. Every operation here is one sequentially consistent atomic
 * (a lock-prefixed instruction or xchg, so a full barrier) and is safe at any
 * IRQL on resident data. 32-bit targets must be 4-aligned, 64-bit targets and
 * pointers 8-aligned. Arithmetic wraps (two's complement) without undefined
 * behaviour: it is done on the unsigned type. The Acquire, Release and NoFence
 * forms are the same operations on x86-64.
 */

/* Adds 1 to *Addend; returns the new value (MAXLONG + 1 gives MINLONG). */
static inline LONG
InterlockedIncrement(LONG volatile *Addend)
{
    return (LONG)__atomic_add_fetch((ULONG volatile *)Addend, 1U, __ATOMIC_SEQ_CST);
}

/* Subtracts 1 from *Addend; returns the new value (MINLONG - 1 gives MAXLONG). */
static inline LONG
InterlockedDecrement(LONG volatile *Addend)
{
    return (LONG)__atomic_sub_fetch((ULONG volatile *)Addend, 1U, __ATOMIC_SEQ_CST);
}

/* Stores Value in *Target; returns the old value. */
static inline LONG
InterlockedExchange(LONG volatile *Target, LONG Value)
{
    return __atomic_exchange_n(Target, Value, __ATOMIC_SEQ_CST);
}

/* Stores Exchange in *Destination if it equals Comparand; returns the old *Destination. */
static inline LONG
InterlockedCompareExchange(LONG volatile *Destination, LONG Exchange, LONG Comparand)
{
    __atomic_compare_exchange_n(Destination, &Comparand, Exchange, 0, __ATOMIC_SEQ_CST,
                                __ATOMIC_SEQ_CST);
    return Comparand;
}

/* Adds Value to *Addend; returns the old value. */
static inline LONG
InterlockedExchangeAdd(LONG volatile *Addend, LONG Value)
{
    return (LONG)__atomic_fetch_add((ULONG volatile *)Addend, (ULONG)Value, __ATOMIC_SEQ_CST);
}

/* Adds Value to *Addend; returns the new value. */
static inline LONG
InterlockedAdd(LONG volatile *Addend, LONG Value)
{
    return (LONG)__atomic_add_fetch((ULONG volatile *)Addend, (ULONG)Value, __ATOMIC_SEQ_CST);
}

/* *Destination &= Value; returns the old value. */
static inline LONG
InterlockedAnd(LONG volatile *Destination, LONG Value)
{
    return __atomic_fetch_and(Destination, Value, __ATOMIC_SEQ_CST);
}

/* *Destination |= Value; returns the old value. */
static inline LONG
InterlockedOr(LONG volatile *Destination, LONG Value)
{
    return __atomic_fetch_or(Destination, Value, __ATOMIC_SEQ_CST);
}

/* *Destination ^= Value; returns the old value. */
static inline LONG
InterlockedXor(LONG volatile *Destination, LONG Value)
{
    return __atomic_fetch_xor(Destination, Value, __ATOMIC_SEQ_CST);
}

/* Sets bit Offset (counted from bit 0 of *Base, may exceed 31); returns its old value. */
static inline BOOLEAN
InterlockedBitTestAndSet(LONG volatile *Base, LONG Offset)
{
    ULONG Mask = 1U << (Offset & 31);
    ULONG Old = __atomic_fetch_or((ULONG volatile *)Base + (Offset >> 5), Mask, __ATOMIC_SEQ_CST);

    return (BOOLEAN)((Old & Mask) != 0);
}

/* Clears bit Offset (counted from bit 0 of *Base, may exceed 31); returns its old value. */
static inline BOOLEAN
InterlockedBitTestAndReset(LONG volatile *Base, LONG Offset)
{
    ULONG Mask = 1U << (Offset & 31);
    ULONG Old = __atomic_fetch_and((ULONG volatile *)Base + (Offset >> 5), ~Mask, __ATOMIC_SEQ_CST);

    return (BOOLEAN)((Old & Mask) != 0);
}

/* Adds 1 to *Addend; returns the new value (wraps MAXLONG64 to MINLONG64). */
static inline LONG64
InterlockedIncrement64(LONG64 volatile *Addend)
{
    return (LONG64)__atomic_add_fetch((ULONG64 volatile *)Addend, 1ULL, __ATOMIC_SEQ_CST);
}

/* Subtracts 1 from *Addend; returns the new value (wraps MINLONG64 to MAXLONG64). */
static inline LONG64
InterlockedDecrement64(LONG64 volatile *Addend)
{
    return (LONG64)__atomic_sub_fetch((ULONG64 volatile *)Addend, 1ULL, __ATOMIC_SEQ_CST);
}

/* Stores Value in *Target; returns the old value. */
static inline LONG64
InterlockedExchange64(LONG64 volatile *Target, LONG64 Value)
{
    return __atomic_exchange_n(Target, Value, __ATOMIC_SEQ_CST);
}

/* Stores Exchange in *Destination if it equals Comparand; returns the old *Destination. */
static inline LONG64
InterlockedCompareExchange64(LONG64 volatile *Destination, LONG64 Exchange, LONG64 Comparand)
{
    __atomic_compare_exchange_n(Destination, &Comparand, Exchange, 0, __ATOMIC_SEQ_CST,
                                __ATOMIC_SEQ_CST);
    return Comparand;
}

/* Adds Value to *Addend; returns the old value. */
static inline LONG64
InterlockedExchangeAdd64(LONG64 volatile *Addend, LONG64 Value)
{
    return (LONG64)__atomic_fetch_add((ULONG64 volatile *)Addend, (ULONG64)Value, __ATOMIC_SEQ_CST);
}

/* Adds Value to *Addend; returns the new value. */
static inline LONG64
InterlockedAdd64(LONG64 volatile *Addend, LONG64 Value)
{
    return (LONG64)__atomic_add_fetch((ULONG64 volatile *)Addend, (ULONG64)Value, __ATOMIC_SEQ_CST);
}

/* *Destination &= Value; returns the old value. */
static inline LONG64
InterlockedAnd64(LONG64 volatile *Destination, LONG64 Value)
{
    return __atomic_fetch_and(Destination, Value, __ATOMIC_SEQ_CST);
}

/* *Destination |= Value; returns the old value. */
static inline LONG64
InterlockedOr64(LONG64 volatile *Destination, LONG64 Value)
{
    return __atomic_fetch_or(Destination, Value, __ATOMIC_SEQ_CST);
}

/* *Destination ^= Value; returns the old value. */
static inline LONG64
InterlockedXor64(LONG64 volatile *Destination, LONG64 Value)
{
    return __atomic_fetch_xor(Destination, Value, __ATOMIC_SEQ_CST);
}

/* Stores Value in *Target; returns the old pointer. */
static inline PVOID
InterlockedExchangePointer(PVOID volatile *Target, PVOID Value)
{
    return __atomic_exchange_n(Target, Value, __ATOMIC_SEQ_CST);
}

/* Stores Exchange in *Destination if it equals Comparand; returns the old pointer. */
static inline PVOID
InterlockedCompareExchangePointer(PVOID volatile *Destination, PVOID Exchange, PVOID Comparand)
{
    __atomic_compare_exchange_n(Destination, &Comparand, Exchange, 0, __ATOMIC_SEQ_CST,
                                __ATOMIC_SEQ_CST);
    return Comparand;
}

/* Defined, each with its contract above it, in kernel/ex/interlocked.c. */
BOOLEAN InterlockedCompareExchange128(LONG64 volatile *Destination, LONG64 ExchangeHigh,
                                      LONG64 ExchangeLow, LONG64 *ComparandResult);

#define InterlockedIncrementAcquire              InterlockedIncrement
#define InterlockedIncrementRelease              InterlockedIncrement
#define InterlockedIncrementNoFence              InterlockedIncrement
#define InterlockedDecrementAcquire              InterlockedDecrement
#define InterlockedDecrementRelease              InterlockedDecrement
#define InterlockedDecrementNoFence              InterlockedDecrement
#define InterlockedExchangeAcquire               InterlockedExchange
#define InterlockedExchangeNoFence               InterlockedExchange
#define InterlockedCompareExchangeAcquire        InterlockedCompareExchange
#define InterlockedCompareExchangeRelease        InterlockedCompareExchange
#define InterlockedCompareExchangeNoFence        InterlockedCompareExchange
#define InterlockedExchangeAddAcquire            InterlockedExchangeAdd
#define InterlockedExchangeAddRelease            InterlockedExchangeAdd
#define InterlockedExchangeAddNoFence            InterlockedExchangeAdd
#define InterlockedAndAcquire                    InterlockedAnd
#define InterlockedAndRelease                    InterlockedAnd
#define InterlockedAndNoFence                    InterlockedAnd
#define InterlockedOrAcquire                     InterlockedOr
#define InterlockedOrRelease                     InterlockedOr
#define InterlockedOrNoFence                     InterlockedOr
#define InterlockedXorAcquire                    InterlockedXor
#define InterlockedXorRelease                    InterlockedXor
#define InterlockedXorNoFence                    InterlockedXor
#define InterlockedIncrementAcquire64            InterlockedIncrement64
#define InterlockedIncrementRelease64            InterlockedIncrement64
#define InterlockedIncrementNoFence64            InterlockedIncrement64
#define InterlockedDecrementAcquire64            InterlockedDecrement64
#define InterlockedDecrementRelease64            InterlockedDecrement64
#define InterlockedDecrementNoFence64            InterlockedDecrement64
#define InterlockedExchangeAcquire64             InterlockedExchange64
#define InterlockedExchangeNoFence64             InterlockedExchange64
#define InterlockedCompareExchangeAcquire64      InterlockedCompareExchange64
#define InterlockedCompareExchangeRelease64      InterlockedCompareExchange64
#define InterlockedCompareExchangeNoFence64      InterlockedCompareExchange64
#define InterlockedExchangeAddAcquire64          InterlockedExchangeAdd64
#define InterlockedExchangeAddRelease64          InterlockedExchangeAdd64
#define InterlockedExchangeAddNoFence64          InterlockedExchangeAdd64
#define InterlockedAnd64Acquire                  InterlockedAnd64
#define InterlockedAnd64Release                  InterlockedAnd64
#define InterlockedAnd64NoFence                  InterlockedAnd64
#define InterlockedOr64Acquire                   InterlockedOr64
#define InterlockedOr64Release                   InterlockedOr64
#define InterlockedOr64NoFence                   InterlockedOr64
#define InterlockedXor64Acquire                  InterlockedXor64
#define InterlockedXor64Release                  InterlockedXor64
#define InterlockedXor64NoFence                  InterlockedXor64
#define InterlockedExchangePointerAcquire        InterlockedExchangePointer
#define InterlockedExchangePointerNoFence        InterlockedExchangePointer
#define InterlockedCompareExchangePointerAcquire InterlockedCompareExchangePointer
#define InterlockedCompareExchangePointerRelease InterlockedCompareExchangePointer
#define InterlockedCompareExchangePointerNoFence InterlockedCompareExchangePointer

/* Full memory barrier (loads and stores). Any IRQL. */
static inline VOID
KeMemoryBarrier(VOID)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* Compiler-only barrier: no fence instruction; x86-64 keeps store and load order otherwise. */
static inline VOID
KeMemoryBarrierWithoutFence(VOID)
{
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

/* Spin-wait hint (the pause instruction). Any IRQL. */
static inline VOID
YieldProcessor(VOID)
{
    __builtin_ia32_pause();
}

/* Sign of a value returned by ExInterlockedIncrementLong/DecrementLong (non-x86 values). */
typedef enum _INTERLOCKED_RESULT
{
    ResultNegative = 1,
    ResultZero = 0,
    ResultPositive = 2
} INTERLOCKED_RESULT;

ULONG ExInterlockedAddUlong(PULONG Addend, ULONG Increment, PKSPIN_LOCK Lock);

LARGE_INTEGER ExInterlockedAddLargeInteger(PLARGE_INTEGER Addend, LARGE_INTEGER Increment,
                                           PKSPIN_LOCK Lock);

VOID ExInterlockedAddLargeStatistic(PLARGE_INTEGER Addend, ULONG Increment);

INTERLOCKED_RESULT ExInterlockedIncrementLong(PLONG Addend, PKSPIN_LOCK Lock);
INTERLOCKED_RESULT ExInterlockedDecrementLong(PLONG Addend, PKSPIN_LOCK Lock);

/* Defined, each with its contract above it, in kernel/ex/interlocked.c. */
ULONG ExInterlockedExchangeUlong(PULONG Target, ULONG Value, PKSPIN_LOCK Lock);

LONGLONG ExInterlockedCompareExchange64(PLONGLONG Destination, PLONGLONG Exchange,
                                        PLONGLONG Comparand, PKSPIN_LOCK Lock);

/* ---------------------------------------------------------------- ExInterlocked lists, SLISTs */

/*
 * API.md §8. Each ExInterlocked*List routine disables interrupts, takes Lock
 * without changing IRQL, does the list operation, releases and restores the
 * interrupt flag. Any IRQL; heads, entries and Lock must be resident, and Lock
 * must guard nothing but ExInterlocked*List calls on that one list.
 */

/* Defined, each with its contract above it, in kernel/ex/list.c. */
PLIST_ENTRY ExInterlockedInsertHeadList(PLIST_ENTRY ListHead, PLIST_ENTRY ListEntry,
                                        PKSPIN_LOCK Lock);

PLIST_ENTRY ExInterlockedInsertTailList(PLIST_ENTRY ListHead, PLIST_ENTRY ListEntry,
                                        PKSPIN_LOCK Lock);

PLIST_ENTRY ExInterlockedRemoveHeadList(PLIST_ENTRY ListHead, PKSPIN_LOCK Lock);

PSINGLE_LIST_ENTRY ExInterlockedPushEntryList(PSINGLE_LIST_ENTRY ListHead,
                                              PSINGLE_LIST_ENTRY ListEntry, PKSPIN_LOCK Lock);

PSINGLE_LIST_ENTRY ExInterlockedPopEntryList(PSINGLE_LIST_ENTRY ListHead, PKSPIN_LOCK Lock);

/* An SLIST entry; must be 16-byte aligned (MEMORY_ALLOCATION_ALIGNMENT). */
typedef struct DECLSPEC_ALIGN(16) _SLIST_ENTRY
{
    struct _SLIST_ENTRY *Next;
} SLIST_ENTRY, *PSLIST_ENTRY;

_Static_assert(sizeof(SLIST_ENTRY) == 16, "SLIST_ENTRY is 16 bytes");
_Static_assert(_Alignof(SLIST_ENTRY) == 16, "SLIST_ENTRY is 16-byte aligned");

/*
 * x64 SLIST header, updated as one 128-bit unit with cmpxchg16b. Low qword:
 * Depth (entries on the list) and Sequence (bumped by every push). High qword:
 * NextEntry = first entry's address >> 4.
 */
typedef union DECLSPEC_ALIGN(16) _SLIST_HEADER
{
    struct
    {
        ULONGLONG Alignment;
        ULONGLONG Region;
    };
    struct
    {
        ULONGLONG Depth : 16;
        ULONGLONG Sequence : 48;
        ULONGLONG Reserved : 4;
        ULONGLONG NextEntry : 60;
    } HeaderX64;
} SLIST_HEADER, *PSLIST_HEADER;

_Static_assert(sizeof(SLIST_HEADER) == 16, "SLIST_HEADER is 16 bytes");
_Static_assert(_Alignof(SLIST_HEADER) == 16, "SLIST_HEADER is 16-byte aligned");
_Static_assert(offsetof(SLIST_HEADER, Region) == 8, "SLIST_HEADER.Region@8");

VOID InitializeSListHead(PSLIST_HEADER SListHead);

PSLIST_ENTRY InterlockedPushEntrySList(PSLIST_HEADER ListHead, PSLIST_ENTRY ListEntry);

PSLIST_ENTRY InterlockedPopEntrySList(PSLIST_HEADER ListHead);

PSLIST_ENTRY InterlockedFlushSList(PSLIST_HEADER ListHead);

USHORT QueryDepthSList(PSLIST_HEADER SListHead);

PSLIST_ENTRY ExInterlockedPushEntrySList(PSLIST_HEADER ListHead, PSLIST_ENTRY ListEntry,
                                         PKSPIN_LOCK Lock);

PSLIST_ENTRY ExInterlockedPopEntrySList(PSLIST_HEADER ListHead, PKSPIN_LOCK Lock);

#define ExInterlockedFlushSList(ListHead) InterlockedFlushSList(ListHead)
#define ExQueryDepthSList(ListHead)       QueryDepthSList(ListHead)

/* ---------------------------------------------------------------- processors and time */

#define MAXIMUM_PROCESSORS 64

typedef struct _PROCESSOR_NUMBER
{
    USHORT Group;
    UCHAR Number;
    UCHAR Reserved;
} PROCESSOR_NUMBER, *PPROCESSOR_NUMBER;

_Static_assert(sizeof(PROCESSOR_NUMBER) == 4, "PROCESSOR_NUMBER is 4 bytes");

/* Number of active processors, fixed after boot. Obsolete: use KeQueryActiveProcessorCount. */
extern CCHAR KeNumberProcessors;

/* Defined, each with its contract above it, in kernel/ke/processor.c. */
ULONG KeGetCurrentProcessorNumber(VOID);

ULONG KeGetCurrentProcessorNumberEx(PPROCESSOR_NUMBER ProcNumber OPTIONAL);

ULONG KeQueryActiveProcessorCount(PKAFFINITY ActiveProcessors OPTIONAL);

KAFFINITY KeQueryActiveProcessors(VOID);

/* Defined, each with its contract above it, in kernel/ke/clock.c. */
VOID KeQueryTickCount(PLARGE_INTEGER CurrentCount);

ULONG KeQueryTimeIncrement(VOID);

LARGE_INTEGER KeQueryPerformanceCounter(PLARGE_INTEGER PerformanceFrequency OPTIONAL);

VOID KeStallExecutionProcessor(ULONG MicroSeconds);

typedef ULONG_PTR KIPI_BROADCAST_WORKER(ULONG_PTR Argument);
typedef KIPI_BROADCAST_WORKER *PKIPI_BROADCAST_WORKER;

/* Defined, each with its contract above it, in kernel/ke/ipi.c. */
ULONG_PTR KeIpiGenericCall(PKIPI_BROADCAST_WORKER BroadcastFunction, ULONG_PTR Context);

/* ---------------------------------------------------------------- spin locks */

typedef struct _KSPIN_LOCK_QUEUE
{
    struct _KSPIN_LOCK_QUEUE *volatile Next; // successor waiting for the lock, or NULL
    PKSPIN_LOCK volatile Lock;               // the lock's address | LOCK_QUEUE_* flags
} KSPIN_LOCK_QUEUE, *PKSPIN_LOCK_QUEUE;

_Static_assert(sizeof(KSPIN_LOCK_QUEUE) == 16, "KSPIN_LOCK_QUEUE is 16 bytes");
_Static_assert(offsetof(KSPIN_LOCK_QUEUE, Next) == 0, "KSPIN_LOCK_QUEUE.Next@0");
_Static_assert(offsetof(KSPIN_LOCK_QUEUE, Lock) == 8, "KSPIN_LOCK_QUEUE.Lock@8");

/* Flag bits in KSPIN_LOCK_QUEUE.Lock (API.md §4). */
#define LOCK_QUEUE_WAIT      1 // waiting for the predecessor's hand-off
#define LOCK_QUEUE_OWNER     2 // this entry owns the lock
#define LOCK_QUEUE_WAIT_BIT  0
#define LOCK_QUEUE_OWNER_BIT 1

typedef struct _KLOCK_QUEUE_HANDLE
{
    KSPIN_LOCK_QUEUE LockQueue;
    KIRQL OldIrql;
} KLOCK_QUEUE_HANDLE, *PKLOCK_QUEUE_HANDLE;

_Static_assert(sizeof(KLOCK_QUEUE_HANDLE) == 24, "KLOCK_QUEUE_HANDLE is 24 bytes");
_Static_assert(offsetof(KLOCK_QUEUE_HANDLE, LockQueue) == 0, "KLOCK_QUEUE_HANDLE.LockQueue@0");
_Static_assert(offsetof(KLOCK_QUEUE_HANDLE, OldIrql) == 16, "KLOCK_QUEUE_HANDLE.OldIrql@16");

/* Ordinary spin locks (API.md §3). Never mix them with queued acquisition of the same lock. */

/* Defined, each with its contract above it, in kernel/ke/spinlock.c. */
VOID KeInitializeSpinLock(PKSPIN_LOCK SpinLock);

VOID KeAcquireSpinLock(PKSPIN_LOCK SpinLock, PKIRQL OldIrql);

VOID KeReleaseSpinLock(PKSPIN_LOCK SpinLock, KIRQL NewIrql);

KIRQL KeAcquireSpinLockRaiseToDpc(PKSPIN_LOCK SpinLock);

KIRQL KeAcquireSpinLockRaiseToSynch(PKSPIN_LOCK SpinLock);

VOID KeAcquireSpinLockAtDpcLevel(PKSPIN_LOCK SpinLock);

VOID KeReleaseSpinLockFromDpcLevel(PKSPIN_LOCK SpinLock);

BOOLEAN KeTryToAcquireSpinLockAtDpcLevel(PKSPIN_LOCK SpinLock);

BOOLEAN KeTestSpinLock(PKSPIN_LOCK SpinLock);

KIRQL KeAcquireSpinLockForDpc(PKSPIN_LOCK SpinLock);

VOID KeReleaseSpinLockForDpc(PKSPIN_LOCK SpinLock, KIRQL OldIrql);

/*
 * In-stack queued (MCS) spin locks (API.md §4). One handle per acquisition,
 * resident until the release; nested queued locks are released in reverse order.
 */

/* Defined, each with its contract above it, in kernel/ke/queuedlock.c. */
VOID KeAcquireInStackQueuedSpinLock(PKSPIN_LOCK SpinLock, PKLOCK_QUEUE_HANDLE LockHandle);

VOID KeReleaseInStackQueuedSpinLock(PKLOCK_QUEUE_HANDLE LockHandle);

VOID KeAcquireInStackQueuedSpinLockAtDpcLevel(PKSPIN_LOCK SpinLock, PKLOCK_QUEUE_HANDLE LockHandle);

VOID KeReleaseInStackQueuedSpinLockFromDpcLevel(PKLOCK_QUEUE_HANDLE LockHandle);

VOID KeAcquireInStackQueuedSpinLockForDpc(PKSPIN_LOCK SpinLock, PKLOCK_QUEUE_HANDLE LockHandle);

VOID KeReleaseInStackQueuedSpinLockForDpc(PKLOCK_QUEUE_HANDLE LockHandle);

VOID KeAcquireInStackQueuedSpinLockRaiseToSynch(PKSPIN_LOCK SpinLock,
                                                PKLOCK_QUEUE_HANDLE LockHandle);

/* ---------------------------------------------------------------- pool */

typedef enum _POOL_TYPE
{
    NonPagedPool = 0,
    NonPagedPoolNx = 512,
} POOL_TYPE;

#define POOL_NX_ALLOCATION 512 // a flag: no-execute nonpaged memory (NonPagedPoolNx)

/* Defined, each with its contract above it, in kernel/ex/pool.c. */
PVOID ExAllocatePoolWithTag(POOL_TYPE PoolType, SIZE_T NumberOfBytes, ULONG Tag);

PVOID ExAllocatePool(POOL_TYPE PoolType, SIZE_T NumberOfBytes);

VOID ExFreePoolWithTag(PVOID P, ULONG Tag);

VOID ExFreePool(PVOID P);

/* Lookaside lists: a depth-limited SLIST cache of equal-sized pool blocks. */

typedef PVOID ALLOCATE_FUNCTION(POOL_TYPE PoolType, SIZE_T NumberOfBytes, ULONG Tag);
typedef ALLOCATE_FUNCTION *PALLOCATE_FUNCTION;
typedef VOID FREE_FUNCTION(PVOID Buffer);
typedef FREE_FUNCTION *PFREE_FUNCTION;

/*
 * The x64 GENERAL_LOOKASIDE (without its unions). Counters are statistics,
 * updated atomically; Depth, ListEntry and the Last* fields are the kernel's:
 * its tuner moves Depth between 4 and MaximumDepth from the hit and miss
 * counters once a second.
 */
typedef struct DECLSPEC_ALIGN(16) _GENERAL_LOOKASIDE
{
    SLIST_HEADER ListHead;       // free blocks, each at least an SLIST_ENTRY
    USHORT Depth;                // most free blocks kept; beyond it frees go to Free
    USHORT MaximumDepth;         // the tuner's ceiling (256)
    ULONG TotalAllocates;        // every allocation from the list
    ULONG AllocateMisses;        // ... that found the list empty and called Allocate
    ULONG TotalFrees;            // every free to the list
    ULONG FreeMisses;            // ... that found the list full and called Free
    POOL_TYPE Type;              // NonPagedPool | the Flags given; passed to Allocate
    ULONG Tag;                   // passed to Allocate
    ULONG Size;                  // block size as the caller gave it
    PALLOCATE_FUNCTION Allocate; // ExAllocatePoolWithTag unless the caller gave one
    PFREE_FUNCTION Free;         // ExFreePool unless the caller gave one
    LIST_ENTRY ListEntry;        // in the kernel's list of lists the tuner scans
    ULONG LastTotalAllocates;    // TotalAllocates at the tuner's last scan
    ULONG LastAllocateMisses;    // AllocateMisses at the tuner's last scan
    ULONG Future[2];
} GENERAL_LOOKASIDE, *PGENERAL_LOOKASIDE;

_Static_assert(offsetof(GENERAL_LOOKASIDE, Depth) == 16, "GENERAL_LOOKASIDE.Depth@16");
_Static_assert(offsetof(GENERAL_LOOKASIDE, Type) == 36, "GENERAL_LOOKASIDE.Type@36");
_Static_assert(offsetof(GENERAL_LOOKASIDE, Size) == 44, "GENERAL_LOOKASIDE.Size@44");
_Static_assert(offsetof(GENERAL_LOOKASIDE, Allocate) == 48, "GENERAL_LOOKASIDE.Allocate@48");
_Static_assert(offsetof(GENERAL_LOOKASIDE, ListEntry) == 64, "GENERAL_LOOKASIDE.ListEntry@64");
_Static_assert(sizeof(GENERAL_LOOKASIDE) == 96, "GENERAL_LOOKASIDE is 96 bytes");

/* On x64 the nonpaged list is the general one (x86 adds an obsolete lock). */
typedef struct DECLSPEC_ALIGN(16) _NPAGED_LOOKASIDE_LIST
{
    GENERAL_LOOKASIDE L;
} NPAGED_LOOKASIDE_LIST, *PNPAGED_LOOKASIDE_LIST;

_Static_assert(sizeof(NPAGED_LOOKASIDE_LIST) == 96, "NPAGED_LOOKASIDE_LIST is 96 bytes");

/* Defined, each with its contract above it, in kernel/ex/lookaside.c. */
VOID ExInitializeNPagedLookasideList(PNPAGED_LOOKASIDE_LIST Lookaside,
                                     PALLOCATE_FUNCTION Allocate OPTIONAL,
                                     PFREE_FUNCTION Free OPTIONAL, ULONG Flags, SIZE_T Size,
                                     ULONG Tag, USHORT Depth);

VOID ExDeleteNPagedLookasideList(PNPAGED_LOOKASIDE_LIST Lookaside);

PVOID ExAllocateFromNPagedLookasideList(PNPAGED_LOOKASIDE_LIST Lookaside);

VOID ExFreeToNPagedLookasideList(PNPAGED_LOOKASIDE_LIST Lookaside, PVOID Entry);

/* ---------------------------------------------------------------- zones */

/* API.md §9: the obsolete fixed-block allocator over caller-supplied segments. */

typedef struct _ZONE_SEGMENT_HEADER
{
    SINGLE_LIST_ENTRY SegmentList; // next (older) segment
    PVOID Reserved;
} ZONE_SEGMENT_HEADER, *PZONE_SEGMENT_HEADER;

_Static_assert(sizeof(ZONE_SEGMENT_HEADER) == 16, "ZONE_SEGMENT_HEADER is 16 bytes");
_Static_assert(offsetof(ZONE_SEGMENT_HEADER, SegmentList) == 0,
               "ZONE_SEGMENT_HEADER.SegmentList@0");
_Static_assert(offsetof(ZONE_SEGMENT_HEADER, Reserved) == 8, "ZONE_SEGMENT_HEADER.Reserved@8");

typedef struct _ZONE_HEADER
{
    SINGLE_LIST_ENTRY FreeList;    // free blocks, LIFO
    SINGLE_LIST_ENTRY SegmentList; // newest segment's header first
    ULONG BlockSize;
    ULONG TotalSegmentSize; // sum over all segments of 16 + blocks * BlockSize
} ZONE_HEADER, *PZONE_HEADER;

_Static_assert(sizeof(ZONE_HEADER) == 24, "ZONE_HEADER is 24 bytes");
_Static_assert(offsetof(ZONE_HEADER, FreeList) == 0, "ZONE_HEADER.FreeList@0");
_Static_assert(offsetof(ZONE_HEADER, SegmentList) == 8, "ZONE_HEADER.SegmentList@8");
_Static_assert(offsetof(ZONE_HEADER, BlockSize) == 16, "ZONE_HEADER.BlockSize@16");
_Static_assert(offsetof(ZONE_HEADER, TotalSegmentSize) == 20, "ZONE_HEADER.TotalSegmentSize@20");

/* Defined, each with its contract above it, in kernel/ex/zone.c. */
NTSTATUS ExInitializeZone(PZONE_HEADER Zone, ULONG BlockSize, PVOID InitialSegment,
                          ULONG InitialSegmentSize);

NTSTATUS ExExtendZone(PZONE_HEADER Zone, PVOID Segment, ULONG SegmentSize);

NTSTATUS ExInterlockedExtendZone(PZONE_HEADER Zone, PVOID Segment, ULONG SegmentSize,
                                 PKSPIN_LOCK Lock);

PVOID ExInterlockedAllocateFromZone(PZONE_HEADER Zone, PKSPIN_LOCK Lock);

PVOID ExInterlockedFreeToZone(PZONE_HEADER Zone, PVOID Block, PKSPIN_LOCK Lock);

/* Pops a free block; NULL if none is left. The caller serialises (a DDK macro). */
static inline PVOID
ExAllocateFromZone(PZONE_HEADER Zone)
{
    PSINGLE_LIST_ENTRY Block = Zone->FreeList.Next;

    if (Block != NULL)
    {
        Zone->FreeList.Next = Block->Next;
    }
    return Block;
}

/*
 * Pushes Block back; returns the previous first free block, NULL if the zone
 * had been full. The caller serialises (a DDK macro).
 */
static inline PVOID
ExFreeToZone(PZONE_HEADER Zone, PVOID Block)
{
    ((PSINGLE_LIST_ENTRY)Block)->Next = Zone->FreeList.Next;
    Zone->FreeList.Next = (PSINGLE_LIST_ENTRY)Block;
    return ((PSINGLE_LIST_ENTRY)Block)->Next;
}

/* TRUE if no block is free ("full" = nothing left to allocate). */
static inline BOOLEAN
ExIsFullZone(PZONE_HEADER Zone)
{
    return (BOOLEAN)(Zone->FreeList.Next == NULL);
}

/*
 * TRUE if SegmentList.Next <= Object < SegmentList.Next + TotalSegmentSize.
 * DDK quirk kept on purpose: after an extend, SegmentList.Next is the newest
 * segment while TotalSegmentSize covers all of them.
 */
static inline BOOLEAN
ExIsObjectInFirstZoneSegment(PZONE_HEADER Zone, PVOID Object)
{
    return (BOOLEAN)(((PUCHAR)Object >= (PUCHAR)Zone->SegmentList.Next) &&
                     ((PUCHAR)Object < (PUCHAR)Zone->SegmentList.Next + Zone->TotalSegmentSize));
}

/* ---------------------------------------------------------------- dispatcher objects, DPCs */

/* Kernel object type codes (Win10 KOBJECTS values), stored in each object's Type. */
typedef enum _KOBJECTS
{
    EventNotificationObject = 0,
    EventSynchronizationObject = 1,
    TimerNotificationObject = 8,
    TimerSynchronizationObject = 9,
    DpcObject = 19,
    DeviceQueueObject = 20,
    InterruptObject = 22,
    ThreadedDpcObject = 26,
} KOBJECTS;

typedef struct _KDPC *PKDPC, *PRKDPC;

/*
 * A deferred routine runs at DISPATCH_LEVEL with interrupts enabled, with the
 * context given to KeInitializeDpc and the arguments given to KeInsertQueueDpc.
 */
typedef VOID KDEFERRED_ROUTINE(struct _KDPC *Dpc, PVOID DeferredContext, PVOID SystemArgument1,
                               PVOID SystemArgument2);
typedef KDEFERRED_ROUTINE *PKDEFERRED_ROUTINE;

typedef enum _KDPC_IMPORTANCE
{
    LowImportance = 0,
    MediumImportance = 1,
    HighImportance = 2,
    MediumHighImportance = 3
} KDPC_IMPORTANCE;

typedef struct _KDPC
{
    UCHAR Type;              // DpcObject or ThreadedDpcObject
    UCHAR Importance;        // KDPC_IMPORTANCE
    volatile USHORT Number;  // target processor (encoding is the kernel's)
    LIST_ENTRY DpcListEntry; // link in the target's DPC queue while queued
    PKDEFERRED_ROUTINE DeferredRoutine;
    PVOID DeferredContext;
    PVOID SystemArgument1;
    PVOID SystemArgument2;
    PVOID volatile DpcData; // the queue it is on; non-NULL exactly while queued
} KDPC;

_Static_assert(sizeof(KDPC) == 64, "KDPC is 64 bytes");
_Static_assert(offsetof(KDPC, Type) == 0, "KDPC.Type@0");
_Static_assert(offsetof(KDPC, Importance) == 1, "KDPC.Importance@1");
_Static_assert(offsetof(KDPC, Number) == 2, "KDPC.Number@2");
_Static_assert(offsetof(KDPC, DpcListEntry) == 8, "KDPC.DpcListEntry@8");
_Static_assert(offsetof(KDPC, DeferredRoutine) == 24, "KDPC.DeferredRoutine@24");
_Static_assert(offsetof(KDPC, DeferredContext) == 32, "KDPC.DeferredContext@32");
_Static_assert(offsetof(KDPC, SystemArgument1) == 40, "KDPC.SystemArgument1@40");
_Static_assert(offsetof(KDPC, SystemArgument2) == 48, "KDPC.SystemArgument2@48");
_Static_assert(offsetof(KDPC, DpcData) == 56, "KDPC.DpcData@56");

/* Defined, each with its contract above it, in kernel/ke/dpc.c. */
VOID KeInitializeDpc(PRKDPC Dpc, PKDEFERRED_ROUTINE DeferredRoutine, PVOID DeferredContext);

VOID KeInitializeThreadedDpc(PRKDPC Dpc, PKDEFERRED_ROUTINE DeferredRoutine, PVOID DeferredContext);

BOOLEAN KeInsertQueueDpc(PRKDPC Dpc, PVOID SystemArgument1, PVOID SystemArgument2);

BOOLEAN KeRemoveQueueDpc(PRKDPC Dpc);

VOID KeSetTargetProcessorDpc(PRKDPC Dpc, CCHAR Number);

VOID KeSetImportanceDpc(PRKDPC Dpc, KDPC_IMPORTANCE Importance);

VOID KeFlushQueuedDpcs(VOID);

/*
 * KeGenericCallDpc's reverse barrier (SystemArgument2 of the routine), x64
 * layout. Barrier holds a sense bit (0x80000000) and the count of processors
 * still to arrive: N on entry, 0x80000000 | N after the 1st synchronisation,
 * N after the 2nd, and so on. TotalProcessors = N.
 */
typedef struct _DEFERRED_REVERSE_BARRIER
{
    ULONG Barrier;
    ULONG TotalProcessors;
} DEFERRED_REVERSE_BARRIER, *PDEFERRED_REVERSE_BARRIER;

_Static_assert(sizeof(DEFERRED_REVERSE_BARRIER) == 8, "DEFERRED_REVERSE_BARRIER is 8 bytes");
_Static_assert(offsetof(DEFERRED_REVERSE_BARRIER, Barrier) == 0, "Barrier@0");
_Static_assert(offsetof(DEFERRED_REVERSE_BARRIER, TotalProcessors) == 4, "TotalProcessors@4");

/* Defined, each with its contract above it, in kernel/ke/gencall.c. */
VOID KeGenericCallDpc(PKDEFERRED_ROUTINE Routine, PVOID Context);

LOGICAL KeSignalCallDpcSynchronize(PVOID SystemArgument2);

VOID KeSignalCallDpcDone(PVOID SystemArgument1);

/*
 * The header shared by waitable objects (events, timers), in the Windows Server
 * 2003 shape. SignalState != 0 means signalled. WaitListHead belongs to the
 * kernel's wait code; it is initialised empty.
 */
typedef struct _DISPATCHER_HEADER
{
    UCHAR Type;     // KOBJECTS code
    UCHAR Absolute; // timers: DueTime was given as an absolute time
    UCHAR Size;     // object size in LONGs
    UCHAR Inserted; // timers: TRUE while in the kernel's timer list
    LONG volatile SignalState;
    LIST_ENTRY WaitListHead;
} DISPATCHER_HEADER, *PDISPATCHER_HEADER;

_Static_assert(sizeof(DISPATCHER_HEADER) == 24, "DISPATCHER_HEADER is 24 bytes");
_Static_assert(offsetof(DISPATCHER_HEADER, SignalState) == 4, "DISPATCHER_HEADER.SignalState@4");
_Static_assert(offsetof(DISPATCHER_HEADER, WaitListHead) == 8, "DISPATCHER_HEADER.WaitListHead@8");

typedef enum _EVENT_TYPE
{
    NotificationEvent,   // stays signalled until reset; releases every waiter
    SynchronizationEvent // a satisfied wait resets it; releases one waiter
} EVENT_TYPE;

typedef struct _KEVENT
{
    DISPATCHER_HEADER Header; // Type = EventNotificationObject or EventSynchronizationObject
} KEVENT, *PKEVENT, *PRKEVENT;

_Static_assert(sizeof(KEVENT) == 24, "KEVENT is 24 bytes");

/* Defined, each with its contract above it, in kernel/ke/event.c. */
VOID KeInitializeEvent(PRKEVENT Event, EVENT_TYPE Type, BOOLEAN State);

LONG KeSetEvent(PRKEVENT Event, KPRIORITY Increment, BOOLEAN Wait);

LONG KeResetEvent(PRKEVENT Event);

VOID KeClearEvent(PRKEVENT Event);

LONG KeReadStateEvent(PRKEVENT Event);

typedef enum _TIMER_TYPE
{
    NotificationTimer,   // stays signalled until set again
    SynchronizationTimer // a satisfied wait resets it
} TIMER_TYPE;

typedef struct _KTIMER
{
    DISPATCHER_HEADER Header;  // Type = TimerNotificationObject or TimerSynchronizationObject
    ULONGLONG DueTime;         // expiry: absolute clock tick (KeQueryTickCount scale)
    LIST_ENTRY TimerListEntry; // link in the kernel's timer list while Header.Inserted
    PKDPC Dpc;                 // queued at expiry, or NULL
    ULONG Processor;           // the kernel's: which processor's list holds it
    ULONG Period;              // re-arm period in milliseconds; 0 = one-shot
} KTIMER, *PKTIMER, *PRKTIMER;

_Static_assert(sizeof(KTIMER) == 64, "KTIMER is 64 bytes");
_Static_assert(offsetof(KTIMER, DueTime) == 24, "KTIMER.DueTime@24");
_Static_assert(offsetof(KTIMER, TimerListEntry) == 32, "KTIMER.TimerListEntry@32");
_Static_assert(offsetof(KTIMER, Dpc) == 48, "KTIMER.Dpc@48");

/* Defined, each with its contract above it, in kernel/ke/timer.c. */
VOID KeInitializeTimer(PKTIMER Timer);

VOID KeInitializeTimerEx(PKTIMER Timer, TIMER_TYPE Type);

BOOLEAN KeSetTimer(PKTIMER Timer, LARGE_INTEGER DueTime, PKDPC Dpc OPTIONAL);

BOOLEAN KeSetTimerEx(PKTIMER Timer, LARGE_INTEGER DueTime, LONG Period, PKDPC Dpc OPTIONAL);

BOOLEAN KeCancelTimer(PKTIMER Timer);

BOOLEAN KeReadStateTimer(PKTIMER Timer);

typedef enum _KWAIT_REASON
{
    Executive,
    FreePage,
    PageIn,
    PoolAllocation,
    DelayExecution,
    Suspended,
    UserRequest,
    WrExecutive,
} KWAIT_REASON;

/* Defined, each with its contract above it, in kernel/ke/event.c. */
NTSTATUS KeWaitForSingleObject(PVOID Object, KWAIT_REASON WaitReason, KPROCESSOR_MODE WaitMode,
                               BOOLEAN Alertable, PLARGE_INTEGER Timeout OPTIONAL);

/* ---------------------------------------------------------------- interrupt objects */

typedef struct _KINTERRUPT *PKINTERRUPT, *PRKINTERRUPT;

/* An ISR: runs at SynchronizeIrql holding ActualLock; returns TRUE if its device interrupted. */
typedef BOOLEAN KSERVICE_ROUTINE(struct _KINTERRUPT *Interrupt, PVOID ServiceContext);
typedef KSERVICE_ROUTINE *PKSERVICE_ROUTINE;

/* Called by KeSynchronizeExecution at SynchronizeIrql holding ActualLock. */
typedef BOOLEAN KSYNCHRONIZE_ROUTINE(PVOID SynchronizeContext);
typedef KSYNCHRONIZE_ROUTINE *PKSYNCHRONIZE_ROUTINE;

typedef enum _KINTERRUPT_MODE
{
    LevelSensitive,
    Latched
} KINTERRUPT_MODE;

/*
 * One object per IoConnectInterrupt call. The vector's dispatcher walks the
 * objects chained on InterruptListEntry, and for each raises to
 * SynchronizeIrql, takes *ActualLock and calls ServiceRoutine. Callers of
 * KeSynchronizeExecution may build one by hand: only SynchronizeIrql and
 * ActualLock are read there.
 */
typedef struct _KINTERRUPT
{
    CSHORT Type;                   // InterruptObject
    CSHORT Size;                   // sizeof(KINTERRUPT)
    LIST_ENTRY InterruptListEntry; // link in the vector's chain of connected objects
    PKSERVICE_ROUTINE ServiceRoutine;
    PVOID ServiceContext;
    KSPIN_LOCK SpinLock;    // the object's own lock
    PKSPIN_LOCK ActualLock; // &SpinLock, or the SpinLock given to IoConnectInterrupt
    ULONG Vector;           // IDT vector
    KIRQL Irql;             // device IRQL (Vector >> 4)
    KIRQL SynchronizeIrql;  // >= Irql; held with ActualLock around the ISR
    BOOLEAN ShareVector;
    BOOLEAN FloatingSave; // recorded only: kernel code never uses FP state
    KINTERRUPT_MODE Mode;
    ULONG ProcessorNumber;       // lowest processor in Affinity (the delivery target)
    KAFFINITY Affinity;          // ProcessorEnableMask
    BOOLEAN volatile Connected;  // TRUE from connect until disconnect
    ULONG volatile ServiceCount; // ISR calls that returned TRUE (statistics)
} KINTERRUPT;

/* Defined, each with its contract above it, in kernel/ke/intobj.c. */
KIRQL KeAcquireInterruptSpinLock(PKINTERRUPT Interrupt);

VOID KeReleaseInterruptSpinLock(PKINTERRUPT Interrupt, KIRQL OldIrql);

BOOLEAN KeSynchronizeExecution(PKINTERRUPT Interrupt, PKSYNCHRONIZE_ROUTINE SynchronizeRoutine,
                               PVOID SynchronizeContext);

NTSTATUS IoConnectInterrupt(PKINTERRUPT *InterruptObject, PKSERVICE_ROUTINE ServiceRoutine,
                            PVOID ServiceContext, PKSPIN_LOCK SpinLock OPTIONAL, ULONG Vector,
                            KIRQL Irql, KIRQL SynchronizeIrql, KINTERRUPT_MODE InterruptMode,
                            BOOLEAN ShareVector, KAFFINITY ProcessorEnableMask,
                            BOOLEAN FloatingSave);

VOID IoDisconnectInterrupt(PKINTERRUPT InterruptObject);

/* ---------------------------------------------------------------- device queues */

/* API.md §10. The queue's Lock is taken as a queued lock inside these routines only. */

typedef struct _KDEVICE_QUEUE
{
    CSHORT Type; // DeviceQueueObject
    CSHORT Size; // sizeof(KDEVICE_QUEUE)
    LIST_ENTRY DeviceListHead;
    KSPIN_LOCK Lock;
    BOOLEAN Busy; // the device owns a request
} KDEVICE_QUEUE, *PKDEVICE_QUEUE, *PRKDEVICE_QUEUE;

_Static_assert(sizeof(KDEVICE_QUEUE) == 40, "KDEVICE_QUEUE is 40 bytes");
_Static_assert(offsetof(KDEVICE_QUEUE, Type) == 0, "KDEVICE_QUEUE.Type@0");
_Static_assert(offsetof(KDEVICE_QUEUE, Size) == 2, "KDEVICE_QUEUE.Size@2");
_Static_assert(offsetof(KDEVICE_QUEUE, DeviceListHead) == 8, "KDEVICE_QUEUE.DeviceListHead@8");
_Static_assert(offsetof(KDEVICE_QUEUE, Lock) == 24, "KDEVICE_QUEUE.Lock@24");
_Static_assert(offsetof(KDEVICE_QUEUE, Busy) == 32, "KDEVICE_QUEUE.Busy@32");

typedef struct _KDEVICE_QUEUE_ENTRY
{
    LIST_ENTRY DeviceListEntry;
    ULONG SortKey;
    BOOLEAN Inserted;
} KDEVICE_QUEUE_ENTRY, *PKDEVICE_QUEUE_ENTRY, *PRKDEVICE_QUEUE_ENTRY;

_Static_assert(sizeof(KDEVICE_QUEUE_ENTRY) == 24, "KDEVICE_QUEUE_ENTRY is 24 bytes");
_Static_assert(offsetof(KDEVICE_QUEUE_ENTRY, DeviceListEntry) == 0,
               "KDEVICE_QUEUE_ENTRY.DeviceListEntry@0");
_Static_assert(offsetof(KDEVICE_QUEUE_ENTRY, SortKey) == 16, "KDEVICE_QUEUE_ENTRY.SortKey@16");
_Static_assert(offsetof(KDEVICE_QUEUE_ENTRY, Inserted) == 20, "KDEVICE_QUEUE_ENTRY.Inserted@20");

/* Defined, each with its contract above it, in kernel/ke/devqueue.c. */
VOID KeInitializeDeviceQueue(PKDEVICE_QUEUE DeviceQueue);

BOOLEAN KeInsertDeviceQueue(PKDEVICE_QUEUE DeviceQueue, PKDEVICE_QUEUE_ENTRY DeviceQueueEntry);

BOOLEAN KeInsertByKeyDeviceQueue(PKDEVICE_QUEUE DeviceQueue, PKDEVICE_QUEUE_ENTRY DeviceQueueEntry,
                                 ULONG SortKey);

PKDEVICE_QUEUE_ENTRY KeRemoveDeviceQueue(PKDEVICE_QUEUE DeviceQueue);

PKDEVICE_QUEUE_ENTRY KeRemoveByKeyDeviceQueue(PKDEVICE_QUEUE DeviceQueue, ULONG SortKey);

PKDEVICE_QUEUE_ENTRY KeRemoveByKeyDeviceQueueIfBusy(PKDEVICE_QUEUE DeviceQueue, ULONG SortKey);

BOOLEAN KeRemoveEntryDeviceQueue(PKDEVICE_QUEUE DeviceQueue, PKDEVICE_QUEUE_ENTRY DeviceQueueEntry);

/* ---------------------------------------------------------------- strings */

typedef struct _UNICODE_STRING
{
    USHORT Length;        // bytes, excluding any terminator
    USHORT MaximumLength; // bytes in Buffer
    PWSTR Buffer;
} UNICODE_STRING, *PUNICODE_STRING;

typedef const UNICODE_STRING *PCUNICODE_STRING;

/* A UNICODE_STRING initialiser for a L"..." literal (needs -fshort-wchar). */
#define RTL_CONSTANT_STRING(Literal)                                                               \
    {                                                                                              \
        sizeof(Literal) - sizeof((Literal)[0]), sizeof(Literal), (PWSTR)(Literal)                  \
    }

/* Defined, each with its contract above it, in kernel/ex/rtl.c. */
VOID RtlInitUnicodeString(PUNICODE_STRING DestinationString, PCWSTR SourceString OPTIONAL);

/* ---------------------------------------------------------------- I/O manager types */

typedef struct _IRP *PIRP;
typedef struct _DEVICE_OBJECT *PDEVICE_OBJECT;
typedef struct _DRIVER_OBJECT *PDRIVER_OBJECT;
typedef struct _IO_STACK_LOCATION *PIO_STACK_LOCATION;

/* Objects Spindle does not implement; pointers to them exist only for layout. */
typedef struct _MDL *PMDL;
typedef struct _ETHREAD *PETHREAD;
typedef struct _FILE_OBJECT *PFILE_OBJECT;
typedef struct _IO_TIMER *PIO_TIMER;
typedef struct _VPB *PVPB;
typedef struct _IO_SECURITY_CONTEXT *PIO_SECURITY_CONTEXT;
typedef struct _FAST_IO_DISPATCH *PFAST_IO_DISPATCH;

typedef ULONG DEVICE_TYPE;

#define IO_TYPE_ADAPTER                 1
#define IO_TYPE_CONTROLLER              2
#define IO_TYPE_DEVICE                  3
#define IO_TYPE_DRIVER                  4
#define IO_TYPE_FILE                    5
#define IO_TYPE_IRP                     6
#define IO_TYPE_DEVICE_OBJECT_EXTENSION 13

/* Priority boosts for IoCompleteRequest and KeSetEvent (no scheduler: recorded only). */
#define IO_NO_INCREMENT     0
#define EVENT_INCREMENT     1
#define IO_DISK_INCREMENT   1
#define IO_SERIAL_INCREMENT 2

typedef struct _IO_STATUS_BLOCK
{
    union
    {
        NTSTATUS Status;
        PVOID Pointer;
    };
    ULONG_PTR Information;
} IO_STATUS_BLOCK, *PIO_STATUS_BLOCK;

_Static_assert(sizeof(IO_STATUS_BLOCK) == 16, "IO_STATUS_BLOCK is 16 bytes");

typedef VOID (*PIO_APC_ROUTINE)(PVOID ApcContext, PIO_STATUS_BLOCK IoStatusBlock, ULONG Reserved);

/* Driver callbacks. */

/* Driver entry: called by IoCreateDriver at PASSIVE_LEVEL; fills in the dispatch table. */
typedef NTSTATUS DRIVER_INITIALIZE(struct _DRIVER_OBJECT *DriverObject,
                                   PUNICODE_STRING RegistryPath);
typedef DRIVER_INITIALIZE *PDRIVER_INITIALIZE;

/* StartIo: starts Irp on the device; runs at DISPATCH_LEVEL. */
typedef VOID DRIVER_STARTIO(struct _DEVICE_OBJECT *DeviceObject, struct _IRP *Irp);
typedef DRIVER_STARTIO *PDRIVER_STARTIO;

/* Unload: releases what the driver holds; PASSIVE_LEVEL. */
typedef VOID DRIVER_UNLOAD(struct _DRIVER_OBJECT *DriverObject);
typedef DRIVER_UNLOAD *PDRIVER_UNLOAD;

/* Dispatch routine for one IRP_MJ_* code; IRQL as the caller of IoCallDriver (<= DISPATCH). */
typedef NTSTATUS DRIVER_DISPATCH(struct _DEVICE_OBJECT *DeviceObject, struct _IRP *Irp);
typedef DRIVER_DISPATCH *PDRIVER_DISPATCH;

/*
 * Cancel routine: entered at DISPATCH_LEVEL holding the cancel spin lock, which
 * it must release with IoReleaseCancelSpinLock(Irp->CancelIrql).
 */
typedef VOID DRIVER_CANCEL(struct _DEVICE_OBJECT *DeviceObject, struct _IRP *Irp);
typedef DRIVER_CANCEL *PDRIVER_CANCEL;

/* AddDevice (PnP): unused by Spindle, kept for DRIVER_EXTENSION's layout. */
typedef NTSTATUS DRIVER_ADD_DEVICE(struct _DRIVER_OBJECT *DriverObject,
                                   struct _DEVICE_OBJECT *PhysicalDeviceObject);
typedef DRIVER_ADD_DEVICE *PDRIVER_ADD_DEVICE;

/*
 * Completion routine: called by IoCompleteRequest at its caller's IRQL
 * (<= DISPATCH_LEVEL). STATUS_MORE_PROCESSING_REQUIRED stops completion; the
 * IRP then belongs to the routine.
 */
typedef NTSTATUS IO_COMPLETION_ROUTINE(struct _DEVICE_OBJECT *DeviceObject, struct _IRP *Irp,
                                       PVOID Context);
typedef IO_COMPLETION_ROUTINE *PIO_COMPLETION_ROUTINE;

typedef enum _IO_ALLOCATION_ACTION
{
    KeepObject = 1,
    DeallocateObject = 2,
    DeallocateObjectKeepRegisters = 3
} IO_ALLOCATION_ACTION;

/* DMA adapter callback (not implemented by Spindle; kept for WAIT_CONTEXT_BLOCK). */
typedef IO_ALLOCATION_ACTION DRIVER_CONTROL(struct _DEVICE_OBJECT *DeviceObject, struct _IRP *Irp,
                                            PVOID MapRegisterBase, PVOID Context);
typedef DRIVER_CONTROL *PDRIVER_CONTROL;

typedef struct _WAIT_CONTEXT_BLOCK
{
    KDEVICE_QUEUE_ENTRY WaitQueueEntry;
    PDRIVER_CONTROL DeviceRoutine;
    PVOID DeviceContext;
    ULONG NumberOfMapRegisters;
    PVOID DeviceObject;
    PVOID CurrentIrp;
    PKDPC BufferChainingDpc;
} WAIT_CONTEXT_BLOCK, *PWAIT_CONTEXT_BLOCK;

/* ---------------------------------------------------------------- IRPs */

#define IRP_MJ_CREATE                   0x00
#define IRP_MJ_CREATE_NAMED_PIPE        0x01
#define IRP_MJ_CLOSE                    0x02
#define IRP_MJ_READ                     0x03
#define IRP_MJ_WRITE                    0x04
#define IRP_MJ_QUERY_INFORMATION        0x05
#define IRP_MJ_SET_INFORMATION          0x06
#define IRP_MJ_QUERY_EA                 0x07
#define IRP_MJ_SET_EA                   0x08
#define IRP_MJ_FLUSH_BUFFERS            0x09
#define IRP_MJ_QUERY_VOLUME_INFORMATION 0x0a
#define IRP_MJ_SET_VOLUME_INFORMATION   0x0b
#define IRP_MJ_DIRECTORY_CONTROL        0x0c
#define IRP_MJ_FILE_SYSTEM_CONTROL      0x0d
#define IRP_MJ_DEVICE_CONTROL           0x0e
#define IRP_MJ_INTERNAL_DEVICE_CONTROL  0x0f
#define IRP_MJ_SHUTDOWN                 0x10
#define IRP_MJ_LOCK_CONTROL             0x11
#define IRP_MJ_CLEANUP                  0x12
#define IRP_MJ_CREATE_MAILSLOT          0x13
#define IRP_MJ_QUERY_SECURITY           0x14
#define IRP_MJ_SET_SECURITY             0x15
#define IRP_MJ_POWER                    0x16
#define IRP_MJ_SYSTEM_CONTROL           0x17
#define IRP_MJ_DEVICE_CHANGE            0x18
#define IRP_MJ_QUERY_QUOTA              0x19
#define IRP_MJ_SET_QUOTA                0x1a
#define IRP_MJ_PNP                      0x1b
#define IRP_MJ_PNP_POWER                IRP_MJ_PNP
#define IRP_MJ_MAXIMUM_FUNCTION         0x1b
#define IRP_MJ_SCSI                     IRP_MJ_INTERNAL_DEVICE_CONTROL

/* IO_STACK_LOCATION.Control bits. */
#define SL_PENDING_RETURNED  0x01
#define SL_ERROR_RETURNED    0x02
#define SL_INVOKE_ON_CANCEL  0x20
#define SL_INVOKE_ON_SUCCESS 0x40
#define SL_INVOKE_ON_ERROR   0x80

/* I/O control codes. */
#define METHOD_BUFFERED   0
#define METHOD_IN_DIRECT  1
#define METHOD_OUT_DIRECT 2
#define METHOD_NEITHER    3
#define FILE_ANY_ACCESS   0
#define FILE_READ_ACCESS  0x0001
#define FILE_WRITE_ACCESS 0x0002
#define CTL_CODE(DeviceType, Function, Method, Access)                                             \
    (((DeviceType) << 16) | ((Access) << 14) | ((Function) << 2) | (Method))

/*
 * The x64 IRP (sizeof 0xD0 as in Windows), minus the Tail.Apc union member. It
 * is followed in memory by StackCount IO_STACK_LOCATIONs; CurrentLocation is
 * 1-based and StackCount + 1 before the first IoCallDriver.
 */
typedef struct DECLSPEC_ALIGN(MEMORY_ALLOCATION_ALIGNMENT) _IRP
{
    CSHORT Type; // IO_TYPE_IRP
    USHORT Size; // bytes, stack locations included (IoSizeOfIrp)
    PMDL MdlAddress;
    ULONG Flags;
    union
    {
        struct _IRP *MasterIrp;
        LONG volatile IrpCount;
        PVOID SystemBuffer;
    } AssociatedIrp;
    LIST_ENTRY ThreadListEntry;
    IO_STATUS_BLOCK IoStatus;
    KPROCESSOR_MODE RequestorMode;
    BOOLEAN PendingReturned;
    CHAR StackCount;
    CHAR CurrentLocation;
    BOOLEAN Cancel;
    KIRQL CancelIrql;
    CCHAR ApcEnvironment;
    UCHAR AllocationFlags;
    PIO_STATUS_BLOCK UserIosb;
    PKEVENT UserEvent;
    union
    {
        struct
        {
            union
            {
                PIO_APC_ROUTINE UserApcRoutine;
                PVOID IssuingProcess;
            };
            PVOID UserApcContext;
        } AsynchronousParameters;
        LARGE_INTEGER AllocationSize;
    } Overlay;
    PDRIVER_CANCEL volatile CancelRoutine; // changed only by atomic exchange
    PVOID UserBuffer;
    union
    {
        struct
        {
            union
            {
                KDEVICE_QUEUE_ENTRY DeviceQueueEntry;
                struct
                {
                    PVOID DriverContext[4]; // the driver's while it owns the IRP; CSQ uses [3]
                };
            };
            PETHREAD Thread;
            PCHAR AuxiliaryBuffer;
            struct
            {
                LIST_ENTRY ListEntry;
                union
                {
                    struct _IO_STACK_LOCATION *CurrentStackLocation;
                    ULONG PacketType;
                };
            };
            PFILE_OBJECT OriginalFileObject;
        } Overlay;
        PVOID CompletionKey;
    } Tail;
} IRP;

_Static_assert(offsetof(IRP, Type) == 0x00, "IRP.Type@0x00");
_Static_assert(offsetof(IRP, ThreadListEntry) == 0x20, "IRP.ThreadListEntry@0x20");
_Static_assert(offsetof(IRP, IoStatus) == 0x30, "IRP.IoStatus@0x30");
_Static_assert(offsetof(IRP, PendingReturned) == 0x41, "IRP.PendingReturned@0x41");
_Static_assert(offsetof(IRP, StackCount) == 0x42, "IRP.StackCount@0x42");
_Static_assert(offsetof(IRP, CurrentLocation) == 0x43, "IRP.CurrentLocation@0x43");
_Static_assert(offsetof(IRP, Cancel) == 0x44, "IRP.Cancel@0x44");
_Static_assert(offsetof(IRP, CancelIrql) == 0x45, "IRP.CancelIrql@0x45");
_Static_assert(offsetof(IRP, UserEvent) == 0x50, "IRP.UserEvent@0x50");
_Static_assert(offsetof(IRP, CancelRoutine) == 0x68, "IRP.CancelRoutine@0x68");
_Static_assert(offsetof(IRP, Tail.Overlay.DeviceQueueEntry) == 0x78, "IRP.Tail@0x78");
_Static_assert(offsetof(IRP, Tail.Overlay.ListEntry) == 0xA8, "IRP.Tail.Overlay.ListEntry@0xA8");
_Static_assert(offsetof(IRP, Tail.Overlay.CurrentStackLocation) == 0xB8,
               "IRP.Tail.Overlay.CurrentStackLocation@0xB8");
_Static_assert(sizeof(IRP) == 0xD0, "IRP is 0xD0 bytes");

typedef struct _IO_STACK_LOCATION
{
    UCHAR MajorFunction; // IRP_MJ_*
    UCHAR MinorFunction;
    UCHAR Flags;
    UCHAR Control; // SL_PENDING_RETURNED, SL_INVOKE_ON_*
    union
    {
        struct
        {
            PIO_SECURITY_CONTEXT SecurityContext;
            ULONG Options;
            USHORT POINTER_ALIGNMENT FileAttributes;
            USHORT ShareAccess;
            ULONG POINTER_ALIGNMENT EaLength;
        } Create;
        struct
        {
            ULONG Length;
            ULONG POINTER_ALIGNMENT Key;
            ULONG Flags;
            LARGE_INTEGER ByteOffset;
        } Read;
        struct
        {
            ULONG Length;
            ULONG POINTER_ALIGNMENT Key;
            ULONG Flags;
            LARGE_INTEGER ByteOffset;
        } Write;
        struct
        {
            ULONG OutputBufferLength;
            ULONG POINTER_ALIGNMENT InputBufferLength;
            ULONG POINTER_ALIGNMENT IoControlCode;
            PVOID Type3InputBuffer;
        } DeviceIoControl;
        struct
        {
            PVOID Argument1;
            PVOID Argument2;
            PVOID Argument3;
            PVOID Argument4;
        } Others;
    } Parameters;
    PDEVICE_OBJECT DeviceObject; // the device this location was sent to
    PFILE_OBJECT FileObject;
    PIO_COMPLETION_ROUTINE CompletionRoutine;
    PVOID Context;
} IO_STACK_LOCATION;

_Static_assert(offsetof(IO_STACK_LOCATION, Parameters) == 8, "IO_STACK_LOCATION.Parameters@8");
_Static_assert(offsetof(IO_STACK_LOCATION, Parameters.Read.ByteOffset) == 24,
               "IO_STACK_LOCATION.Parameters.Read.ByteOffset@24");
_Static_assert(offsetof(IO_STACK_LOCATION, DeviceObject) == 40,
               "IO_STACK_LOCATION.DeviceObject@40");
_Static_assert(offsetof(IO_STACK_LOCATION, CompletionRoutine) == 56,
               "IO_STACK_LOCATION.CompletionRoutine@56");
_Static_assert(sizeof(IO_STACK_LOCATION) == 72, "IO_STACK_LOCATION is 72 bytes");

/* Bytes needed for an IRP with StackSize stack locations. */
#define IoSizeOfIrp(StackSize) ((USHORT)(sizeof(IRP) + ((StackSize) * (sizeof(IO_STACK_LOCATION)))))

/* IRP.AllocationFlags (the DDK's values), set by IoAllocateIrp. */
#define IRP_QUOTA_CHARGED          0x01 // quota was charged for it (Spindle has no quota)
#define IRP_ALLOCATED_MUST_SUCCEED 0x02 // from the must-succeed reserve (not in Spindle)
#define IRP_ALLOCATED_FIXED_SIZE   0x04 // one of the lookaside sizes: IoFreeIrp may cache it
#define IRP_LOOKASIDE_ALLOCATION   0x08 // taken from a lookaside list by a ChargeQuota caller

/* ---------------------------------------------------------------- device and driver objects */

/* DEVICE_OBJECT.Flags */
#define DO_VERIFY_VOLUME         0x00000002
#define DO_BUFFERED_IO           0x00000004
#define DO_EXCLUSIVE             0x00000008
#define DO_DIRECT_IO             0x00000010
#define DO_MAP_IO_BUFFER         0x00000020
#define DO_DEVICE_INITIALIZING   0x00000080
#define DO_SHUTDOWN_REGISTERED   0x00000800
#define DO_BUS_ENUMERATED_DEVICE 0x00001000
#define DO_POWER_PAGABLE         0x00002000
#define DO_POWER_INRUSH          0x00004000

/* DEVICE_OBJECT.Characteristics, DeviceType */
#define FILE_DEVICE_SECURE_OPEN 0x00000100
#define FILE_DEVICE_UNKNOWN     0x00000022

/* DEVOBJ_EXTENSION.ExtensionFlags (deletion state) and StartIoFlags (StartIo state). */
#define DOE_UNLOAD_PENDING   0x00000001
#define DOE_DELETE_PENDING   0x00000002
#define DOE_REMOVE_PENDING   0x00000004
#define DOE_REMOVE_PROCESSED 0x00000008
#define DOE_START_PENDING    0x00000010
#define DOE_SIO_NO_KEY       0x00000020 // a deferred IoStartNextPacket is recorded
#define DOE_SIO_WITH_KEY     0x00000040 // a deferred IoStartNextPacketByKey (StartIoKey)
#define DOE_SIO_CANCELABLE   0x00000080 // ... and it was Cancelable
#define DOE_SIO_DEFERRED     0x00000100 // IoSetStartIoAttributes(DeferredStartIo = TRUE)
#define DOE_SIO_NO_CANCEL    0x00000200 // IoSetStartIoAttributes(NonCancelable = TRUE)

/*
 * The I/O manager's per-device state (the DDK shows only the first three
 * fields). Allocated and owned by IoCreateDevice; drivers do not touch it.
 */
typedef struct _DEVOBJ_EXTENSION
{
    CSHORT Type; // IO_TYPE_DEVICE_OBJECT_EXTENSION
    USHORT Size;
    struct _DEVICE_OBJECT *DeviceObject;
    ULONG ExtensionFlags; // DOE_UNLOAD_PENDING ... DOE_START_PENDING
    ULONG StartIoFlags;   // DOE_SIO_*
    LONG StartIoCount;    // StartIo calls in progress (deferred StartIo runs at 0)
    ULONG StartIoKey;     // key of a deferred IoStartNextPacketByKey
} DEVOBJ_EXTENSION, *PDEVOBJ_EXTENSION;

/* The x64 DEVICE_OBJECT (same offsets and size as Windows). */
typedef struct DECLSPEC_ALIGN(MEMORY_ALLOCATION_ALIGNMENT) _DEVICE_OBJECT
{
    CSHORT Type; // IO_TYPE_DEVICE
    USHORT Size; // sizeof(DEVICE_OBJECT) + the device extension
    LONG ReferenceCount;
    struct _DRIVER_OBJECT *DriverObject;
    struct _DEVICE_OBJECT *NextDevice; // the driver's next device
    struct _DEVICE_OBJECT *AttachedDevice;
    struct _IRP *CurrentIrp; // the IRP StartIo is working on (IoStartPacket)
    PIO_TIMER Timer;
    ULONG Flags; // DO_*
    ULONG Characteristics;
    PVPB volatile Vpb;
    PVOID DeviceExtension; // DeviceExtensionSize bytes, zeroed, 16-aligned
    DEVICE_TYPE DeviceType;
    CCHAR StackSize; // stack locations an IRP for this device needs
    union
    {
        LIST_ENTRY ListEntry;
        WAIT_CONTEXT_BLOCK Wcb;
    } Queue;
    ULONG AlignmentRequirement;
    KDEVICE_QUEUE DeviceQueue; // the StartIo queue (IoStartPacket)
    KDPC Dpc;                  // for the driver's DpcForIsr
    ULONG ActiveThreadCount;
    PVOID SecurityDescriptor;
    KEVENT DeviceLock;
    USHORT SectorSize;
    USHORT Spare1;
    struct _DEVOBJ_EXTENSION *DeviceObjectExtension;
    PVOID Reserved;
} DEVICE_OBJECT;

_Static_assert(offsetof(DEVICE_OBJECT, CurrentIrp) == 0x20, "DEVICE_OBJECT.CurrentIrp@0x20");
_Static_assert(offsetof(DEVICE_OBJECT, DeviceExtension) == 0x40,
               "DEVICE_OBJECT.DeviceExtension@0x40");
_Static_assert(offsetof(DEVICE_OBJECT, StackSize) == 0x4C, "DEVICE_OBJECT.StackSize@0x4C");
_Static_assert(offsetof(DEVICE_OBJECT, DeviceQueue) == 0xA0, "DEVICE_OBJECT.DeviceQueue@0xA0");
_Static_assert(offsetof(DEVICE_OBJECT, Dpc) == 0xC8, "DEVICE_OBJECT.Dpc@0xC8");
_Static_assert(offsetof(DEVICE_OBJECT, DeviceObjectExtension) == 0x138,
               "DEVICE_OBJECT.DeviceObjectExtension@0x138");
_Static_assert(sizeof(DEVICE_OBJECT) == 0x150, "DEVICE_OBJECT is 0x150 bytes");

typedef struct _DRIVER_EXTENSION
{
    struct _DRIVER_OBJECT *DriverObject;
    PDRIVER_ADD_DEVICE AddDevice;
    ULONG Count;
    UNICODE_STRING ServiceKeyName;
} DRIVER_EXTENSION, *PDRIVER_EXTENSION;

/* The x64 DRIVER_OBJECT (same offsets and size as Windows). */
typedef struct _DRIVER_OBJECT
{
    CSHORT Type;                 // IO_TYPE_DRIVER
    CSHORT Size;                 // sizeof(DRIVER_OBJECT)
    PDEVICE_OBJECT DeviceObject; // first of the driver's devices (newest first)
    ULONG Flags;
    PVOID DriverStart;
    ULONG DriverSize;
    PVOID DriverSection;
    PDRIVER_EXTENSION DriverExtension;
    UNICODE_STRING DriverName;
    PUNICODE_STRING HardwareDatabase;
    PFAST_IO_DISPATCH FastIoDispatch;
    PDRIVER_INITIALIZE DriverInit;
    PDRIVER_STARTIO DriverStartIo;
    PDRIVER_UNLOAD DriverUnload;
    PDRIVER_DISPATCH MajorFunction[IRP_MJ_MAXIMUM_FUNCTION + 1];
} DRIVER_OBJECT;

_Static_assert(offsetof(DRIVER_OBJECT, DriverExtension) == 0x30,
               "DRIVER_OBJECT.DriverExtension@0x30");
_Static_assert(offsetof(DRIVER_OBJECT, DriverStartIo) == 0x60, "DRIVER_OBJECT.DriverStartIo@0x60");
_Static_assert(offsetof(DRIVER_OBJECT, MajorFunction) == 0x70, "DRIVER_OBJECT.MajorFunction@0x70");
_Static_assert(sizeof(DRIVER_OBJECT) == 0x150, "DRIVER_OBJECT is 0x150 bytes");

/* ---------------------------------------------------------------- I/O manager routines */

/* Defined, each with its contract above it, in kernel/io/driver.c. */
NTSTATUS IoCreateDriver(PUNICODE_STRING DriverName OPTIONAL,
                        PDRIVER_INITIALIZE InitializationFunction);

VOID IoDeleteDriver(PDRIVER_OBJECT DriverObject);

NTSTATUS IoCreateDevice(PDRIVER_OBJECT DriverObject, ULONG DeviceExtensionSize,
                        PUNICODE_STRING DeviceName OPTIONAL, DEVICE_TYPE DeviceType,
                        ULONG DeviceCharacteristics, BOOLEAN Exclusive,
                        PDEVICE_OBJECT *DeviceObject);

VOID IoDeleteDevice(PDEVICE_OBJECT DeviceObject);

/* Defined, each with its contract above it, in kernel/io/irp.c. */
PIRP IoAllocateIrp(CCHAR StackSize, BOOLEAN ChargeQuota);

VOID IoInitializeIrp(PIRP Irp, USHORT PacketSize, CCHAR StackSize);

VOID IoFreeIrp(PIRP Irp);

VOID IoReuseIrp(PIRP Irp, NTSTATUS Iostatus);

NTSTATUS IoCallDriver(PDEVICE_OBJECT DeviceObject, PIRP Irp);

VOID IoCompleteRequest(PIRP Irp, CCHAR PriorityBoost);

/* Defined, each with its contract above it, in kernel/io/cancel.c. */
VOID IoAcquireCancelSpinLock(PKIRQL Irql);

VOID IoReleaseCancelSpinLock(KIRQL Irql);

BOOLEAN IoCancelIrp(PIRP Irp);

/* Defined, each with its contract above it, in kernel/io/startio.c. */
VOID IoStartPacket(PDEVICE_OBJECT DeviceObject, PIRP Irp, PULONG Key OPTIONAL,
                   PDRIVER_CANCEL CancelFunction OPTIONAL);

VOID IoStartNextPacket(PDEVICE_OBJECT DeviceObject, BOOLEAN Cancelable);

VOID IoStartNextPacketByKey(PDEVICE_OBJECT DeviceObject, BOOLEAN Cancelable, ULONG Key);

VOID IoSetStartIoAttributes(PDEVICE_OBJECT DeviceObject, BOOLEAN DeferredStartIo,
                            BOOLEAN NonCancelable);

/* Stack-location helpers (inline in the DDK too). The caller owns Irp. */

/* Returns the stack location of the driver the IRP is at now. */
static inline PIO_STACK_LOCATION
IoGetCurrentIrpStackLocation(PIRP Irp)
{
    ASSERT(Irp->CurrentLocation <= Irp->StackCount + 1);
    return Irp->Tail.Overlay.CurrentStackLocation;
}

/* Returns the stack location for the next-lower driver. */
static inline PIO_STACK_LOCATION
IoGetNextIrpStackLocation(PIRP Irp)
{
    return Irp->Tail.Overlay.CurrentStackLocation - 1;
}

/* Makes the next location current (for drivers that call their own routines). */
static inline VOID
IoSetNextIrpStackLocation(PIRP Irp)
{
    ASSERT(Irp->CurrentLocation > 0);
    Irp->CurrentLocation--;
    Irp->Tail.Overlay.CurrentStackLocation--;
}

/* Copies the current location to the next, minus CompletionRoutine and Context; Control = 0. */
static inline VOID
IoCopyCurrentIrpStackLocationToNext(PIRP Irp)
{
    PIO_STACK_LOCATION Current = IoGetCurrentIrpStackLocation(Irp);
    PIO_STACK_LOCATION Next = IoGetNextIrpStackLocation(Irp);

    RtlCopyMemory(Next, Current, offsetof(IO_STACK_LOCATION, CompletionRoutine));
    Next->Control = 0;
}

/* Lets the next-lower driver reuse the current location (IoCallDriver moves back to it). */
static inline VOID
IoSkipCurrentIrpStackLocation(PIRP Irp)
{
    ASSERT(Irp->CurrentLocation <= Irp->StackCount);
    Irp->CurrentLocation++;
    Irp->Tail.Overlay.CurrentStackLocation++;
}

/* Sets the completion routine and its SL_INVOKE_ON_* flags in the next location. */
static inline VOID
IoSetCompletionRoutine(PIRP Irp, PIO_COMPLETION_ROUTINE CompletionRoutine, PVOID Context,
                       BOOLEAN InvokeOnSuccess, BOOLEAN InvokeOnError, BOOLEAN InvokeOnCancel)
{
    PIO_STACK_LOCATION Next = IoGetNextIrpStackLocation(Irp);

    Next->CompletionRoutine = CompletionRoutine;
    Next->Context = Context;
    Next->Control = 0;
    if (InvokeOnSuccess)
    {
        Next->Control = SL_INVOKE_ON_SUCCESS;
    }
    if (InvokeOnError)
    {
        Next->Control |= SL_INVOKE_ON_ERROR;
    }
    if (InvokeOnCancel)
    {
        Next->Control |= SL_INVOKE_ON_CANCEL;
    }
}

/* Marks the current location pending (the dispatch routine will return STATUS_PENDING). */
static inline VOID
IoMarkIrpPending(PIRP Irp)
{
    IoGetCurrentIrpStackLocation(Irp)->Control |= SL_PENDING_RETURNED;
}

/*
 * Atomically swaps Irp->CancelRoutine for CancelRoutine; returns the previous
 * routine (NULL: none, or IoCancelIrp has taken it). IRQL <= DISPATCH_LEVEL.
 */
static inline PDRIVER_CANCEL
IoSetCancelRoutine(PIRP Irp, PDRIVER_CANCEL CancelRoutine)
{
    return (PDRIVER_CANCEL)(ULONG_PTR)InterlockedExchangePointer(
        (PVOID volatile *)&Irp->CancelRoutine, (PVOID)(ULONG_PTR)CancelRoutine);
}

/* ---------------------------------------------------------------- cancel-safe queues */

#define IO_TYPE_CSQ_IRP_CONTEXT 1
#define IO_TYPE_CSQ             2
#define IO_TYPE_CSQ_EX          3

typedef struct _IO_CSQ *PIO_CSQ;

/* The driver's queue callbacks; all but CompleteCanceledIrp run under its CSQ lock. */
typedef VOID IO_CSQ_INSERT_IRP(struct _IO_CSQ *Csq, PIRP Irp);
typedef IO_CSQ_INSERT_IRP *PIO_CSQ_INSERT_IRP;
typedef NTSTATUS IO_CSQ_INSERT_IRP_EX(struct _IO_CSQ *Csq, PIRP Irp, PVOID InsertContext);
typedef IO_CSQ_INSERT_IRP_EX *PIO_CSQ_INSERT_IRP_EX;
typedef VOID IO_CSQ_REMOVE_IRP(struct _IO_CSQ *Csq, PIRP Irp);
typedef IO_CSQ_REMOVE_IRP *PIO_CSQ_REMOVE_IRP;
/* Returns the IRP after Irp (the first if Irp is NULL) matching PeekContext, or NULL. */
typedef PIRP IO_CSQ_PEEK_NEXT_IRP(struct _IO_CSQ *Csq, PIRP Irp, PVOID PeekContext);
typedef IO_CSQ_PEEK_NEXT_IRP *PIO_CSQ_PEEK_NEXT_IRP;
typedef VOID IO_CSQ_ACQUIRE_LOCK(struct _IO_CSQ *Csq, PKIRQL Irql);
typedef IO_CSQ_ACQUIRE_LOCK *PIO_CSQ_ACQUIRE_LOCK;
typedef VOID IO_CSQ_RELEASE_LOCK(struct _IO_CSQ *Csq, KIRQL Irql);
typedef IO_CSQ_RELEASE_LOCK *PIO_CSQ_RELEASE_LOCK;
/* Completes a cancelled IRP (already removed from the queue); called without the lock. */
typedef VOID IO_CSQ_COMPLETE_CANCELED_IRP(struct _IO_CSQ *Csq, PIRP Irp);
typedef IO_CSQ_COMPLETE_CANCELED_IRP *PIO_CSQ_COMPLETE_CANCELED_IRP;

/* For IO_TYPE_CSQ_EX, CsqInsertIrp holds the PIO_CSQ_INSERT_IRP_EX routine. */
typedef struct _IO_CSQ
{
    ULONG Type; // IO_TYPE_CSQ or IO_TYPE_CSQ_EX
    PIO_CSQ_INSERT_IRP CsqInsertIrp;
    PIO_CSQ_REMOVE_IRP CsqRemoveIrp;
    PIO_CSQ_PEEK_NEXT_IRP CsqPeekNextIrp;
    PIO_CSQ_ACQUIRE_LOCK CsqAcquireLock;
    PIO_CSQ_RELEASE_LOCK CsqReleaseLock;
    PIO_CSQ_COMPLETE_CANCELED_IRP CsqCompleteCanceledIrp;
    PVOID ReservePointer;
} IO_CSQ;

_Static_assert(sizeof(IO_CSQ) == 64, "IO_CSQ is 64 bytes");
_Static_assert(offsetof(IO_CSQ, Type) == 0, "IO_CSQ.Type@0");
_Static_assert(offsetof(IO_CSQ, CsqInsertIrp) == 8, "IO_CSQ.CsqInsertIrp@8");
_Static_assert(offsetof(IO_CSQ, CsqRemoveIrp) == 16, "IO_CSQ.CsqRemoveIrp@16");
_Static_assert(offsetof(IO_CSQ, CsqPeekNextIrp) == 24, "IO_CSQ.CsqPeekNextIrp@24");
_Static_assert(offsetof(IO_CSQ, CsqAcquireLock) == 32, "IO_CSQ.CsqAcquireLock@32");
_Static_assert(offsetof(IO_CSQ, CsqReleaseLock) == 40, "IO_CSQ.CsqReleaseLock@40");
_Static_assert(offsetof(IO_CSQ, CsqCompleteCanceledIrp) == 48, "IO_CSQ.CsqCompleteCanceledIrp@48");
_Static_assert(offsetof(IO_CSQ, ReservePointer) == 56, "IO_CSQ.ReservePointer@56");

typedef struct _IO_CSQ_IRP_CONTEXT
{
    ULONG Type; // IO_TYPE_CSQ_IRP_CONTEXT
    PIRP Irp;   // the queued IRP; NULL once removed or cancelled
    PIO_CSQ Csq;
} IO_CSQ_IRP_CONTEXT, *PIO_CSQ_IRP_CONTEXT;

_Static_assert(sizeof(IO_CSQ_IRP_CONTEXT) == 24, "IO_CSQ_IRP_CONTEXT is 24 bytes");
_Static_assert(offsetof(IO_CSQ_IRP_CONTEXT, Type) == 0, "IO_CSQ_IRP_CONTEXT.Type@0");
_Static_assert(offsetof(IO_CSQ_IRP_CONTEXT, Irp) == 8, "IO_CSQ_IRP_CONTEXT.Irp@8");
_Static_assert(offsetof(IO_CSQ_IRP_CONTEXT, Csq) == 16, "IO_CSQ_IRP_CONTEXT.Csq@16");

/* Defined, each with its contract above it, in kernel/io/csq.c. */
NTSTATUS IoCsqInitialize(PIO_CSQ Csq, PIO_CSQ_INSERT_IRP CsqInsertIrp,
                         PIO_CSQ_REMOVE_IRP CsqRemoveIrp, PIO_CSQ_PEEK_NEXT_IRP CsqPeekNextIrp,
                         PIO_CSQ_ACQUIRE_LOCK CsqAcquireLock, PIO_CSQ_RELEASE_LOCK CsqReleaseLock,
                         PIO_CSQ_COMPLETE_CANCELED_IRP CsqCompleteCanceledIrp);

NTSTATUS IoCsqInitializeEx(PIO_CSQ Csq, PIO_CSQ_INSERT_IRP_EX CsqInsertIrp,
                           PIO_CSQ_REMOVE_IRP CsqRemoveIrp, PIO_CSQ_PEEK_NEXT_IRP CsqPeekNextIrp,
                           PIO_CSQ_ACQUIRE_LOCK CsqAcquireLock, PIO_CSQ_RELEASE_LOCK CsqReleaseLock,
                           PIO_CSQ_COMPLETE_CANCELED_IRP CsqCompleteCanceledIrp);

VOID IoCsqInsertIrp(PIO_CSQ Csq, PIRP Irp, PIO_CSQ_IRP_CONTEXT Context OPTIONAL);

NTSTATUS IoCsqInsertIrpEx(PIO_CSQ Csq, PIRP Irp, PIO_CSQ_IRP_CONTEXT Context OPTIONAL,
                          PVOID InsertContext OPTIONAL);

PIRP IoCsqRemoveIrp(PIO_CSQ Csq, PIO_CSQ_IRP_CONTEXT Context);

PIRP IoCsqRemoveNextIrp(PIO_CSQ Csq, PVOID PeekContext OPTIONAL);
