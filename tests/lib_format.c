/* SPDX-License-Identifier: MIT */
/*
 * LibFormat: the printf engine in lib/format.c behind DbgPrint and KtLog. Exact
 * output for every conversion, flag and length modifier, and C99 truncation.
 */
#include <wdm.h>

#include <ktest.h>

#include "lib/lib.h"

#define LF_BUFFER    128
#define LF_LLONG_MIN (-__LONG_LONG_MAX__ - 1)
#define LF_INT_MIN   (-__INT_MAX__ - 1)

/* snprintf into a fresh buffer; expects exactly Expected and its length as the result. */
#define LF_EXPECT(Expected, ...)                                                                   \
    do                                                                                             \
    {                                                                                              \
        char LfBuf_[LF_BUFFER];                                                                    \
        int LfLen_ = snprintf(LfBuf_, sizeof(LfBuf_), __VA_ARGS__);                                \
        KT_EXPECT(strcmp(LfBuf_, (Expected)) == 0);                                                \
        if (strcmp(LfBuf_, (Expected)) != 0)                                                       \
        {                                                                                          \
            KtLog("got \"%s\", want \"%s\"", LfBuf_, (Expected));                                  \
        }                                                                                          \
        KT_EXPECT_EQ(LfLen_, strlen(Expected));                                                    \
    } while (0)

/* Collects vcbprintf output. */
typedef struct _LF_SINK
{
    char Text[LF_BUFFER];
    ULONG Length;
} LF_SINK;

/* Hides a NULL from the compiler, which would otherwise warn about "%s" of NULL. */
static const char *volatile LfNullString;
static const WCHAR *volatile LfNullWide;

static void
LfSinkPutc(char c, void *Context)
{
    LF_SINK *Sink = Context;

    if (Sink->Length + 1 < sizeof(Sink->Text))
    {
        Sink->Text[Sink->Length] = c;
    }
    Sink->Length++;
}

static int LfCallback(LF_SINK *Sink, const char *Format, ...) LIB_PRINTF(2, 3);

static int
LfCallback(LF_SINK *Sink, const char *Format, ...)
{
    va_list Args;
    int Result;

    Sink->Length = 0;
    va_start(Args, Format);
    Result = vcbprintf(LfSinkPutc, Sink, Format, Args);
    va_end(Args);
    Sink->Text[Sink->Length < sizeof(Sink->Text) ? Sink->Length : sizeof(Sink->Text) - 1] = '\0';
    return Result;
}

static int LfVsnprintf(char *Buffer, size_t Size, const char *Format, ...) LIB_PRINTF(3, 4);

static int
LfVsnprintf(char *Buffer, size_t Size, const char *Format, ...)
{
    va_list Args;
    int Result;

    va_start(Args, Format);
    Result = vsnprintf(Buffer, Size, Format, Args);
    va_end(Args);
    return Result;
}

KTEST(LibFormat, plain_text_and_percent)
{
    LF_EXPECT("", "%s", "");
    LF_EXPECT("hello, kernel", "hello, kernel");
    LF_EXPECT("%", "%%");
    LF_EXPECT("100% done", "%d%% done", 100);
}

KTEST(LibFormat, signed_decimal)
{
    LF_EXPECT("0", "%d", 0);
    LF_EXPECT("42", "%d", 42);
    LF_EXPECT("-42", "%d", -42);
    LF_EXPECT("-42", "%i", -42);
    LF_EXPECT("2147483647", "%d", __INT_MAX__);
    LF_EXPECT("-2147483648", "%d", LF_INT_MIN);
}

KTEST(LibFormat, unsigned_octal_hex)
{
    LF_EXPECT("4294967295", "%u", 0xffffffffU);
    LF_EXPECT("deadbeef", "%x", 0xdeadbeefU);
    LF_EXPECT("DEADBEEF", "%X", 0xdeadbeefU);
    LF_EXPECT("37777777777", "%o", 0xffffffffU);
    LF_EXPECT("0 0 0", "%u %x %o", 0U, 0U, 0U);
    LF_EXPECT("10 a 12", "%u %x %o", 10U, 10U, 10U);
}

