/* SPDX-License-Identifier: MIT */
/*
 * Parsing for the kernel command line: unsigned numbers and key=value words
 * ("tests=KeSpinLock* seed=0x2a repeat=3 verbose").
 */
#include "lib.h"

static bool
parse_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Returns the value of hex digit c, or -1. */
static int
parse_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
    {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f')
    {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F')
    {
        return c - 'A' + 10;
    }
    return -1;
}

/*
 * Parses all len bytes at s (no NUL needed) as decimal, or hex after 0x/0X.
 * Rejects an empty string, a bare 0x, a sign, any other byte and a value past
 * UINT64_MAX. Returns whether it parsed; *out is written only then.
 */
bool
parse_u64(const char *s, size_t len, uint64_t *out)
{
    bool hex = len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
    uint64_t base = hex ? 16 : 10;
    uint64_t value = 0;
    size_t i = hex ? 2 : 0;

    if (len == 0)
    {
        return false;
    }
    for (; i < len; i++)
    {
        int digit = parse_hex_digit(s[i]);
        if (digit < 0 || (uint64_t)digit >= base)
        {
            return false;
        }
        if (value > (UINT64_MAX - (uint64_t)digit) / base)
        {
            return false;
        }
        value = value * base + (uint64_t)digit;
    }
    *out = value;
    return true;
}

/*
 * Finds key among the space-separated words of cmdline, as "key=value" or a
 * bare "key". The last such word wins, so appended options override earlier
 * ones. Returns a pointer into cmdline at the value and its length in *len
 * (len may be NULL); a bare key gives an empty value. NULL if key is absent.
 */
const char *
cmdline_get(const char *cmdline, const char *key, size_t *len)
{
    size_t key_len = key != NULL ? strlen(key) : 0;
    const char *found = NULL;
    size_t found_len = 0;
    const char *p = cmdline;

    if (cmdline == NULL || key_len == 0)
    {
        return NULL;
    }
    while (*p != '\0')
    {
        const char *word = p;
        size_t word_len;

        if (parse_is_space(*p))
        {
            p++;
            continue;
        }
        while (*p != '\0' && !parse_is_space(*p))
        {
            p++;
        }
        word_len = (size_t)(p - word);
        if (word_len >= key_len && memcmp(word, key, key_len) == 0 &&
            (word_len == key_len || word[key_len] == '='))
        {
            found = word_len == key_len ? word + key_len : word + key_len + 1;
            found_len = (size_t)(p - found);
        }
    }
    if (found != NULL && len != NULL)
    {
        *len = found_len;
    }
    return found;
}
