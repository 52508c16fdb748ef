/* SPDX-License-Identifier: MIT */
/* Authentication (static tokens, HS256/RS256 JWTs) and per-topic authorization. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "auth.h"
#include "json.h"
#include "log.h"
#include "server.h"

#define TOKEN_MAX 8192      /* longest credential accepted in HELLO */
#define KEY_FILE_MAX 65536  /* largest public key file */
#define HS256_SECRET_MIN 32 /* RFC 7518 3.2: a key of at least the hash size */

/* A static token: the SHA-256 of its secret and the permissions it grants. */
typedef struct token_s {
    unsigned char hash[32];
    hr_perms_t perms;
} token_t;

typedef struct auth_s {
    token_t *tokens;
    size_t ntokens;
    hr_perms_t anon; /* permissions without a token, when anon_ok */
    int anon_ok;
    char *rs_key; /* PEM bytes of the RS256 public key, or NULL */
    size_t rs_len;
} auth_t;

/* ---- permission lists -------------------------------------------------------- */

/* Appends a copy of pattern `p`. HR_OK, HR_ETOPIC or HR_ENOMEM. */
static int plist_add(hr_plist_t *l, const char *p, size_t n)
{
    if (hr_pattern_validate(p, n) != HR_OK)
        return HR_ETOPIC;
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 4;
        char **v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return HR_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    char *s = malloc(n + 1);
    if (!s)
        return HR_ENOMEM;
    memcpy(s, p, n);
    s[n] = 0;
    l->v[l->n++] = s;
    return HR_OK;
}