/*
 * C99: hh and h arguments arrive promoted to int and are converted back to
 * char or short before printing. clang 14 and cppcheck reject out-of-range
 * arguments for them, which is exactly what this tests.
 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat"
KTEST(LibFormat, length_hh_and_h_truncate)
{
    // cppcheck-suppress [invalidPrintfArgType_sint, invalidPrintfArgType_uint]
    LF_EXPECT("44 -56 -128 44 ff", "%hhd %hhd %hhd %hhu %hhx", 300, 200, -128, 300U, 0x1ffU);
    // cppcheck-suppress [invalidPrintfArgType_sint, invalidPrintfArgType_uint]
    LF_EXPECT("4464 -32768 0 ffff", "%hd %hd %hu %hx", 70000, 32768, 65536U, 0xfffffU);
}
#pragma GCC diagnostic pop

KTEST(LibFormat, length_hh_and_h_in_range)
{
    signed char Small = -100;
    unsigned char Byte = 0xab;
    short Half = -30000;
    unsigned short UHalf = 0xbeef;

    LF_EXPECT("-100 171 ab -30000 48879 beef", "%hhd %hhu %hhx %hd %hu %hx", Small, Byte, Byte,
              Half, UHalf, UHalf);
}

KTEST(LibFormat, length_l_and_ll)
{
    LF_EXPECT("-9223372036854775808", "%lld", LF_LLONG_MIN);
    LF_EXPECT("9223372036854775807", "%lld", __LONG_LONG_MAX__);
    LF_EXPECT("-9223372036854775808", "%ld", -__LONG_MAX__ - 1);
    LF_EXPECT("18446744073709551615", "%llu", ~0ULL);
    LF_EXPECT("ffffffffffffffff", "%llx", ~0ULL);
    LF_EXPECT("FFFFFFFF80000000", "%lX", 0xffffffff80000000UL);
    LF_EXPECT("1777777777777777777777", "%llo", ~0ULL);
    LF_EXPECT("-1", "%li", -1L);
    LF_EXPECT("4294967296", "%lu", 0x100000000UL);
}

KTEST(LibFormat, length_z_t_j)
{
    LF_EXPECT("18446744073709551615", "%zu", (size_t)-1);
    LF_EXPECT("ffffffffffffffff", "%zx", (size_t)-1);
    LF_EXPECT("4096", "%zu", sizeof(char[4096]));
    // cppcheck-suppress invalidPrintfArgType_sint ; wants ssize_t, which freestanding C lacks
    LF_EXPECT("-5", "%zd", (ptrdiff_t)-5);
    LF_EXPECT("-8", "%td", (ptrdiff_t)-8);
    LF_EXPECT("-9223372036854775808", "%jd", (intmax_t)LF_LLONG_MIN);
    LF_EXPECT("18446744073709551615", "%ju", (uintmax_t)~0ULL);
}

KTEST(LibFormat, sign_flags)
{
    LF_EXPECT("+5", "%+d", 5);
    LF_EXPECT("-5", "%+d", -5);
    LF_EXPECT("+0", "%+d", 0);
    LF_EXPECT(" 5", "% d", 5);
    LF_EXPECT("-5", "% d", -5);
    LF_EXPECT("+9223372036854775807", "%+lld", __LONG_LONG_MAX__);
}

KTEST(LibFormat, alternate_form)
{
    LF_EXPECT("0xff", "%#x", 0xffU);
    LF_EXPECT("0XFF", "%#X", 0xffU);
    LF_EXPECT("0", "%#x", 0U);
    LF_EXPECT("010", "%#o", 8U);
    LF_EXPECT("0", "%#o", 0U);
    LF_EXPECT("0", "%#.0o", 0U);
    LF_EXPECT("010", "%#.3o", 8U);
    LF_EXPECT("0x0000ff", "%#08x", 0xffU);
    LF_EXPECT("      0xff", "%#10x", 0xffU);
    LF_EXPECT("0xff      |", "%#-10x|", 0xffU);
    LF_EXPECT("0xffffffff80000000", "%#llx", 0xffffffff80000000ULL);
}

KTEST(LibFormat, width_and_zero_pad)
{
    LF_EXPECT("   42", "%5d", 42);
    LF_EXPECT("42   |", "%-5d|", 42);
    LF_EXPECT("00042", "%05d", 42);
    LF_EXPECT("-0042", "%05d", -42);
    LF_EXPECT("+0042", "%+05d", 42);
    LF_EXPECT(" 0042", "% 05d", 42);
    LF_EXPECT("123456", "%3d", 123456);
    LF_EXPECT("0000abcd", "%08x", 0xabcdU);
    LF_EXPECT("     abc", "%8s", "abc");
    LF_EXPECT("abc     |", "%-8s|", "abc");
    LF_EXPECT("    x", "%5c", 'x');
    LF_EXPECT("x    |", "%-5c|", 'x');
}

KTEST(LibFormat, integer_precision)
{
    LF_EXPECT("007", "%.3d", 7);
    LF_EXPECT("-007", "%.3d", -7);
    LF_EXPECT("+007", "%+.3d", 7);
    LF_EXPECT("", "%.0d", 0);
    LF_EXPECT("     ", "%5.0d", 0);
    LF_EXPECT("+", "%+.0d", 0);
    LF_EXPECT("", "%.0x", 0U);
    LF_EXPECT("000ab", "%.5x", 0xabU);
    LF_EXPECT("  007", "%5.3d", 7);
    LF_EXPECT("007  |", "%-5.3d|", 7);
    LF_EXPECT("0x000ab", "%#.5x", 0xabU);
    LF_EXPECT("0000000000000000000000042", "%.25lld", 42LL);
}

KTEST(LibFormat, string_precision)
{
    static const char Unterminated[4] = {'a', 'b', 'c', 'd'};

    LF_EXPECT("abc", "%.3s", "abcdef");
    LF_EXPECT("", "%.0s", "abcdef");
    LF_EXPECT("abc", "%.10s", "abc");
    LF_EXPECT("        ab", "%10.2s", "abcdef");
    LF_EXPECT("ab        |", "%-10.2s|", "abcdef");
    /* The precision bounds the read: no NUL is needed within it. */
    LF_EXPECT("abcd", "%.4s", Unterminated);
}

