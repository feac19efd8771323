/* SPDX-License-Identifier: MIT */
/*
 * Spindle's freestanding library: mem* and string routines, formatted output,
 * a PRNG, glob matching and command-line parsing. Every routine here may run at
 * any IRQL on any processor, takes no locks and touches only what it is given.
 */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LIB_PRINTF(FormatIndex, FirstArg) __attribute__((format(printf, FormatIndex, FirstArg)))

/* ---- lib/string.c: the C names, which the compiler may also emit calls to */

void *memset(void *dst, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t maxlen);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
char *strchr(const char *s, int c);
char *strrchr(const char *s, int c);
size_t strlcpy(char *dst, const char *src, size_t size);

/* ---- lib/format.c: one printf engine (d i u x X o c s p %%, no floating point) */

/* Receives each output character in order; ctx is the caller's. */
typedef void (*fmt_putc_fn)(char c, void *ctx);

int vcbprintf(fmt_putc_fn putc, void *ctx, const char *fmt, va_list ap) LIB_PRINTF(3, 0);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) LIB_PRINTF(3, 0);
int snprintf(char *buf, size_t size, const char *fmt, ...) LIB_PRINTF(3, 4);

/* ---- lib/random.c: splitmix64; not thread-safe, each caller owns its state */

typedef struct
{
    uint64_t state;
} prng_t;

void prng_seed(prng_t *p, uint64_t seed);
uint64_t prng_next(prng_t *p);
uint64_t prng_below(prng_t *p, uint64_t bound);

/* ---- lib/glob.c */

bool glob_match(const char *pattern, const char *text);

/* ---- lib/parse.c */

bool parse_u64(const char *s, size_t len, uint64_t *out);
const char *cmdline_get(const char *cmdline, const char *key, size_t *len);
