/* SPDX-License-Identifier: MIT */
/*
 * The printf engine: vcbprintf formats into a per-character callback, and
 * vsnprintf/snprintf are built on it. Integers, characters, strings and
 * pointers only; the kernel has no floating point. %ls and %lc take wchar_t
 * (16-bit WCHAR under -fshort-wchar) and print ASCII as is, anything else as '?'.
 */
#include "lib.h"

#define FMT_LEFT  0x01 // '-': pad on the right
#define FMT_PLUS  0x02 // '+': signed conversions always show a sign
#define FMT_SPACE 0x04 // ' ': a space where the '+' would go
#define FMT_ALT   0x08 // '#': leading 0 for o, 0x/0X for non-zero x/X
#define FMT_ZERO  0x10 // '0': pad numbers with zeros up to the width

#define FMT_INT_MAX   __INT_MAX__
#define FMT_NO_PREC   (-1)
#define FMT_PTR_HEX   16 // %p digits: always the whole 64-bit address
#define FMT_MAX_DIGIT 22 // octal digits of UINT64_MAX

typedef enum
{
    FMT_LEN_NONE,
    FMT_LEN_HH,
    FMT_LEN_H,
    FMT_LEN_L,
    FMT_LEN_LL,
    FMT_LEN_Z,
    FMT_LEN_T,
    FMT_LEN_J,
} fmt_length_t;

/* One parsed conversion specification, "%-08.3llx" and the like. */
typedef struct
{
    unsigned flags;      // FMT_*
    int width;           // minimum field width, 0 = none
    int precision;       // FMT_NO_PREC = none
    fmt_length_t length; // hh h l ll z t j
    char conv;           // the conversion character
} fmt_spec_t;

/* Where the characters go, and how many there have been. */
typedef struct
{
    fmt_putc_fn putc;
    void *ctx;
    size_t count;
} fmt_out_t;

/* vsnprintf's callback context. */
typedef struct
{
    char *buf;
    size_t size;
    size_t pos;
} fmt_buffer_t;

static void
fmt_emit(fmt_out_t *out, char c)
{
    if (out->putc != NULL)
    {
        out->putc(c, out->ctx);
    }
    out->count++;
}

static void
fmt_repeat(fmt_out_t *out, char c, size_t n)
{
    for (; n != 0; n--)
    {
        fmt_emit(out, c);
    }
}

/* Returns the spaces a field of len characters needs to reach the width. */
static size_t
fmt_padding(const fmt_spec_t *spec, size_t len)
{
    return (size_t)spec->width > len ? (size_t)spec->width - len : 0;
}

/* Pads a field of len characters with spaces: before it (after == false) or after it ('-'). */
static void
fmt_pad(fmt_out_t *out, const fmt_spec_t *spec, size_t len, bool after)
{
    if (((spec->flags & FMT_LEFT) != 0) == after)
    {
        fmt_repeat(out, ' ', fmt_padding(spec, len));
    }
}

/* Reads a decimal number, saturating at INT_MAX so huge widths cannot overflow. */
static int
fmt_parse_decimal(const char **p)
{
    int value = 0;

    for (; **p >= '0' && **p <= '9'; (*p)++)
    {
        int digit = **p - '0';
        value = value > (FMT_INT_MAX - digit) / 10 ? FMT_INT_MAX : value * 10 + digit;
    }
    return value;
}

static void
fmt_parse_flags(const char **p, fmt_spec_t *spec)
{
    for (;; (*p)++)
    {
        switch (**p)
        {
            case '-':
                spec->flags |= FMT_LEFT;
                break;
            case '+':
                spec->flags |= FMT_PLUS;
                break;
            case ' ':
                spec->flags |= FMT_SPACE;
                break;
            case '#':
                spec->flags |= FMT_ALT;
                break;
            case '0':
                spec->flags |= FMT_ZERO;
                break;
            default:
                return;
        }
    }
}

static fmt_length_t
fmt_parse_length(const char **p)
{
    char c = **p;

    if (c == 'h' || c == 'l')
    {
        (*p)++;
        if (**p == c)
        {
            (*p)++;
            return c == 'h' ? FMT_LEN_HH : FMT_LEN_LL;
        }
        return c == 'h' ? FMT_LEN_H : FMT_LEN_L;
    }
    if (c == 'z' || c == 't' || c == 'j')
    {
        (*p)++;
        return c == 'z' ? FMT_LEN_Z : c == 't' ? FMT_LEN_T : FMT_LEN_J;
    }
    return FMT_LEN_NONE;
}