KTEST(LibFormat, star_width_and_precision)
{
    LF_EXPECT("   42", "%*d", 5, 42);
    LF_EXPECT("42   |", "%*d|", -5, 42);
    LF_EXPECT("42   |", "%-*d|", 5, 42);
    LF_EXPECT("0007", "%.*d", 4, 7);
    LF_EXPECT("7", "%.*d", -1, 7);
    LF_EXPECT("    ab", "%*.*s", 6, 2, "abcdef");
    LF_EXPECT("ab    |", "%*.*s|", -6, 2, "abcdef");
    LF_EXPECT("abcdef", "%.*s", -3, "abcdef");
    LF_EXPECT("[ x][y ]", "[%*c][%*c]", 2, 'x', -2, 'y');
}

KTEST(LibFormat, null_string)
{
    LF_EXPECT("(null)", "%s", LfNullString);
    LF_EXPECT("    (null)", "%10s", LfNullString);
    LF_EXPECT("(null)    |", "%-10s|", LfNullString);
    LF_EXPECT("(nu", "%.3s", LfNullString);
    LF_EXPECT("(null)", "%ls", LfNullWide);
}

KTEST(LibFormat, pointer_is_0x_and_16_digits)
{
    LF_EXPECT("0x0000000000000000", "%p", (void *)0);
    LF_EXPECT("0x00000000deadbeef", "%p", (void *)0xdeadbeefUL);
    LF_EXPECT("0xffffffff80001000", "%p", (void *)0xffffffff80001000UL);
    LF_EXPECT("  0x0000000000000001", "%20p", (void *)1);
    LF_EXPECT("0x0000000000000001  |", "%-20p|", (void *)1);
}

KTEST(LibFormat, characters)
{
    char Buffer[8] = "xxxxxxx";

    LF_EXPECT("A", "%c", 'A');
    LF_EXPECT("<a|b>", "<%c|%c>", 'a', 'b');
    /* A NUL character counts like any other. */
    KT_EXPECT_EQ(snprintf(Buffer, sizeof(Buffer), "%c%c", 'q', 0), 2);
    KT_EXPECT_EQ(Buffer[0], 'q');
    KT_EXPECT_EQ(Buffer[1], 0);
    KT_EXPECT_EQ(Buffer[2], 0);
}

KTEST(LibFormat, wide_strings)
{
    static const WCHAR NotAscii[] = {'a', 0xe9, 'b', 0};

    LF_EXPECT("Spindle", "%ls", L"Spindle");
    LF_EXPECT("  Ke", "%4.2ls", L"KeSpinLock");
    LF_EXPECT("a?b", "%ls", NotAscii);
    // cppcheck-suppress [invalidPrintfArgType_uint] ; cppcheck 2.10 takes %lc for unsigned long
    LF_EXPECT("x?", "%lc%lc", L'x', 0x263a);
}

