/* SPDX-License-Identifier: MIT */
/*
 * LibString: lib/string.c (mem* at every length and alignment, overlap, sign of
 * comparisons, strlcpy truncation), and the small helpers beside it: glob
 * matching, number and command-line parsing, and the test PRNG.
 */
#include <wdm.h>

#include <ktest.h>

#include "lib/lib.h"

#define LS_AREA    80 // bytes in a test area: room for guard + offset + shift + length
#define LS_GUARD   8
#define LS_MAX_LEN 40

/* The pattern every area starts with: distinct, non-zero, position dependent. */
static unsigned char
LsPattern(size_t Index)
{
    return (unsigned char)(Index * 7 + 1);
}

static void
LsFill(unsigned char *Area)
{
    for (size_t i = 0; i < LS_AREA; i++)
    {
        Area[i] = LsPattern(i);
    }
}

/* A byte-at-a-time memmove through a temporary: the reference. */
static void
LsReferenceMove(unsigned char *Area, size_t To, size_t From, size_t Length)
{
    unsigned char Temp[LS_AREA];

    for (size_t i = 0; i < Length; i++)
    {
        Temp[i] = Area[From + i];
    }
    for (size_t i = 0; i < Length; i++)
    {
        Area[To + i] = Temp[i];
    }
}

/* Runs memmove(To, From, Length) inside one area; returns whether it matched the reference. */
static BOOLEAN
LsMoveMatches(size_t To, size_t From, size_t Length)
{
    unsigned char Area[LS_AREA];
    unsigned char Expected[LS_AREA];

    LsFill(Area);
    LsFill(Expected);
    LsReferenceMove(Expected, To, From, Length);
    if (memmove(Area + To, Area + From, Length) != Area + To)
    {
        return FALSE;
    }
    return memcmp(Area, Expected, LS_AREA) == 0;
}

static int
LsSign(int Value)
{
    return (Value > 0) - (Value < 0);
}

KTEST(LibString, memset_every_length_and_offset)
{
    unsigned char Area[LS_AREA];
    int Fill = 0x1a5; // memset stores (unsigned char)c, so this fills with 0xa5

    for (size_t Offset = 0; Offset < LS_GUARD; Offset++)
    {
        for (size_t Length = 0; Length <= LS_MAX_LEN; Length++)
        {
            ULONG Bad = 0;
            LsFill(Area);
            KT_EXPECT(memset(Area + LS_GUARD + Offset, Fill, Length) == Area + LS_GUARD + Offset);
            for (size_t i = 0; i < LS_AREA; i++)
            {
                BOOLEAN Inside = i >= LS_GUARD + Offset && i < LS_GUARD + Offset + Length;
                Bad += Area[i] != (Inside ? 0xa5 : LsPattern(i));
            }
            KT_EXPECT_EQ(Bad, 0);
        }
    }
}

KTEST(LibString, memcpy_every_length_and_alignment)
{
    unsigned char Source[LS_AREA];
    unsigned char Area[LS_AREA];

    for (size_t i = 0; i < LS_AREA; i++)
    {
        Source[i] = (unsigned char)(0xff - i);
    }
    for (size_t DstOffset = 0; DstOffset < LS_GUARD; DstOffset++)
    {
        for (size_t SrcOffset = 0; SrcOffset < LS_GUARD; SrcOffset++)
        {
            for (size_t Length = 0; Length <= LS_MAX_LEN; Length++)
            {
                unsigned char *To = Area + LS_GUARD + DstOffset;
                ULONG Bad = 0;
                LsFill(Area);
                KT_EXPECT(memcpy(To, Source + SrcOffset, Length) == To);
                for (size_t i = 0; i < LS_AREA; i++)
                {
                    size_t At = i - LS_GUARD - DstOffset;
                    BOOLEAN Inside = i >= LS_GUARD + DstOffset && At < Length;
                    Bad += Area[i] != (Inside ? Source[SrcOffset + At] : LsPattern(i));
                }
                KT_EXPECT_EQ(Bad, 0);
            }
        }
    }
}

