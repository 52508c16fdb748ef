/* SPDX-License-Identifier: MIT */
/* libherald internals shared by the async client, messages and the blocking API. */
#ifndef HERALD_CLIENT_INT_H
#define HERALD_CLIENT_INT_H

#include <stdatomic.h>

#include "herald/client.h"

/*
 * A received message: one allocation holding this header, the header
 * array, then the topic, reply, payload and header strings, each
 * NUL-terminated. Immutable after creation; the refcount is atomic so the
 * blocking API can hand a message to an application thread.
 */
struct hr_message_s {
    atomic_uint refs;
    int replay;
    uint64_t seq;
    uint64_t sid;
    const char *topic;
    const char *reply; /* NULL if none */
    const uint8_t *data;
    size_t len;
    hr_header_t *headers; /* NULL if none */
    size_t nheaders;
    /* Loop thread only: the delivery queue of the client or of a blocking
     * subscription, and the subscription it is queued for. */
    struct hr_message_s *qnext;
    hr_sub_t *qsub;
};

/** Copies a decoded MSG frame into a new message (refcount 1). NULL on OOM. */
__attribute__((visibility("hidden"))) hr_message_t *hr__message_new(const hr_frame_t *f);

/**
 * Counts one message dropped by a blocking subscription's own queue and, if
 * `notify`, reports HR_ESLOW for `sub` through the client's error callback.
 */
__attribute__((visibility("hidden"))) void hr__sub_dropped(hr_sub_t *sub, int notify);

/**
 * The checks a publish passes before it is encoded (see hr_client_publish()):
 * HR_OK with `*est` a bound of the frame's size, or HR_ETOPIC, HR_EPERM,
 * HR_EINVAL, HR_ETOOBIG (`max_payload` 0: unknown yet). Thread-safe.
 */
__attribute__((visibility("hidden"))) int
hr__publish_check(const char *topic, const void *data, size_t len, const char *reply,
                  const hr_header_t *headers, size_t nheaders, uint64_t max_payload, size_t *est);

#endif