static void plist_clear(hr_plist_t *l)
{
    for (uint32_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

void hr__auth_perms_clear(hr_perms_t *perms)
{
    plist_clear(&perms->pub);
    plist_clear(&perms->sub);
}

/* A list of comma-separated patterns into `l`. */
static int parse_list(hr_plist_t *l, const char *v, size_t n, char *err, size_t errlen)
{
    size_t i = 0;
    int r;
    while (i < n) {
        size_t e = i;
        while (e < n && v[e] != ',')
            e++;
        if (e > i && (r = plist_add(l, v + i, e - i)) != HR_OK) {
            if (r == HR_ETOPIC)
                snprintf(err, errlen, "invalid pattern '%.*s'", (int)(e - i), v + i);
            else
                snprintf(err, errlen, "%s", hr_strerror(r));
            return r;
        }
        i = e + 1;
    }
    return HR_OK;
}

int hr__auth_parse_perms(hr_perms_t *perms, const char *spec, char *err, size_t errlen)
{
    const char *p = spec;
    int r;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        if (!*p)
            return HR_OK;
        const char *e = p;
        while (*e && *e != ' ' && *e != '\t' && *e != ';')
            e++;
        hr_plist_t *l = strncmp(p, "pub=", 4) == 0   ? &perms->pub
                        : strncmp(p, "sub=", 4) == 0 ? &perms->sub
                                                     : NULL;
        if (!l || e - p < 4) {
            snprintf(err, errlen, "expected pub=PATTERNS or sub=PATTERNS, got '%.*s'", (int)(e - p),
                     p);
            return HR_EINVAL;
        }
        if ((r = parse_list(l, p + 4, (size_t)(e - p - 4), err, errlen)) != HR_OK)
            return r;
        p = e;
    }
}

static int allowed_pub(const hr_perms_t *a, hr_slice_t t)
{
    for (uint32_t i = 0; i < a->pub.n; i++)
        if (hr_topic_match(a->pub.v[i], strlen(a->pub.v[i]), t.p, t.n))
            return 1;
    return 0;
}

static int allowed_sub(const hr_perms_t *a, hr_slice_t t)
{
    for (uint32_t i = 0; i < a->sub.n; i++)
        if (hr_pattern_covers(a->sub.v[i], strlen(a->sub.v[i]), t.p, t.n))
            return 1;
    return 0;
}

/* ---- the `herald` claim ------------------------------------------------------- */

/* An array of pattern strings into `l`. HR_OK, HR_EINVAL, HR_ETOPIC or HR_ENOMEM. */
static int claim_patterns(hr_json_t *j, hr_plist_t *l)
{
    char buf[HR_TOPIC_MAX];
    size_t n, i = 0;
    int r;
    if (hr__json_open(j, '[') != HR_OK)
        return HR_EINVAL;
    while ((r = hr__json_next(j, '[', &i)) == 1) {
        if (hr__json_str(j, buf, sizeof(buf), &n) != HR_OK)
            return HR_EINVAL;
        if (n > sizeof(buf))
            return HR_ETOPIC;
        if ((r = plist_add(l, buf, n)) != HR_OK)
            return r;
    }
    return r;
}

int hr__auth_parse_claim(hr_perms_t *perms, const char *json, size_t n)
{
    hr_json_t j;
    char key[8];
    size_t kn, i = 0;
    int r;
    hr__json_init(&j, json, n);
    if (hr__json_open(&j, '{') != HR_OK)
        return HR_EINVAL;
    while ((r = hr__json_next(&j, '{', &i)) == 1) {
        if (hr__json_key(&j, key, sizeof(key), &kn) != HR_OK)
            return HR_EINVAL;
        if (kn == 3 && (memcmp(key, "pub", 3) == 0 || memcmp(key, "sub", 3) == 0))
            r = claim_patterns(&j, key[0] == 'p' ? &perms->pub : &perms->sub);
        else
            r = hr__json_skip(&j);
        if (r != HR_OK)
            return r;
    }
    return r == HR_OK ? hr__json_end(&j) : r;
}

/* ---- configuration ---------------------------------------------------------------- */

static void sha256(const void *p, size_t n, unsigned char out[32])
{
    unsigned int len = 32;
    if (EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) != 1)
        memset(out, 0, 32); /* never matches a real digest by accident */
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Exactly 2 * n hex digits in `h` into `out`. HR_OK, or HR_EINVAL. */
static int unhex(const char *h, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(h[2 * i]), lo = hi < 0 ? -1 : hexval(h[2 * i + 1]);
        if (lo < 0)
            return HR_EINVAL;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return h[2 * n] ? HR_EINVAL : HR_OK;
}

/*
 * The token file: one `NAME SECRET [pub=PATTERNS] [sub=PATTERNS]` per line,
 * `#` comments. SECRET is the token the client sends, or `sha256:HEX` of it
 * so that the file need not hold the token itself.
 */
static int load_tokens(auth_t *a, const char *path)
{
    char line[8192], err[256];
    int lineno = 0, rc = HR_OK;
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "herald: setting 'auth-tokens-file': cannot read '%s': %s\n", path,
                strerror(errno));
        return HR_EINVAL;
    }
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *s = line, *name, *secret, *save = NULL;
        s[strcspn(s, "\r\n")] = 0;
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s || *s == '#')
            continue;
        name = strtok_r(s, " \t", &save);
        secret = strtok_r(NULL, " \t", &save);
        char *rest = strtok_r(NULL, "", &save);
        if (!name || !secret) {
            fprintf(stderr, "herald: %s:%d: expected 'NAME SECRET [pub=...] [sub=...]'\n", path,
                    lineno);
            rc = HR_EINVAL;
            break;
        }
        token_t *t = realloc(a->tokens, (a->ntokens + 1) * sizeof(*t));
        if (!t) {
            rc = HR_ENOMEM;
            break;
        }
        a->tokens = t;
        t = &a->tokens[a->ntokens++];
        memset(t, 0, sizeof(*t));
        t->perms.shared = 1;
        snprintf(t->perms.name, sizeof(t->perms.name), "%s", name);
        if (strncmp(secret, "sha256:", 7) == 0) {
            if (unhex(secret + 7, t->hash, 32) != HR_OK) {
                fprintf(stderr, "herald: %s:%d: sha256: needs 64 hex digits\n", path, lineno);
                rc = HR_EINVAL;
                break;
            }
        } else {
            if (strlen(secret) < 8) {
                fprintf(stderr, "herald: %s:%d: secret shorter than 8 bytes\n", path, lineno);
                rc = HR_EINVAL;
                break;
            }
            sha256(secret, strlen(secret), t->hash);
        }
        if (rest && (rc = hr__auth_parse_perms(&t->perms, rest, err, sizeof(err))) != HR_OK) {
            fprintf(stderr, "herald: %s:%d: %s\n", path, lineno, err);
            break;
        }
    }
    if (rc == HR_OK)
        for (size_t i = 0; i < a->ntokens && rc == HR_OK; i++)
            for (size_t k = 0; k < i; k++)
                if (CRYPTO_memcmp(a->tokens[i].hash, a->tokens[k].hash, 32) == 0) {
                    fprintf(stderr, "herald: %s: tokens '%s' and '%s' have the same secret\n", path,
                            a->tokens[k].perms.name, a->tokens[i].perms.name);
                    rc = HR_EINVAL;
                    break;
                }
    fclose(f);
    return rc;
}

