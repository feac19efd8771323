/* SPDX-License-Identifier: MIT */
/*
 * multi-processor helpers.
 */
#pragma once

#include <ktest.h>

const KTEST_CASE *KtCurrentTest(VOID);

