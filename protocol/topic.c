/* SPDX-License-Identifier: MIT */
/* Topic and pattern syntax, and a reference matcher. */
#include <string.h>

#include "herald/protocol.h"

/* A token byte: printable ASCII other than space, '.', '*' and '>'. */
static int token_byte(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '.' && c != '*' && c != '>';
}

/* Checks topic (wild == 0) or pattern (wild == 1) syntax. */
static int validate(const char *s, size_t n, int wild)
{
    size_t tokens = 0, i = 0;
    if (!s || n == 0 || n > HR_TOPIC_MAX)
        return HR_ETOPIC;
    while (i <= n) {
        size_t start = i;
        while (i < n && s[i] != '.')
            i++;
        size_t len = i - start;
        if (len == 0 || len > HR_TOKEN_MAX || ++tokens > HR_TOKENS_MAX)
            return HR_ETOPIC;
        if (wild && len == 1 && (s[start] == '*' || s[start] == '>')) {
            if (s[start] == '>' && i != n)
                return HR_ETOPIC; /* '>' only as the last token */
        } else {
            for (size_t j = start; j < i; j++)
                if (!token_byte((unsigned char)s[j]))
                    return HR_ETOPIC;
        }
        i++; /* skip '.'; a trailing '.' makes an empty last token above */
    }
    return HR_OK;
}

int hr_topic_validate(const char *t, size_t n)
{
    return validate(t, n, 0);
}

int hr_pattern_validate(const char *p, size_t n)
{
    return validate(p, n, 1);
}

int hr_topic_match(const char *pat, size_t pn, const char *t, size_t tn)
{
    size_t pi = 0, ti = 0;
    int first = 1;
    while (pi < pn && ti <= tn) {
        size_t ps = pi, ts = ti;
        while (pi < pn && pat[pi] != '.')
            pi++;
        while (ti < tn && t[ti] != '.')
            ti++;
        if (ti == ts && ts >= tn)
            return 0; /* topic ran out of tokens */
        int wild = pi - ps == 1 && (pat[ps] == '*' || pat[ps] == '>');
        if (wild && first && t[0] == '$')
            return 0; /* wildcards in the first token never match '$' topics */
        if (wild && pat[ps] == '>')
            return 1;
        if (!wild && (pi - ps != ti - ts || memcmp(pat + ps, t + ts, pi - ps) != 0))
            return 0;
        first = 0;
        pi++;
        ti++;
    }
    return pi > pn && ti > tn;
}