static int load_key(auth_t *a, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "herald: setting 'jwt-rs256-public-key': cannot read '%s': %s\n", path,
                strerror(errno));
        return HR_EINVAL;
    }
    a->rs_key = malloc(KEY_FILE_MAX);
    if (!a->rs_key) {
        fclose(f);
        return HR_ENOMEM;
    }
    a->rs_len = fread(a->rs_key, 1, KEY_FILE_MAX, f);
    fclose(f);
    BIO *bio = a->rs_len ? BIO_new_mem_buf(a->rs_key, (int)a->rs_len) : NULL;
    EVP_PKEY *k = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    int ok = k && EVP_PKEY_base_id(k) == EVP_PKEY_RSA;
    EVP_PKEY_free(k);
    BIO_free(bio);
    if (!ok) {
        fprintf(stderr,
                "herald: setting 'jwt-rs256-public-key': '%s' is not a PEM RSA public key\n", path);
        return HR_EINVAL;
    }
    return HR_OK;
}

static void auth_free(auth_t *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->ntokens; i++)
        hr__auth_perms_clear(&a->tokens[i].perms);
    free(a->tokens);
    hr__auth_perms_clear(&a->anon);
    free(a->rs_key);
    free(a);
}

int hr__auth_init(hr_server_t *s)
{
    const hr_config_t *cfg = &s->cfg;
    char err[256];
    int r = HR_EINVAL;
    s->auth = NULL;
    if (!*cfg->auth_tokens_file && !*cfg->jwt_hs256_secret && !*cfg->jwt_rs256_public_key) {
        if (*cfg->auth_anonymous)
            HR_LOG(HR_LOG_WARN, 0, "auth-anonymous is set but no authentication is configured");
        return HR_OK; /* open broker */
    }
    auth_t *a = calloc(1, sizeof(*a));
    if (!a)
        return HR_ENOMEM;
    a->anon.shared = 1;
    snprintf(a->anon.name, sizeof(a->anon.name), "anonymous");
    if (*cfg->auth_tokens_file && (r = load_tokens(a, cfg->auth_tokens_file)) != HR_OK)
        goto fail;
    if (*cfg->jwt_hs256_secret && strlen(cfg->jwt_hs256_secret) < HS256_SECRET_MIN) {
        fprintf(stderr, "herald: setting 'jwt-hs256-secret': at least %d bytes, please\n",
                HS256_SECRET_MIN);
        r = HR_EINVAL;
        goto fail;
    }
    if (*cfg->jwt_rs256_public_key && (r = load_key(a, cfg->jwt_rs256_public_key)) != HR_OK)
        goto fail;
    if (*cfg->auth_anonymous) {
        if ((r = hr__auth_parse_perms(&a->anon, cfg->auth_anonymous, err, sizeof(err))) != HR_OK) {
            fprintf(stderr, "herald: setting 'auth-anonymous': %s\n", err);
            goto fail;
        }
        a->anon_ok = 1;
    }
    HR_LOG(HR_LOG_INFO, 0, "auth: %zu static tokens, JWT HS256 %s, RS256 %s, anonymous %s",
           a->ntokens, *cfg->jwt_hs256_secret ? "on" : "off",
           *cfg->jwt_rs256_public_key ? "on" : "off", a->anon_ok ? "allowed" : "refused");
    s->auth = a;
    return HR_OK;
fail:
    auth_free(a);
    return r == HR_ENOMEM ? HR_ENOMEM : HR_EINVAL; /* a bad pattern is a bad setting */
}

void hr__auth_destroy(hr_server_t *s)
{
    auth_free(s->auth);
    s->auth = NULL;
}

/* ---- HELLO ---------------------------------------------------------------------- */

/* 1 if the JSON array of strings `json` contains `want`. */
static int json_array_has(const char *json, const char *want)
{
    char buf[512];
    size_t n, wn = strlen(want), i = 0;
    hr_json_t j;
    hr__json_init(&j, json, strlen(json));
    if (hr__json_open(&j, '[') != HR_OK)
        return 0;
    while (hr__json_next(&j, '[', &i) == 1) {
        if (hr__json_str(&j, buf, sizeof(buf), &n) != HR_OK || n > sizeof(buf))
            return 0;
        if (n == wn && memcmp(buf, want, n) == 0)
            return 1;
    }
    return 0;
}

/* The JWT's audience claim: a string, or an array of strings containing `want`. */
static int aud_ok(jwt_t *j, const char *want)
{
    const char *one = jwt_get_grant(j, "aud");
    if (one)
        return strcmp(one, want) == 0;
    char *json = jwt_get_grants_json(j, "aud");
    int ok = json && json_array_has(json, want);
    free(json);
    return ok;
}