/* dst below src: must copy low to high. */
KTEST(LibString, memmove_overlap_dst_below_src)
{
    for (size_t Shift = 1; Shift <= 17; Shift++)
    {
        for (size_t Length = 0; Length <= LS_MAX_LEN; Length++)
        {
            KT_EXPECT(LsMoveMatches(LS_GUARD, LS_GUARD + Shift, Length));
            KT_EXPECT(LsMoveMatches(LS_GUARD + 3, LS_GUARD + 3 + Shift, Length));
        }
    }
}

/* dst above src: must copy high to low. */
KTEST(LibString, memmove_overlap_dst_above_src)
{
    for (size_t Shift = 1; Shift <= 15; Shift++)
    {
        for (size_t Length = 0; Length <= LS_MAX_LEN; Length++)
        {
            KT_EXPECT(LsMoveMatches(Shift, 0, Length));
            KT_EXPECT(LsMoveMatches(5 + Shift, 5, Length));
        }
    }
}

KTEST(LibString, memmove_same_and_disjoint)
{
    KT_EXPECT(LsMoveMatches(LS_GUARD, LS_GUARD, LS_MAX_LEN));
    KT_EXPECT(LsMoveMatches(0, 32, 24));
    KT_EXPECT(LsMoveMatches(32, 0, 24));
}

/* Signs memcmp and strncmp over Length bytes, and strcmp, must give for A against B. */
typedef struct _LS_COMPARE
{
    const char *A;
    const char *B;
    size_t Length; // at most the size of either, NUL included
    int MemSign;
    int StrSign;
    int StrnSign;
} LS_COMPARE;

static const LS_COMPARE LsCompares[] = {
    {"", "", 0, 0, 0, 0},
    {"", "", 1, 0, 0, 0},
    {"abc", "abc", 4, 0, 0, 0},
    {"abc", "abd", 2, 0, -1, 0},
    {"abc", "abd", 3, -1, -1, -1},
    {"abd", "abc", 3, 1, 1, 1},
    {"ab", "abc", 3, -1, -1, -1},
    {"abc", "ab", 3, 1, 1, 1},
    {"abcx", "abcy", 3, 0, -1, 0},
    {"abcx", "abcy", 4, -1, -1, -1},
    {"\x80", "\x7f", 1, 1, 1, 1}, // bytes compare as unsigned char
    {"\x01", "\xff", 1, -1, -1, -1},
    {"\x80", "a", 1, 1, 1, 1},
    {"a\0x", "a\0y", 3, -1, 0, 0}, // mem* go past a NUL, str* stop at it
};

KTEST(LibString, compare_signs)
{
    for (size_t i = 0; i < sizeof(LsCompares) / sizeof(LsCompares[0]); i++)
    {
        const LS_COMPARE *C = &LsCompares[i];
        int Mem = LsSign(memcmp(C->A, C->B, C->Length));
        int Str = LsSign(strcmp(C->A, C->B));
        int Strn = LsSign(strncmp(C->A, C->B, C->Length));

        KT_EXPECT_EQ(Mem, C->MemSign);
        KT_EXPECT_EQ(Str, C->StrSign);
        KT_EXPECT_EQ(Strn, C->StrnSign);
        if (Mem != C->MemSign || Str != C->StrSign || Strn != C->StrnSign)
        {
            KtLog("case %zu: \"%s\" against \"%s\" over %zu", i, C->A, C->B, C->Length);
        }
    }
}

KTEST(LibString, strncmp_stops_at_nul)
{
    static const char Ab[] = "ab";
    static const char Abc[] = "abc";
    static const char AbcAgain[] = "abc";

    KT_EXPECT_EQ(strncmp(Abc, AbcAgain, 100), 0);
    KT_EXPECT_EQ(LsSign(strncmp(Ab, Abc, 100)), -1);
    KT_EXPECT_EQ(LsSign(strncmp(Abc, Ab, 100)), 1);
}

