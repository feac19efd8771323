/* SPDX-License-Identifier: MIT */
/*
 * A small deterministic PRNG for tests: splitmix64 (Steele, Lea and Flood,
 * "Fast splittable pseudorandom number generators", OOPSLA 2014).
 */
#include "lib.h"

#define PRNG_GOLDEN_GAMMA 0x9e3779b97f4a7c15ULL // 2^64 / golden ratio, odd
#define PRNG_MIX1         0xbf58476d1ce4e5b9ULL
#define PRNG_MIX2         0x94d049bb133111ebULL

/* Starts the sequence that seed selects; every seed, 0 included, is a good one. */
void
prng_seed(prng_t *p, uint64_t seed)
{
    p->state = seed;
}

/* Returns the next 64 uniformly distributed bits and advances p. */
uint64_t
prng_next(prng_t *p)
{
    uint64_t z;

    p->state += PRNG_GOLDEN_GAMMA;
    z = p->state;
    z = (z ^ (z >> 30)) * PRNG_MIX1;
    z = (z ^ (z >> 27)) * PRNG_MIX2;
    return z ^ (z >> 31);
}

/*
 * Returns a uniform value in [0, bound), or 0 when bound is 0. Unbiased: draws
 * below 2^64 mod bound are rejected, so every residue has the same number of
 * preimages; fewer than one draw in two is rejected whatever the bound.
 */
uint64_t
prng_below(prng_t *p, uint64_t bound)
{
    uint64_t reject_below;
    uint64_t r;

    if (bound == 0)
    {
        return 0;
    }
    reject_below = (0 - bound) % bound;
    do
    {
        r = prng_next(p);
    } while (r < reject_below);
    return r % bound;
}