KTEST(LibFormat, mixed_line)
{
    LF_EXPECT("cpu 3 irql 2 lock 0xffffffff80004000 owner=KeSpinLock:acquire",
              "cpu %u irql %d lock %p owner=%s:%s", 3U, 2, (void *)0xffffffff80004000UL,
              "KeSpinLock", "acquire");
    LF_EXPECT("ok 12 Suite:case # 0x2a -1 18446744073709551615", "ok %d %s:%s # %#x %lld %llu", 12,
              "Suite", "case", 42U, -1LL, ~0ULL);
}

KTEST(LibFormat, truncation_keeps_nul_and_full_length)
{
    char Buffer[16];

    memset(Buffer, '#', sizeof(Buffer));
    KT_EXPECT_EQ(snprintf(Buffer, 5, "%d", 123456), 6);
    KT_EXPECT(strcmp(Buffer, "1234") == 0);
    KT_EXPECT_EQ(Buffer[5], '#');

    memset(Buffer, '#', sizeof(Buffer));
    KT_EXPECT_EQ(snprintf(Buffer, 1, "abc"), 3);
    KT_EXPECT_EQ(Buffer[0], 0);
    KT_EXPECT_EQ(Buffer[1], '#');

    memset(Buffer, '#', sizeof(Buffer));
    KT_EXPECT_EQ(snprintf(Buffer, 0, "abc"), 3);
    KT_EXPECT_EQ(Buffer[0], '#');
    KT_EXPECT_EQ(snprintf(NULL, 0, "%s=%d", "seed", 42), 7);

    memset(Buffer, '#', sizeof(Buffer));
    KT_EXPECT_EQ(snprintf(Buffer, 4, "abc"), 3);
    KT_EXPECT(strcmp(Buffer, "abc") == 0);
    KT_EXPECT_EQ(snprintf(Buffer, 3, "abc"), 3);
    KT_EXPECT(strcmp(Buffer, "ab") == 0);

    /* Truncation inside padding and inside a number. */
    KT_EXPECT_EQ(snprintf(Buffer, 4, "%10d", 7), 10);
    KT_EXPECT(strcmp(Buffer, "   ") == 0);
    KT_EXPECT_EQ(snprintf(Buffer, 8, "%+.12d", 5), 13);
    KT_EXPECT(strcmp(Buffer, "+000000") == 0);
}

KTEST(LibFormat, vsnprintf_matches_snprintf)
{
    char Buffer[LF_BUFFER];

    KT_EXPECT_EQ(LfVsnprintf(Buffer, sizeof(Buffer), "%s-%05d-%#x", "id", 42, 255U), 13);
    KT_EXPECT(strcmp(Buffer, "id-00042-0xff") == 0);
    KT_EXPECT_EQ(LfVsnprintf(Buffer, 6, "%s", "truncated"), 9);
    KT_EXPECT(strcmp(Buffer, "trunc") == 0);
}

KTEST(LibFormat, callback_form)
{
    LF_SINK Sink;

    KT_EXPECT_EQ(LfCallback(&Sink, "[%s:%d] %p", "cpu", 3, (void *)16), 26);
    KT_EXPECT_EQ(Sink.Length, 26);
    KT_EXPECT(strcmp(Sink.Text, "[cpu:3] 0x0000000000000010") == 0);
    if (strcmp(Sink.Text, "[cpu:3] 0x0000000000000010") != 0)
    {
        KtLog("got \"%s\"", Sink.Text);
    }
    KT_EXPECT_EQ(LfCallback(&Sink, "%s", ""), 0);
    KT_EXPECT_EQ(Sink.Length, 0);
}

/* A bad format must show in the output rather than vanish or consume arguments. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat"
#pragma GCC diagnostic ignored "-Wformat-extra-args"
KTEST(LibFormat, unknown_conversion_is_copied)
{
    // cppcheck-suppress wrongPrintfScanfArgNum
    LF_EXPECT("%y", "%y");
    LF_EXPECT("a%", "a%");
    LF_EXPECT("[%-5", "[%-5");
    // cppcheck-suppress wrongPrintfScanfArgNum
    LF_EXPECT("%y 7", "%y %d", 7);
}
#pragma GCC diagnostic pop
