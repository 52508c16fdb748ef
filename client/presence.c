/* SPDX-License-Identifier: MIT */
/* Presence watching: `$PRES.<topic>` snapshots and changes decoded for a callback. */
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "async.h"

/*
 * The broker's presence bodies are small maps: `{count}`, `{count, members}`
 * (a snapshot, marked replay) or `{count, joined, left}`. They are decoded
 * with msgpack-c into a zone (bounded by the frame size the broker sent),
 * then handed to the callback as arrays borrowed for the call.
 */

static int key_is(const msgpack_object *k, const char *name)
{
    size_t n = strlen(name);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
           memcmp(k->via.str.ptr, name, n) == 0;
}

/* `[[client_id, info], ...]` into a new array. 0, or -1 when malformed or out of memory. */
static int entries(const msgpack_object *o, hr_presence_member_t **out, size_t *n)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return -1;
    *n = o->via.array.size;
    *out = calloc(*n ? *n : 1, sizeof(**out));
    if (!*out)
        return -1;
    for (size_t i = 0; i < *n; i++) {
        const msgpack_object *e = &o->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 2 ||
            e->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            e->via.array.ptr[1].type != MSGPACK_OBJECT_BIN)
            return -1;
        (*out)[i].client_id = e->via.array.ptr[0].via.u64;
        (*out)[i].info = e->via.array.ptr[1].via.bin.ptr;
        (*out)[i].info_len = e->via.array.ptr[1].via.bin.size;
    }
    return 0;
}

static int ids(const msgpack_object *o, uint64_t **out, size_t *n)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return -1;
    *n = o->via.array.size;
    *out = calloc(*n ? *n : 1, sizeof(**out));
    if (!*out)
        return -1;
    for (size_t i = 0; i < *n; i++) {
        if (o->via.array.ptr[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return -1;
        (*out)[i] = o->via.array.ptr[i].via.u64;
    }
    return 0;
}

/* Decodes one body into `ev` (arrays allocated: the caller frees them). 0 or -1. */
static int decode(const msgpack_object *o, int replay, hr_presence_event_t *ev,
                  hr_presence_member_t **members, uint64_t **left)
{
    int has_count = 0;
    if (o->type != MSGPACK_OBJECT_MAP)
        return -1;
    ev->snapshot = replay;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
        if (key_is(k, "count") && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            ev->count = v->via.u64;
            has_count = 1;
        } else if (key_is(k, replay ? "members" : "joined")) {
            if (*members || entries(v, members, &ev->nmembers) != 0)
                return -1;
            ev->listed = 1;
        } else if (!replay && key_is(k, "left")) {
            if (*left || ids(v, left, &ev->nleft) != 0)
                return -1;
            ev->listed = 1;
        }
    }
    ev->members = *members;
    ev->left = *left;
    return has_count ? 0 : -1;
}

static void on_presence_msg(hr_client_t *c, hr_sub_t *sub, hr_message_t *m, void *arg)
{
    (void)arg;
    size_t n;
    const void *p = hr_message_data(m, &n);
    msgpack_unpacked u;
    hr_presence_event_t ev;
    hr_presence_member_t *members = NULL;
    uint64_t *left = NULL;
    memset(&ev, 0, sizeof(ev));
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int ok = msgpack_unpack_next(&u, p, n, &off) == MSGPACK_UNPACK_SUCCESS && off == n &&
             decode(&u.data, hr_message_is_replay(m), &ev, &members, &left) == 0;
    if (ok)
        sub->pres_cb(c, sub, &ev, sub->pres_arg);
    else
        hr__report(c, HR_EPROTO, sub, "a presence body that does not decode");
    free(members);
    free(left);
    msgpack_unpacked_destroy(&u);
}

int hr_client_watch_presence(hr_client_t *c, const char *topic, hr_presence_cb cb, void *arg,
                             hr_sub_t **out)
{
    if (!c || !topic || !cb || !out)
        return HR_EINVAL;
    size_t n = strlen(topic);
    if (hr_topic_validate(topic, n) != HR_OK || n + 6 > 255)
        return HR_ETOPIC;
    if (!hr__accepting(c))
        return HR_ECLOSED;
    char pattern[256 + 6];
    memcpy(pattern, "$PRES.", 6);
    memcpy(pattern + 6, topic, n + 1);
    hr_sub_t *s;
    int r = hr__subscribe(c, pattern, NULL, on_presence_msg, NULL, 0, &s);
    if (r != HR_OK)
        return r;
    s->pres_cb = cb; /* nothing is delivered before this returns to the loop */
    s->pres_arg = arg;
    *out = s;
    return HR_OK;
}
