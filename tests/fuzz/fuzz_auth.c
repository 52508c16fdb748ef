/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the auth parsers (permission specs, the `herald` claim) and JSON numbers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "fuzz_check.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Whatever a parser accepted must be valid patterns only. */
static void check_perms(const hr_perms_t *p)
{
    const hr_plist_t *l[2] = {&p->pub, &p->sub};
    for (int k = 0; k < 2; k++)
        for (uint32_t i = 0; i < l[k]->n; i++) {
            const char *v = l[k]->v[i];
            CHECK(hr_pattern_validate(v, strlen(v)) == HR_OK);
            CHECK(hr_pattern_covers(v, strlen(v), v, strlen(v)) == 1);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hr_perms_t p;
    char err[256];

    /* The claim parser reads exactly `size` bytes: give it a heap copy of that many. */
    char *json = malloc(size ? size : 1);
    if (!json)
        return 0;
    memcpy(json, data, size);
    memset(&p, 0, sizeof(p));
    if (hr__auth_parse_claim(&p, json, size) == HR_OK)
        check_perms(&p);
    hr__auth_perms_clear(&p);

    /* The reader on its own: a JWT time claim is one JSON number, never NaN. */
    hr_json_t j;
    double v;
    hr__json_init(&j, json, size);
    if (hr__json_number(&j, &v) == HR_OK)
        CHECK(v == v);
    hr__json_init(&j, json, size);
    if (hr__json_skip(&j) == HR_OK)
        CHECK(j.p <= json + size);
    free(json);

    char *spec = malloc(size + 1);
    if (!spec)
        return 0;
    memcpy(spec, data, size);
    spec[size] = 0;
    memset(&p, 0, sizeof(p));
    if (hr__auth_parse_perms(&p, spec, err, sizeof(err)) == HR_OK)
        check_perms(&p);
    else
        CHECK(memchr(err, 0, sizeof(err)) != NULL);
    hr__auth_perms_clear(&p);
    free(spec);
    return 0;
}