/* A difference in any byte, within or past the first 8-byte word, in either direction. */
KTEST(LibString, memcmp_finds_any_byte)
{
    static const unsigned char A[20] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17};
    unsigned char B[20];

    for (size_t At = 0; At < sizeof(A); At++)
    {
        memcpy(B, A, sizeof(A));
        KT_EXPECT_EQ(memcmp(A, B, sizeof(A)), 0);
        B[At] = 0x80;
        KT_EXPECT_LT(memcmp(A, B, sizeof(A)), 0);
        KT_EXPECT_GT(memcmp(B, A, sizeof(A)), 0);
        KT_EXPECT_EQ(memcmp(A, B, At), 0);
    }
}

KTEST(LibString, strlen_and_strnlen)
{
    static const char Unterminated[3] = {'a', 'b', 'c'};
    static const char Empty[] = "";
    static const char Name[] = "KeSpinLock";

    KT_EXPECT_EQ(strlen(Empty), 0);
    KT_EXPECT_EQ(strlen(Name), 10);
    KT_EXPECT_EQ(strnlen(Name, 4), 4);
    KT_EXPECT_EQ(strnlen(Name, 10), 10);
    KT_EXPECT_EQ(strnlen(Name, 100), 10);
    KT_EXPECT_EQ(strnlen(Empty, 5), 0);
    KT_EXPECT_EQ(strnlen(Unterminated, sizeof(Unterminated)), 3);
    KT_EXPECT_EQ(strnlen(Unterminated, 0), 0);
}

KTEST(LibString, strchr_and_strrchr)
{
    static const char Name[] = "KeSpinLock:acquire:raise";

    KT_EXPECT(strchr(Name, ':') == Name + 10);
    KT_EXPECT(strrchr(Name, ':') == Name + 18);
    KT_EXPECT(strchr(Name, 'K') == Name);
    KT_EXPECT(strrchr(Name, 'K') == Name);
    KT_EXPECT(strchr(Name, '#') == NULL);
    KT_EXPECT(strrchr(Name, '#') == NULL);
    KT_EXPECT(strchr(Name, '\0') == Name + sizeof(Name) - 1);
    KT_EXPECT(strrchr(Name, '\0') == Name + sizeof(Name) - 1);
    KT_EXPECT(strchr("", 'a') == NULL);
    KT_EXPECT(strchr("a\x80", 0x80) != NULL);
}

KTEST(LibString, strlcpy_truncates_and_reports_length)
{
    char Buffer[12];

    memset(Buffer, '#', sizeof(Buffer));
    KT_EXPECT_EQ(strlcpy(Buffer, "spindle", sizeof(Buffer)), 7);
    KT_EXPECT(strcmp(Buffer, "spindle") == 0);
    KT_EXPECT_EQ(Buffer[8], '#');

    memset(Buffer, '#', sizeof(Buffer));
    KT_EXPECT_EQ(strlcpy(Buffer, "spindle", 4), 7);
    KT_EXPECT(strcmp(Buffer, "spi") == 0);
    KT_EXPECT_EQ(Buffer[4], '#');

    KT_EXPECT_EQ(strlcpy(Buffer, "spindle", 8), 7);
    KT_EXPECT(strcmp(Buffer, "spindle") == 0);

    memset(Buffer, '#', sizeof(Buffer));
    KT_EXPECT_EQ(strlcpy(Buffer, "spindle", 1), 7);
    KT_EXPECT_EQ(Buffer[0], 0);
    KT_EXPECT_EQ(Buffer[1], '#');

    memset(Buffer, '#', sizeof(Buffer));
    KT_EXPECT_EQ(strlcpy(Buffer, "spindle", 0), 7);
    KT_EXPECT_EQ(Buffer[0], '#');
    KT_EXPECT_EQ(strlcpy(Buffer, "", sizeof(Buffer)), 0);
    KT_EXPECT_EQ(Buffer[0], 0);
}