/*
 * Parses what follows a '%' up to and including the conversion character,
 * taking '*' widths and precisions from ap. A negative '*' width means '-'
 * and its magnitude; a negative '*' precision means none.
 */
static void
fmt_parse_spec(const char **p, fmt_spec_t *spec, va_list *ap)
{
    spec->flags = 0;
    spec->width = 0;
    spec->precision = FMT_NO_PREC;
    fmt_parse_flags(p, spec);
    if (**p == '*')
    {
        int width = va_arg(*ap, int);
        (*p)++;
        if (width < 0)
        {
            spec->flags |= FMT_LEFT;
            width = width < -FMT_INT_MAX ? FMT_INT_MAX : -width;
        }
        spec->width = width;
    }
    else
    {
        spec->width = fmt_parse_decimal(p);
    }
    if (**p == '.')
    {
        (*p)++;
        if (**p == '*')
        {
            int precision = va_arg(*ap, int);
            (*p)++;
            spec->precision = precision < 0 ? FMT_NO_PREC : precision;
        }
        else
        {
            spec->precision = fmt_parse_decimal(p);
        }
    }
    spec->length = fmt_parse_length(p);
    spec->conv = **p;
}

static uint64_t
fmt_fetch_unsigned(fmt_length_t length, va_list *ap)
{
    switch (length)
    {
        case FMT_LEN_HH:
            return (unsigned char)va_arg(*ap, unsigned int);
        case FMT_LEN_H:
            return (unsigned short)va_arg(*ap, unsigned int);
        case FMT_LEN_L:
            return va_arg(*ap, unsigned long);
        case FMT_LEN_LL:
            return va_arg(*ap, unsigned long long);
        case FMT_LEN_Z:
            return va_arg(*ap, size_t);
        case FMT_LEN_T:
            return (uint64_t)va_arg(*ap, ptrdiff_t);
        case FMT_LEN_J:
            return va_arg(*ap, uintmax_t);
        case FMT_LEN_NONE:
            break;
    }
    return va_arg(*ap, unsigned int);
}

static int64_t
fmt_fetch_signed(fmt_length_t length, va_list *ap)
{
    switch (length)
    {
        case FMT_LEN_HH:
            return (signed char)va_arg(*ap, int);
        case FMT_LEN_H:
            return (short)va_arg(*ap, int);
        case FMT_LEN_L:
            return va_arg(*ap, long);
        case FMT_LEN_LL:
            return va_arg(*ap, long long);
        /* ptrdiff_t and intmax_t are both long here, but C does not promise it. */
        // NOLINTNEXTLINE(bugprone-branch-clone)
        case FMT_LEN_Z: // the signed type of size_t's width
        case FMT_LEN_T:
            return va_arg(*ap, ptrdiff_t);
        case FMT_LEN_J:
            return va_arg(*ap, intmax_t);
        case FMT_LEN_NONE:
            break;
    }
    return va_arg(*ap, int);
}

/* Writes the digits of value least significant first; returns how many. */
static size_t
fmt_digits(char *digits, uint64_t value, unsigned base, bool upper)
{
    const char *alphabet = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    size_t n = 0;

    do
    {
        digits[n++] = alphabet[value % base];
        value /= base;
    } while (value != 0);
    return n;
}

/* One integer field after any leading spaces: [sign][prefix][zeros]digits. */
typedef struct
{
    char sign;                  // '-', '+', ' ', or '\0' for none
    const char *prefix;         // "", "0x" or "0X"
    size_t zeros;               // from the precision, '#' with o, or the '0' flag
    size_t ndigits;             // 0 for a zero value at precision 0
    char digits[FMT_MAX_DIGIT]; // least significant first
} fmt_number_t;

static char
fmt_sign(const fmt_spec_t *spec, bool negative)
{
    if (spec->conv != 'd' && spec->conv != 'i')
    {
        return '\0';
    }
    if (negative)
    {
        return '-';
    }
    if (spec->flags & FMT_PLUS)
    {
        return '+';
    }
    return (spec->flags & FMT_SPACE) ? ' ' : '\0';
}

