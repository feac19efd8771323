/* SPDX-License-Identifier: MIT */
/*
 * The executive's internal declarations (kernel/ex/): pool start-up and the
 * per-tag usage the test harness checks for leaks.
 */
#pragma once

#include <wdm.h>

typedef struct _EXP_POOL_TAG_USAGE
{
    ULONG Tag;
    LONG64 Allocations; // outstanding allocations
    LONG64 Bytes;       // outstanding bytes requested
} EXP_POOL_TAG_USAGE;

VOID ExpInitializePool(VOID);
ULONG ExpQueryPoolTags(EXP_POOL_TAG_USAGE *Usage, ULONG MaximumCount);
