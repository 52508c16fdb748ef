/* SPDX-License-Identifier: MIT */
/* Broker settings: one table drives the defaults, --help, the command line and the file. */
#ifndef HERALD_BROKER_CONFIG_H
#define HERALD_BROKER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct hr_config_s {
    char bind[64];
    int64_t port;
    int64_t ws_port;
    char log_level[16];
    char ready_file[512];
    int64_t max_payload;
    int64_t max_connections;
    int64_t max_subs;
    int64_t max_topics;
    int64_t history_msgs;
    int64_t history_bytes;
    int64_t history_total;
    int64_t replay_scan_rate;
    int64_t replay_scan_global;
    int64_t out_hard;
    int64_t out_soft;
    int64_t out_soft_ms;
    int64_t heartbeat_ms;
    int64_t hello_timeout_ms;
    int64_t shutdown_timeout_ms;
    char ws_origins[1024];
    int64_t ws_max_header;
    int64_t ws_handshake_ms;
    char slow_policy[1024];
    /* pipeline.c */
    char pipeline[2048];
    int64_t pipeline_timeout_ms;
    int64_t pipeline_inflight;
    char pipeline_on_error[16];
    /* auth.c */
    char auth_tokens_file[512];
    char auth_anonymous[1024];
    char jwt_hs256_secret[512];
    char jwt_rs256_public_key[512];
    char jwt_issuer[256];
    char jwt_audience[256];
    /* limits.c */
    int64_t max_conns_per_ip;
    int64_t max_pending;
    int64_t max_pub_rate;
    int64_t max_pub_burst;
    int64_t max_replay_rate;
    int64_t max_replay_burst;
    /* proxy_conn.c */
    char proxy_protocol[8];
    char proxy_from[1024];
    /* engine */
    int64_t topic_tombstones;
    int64_t engine_delay_ms;
    char engine[1024]; /* "memory" or a redis:// URL (engine_redis.c) */
    char redis_prefix[128];
    int64_t redis_history_ttl;
    int64_t redis_queue_max;
    /* presence.c */
    int64_t presence_interval_ms;
    int64_t presence_list_max;
    /* cluster */
    int64_t workers;
    /* tls.c */
    char tls_cert[512];
    char tls_key[512];
    char tls_ca[512];
    char tls_verify[16];
    char tls_ports[16];
    /* http.c */
    int64_t demo; /* serve the demo page under /demo/ */
    /* Not settings: what a worker learns from the primary at start (cluster/worker.c). */
    int worker_id;    /* 0..nworkers-1 */
    int nworkers;     /* 0 or 1: a single process */
    int reuseport;    /* listen with SO_REUSEPORT (every worker binds the same ports) */
    uint64_t id_base; /* first client-id counter value of this worker incarnation */
    char epoch[65];   /* the broker's epoch ("" : make one) */
} hr_config_t;

/** Fills `c` with the defaults. */
void hr__config_defaults(hr_config_t *c);

/**
 * Applies the command line (argv[1..]); `--config FILE` is read where it
 * appears, so later options override it. Returns 0, 1 when --help or
 * --version printed and the program should exit 0, or -1 after printing an
 * error naming the bad setting to stderr.
 */
int hr__config_args(hr_config_t *c, int argc, char **argv);

/**
 * Applies a file of `name = value` lines: `#` starts a comment at the start
 * of a line or after a space or tab; a value in double quotes is taken
 * literally without them. 0, or -1 after an error naming FILE:LINE on stderr.
 */
int hr__config_file(hr_config_t *c, const char *path);

/**
 * Compares `old` with `fresh` (a configuration read again on SIGHUP): the
 * settings that can change while running are copied into `old` and logged;
 * the others that differ are logged as needing a restart. Returns how many
 * settings were applied.
 */
int hr__config_reload(hr_config_t *old, const hr_config_t *fresh);

/** Sets one setting by name; 0 or -1 with a message in `err`. */
int hr__config_set(hr_config_t *c, const char *name, const char *value, char *err, size_t errlen);

#endif