/* Lays out an integer conversion; magnitude is the absolute value. */
static void
fmt_number(fmt_number_t *n, const fmt_spec_t *spec, uint64_t magnitude, bool negative)
{
    unsigned base = spec->conv == 'o' ? 8 : (spec->conv == 'x' || spec->conv == 'X') ? 16 : 10;
    bool alt = (spec->flags & FMT_ALT) != 0;

    n->sign = fmt_sign(spec, negative);
    n->prefix = alt && base == 16 && magnitude != 0 ? (spec->conv == 'X' ? "0X" : "0x") : "";
    n->zeros = 0;
    n->ndigits = 0;
    /* C99: a zero precision prints no digits for a zero value. */
    if (magnitude != 0 || spec->precision != 0)
    {
        n->ndigits = fmt_digits(n->digits, magnitude, base, spec->conv == 'X');
    }
    if (spec->precision != FMT_NO_PREC && (size_t)spec->precision > n->ndigits)
    {
        n->zeros = (size_t)spec->precision - n->ndigits;
    }
    /* '#' with o: the first digit is a 0, adding one only if it is not already. */
    if (alt && base == 8 && n->zeros == 0 && (n->ndigits == 0 || n->digits[n->ndigits - 1] != '0'))
    {
        n->zeros = 1;
    }
}

/* Formats one integer conversion: [spaces][sign][0x][zeros]digits[spaces]. */
static void
fmt_integer(fmt_out_t *out, const fmt_spec_t *spec, uint64_t magnitude, bool negative)
{
    fmt_number_t n;
    size_t len;

    fmt_number(&n, spec, magnitude, negative);
    len = (n.sign != '\0') + strlen(n.prefix) + n.zeros + n.ndigits;
    /* The '0' flag pads with zeros, unless '-' or a precision overrides it. */
    if ((spec->flags & (FMT_ZERO | FMT_LEFT)) == FMT_ZERO && spec->precision == FMT_NO_PREC)
    {
        n.zeros += fmt_padding(spec, len);
        len += fmt_padding(spec, len);
    }
    fmt_pad(out, spec, len, false);
    if (n.sign != '\0')
    {
        fmt_emit(out, n.sign);
    }
    for (const char *p = n.prefix; *p != '\0'; p++)
    {
        fmt_emit(out, *p);
    }
    fmt_repeat(out, '0', n.zeros);
    while (n.ndigits != 0)
    {
        fmt_emit(out, n.digits[--n.ndigits]);
    }
    fmt_pad(out, spec, len, true);
}

/* Emits len characters of s in a space-padded field. */
static void
fmt_field(fmt_out_t *out, const fmt_spec_t *spec, const char *s, size_t len)
{
    fmt_pad(out, spec, len, false);
    for (size_t i = 0; i < len; i++)
    {
        fmt_emit(out, s[i]);
    }
    fmt_pad(out, spec, len, true);
}

/* %s: a NULL pointer prints as "(null)", cut by the precision like any string. */
static void
fmt_string(fmt_out_t *out, const fmt_spec_t *spec, const char *s)
{
    size_t limit = spec->precision == FMT_NO_PREC ? SIZE_MAX : (size_t)spec->precision;

    if (s == NULL)
    {
        s = "(null)";
    }
    fmt_field(out, spec, s, strnlen(s, limit));
}

/* %ls and %lc: ASCII passes through; there is no console encoding for the rest. */
static char
fmt_narrow(unsigned int wide)
{
    if (wide >= 0x80)
    {
        return '?';
    }
    return (char)wide;
}

/* %ls: as %s, one character per wchar_t unit. */
static void
fmt_wide_string(fmt_out_t *out, const fmt_spec_t *spec, const wchar_t *s)
{
    size_t limit = spec->precision == FMT_NO_PREC ? SIZE_MAX : (size_t)spec->precision;
    size_t len = 0;

    if (s == NULL)
    {
        fmt_string(out, spec, NULL);
        return;
    }
    while (len < limit && s[len] != 0)
    {
        len++;
    }
    fmt_pad(out, spec, len, false);
    for (size_t i = 0; i < len; i++)
    {
        fmt_emit(out, fmt_narrow((unsigned int)s[i]));
    }
    fmt_pad(out, spec, len, true);
}

