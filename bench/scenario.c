/* SPDX-License-Identifier: MIT */
/* herald-bench: the named scenarios and their default sizes (full and CI smoke). */
#include "hb.h"

#include <string.h>

const char *const hb_scenarios[] = {"throughput", "fanout", "chat", "latency", "idle",
                                    "idle-ws",    "mixed",  "slow", "reqrep",  NULL};

int hb_scenario_plan(const char *name, int smoke, hb_plan_t *pl)
{
    memset(pl, 0, sizeof(*pl));
    hb_params_t *p = &pl->p;
    p->pubs = 1;
    p->subs = 1;
    p->topics = 1;
    p->size = 16;
    p->duration = smoke ? 0.5 : 5;
    p->window = smoke ? 20000 : 100000;
    p->sub_transport = "tcp";
    pl->drain = 5;
    pl->warmup = smoke ? 0.1 : 0.5;
    pl->sample_s = smoke ? 0.1 : 0.25;

    if (!strcmp(name, "throughput")) {
        /* 1 -> 1, one topic, 16 B. */
    } else if (!strcmp(name, "fanout")) {
        p->subs = smoke ? 10 : 100;
    } else if (!strcmp(name, "chat")) {
        /* Rooms are topics; every subscriber is in one room; publishers pick rooms at random. */
        p->pubs = smoke ? 3 : 10;
        p->subs = smoke ? 40 : 2000;
        p->topics = smoke ? 20 : 1000;
        p->size = 256;
        pl->pub_random = 1;
    } else if (!strcmp(name, "latency")) {
        p->subs = smoke ? 3 : 10;
        p->size = 128;
        p->rate = smoke ? 2000 : 20000;
    } else if (!strcmp(name, "idle") || !strcmp(name, "idle-ws")) {
        p->pubs = 0;
        p->subs = 0;
        p->conns = smoke ? 100 : 10000;
        p->duration = smoke ? 0.3 : 2; /* settle time before memory is read */
        pl->idle = 1;
        if (!strcmp(name, "idle-ws")) {
            /* Over WebSocket, every client connecting at once (unless --ramp says
             * otherwise): a burst of upgrades is the case where per-connection
             * WebSocket state, given back once idle, could stay in the broker's RSS. */
            p->sub_transport = "ws";
            pl->sub_ws = 1;
            p->duration = smoke ? 1.5 : 3; /* past the broker's 1 s idle release */
        }
    } else if (!strcmp(name, "mixed")) {
        p->pubs = smoke ? 2 : 10;
        p->subs = smoke ? 10 : 100;
        p->topics = smoke ? 2 : 10;
        p->size = 128;
        p->sub_transport = "ws";
        pl->sub_ws = 1;
    } else if (!strcmp(name, "slow")) {
        p->subs = smoke ? 10 : 100;
        p->stalled = 1;
        /* 1 KiB messages reach the peers' and Herald's output limits within seconds. */
        p->size = 1024;
        /* A small window keeps what a healthy subscriber may owe far below any output
         * limit, so only the stalled one can reach it. */
        p->window = smoke ? 2000 : 10000;
    } else if (!strcmp(name, "reqrep")) {
        p->pubs = smoke ? 2 : 10;
        p->subs = 1; /* the responder */
        pl->reqrep = 1;
    } else {
        return -1;
    }
    pl->name = name;
    return 0;
}

const hb_adapter_t *hb_adapter_find(const char *name)
{
#ifdef HB_HAVE_HERALD
    if (!strcmp(name, "herald"))
        return &hb_adapter_herald;
#endif
    if (!strcmp(name, "nats"))
        return &hb_adapter_nats;
    if (!strcmp(name, "redis"))
        return &hb_adapter_redis;
    return NULL;
}
