/* SPDX-License-Identifier: MIT */
/*
 * The executive's internal declarations (kernel/ex/): pool start-up, the
 * per-tag usage the test harness checks for leaks, and the lookaside lists'
 * tuner and per-processor helpers.
 */
#pragma once

#include <wdm.h>

typedef struct _EXP_POOL_TAG_USAGE
{
    ULONG Tag;
    LONG64 Allocations; // outstanding allocations held by their callers
    LONG64 Bytes;       // outstanding bytes requested, likewise
    LONG64 Cached;      // allocations parked in pool-backed lookaside lists (not counted above)
} EXP_POOL_TAG_USAGE;

VOID ExpInitializePool(VOID);
ULONG ExpQueryPoolTags(EXP_POOL_TAG_USAGE *Usage, ULONG MaximumCount);

/* ---- lookaside lists (ex/lookaside.c) */

#define EXP_LOOKASIDE_MINIMUM_DEPTH 4    // where every list starts, and the tuner's floor
#define EXP_LOOKASIDE_MAXIMUM_DEPTH 256  // the tuner's ceiling
#define EXP_LOOKASIDE_SCAN_MS       1000 // the tuner's period

/* Starts the lookaside tuner (a periodic timer DPC); once, after the processors started. */
VOID ExpInitializeLookaside(VOID);

/*
 * The tuner's rule, for one list and one scan period: the depth for the next
 * period from the current one and the allocations and misses of this period.
 */
USHORT ExpComputeLookasideDepth(USHORT Depth, USHORT MaximumDepth, ULONG Allocates, ULONG Misses);

/* Scans the tuner has run since boot. */
extern volatile ULONG64 ExpLookasideScans;

/* Moves the blocks cached in pool-backed lookaside lists from Allocations to Cached. */
VOID ExpAccountLookasideCache(EXP_POOL_TAG_USAGE *Usage, ULONG Count);

/*
 * A per-processor list P in front of a shared list L (Windows' PP lookaside
 * lists): pop from P, else from L, counting misses on both; NULL when both are
 * empty. Push to P, else to L while below their depths; FALSE when both are full.
 * IRQL <= DISPATCH_LEVEL.
 */
PVOID ExpPopPerProcessorLookaside(PNPAGED_LOOKASIDE_LIST P, PNPAGED_LOOKASIDE_LIST L);
BOOLEAN ExpPushPerProcessorLookaside(PNPAGED_LOOKASIDE_LIST P, PNPAGED_LOOKASIDE_LIST L,
                                     PVOID Entry);

/* ---- pool (ex/pool.c, ex/specialpool.c) */

VOID ExpChargePoolTag(ULONG Tag, LONG64 Allocations, LONG64 Bytes);

/* Special pool (specialpool.c): `pool=special` on the kernel command line. */
extern BOOLEAN ExpSpecialPoolEnabled;
VOID ExpInitializeSpecialPool(VOID);
PVOID ExpAllocateSpecialPool(BOOLEAN Nx, SIZE_T NumberOfBytes, ULONG Tag);
VOID ExpFreeSpecialPool(PVOID P, ULONG Tag);