/* %p: "0x" and all 16 lowercase hex digits, so addresses line up in logs. */
static void
fmt_pointer(fmt_out_t *out, const fmt_spec_t *spec, const void *p)
{
    char text[2 + FMT_PTR_HEX];
    uint64_t value = (uint64_t)(uintptr_t)p;

    text[0] = '0';
    text[1] = 'x';
    for (int i = FMT_PTR_HEX - 1; i >= 0; i--, value >>= 4)
    {
        text[2 + i] = "0123456789abcdef"[value & 0xf];
    }
    fmt_field(out, spec, text, sizeof(text));
}

/* Formats the conversion in spec; returns false if it is not one we know. */
static bool
fmt_convert(fmt_out_t *out, const fmt_spec_t *spec, va_list *ap)
{
    char c;

    switch (spec->conv)
    {
        case 'd':
        case 'i':
        {
            int64_t value = fmt_fetch_signed(spec->length, ap);
            uint64_t magnitude = value < 0 ? 0 - (uint64_t)value : (uint64_t)value;
            fmt_integer(out, spec, magnitude, value < 0);
            return true;
        }
        case 'u':
        case 'o':
        case 'x':
        case 'X':
            fmt_integer(out, spec, fmt_fetch_unsigned(spec->length, ap), false);
            return true;
        case 'c':
            if (spec->length == FMT_LEN_L)
            {
                c = fmt_narrow(va_arg(*ap, unsigned int));
            }
            else
            {
                c = (char)va_arg(*ap, int);
            }
            fmt_field(out, spec, &c, 1);
            return true;
        case 's':
            if (spec->length == FMT_LEN_L)
            {
                fmt_wide_string(out, spec, va_arg(*ap, const wchar_t *));
            }
            else
            {
                fmt_string(out, spec, va_arg(*ap, const char *));
            }
            return true;
        case 'p':
            fmt_pointer(out, spec, va_arg(*ap, const void *));
            return true;
        case '%':
            fmt_emit(out, '%');
            return true;
        default:
            return false;
    }
}

static void
fmt_buffer_putc(char c, void *ctx)
{
    fmt_buffer_t *b = ctx;

    if (b->pos + 1 < b->size)
    {
        b->buf[b->pos] = c;
    }
    b->pos++;
}

/*
 * Formats fmt and ap, passing each character to putc(c, ctx) in order (putc
 * NULL only counts). An unknown conversion is copied out as written, so a bad
 * format shows. Returns the characters produced, or -1 past INT_MAX.
 */
int
vcbprintf(fmt_putc_fn putc, void *ctx, const char *fmt, va_list ap)
{
    fmt_out_t out = {putc, ctx, 0};
    fmt_spec_t spec;
    va_list args;
    const char *p = fmt;

    va_copy(args, ap);
    while (*p != '\0')
    {
        const char *start = p;

        if (*p != '%')
        {
            fmt_emit(&out, *p++);
            continue;
        }
        p++;
        fmt_parse_spec(&p, &spec, &args);
        if (!fmt_convert(&out, &spec, &args))
        {
            for (; start != p; start++)
            {
                fmt_emit(&out, *start);
            }
            if (*p == '\0')
            {
                break;
            }
            fmt_emit(&out, *p);
        }
        p++;
    }
    va_end(args);
    return out.count > (size_t)FMT_INT_MAX ? -1 : (int)out.count;
}

/*
 * C99 vsnprintf: writes at most size - 1 characters and a NUL to buf when
 * size > 0 (buf may be NULL when size is 0). Returns the length the whole
 * output has, so a result >= size means it was truncated.
 */
int
vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    fmt_buffer_t b = {buf, size, 0};
    int result = vcbprintf(fmt_buffer_putc, &b, fmt, ap);

    if (size != 0)
    {
        buf[b.pos < size ? b.pos : size - 1] = '\0';
    }
    return result;
}

/* C99 snprintf; see vsnprintf. */
int
snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    int result;

    va_start(ap, fmt);
    result = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return result;
}
