/* SPDX-License-Identifier: MIT */
/*
 * Zones, API.md §9: the obsolete fixed-block allocator over segments the
 * caller supplies. Each segment starts with a ZONE_SEGMENT_HEADER (16 bytes);
 * the rest is cut into BlockSize blocks, each pushed on Zone->FreeList by its
 * first 8 bytes, lowest address first, so the highest block is handed out
 * first. TotalSegmentSize sums 16 + blocks * BlockSize over all segments
 * (the offset the carving reached, not the size given). The unlocked
 * allocate/free and the ExIsFullZone / ExIsObjectInFirstZoneSegment macros
 * (with the DDK's first-segment quirk) are in wdm.h.
 *
 * Validation (STRICT, API.md §9): a segment that is NULL or not 8-aligned, a
 * segment size that is not a multiple of 8 or cannot hold the segment header
 * (project choice: such a segment would be overrun), a BlockSize below 8 (0
 * included) or not a multiple of 8, or larger than the segment: the routine
 * returns STATUS_INVALID_PARAMETER and writes nothing.
 */
#include "kernel/ex/ex.h"
#include "kernel/ke/ke.h"

static BOOLEAN
ExpIsValidZoneSegment(ULONG BlockSize, PVOID Segment, ULONG SegmentSize)
{
    if (Segment == NULL || ((ULONG_PTR)Segment & 7) != 0)
    {
        return FALSE;
    }
    if ((SegmentSize & 7) != 0 || SegmentSize < sizeof(ZONE_SEGMENT_HEADER))
    {
        return FALSE;
    }
    if (BlockSize < sizeof(SINGLE_LIST_ENTRY) || (BlockSize & 7) != 0 || BlockSize > SegmentSize)
    {
        return FALSE;
    }
    return TRUE;
}

/*
 * Links Segment at the head of Zone's segment list and pushes its blocks;
 * returns the bytes of the segment now accounted for (16 + n * BlockSize).
 */
static ULONG
ExpCarveZoneSegment(PZONE_HEADER Zone, PVOID Segment, ULONG SegmentSize)
{
    PZONE_SEGMENT_HEADER Header = (PZONE_SEGMENT_HEADER)Segment;
    ULONG BlockSize = Zone->BlockSize;
    ULONG Offset;

    Header->SegmentList.Next = Zone->SegmentList.Next;
    Header->Reserved = NULL;
    Zone->SegmentList.Next = &Header->SegmentList;
    for (Offset = sizeof(ZONE_SEGMENT_HEADER); Offset <= SegmentSize - BlockSize;
         Offset += BlockSize)
    {
        PushEntryList(&Zone->FreeList, (PSINGLE_LIST_ENTRY)((PUCHAR)Segment + Offset));
    }
    return Offset;
}

/*
 * Initialises Zone over InitialSegment: BlockSize, one segment, all its
 * blocks free. PASSIVE_LEVEL (any IRQL works: nothing is locked). Returns
 * STATUS_SUCCESS, or STATUS_INVALID_PARAMETER with Zone untouched when the
 * segment or the sizes fail the validation at the top of this file (segment
 * NULL or not 8-aligned; size not a multiple of 8 or below the header;
 * BlockSize below 8, not a multiple of 8 or larger than the segment).
 */
NTSTATUS
ExInitializeZone(PZONE_HEADER Zone, ULONG BlockSize, PVOID InitialSegment, ULONG InitialSegmentSize)
{
    if (!ExpIsValidZoneSegment(BlockSize, InitialSegment, InitialSegmentSize))
    {
        return STATUS_INVALID_PARAMETER;
    }
    Zone->BlockSize = BlockSize;
    Zone->FreeList.Next = NULL;
    Zone->SegmentList.Next = NULL;
    Zone->TotalSegmentSize = ExpCarveZoneSegment(Zone, InitialSegment, InitialSegmentSize);
    return STATUS_SUCCESS;
}

/*
 * Adds Segment at the head of Zone's segment list and pushes its blocks on
 * the free list. IRQL <= DISPATCH_LEVEL; the caller serialises with every
 * other user of Zone. Returns STATUS_SUCCESS, or STATUS_INVALID_PARAMETER
 * with Zone untouched.
 */
NTSTATUS
ExExtendZone(PZONE_HEADER Zone, PVOID Segment, ULONG SegmentSize)
{
    if (!ExpIsValidZoneSegment(Zone->BlockSize, Segment, SegmentSize))
    {
        return STATUS_INVALID_PARAMETER;
    }
    Zone->TotalSegmentSize += ExpCarveZoneSegment(Zone, Segment, SegmentSize);
    return STATUS_SUCCESS;
}

/*
 * ExExtendZone under Lock, the lock that also guards the zone's interlocked
 * allocate and free. Raises to DISPATCH_LEVEL as KeAcquireSpinLock does
 * (ReactOS), and also turns interrupts off, because those routines take Lock
 * with interrupts off at any IRQL, ISRs included. IRQL <= DISPATCH_LEVEL,
 * unchanged on return.
 */
NTSTATUS
ExInterlockedExtendZone(PZONE_HEADER Zone, PVOID Segment, ULONG SegmentSize, PKSPIN_LOCK Lock)
{
    KIRQL OldIrql;
    ULONG64 Flags;
    NTSTATUS Status;

    KiCheckIrqlAtMost(DISPATCH_LEVEL, Zone);
    OldIrql = KeRaiseIrqlToDpcLevel();
    Flags = KiAcquireSpinLockDisableInterrupts(Lock);
    Status = ExExtendZone(Zone, Segment, SegmentSize);
    KiReleaseSpinLockRestoreInterrupts(Lock, Flags);
    KeLowerIrql(OldIrql);
    return Status;
}

/* ExInterlockedPopEntryList(&Zone->FreeList, Lock): a free block, or NULL. Any IRQL. */
PVOID
ExInterlockedAllocateFromZone(PZONE_HEADER Zone, PKSPIN_LOCK Lock)
{
    return ExInterlockedPopEntryList(&Zone->FreeList, Lock);
}

/*
 * ExInterlockedPushEntryList(&Zone->FreeList, Block, Lock): returns the
 * previous first free block, NULL if the zone was full. Any IRQL.
 */
PVOID
ExInterlockedFreeToZone(PZONE_HEADER Zone, PVOID Block, PKSPIN_LOCK Lock)
{
    return ExInterlockedPushEntryList(&Zone->FreeList, (PSINGLE_LIST_ENTRY)Block, Lock);
}
