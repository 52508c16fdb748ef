/* SPDX-License-Identifier: MIT */
/* Topic and pattern syntax, a reference matcher, and pattern containment. */
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

/* The end of the token starting at `i`: the next '.', or the end. */
static size_t next_tok(const char *p, size_t n, size_t i)
{
    while (i < n && p[i] != '.')
        i++;
    return i;
}

/*
 * Pattern containment, token by token (subscribe permissions are patterns
 * that must contain the pattern subscribed to). `p` covers `s` when every
 * topic `s` matches is matched by `p`: a literal in `p` needs the same literal in `s`;
 * `*` in `p` takes any single token of `s` (a literal or `*`, not `>`, which
 * can stand for several); `>` in `p` takes whatever is left of `s` (one or
 * more tokens). The `$` rule: a wildcard first token of `p` never matches a
 * `$` topic, so it cannot cover a literal `$` first token of `s`; a wildcard
 * first token of `s` matches no `$` topic either, so nothing is lost there.
 */
int hr_pattern_covers(const char *p, size_t pn, const char *s, size_t sn)
{
    size_t pi = 0, si = 0;
    for (;;) {
        if (pi > pn || si > sn)
            return pi > pn && si > sn; /* both ran out of tokens together */
        size_t pe = next_tok(p, pn, pi), se = next_tok(s, sn, si);
        int pstar = pe - pi == 1 && p[pi] == '*', pgt = pe - pi == 1 && p[pi] == '>';
        int sstar = se - si == 1 && s[si] == '*', sgt = se - si == 1 && s[si] == '>';
        if ((pstar || pgt) && pi == 0 && !sstar && !sgt && s[si] == '$')
            return 0;
        if (pgt)
            return 1; /* s has at least this token left */
        if (pstar) {
            if (sgt)
                return 0;
        } else if (sstar || sgt || pe - pi != se - si || memcmp(p + pi, s + si, pe - pi) != 0) {
            return 0;
        }
        pi = pe + 1;
        si = se + 1;
    }
}
