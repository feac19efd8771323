/* SPDX-License-Identifier: MIT */
/*
 * Shell-style wildcard matching for test selection ("KeSpinLock*", "*:acquire_*"):
 * '*' matches any run of characters, ':' included, and '?' any one character.
 */
#include "lib.h"

/*
 * Returns whether all of text matches pattern, case-sensitively. Iterative:
 * on a mismatch only the latest '*' takes one more character; earlier stars
 * never need to, since the latest can absorb any run. Time is
 * O(strlen(pattern) * strlen(text)), stack constant.
 */
bool
glob_match(const char *pattern, const char *text)
{
    const char *p = pattern;
    const char *t = text;
    const char *star = NULL;      // pattern just after the latest '*'
    const char *star_text = NULL; // text that '*' has matched up to

    while (*t != '\0')
    {
        if (*p == '*')
        {
            star = ++p;
            star_text = t;
        }
        else if (*p != '\0' && (*p == '?' || *p == *t))
        {
            p++;
            t++;
        }
        else if (star != NULL)
        {
            p = star;
            t = ++star_text;
        }
        else
        {
            return false;
        }
    }
    while (*p == '*')
    {
        p++;
    }
    return *p == '\0';
}