/* The time claims of RFC 7519 4.1.4-6, with the reasons a token fails them. */
static const struct {
    const char *name, *wrong_type, *out_of_range;
} time_claim[] = {
    {"exp", "authentication failed: exp is not a number",
     "authentication failed: exp out of range"},
    {"nbf", "authentication failed: nbf is not a number",
     "authentication failed: nbf out of range"},
    {"iat", "authentication failed: iat is not a number",
     "authentication failed: iat out of range"},
};

enum { CLAIM_EXP, CLAIM_NBF, CLAIM_IAT, CLAIM_TIMES };

/* Beyond this a number of seconds is no date (and no longer exact as a double). */
#define NUMERIC_DATE_MAX 9007199254740991.0 /* 2^53 - 1 */

/*
 * Checks exp (required, in the future), nbf (if present, not in the future)
 * and the type of iat, and returns exp in whole seconds. Each is a NumericDate:
 * a JSON number of seconds, which may have a fraction. A claim of another
 * type refuses the token. (libjwt's integer getter cannot tell a string
 * from an absent claim, which let a token with `"nbf": "<a future date>"`
 * in before its time, and misreads a fraction.) A fractional exp counts as
 * the second before, a fractional nbf as the second after.
 */
static int time_claims(jwt_t *j, int64_t now, int64_t *exp, const char **why)
{
    int64_t t[CLAIM_TIMES];
    int present[CLAIM_TIMES];
    for (int i = 0; i < CLAIM_TIMES; i++) {
        char *json = jwt_get_grants_json(j, time_claim[i].name);
        hr_json_t js;
        double v;
        present[i] = json != NULL;
        t[i] = 0;
        if (!json)
            continue;
        hr__json_init(&js, json, strlen(json));
        int r = hr__json_number(&js, &v) == HR_OK ? hr__json_end(&js) : HR_EINVAL;
        free(json);
        if (r != HR_OK) {
            *why = time_claim[i].wrong_type;
            return HR_EAUTH;
        }
        if (!(v >= -NUMERIC_DATE_MAX && v <= NUMERIC_DATE_MAX)) {
            *why = time_claim[i].out_of_range;
            return HR_EAUTH;
        }
        t[i] = (int64_t)v; /* toward zero, then exp down and nbf up to whole seconds */
        if (i == CLAIM_NBF && (double)t[i] < v)
            t[i]++;
        else if (i != CLAIM_NBF && (double)t[i] > v)
            t[i]--;
    }
    if (!present[CLAIM_EXP]) {
        *why = "authentication failed: token has no exp";
        return HR_EAUTH;
    }
    if (t[CLAIM_EXP] <= now) {
        *why = "authentication failed: token expired";
        return HR_EAUTH;
    }
    if (present[CLAIM_NBF] && t[CLAIM_NBF] > now) {
        *why = "authentication failed: token not valid yet";
        return HR_EAUTH;
    }
    *exp = t[CLAIM_EXP];
    return HR_OK;
}

/*
 * Verifies a JWT against each configured key and accepts it only when the
 * algorithm in its header is the one that key is for: an HS256 token
 * "signed" with the RS256 public key as its HMAC secret (the classic
 * algorithm confusion) or an unsigned `alg: none` token never passes.
 */
static int check_jwt(hr_server_t *s, auth_t *a, const char *tok, hr_perms_t **out, const char **why)
{
    const hr_config_t *cfg = &s->cfg;
    jwt_t *j = NULL;
    int ok = 0;
    if (*cfg->jwt_hs256_secret && jwt_decode(&j, tok, (const unsigned char *)cfg->jwt_hs256_secret,
                                             (int)strlen(cfg->jwt_hs256_secret)) == 0) {
        ok = jwt_get_alg(j) == JWT_ALG_HS256;
        if (!ok) {
            jwt_free(j);
            j = NULL;
        }
    }
    if (!ok && a->rs_key &&
        jwt_decode(&j, tok, (const unsigned char *)a->rs_key, (int)a->rs_len) == 0) {
        ok = jwt_get_alg(j) == JWT_ALG_RS256;
    }
    if (!ok) {
        if (j)
            jwt_free(j);
        *why = "authentication failed: invalid token";
        return HR_EAUTH;
    }
    int64_t exp;
    if (time_claims(j, (int64_t)time(NULL), &exp, why) != HR_OK)
        goto fail;
    const char *iss = jwt_get_grant(j, "iss");
    if (*cfg->jwt_issuer && (!iss || strcmp(iss, cfg->jwt_issuer) != 0)) {
        *why = "authentication failed: wrong issuer";
        goto fail;
    }
    if (*cfg->jwt_audience && !aud_ok(j, cfg->jwt_audience)) {
        *why = "authentication failed: wrong audience";
        goto fail;
    }
    hr_perms_t *p = calloc(1, sizeof(*p));
    if (!p) {
        *why = "authentication failed: out of memory";
        goto fail;
    }
    p->exp = exp;
    const char *sub = jwt_get_grant(j, "sub");
    snprintf(p->name, sizeof(p->name), "%s", sub ? sub : "jwt");
    char *claim = jwt_get_grants_json(j, "herald");
    if (claim && hr__auth_parse_claim(p, claim, strlen(claim)) != HR_OK) {
        free(claim);
        hr__auth_perms_clear(p);
        free(p);
        *why = "authentication failed: malformed herald claim";
        goto fail;
    }
    free(claim);
    jwt_free(j);
    *out = p;
    return HR_OK;
fail:
    jwt_free(j);
    return HR_EAUTH;
}

