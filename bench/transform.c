/* SPDX-License-Identifier: MIT */
/* herald-bench --transform: the SUB option entries each transform measures, in MessagePack. */
#include "hb.h"

#include <string.h>

/*
 * Each transform is set up so that it lets every message through (nothing
 * the generator would count as lost), but does all of its work: the filter
 * is evaluated on every payload, the projection builds a new body, `rate`
 * counts against a limit it never reaches, `conflate` keys every message by
 * its (unique) header so its window keeps and reorders but never replaces,
 * and `batch` groups up to 64 messages a frame.
 */
static const struct {
    const char *name;
    uint32_t n;
    const char *bytes; /* key, value, ... */
    size_t len;
} transforms[] = {
#define E(name, n, lit)                                                                            \
    {                                                                                              \
        name, n, lit, sizeof(lit) - 1                                                              \
    }
    /* none: the same map payloads, no transform (the baseline) */
    E("none", 0, ""),
    /* filter: ["and", ["==", "k", 1], ["exists", "text"]] */
    E("filter", 1,
      "\xa6"
      "filter"
      "\x93\xa3"
      "and"
      "\x93\xa2==\xa1k\x01"
      "\x92\xa6"
      "exists"
      "\xa4"
      "text"),
    /* fields: ["h", "k"] */
    E("fields", 1,
      "\xa6"
      "fields"
      "\x92\xa1h\xa1k"),
    /* rate: {n: 1000000000 is over the limit, so 1000000 a millisecond window} */
    E("rate", 1,
      "\xa4"
      "rate"
      "\x82\xa1n\xce\x00\x0f\x42\x40\xa2ms\x01"),
    /* conflate: {ms: 1, key: "h"} */
    E("conflate", 1,
      "\xa8"
      "conflate"
      "\x82\xa2ms\x01\xa3key\xa1h"),
    /* batch: {max: 64, ms: 1} */
    E("batch", 1,
      "\xa5"
      "batch"
      "\x82\xa3max\x40\xa2ms\x01"),
#undef E
};

const char *hb_transform_opts(const char *name, uint32_t *nentries, size_t *len)
{
    for (size_t i = 0; i < sizeof(transforms) / sizeof(transforms[0]); i++)
        if (!strcmp(transforms[i].name, name)) {
            *nentries = transforms[i].n;
            *len = transforms[i].len;
            return transforms[i].bytes;
        }
    return NULL;
}
