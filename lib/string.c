/* SPDX-License-Identifier: MIT */
/*
 * The mem* and str* routines. The compiler emits calls to memset, memcpy,
 * memmove and memcmp by itself, so none of them may call back into those four.
 */
#include "lib.h"

/*
 * GCC's loop distribution turns a byte loop back into a call to memset or
 * memcpy, which here would be the routine itself. clang does not rewrite loops
 * into library calls under -ffreestanding (-fno-builtin), so it needs nothing.
 */
#if defined(__GNUC__) && !defined(__clang__)
#define STRING_NO_IDIOM __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define STRING_NO_IDIOM
#endif

/* A 64-bit word at any byte address; may_alias because it overlays any type. */
typedef uint64_t __attribute__((aligned(1), may_alias)) string_word_t;

#define STRING_WORD       sizeof(string_word_t)
#define STRING_BYTE_SPLAT 0x0101010101010101ULL

/* Copies low to high; safe when dst does not start inside (src, src + n). */
static STRING_NO_IDIOM void
string_copy_forward(unsigned char *d, const unsigned char *s, size_t n)
{
    for (; n >= STRING_WORD; n -= STRING_WORD, d += STRING_WORD, s += STRING_WORD)
    {
        *(string_word_t *)d = *(const string_word_t *)s;
    }
    for (; n != 0; n--)
    {
        *d++ = *s++;
    }
}

/* Copies high to low; safe when dst does not start before src. */
static STRING_NO_IDIOM void
string_copy_backward(unsigned char *d, const unsigned char *s, size_t n)
{
    d += n;
    s += n;
    for (; n >= STRING_WORD; n -= STRING_WORD)
    {
        d -= STRING_WORD;
        s -= STRING_WORD;
        *(string_word_t *)d = *(const string_word_t *)s;
    }
    for (; n != 0; n--)
    {
        *--d = *--s;
    }
}

/* Fills n bytes at dst with (unsigned char)c. Returns dst. */
STRING_NO_IDIOM void *
memset(void *dst, int c, size_t n)
{
    unsigned char *d = dst;
    unsigned char byte = (unsigned char)c;
    uint64_t word = byte * STRING_BYTE_SPLAT;

    for (; n >= STRING_WORD; n -= STRING_WORD, d += STRING_WORD)
    {
        *(string_word_t *)d = word;
    }
    for (; n != 0; n--)
    {
        *d++ = byte;
    }
    return dst;
}

/* Copies n bytes from src to dst, which must not overlap. Returns dst. */
STRING_NO_IDIOM void *
memcpy(void *dst, const void *src, size_t n)
{
    string_copy_forward(dst, src, n);
    return dst;
}

/* Copies n bytes from src to dst as if through a temporary; they may overlap. Returns dst. */
STRING_NO_IDIOM void *
memmove(void *dst, const void *src, size_t n)
{
    /* Unsigned distance: at least n when dst is below src or past its end. */
    if ((uintptr_t)dst - (uintptr_t)src >= n)
    {
        string_copy_forward(dst, src, n);
    }
    else if (dst != src)
    {
        string_copy_backward(dst, src, n);
    }
    return dst;
}

/* Compares n bytes as unsigned char. Returns <0, 0 or >0 as a sorts before, equal or after b. */
STRING_NO_IDIOM int
memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a;
    const unsigned char *y = b;

    for (; n >= STRING_WORD; n -= STRING_WORD, x += STRING_WORD, y += STRING_WORD)
    {
        if (*(const string_word_t *)x != *(const string_word_t *)y)
        {
            break;
        }
    }
    for (; n != 0; n--, x++, y++)
    {
        if (*x != *y)
        {
            return (int)*x - (int)*y;
        }
    }
    return 0;
}

/* Returns the number of bytes before the terminating NUL. */
STRING_NO_IDIOM size_t
strlen(const char *s)
{
    const char *p = s;

    while (*p != '\0')
    {
        p++;
    }
    return (size_t)(p - s);
}

/* Returns strlen(s), but reads at most maxlen bytes and returns at most maxlen. */
STRING_NO_IDIOM size_t
strnlen(const char *s, size_t maxlen)
{
    size_t n = 0;

    while (n < maxlen && s[n] != '\0')
    {
        n++;
    }
    return n;
}

/* Compares as unsigned char. Returns <0, 0 or >0 as a sorts before, equal or after b. */
STRING_NO_IDIOM int
strcmp(const char *a, const char *b)
{
    const unsigned char *x = (const unsigned char *)a;
    const unsigned char *y = (const unsigned char *)b;

    while (*x != '\0' && *x == *y)
    {
        x++;
        y++;
    }
    return (int)*x - (int)*y;
}

/* strcmp limited to the first n bytes. Returns <0, 0 or >0. */
STRING_NO_IDIOM int
strncmp(const char *a, const char *b, size_t n)
{
    const unsigned char *x = (const unsigned char *)a;
    const unsigned char *y = (const unsigned char *)b;

    for (; n != 0; n--, x++, y++)
    {
        if (*x != *y || *x == '\0')
        {
            return (int)*x - (int)*y;
        }
    }
    return 0;
}

/* Returns the first (char)c in s, the terminating NUL included, or NULL. */
STRING_NO_IDIOM char *
strchr(const char *s, int c)
{
    char ch = (char)c;

    for (;; s++)
    {
        if (*s == ch)
        {
            return (char *)s;
        }
        if (*s == '\0')
        {
            return NULL;
        }
    }
}

/* Returns the last (char)c in s, the terminating NUL included, or NULL. */
STRING_NO_IDIOM char *
strrchr(const char *s, int c)
{
    char ch = (char)c;
    const char *last = NULL;

    for (;; s++)
    {
        if (*s == ch)
        {
            last = s;
        }
        if (*s == '\0')
        {
            return (char *)last;
        }
    }
}

/*
 * BSD strlcpy: copies at most size - 1 bytes of src and NUL-terminates dst
 * when size > 0. Returns strlen(src); a result >= size means dst was truncated.
 */
STRING_NO_IDIOM size_t
strlcpy(char *dst, const char *src, size_t size)
{
    size_t len = strlen(src);

    if (size != 0)
    {
        size_t n = len < size - 1 ? len : size - 1;
        string_copy_forward((unsigned char *)dst, (const unsigned char *)src, n);
        dst[n] = '\0';
    }
    return len;
}