KTEST(LibString, glob_selects_tests)
{
    KT_EXPECT(glob_match("KeSpinLock*", "KeSpinLock:acquire_raises_to_dispatch"));
    KT_EXPECT(glob_match("KeSpinLock*", "KeSpinLock"));
    KT_EXPECT(!glob_match("KeSpinLock*", "KeSpinLoc"));
    KT_EXPECT(!glob_match("KeSpinLock*", "ExKeSpinLock:x"));
    KT_EXPECT(glob_match("Zone:*", "Zone:"));
    KT_EXPECT(glob_match("Zone:*", "Zone:allocate_all"));
    KT_EXPECT(!glob_match("Zone:*", "ExZone:allocate"));
    KT_EXPECT(glob_match("*:acquire_*", "KeSpinLock:acquire_at_dpc"));
    KT_EXPECT(glob_match("*:acquire_*", "Ke:x:acquire_"));
    KT_EXPECT(!glob_match("*:acquire_*", "KeSpinLock:release_acquire"));
    KT_EXPECT(!glob_match("kespinlock*", "KeSpinLock:acquire"));
}

KTEST(LibString, glob_wildcards)
{
    KT_EXPECT(glob_match("", ""));
    KT_EXPECT(!glob_match("", "a"));
    KT_EXPECT(glob_match("*", ""));
    KT_EXPECT(glob_match("*", "any:thing"));
    KT_EXPECT(glob_match("**", "x"));
    KT_EXPECT(!glob_match("?", ""));
    KT_EXPECT(glob_match("?", ":"));
    KT_EXPECT(glob_match("a?c", "abc"));
    KT_EXPECT(!glob_match("a?c", "ac"));
    KT_EXPECT(glob_match("*b*", "abc"));
    KT_EXPECT(glob_match("a*b*c", "aXbYbZc"));
    KT_EXPECT(!glob_match("a*b*c", "aXbYbZ"));
    KT_EXPECT(glob_match("*?", "a"));
    KT_EXPECT(!glob_match("*?", ""));
    KT_EXPECT(glob_match("exact", "exact"));
    KT_EXPECT(!glob_match("exact", "exactly"));
    /* The backtracking worst case stays fast and right. */
    KT_EXPECT(glob_match("a*a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"));
    KT_EXPECT(!glob_match("a*a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
}

KTEST(LibString, parse_u64_accepts)
{
    uint64_t Value = 0;

    KT_EXPECT(parse_u64("0", 1, &Value) && Value == 0);
    KT_EXPECT(parse_u64("42", 2, &Value) && Value == 42);
    KT_EXPECT(parse_u64("007", 3, &Value) && Value == 7);
    KT_EXPECT(parse_u64("0x2a", 4, &Value) && Value == 42);
    KT_EXPECT(parse_u64("0XfF", 4, &Value) && Value == 255);
    KT_EXPECT(parse_u64("0x0", 3, &Value) && Value == 0);
    KT_EXPECT(parse_u64("18446744073709551615", 20, &Value) && Value == ~0ULL);
    KT_EXPECT(parse_u64("0xffffffffffffffff", 18, &Value) && Value == ~0ULL);
    KT_EXPECT(parse_u64("0x00000000000000000001", 22, &Value) && Value == 1);
    /* Only len bytes count: no NUL needed. */
    KT_EXPECT(parse_u64("123junk", 3, &Value) && Value == 123);
}

KTEST(LibString, parse_u64_rejects)
{
    uint64_t Value = 77;

    KT_EXPECT(!parse_u64("", 0, &Value));
    KT_EXPECT(!parse_u64("0x", 2, &Value));
    KT_EXPECT(!parse_u64("x1", 2, &Value));
    KT_EXPECT(!parse_u64("-1", 2, &Value));
    KT_EXPECT(!parse_u64("+1", 2, &Value));
    KT_EXPECT(!parse_u64(" 1", 2, &Value));
    KT_EXPECT(!parse_u64("1 ", 2, &Value));
    KT_EXPECT(!parse_u64("12a", 3, &Value));
    KT_EXPECT(!parse_u64("0xfg", 4, &Value));
    KT_EXPECT(!parse_u64("18446744073709551616", 20, &Value));
    KT_EXPECT(!parse_u64("99999999999999999999", 20, &Value));
    KT_EXPECT(!parse_u64("0x10000000000000000", 19, &Value));
    KT_EXPECT_EQ(Value, 77); // untouched by every failure
}

KTEST(LibString, cmdline_get_finds_values)
{
    static const char Line[] =
        "  tests=KeSpinLock* seed=0x2a verbose repeat=3\tseed=7 empty= a=b=c\n";
    const char *Value;
    size_t Length = 99;

    Value = cmdline_get(Line, "tests", &Length);
    KT_ASSERT(Value != NULL);
    KT_EXPECT_EQ(Length, 11);
    KT_EXPECT(strncmp(Value, "KeSpinLock*", Length) == 0);

    Value = cmdline_get(Line, "seed", &Length); // the last one wins
    KT_ASSERT(Value != NULL);
    KT_EXPECT_EQ(Length, 1);
    KT_EXPECT_EQ(Value[0], '7');

    Value = cmdline_get(Line, "verbose", &Length);
    KT_EXPECT(Value != NULL);
    KT_EXPECT_EQ(Length, 0);

    Value = cmdline_get(Line, "empty", &Length);
    KT_EXPECT(Value != NULL);
    KT_EXPECT_EQ(Length, 0);

    Value = cmdline_get(Line, "a", &Length);
    KT_ASSERT(Value != NULL);
    KT_EXPECT_EQ(Length, 3);
    KT_EXPECT(strncmp(Value, "b=c", Length) == 0);

    KT_EXPECT(cmdline_get(Line, "repeat", NULL) != NULL);
}

KTEST(LibString, cmdline_get_misses)
{
    size_t Length = 99;

    KT_EXPECT(cmdline_get("tests=x seed=1", "test", &Length) == NULL);
    KT_EXPECT(cmdline_get("tests=x seed=1", "eed", &Length) == NULL);
    KT_EXPECT(cmdline_get("tests=x seed=1", "x", &Length) == NULL);
    KT_EXPECT(cmdline_get("tests=x seed=1", "", &Length) == NULL);
    KT_EXPECT(cmdline_get("", "seed", &Length) == NULL);
    KT_EXPECT(cmdline_get(NULL, "seed", &Length) == NULL);
    KT_EXPECT_EQ(Length, 99);
}

KTEST(LibString, prng_is_deterministic)
{
    prng_t First;
    prng_t Second;

    /* splitmix64's published outputs for seed 0. */
    prng_seed(&First, 0);
    KT_EXPECT_EQ(prng_next(&First), 0xe220a8397b1dcdafULL);
    KT_EXPECT_EQ(prng_next(&First), 0x6e789e6aa1b965f4ULL);
    KT_EXPECT_EQ(prng_next(&First), 0x06c45d188009454fULL);
    prng_seed(&First, 42);
    KT_EXPECT_EQ(prng_next(&First), 0xbdd732262feb6e95ULL);

    prng_seed(&First, 0x5eed);
    prng_seed(&Second, 0x5eed);
    for (int i = 0; i < 1000; i++)
    {
        KT_ASSERT_EQ(prng_next(&First), prng_next(&Second));
    }
    prng_seed(&Second, 0x5eee);
    KT_EXPECT_NE(prng_next(&First), prng_next(&Second));
}

KTEST(LibString, prng_below_stays_in_bounds)
{
    static const uint64_t Bounds[] = {1, 2, 3, 7, 10, 1000, (1ULL << 63) + 1, ~0ULL};
    ULONG Hits[10] = {0};
    prng_t Prng;

    prng_seed(&Prng, 1);
    KT_EXPECT_EQ(prng_below(&Prng, 0), 0);
    for (size_t b = 0; b < sizeof(Bounds) / sizeof(Bounds[0]); b++)
    {
        ULONG Bad = 0;
        for (int i = 0; i < 2000; i++)
        {
            Bad += prng_below(&Prng, Bounds[b]) >= Bounds[b];
        }
        KT_EXPECT_EQ(Bad, 0);
    }
    /* Every value of a small range turns up, roughly evenly. */
    for (int i = 0; i < 10000; i++)
    {
        Hits[prng_below(&Prng, 10)]++;
    }
    for (int i = 0; i < 10; i++)
    {
        KT_EXPECT_GT(Hits[i], 800);
        KT_EXPECT_LT(Hits[i], 1200);
    }
}