static int hello(hr_conn_t *c, hr_slice_t token, const char **why);

/* The HELLO ends the handshake (limits.c stops counting it as pending). */
int hr__auth_hello(hr_conn_t *c, hr_slice_t token, const char **why)
{
    hr__limits_hello(c);
    int r = hello(c, token, why);
    if (r != HR_OK)
        c->srv->stats.auth_failed++; /* hr__conn_fail() logs the reason */
    return r;
}

static int hello(hr_conn_t *c, hr_slice_t token, const char **why)
{
    hr_server_t *s = c->srv;
    auth_t *a = s->auth;
    c->auth = NULL;
    if (!a)
        return HR_OK; /* no authentication configured: unrestricted */
    if (token.n == 0) {
        if (!a->anon_ok) {
            *why = "authentication required: HELLO needs a token";
            return HR_EAUTH;
        }
        c->auth = &a->anon;
        return HR_OK;
    }
    if (token.n > TOKEN_MAX || memchr(token.p, 0, token.n)) {
        *why = "authentication failed: invalid token";
        return HR_EAUTH;
    }
    /* Static tokens: compare digests in constant time, and all of them. */
    unsigned char h[32];
    token_t *hit = NULL;
    sha256(token.p, token.n, h);
    for (size_t i = 0; i < a->ntokens; i++)
        if (CRYPTO_memcmp(h, a->tokens[i].hash, 32) == 0)
            hit = &a->tokens[i];
    if (hit) {
        c->auth = &hit->perms;
        HR_LOG(HR_LOG_DEBUG, c->id, "authenticated: token '%s'", hit->perms.name);
        return HR_OK;
    }
    if (!*s->cfg.jwt_hs256_secret && !a->rs_key) {
        *why = "authentication failed: invalid token";
        return HR_EAUTH;
    }
    char *tok = malloc(token.n + 1);
    if (!tok) {
        *why = "authentication failed: out of memory";
        return HR_EAUTH;
    }
    memcpy(tok, token.p, token.n);
    tok[token.n] = 0;
    hr_perms_t *p = NULL;
    int r = check_jwt(s, a, tok, &p, why);
    free(tok);
    if (r != HR_OK)
        return r;
    c->auth = p;
    HR_LOG(HR_LOG_DEBUG, c->id, "authenticated: JWT sub '%s'", p->name);
    return HR_OK;
}

int hr__auth_allowed(const hr_conn_t *c, int action, hr_slice_t t)
{
    const hr_perms_t *a = c->auth;
    if (!a)
        return 1;
    int ok = 0;
    switch (action) {
    case HR_AUTH_PUB:
        ok = allowed_pub(a, t);
        break;
    case HR_AUTH_SUB:
        ok = allowed_sub(a, t);
        break;
    case HR_AUTH_REPLY:
        ok = allowed_pub(a, t) && allowed_sub(a, t);
        break;
    }
    if (!ok) {
        if (action == HR_AUTH_SUB)
            c->srv->stats.denied_sub++;
        else
            c->srv->stats.denied_pub++;
        HR_LOG(HR_LOG_DEBUG, c->id, "'%s' may not %s '%.*s'", a->name,
               action == HR_AUTH_SUB ? "subscribe to" : "publish to", (int)t.n, t.p);
    }
    return ok;
}

int hr__auth_expired(const hr_conn_t *c)
{
    const hr_perms_t *a = c->auth;
    return a && a->exp && (int64_t)time(NULL) >= a->exp;
}

void hr__auth_conn_free(hr_conn_t *c)
{
    hr_perms_t *a = c->auth;
    if (a && !a->shared) {
        hr__auth_perms_clear(a);
        free(a);
    }
    c->auth = NULL;
}
