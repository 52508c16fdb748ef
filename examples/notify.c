/* SPDX-License-Identifier: MIT */
/* Notification fan-out: a service publishing with acks, a blocking sender and a receiver. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <herald/herald.h>

/*
 * `herald-notify serve` joins queue group "notifiers" on notify.send (run
 * several for load sharing). A request carries "USER TEXT"; the service
 * publishes TEXT on user.USER.inbox with an ack, and once the broker has
 * sequenced it replies "queued USER seq=N" to the requester.
 *
 * `herald-notify send USER TEXT` is the requesting side, written with the
 * blocking API: one request, wait for the reply, print it.
 *
 * `herald-notify watch USER` is the receiving side, also blocking: it
 * prints the notifications retained for USER, then each new one.
 *
 * USER is one topic token (1..64 printable ASCII bytes without space, `.`,
 * `*`, `>`), so that user.USER.inbox names exactly one user. Every command
 * exits 0 on success, 1 when the broker cannot be reached or the
 * connection is lost for good, 2 for a usage error.
 */

/* 1 if `u` (`n` bytes) is one topic token. */
static int user_valid(const char *u, size_t n)
{
    return n > 0 && n <= HR_TOKEN_MAX && !memchr(u, '.', n) && hr_topic_validate(u, n) == HR_OK;
}

typedef struct pending_s {
    hr_client_t *c;
    char reply[256];
    char user[65];
} pending_t;

static void on_ack(hr_client_t *c, int status, uint64_t seq, void *arg)
{
    pending_t *p = arg;
    char out[160];
    int n;
    if (status == HR_OK)
        n = snprintf(out, sizeof(out), "queued %s seq=%llu", p->user, (unsigned long long)seq);
    else
        n = snprintf(out, sizeof(out), "failed %s: %s", p->user, hr_strerror(status));
    hr_client_publish(c, p->reply, out, (size_t)n, NULL);
    free(p);
}

static void on_request(hr_client_t *c, hr_sub_t *sub, hr_message_t *m, void *arg)
{
    size_t len;
    const char *body = hr_message_data(m, &len);
    const char *sp = memchr(body, ' ', len);
    if (!hr_message_reply(m))
        return;
    if (!sp || !user_valid(body, (size_t)(sp - body))) {
        static const char bad[] = "error: expected 'USER TEXT', USER one topic token";
        hr_client_respond(c, m, bad, sizeof(bad) - 1);
        return;
    }
    pending_t *p = calloc(1, sizeof(*p));
    if (!p)
        return;
    snprintf(p->reply, sizeof(p->reply), "%s", hr_message_reply(m));
    snprintf(p->user, sizeof(p->user), "%.*s", (int)(sp - body), body);
    char topic[128];
    snprintf(topic, sizeof(topic), "user.%s.inbox", p->user);
    hr_header_t h = {"kind", "notification"};
    hr_publish_opts_t po = {.headers = &h, .nheaders = 1, .on_ack = on_ack, .arg = p};
    const char *text = sp + 1;
    int r = hr_client_publish(c, topic, text, len - (size_t)(text - body), &po);
    if (r != HR_OK) {
        char out[128];
        int n = snprintf(out, sizeof(out), "failed %s: %s", p->user, hr_strerror(r));
        hr_client_respond(c, m, out, (size_t)n);
        free(p);
    }
}

static void on_state(hr_client_t *c, int event, int status, void *arg)
{
    if (status)
        fprintf(stderr, "notify: event %d: %s\n", event, hr_strerror(status));
    if (event == HR_EVENT_CLOSED)
        *(int *)arg = status;
}

static int serve(hr_client_opts_t *o)
{
    hr_client_t *c;
    hr_sub_t *sub;
    int status = HR_OK;
    uv_loop_t *loop = uv_default_loop();
    o->on_state = on_state;
    o->arg = &status;
    int r = hr_client_new(loop, o, &c);
    if (r == HR_OK)
        r = hr_client_queue_subscribe(c, "notify.send", "notifiers", on_request, NULL, &sub);
    if (r != HR_OK) {
        fprintf(stderr, "notify: %s\n", hr_strerror(r));
        return 1;
    }
    uv_run(loop, UV_RUN_DEFAULT); /* until the client gives up reconnecting */
    uv_loop_close(loop);
    return status == HR_OK ? 0 : 1;
}

static int watch(hr_client_opts_t *o, const char *user)
{
    hr_sync_t *s;
    hr_sync_sub_t *sub;
    hr_message_t *m;
    char topic[128];
    snprintf(topic, sizeof(topic), "user.%s.inbox", user);
    int r = hr_sync_connect(o, &s);
    if (r != HR_OK) {
        fprintf(stderr, "notify: connect: %s\n", hr_strerror(r));
        return 1;
    }
    hr_sub_opts_t so = {.has_since = 1, .since = 0}; /* what is retained, then live */
    r = hr_sync_subscribe(s, topic, &so, &sub);
    if (r != HR_OK) {
        fprintf(stderr, "notify: watch %s: %s\n", topic, hr_strerror(r));
        hr_sync_close(&s, 0);
        return 1;
    }
    while ((r = hr_sync_next(sub, -1, &m)) == HR_OK) {
        size_t len;
        const char *d = hr_message_data(m, &len);
        printf("%sseq=%llu %.*s\n", hr_message_is_replay(m) ? "(earlier) " : "",
               (unsigned long long)hr_message_seq(m), (int)len, d);
        fflush(stdout);
        hr_message_unref(&m);
    }
    fprintf(stderr, "notify: %s\n", hr_strerror(r)); /* the client gave up reconnecting */
    hr_sync_unsubscribe(&sub);
    hr_sync_close(&s, 0);
    return 1;
}

static int send_one(hr_client_opts_t *o, const char *user, const char *text)
{
    hr_sync_t *s;
    hr_message_t *reply;
    char body[4096];
    int n = snprintf(body, sizeof(body), "%s %s", user, text);
    int r = hr_sync_connect(o, &s);
    if (r != HR_OK) {
        fprintf(stderr, "notify: connect: %s\n", hr_strerror(r));
        return 1;
    }
    r = hr_sync_request(s, "notify.send", body, (size_t)n, 3000, &reply);
    if (r == HR_OK) {
        size_t len;
        const char *d = hr_message_data(reply, &len);
        printf("%.*s\n", (int)len, d);
        hr_message_unref(&reply);
    } else {
        fprintf(stderr, "notify: %s\n", hr_strerror(r));
    }
    hr_sync_close(&s, 0);
    return r == HR_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    hr_client_opts_t o;
    int i = 1;
    hr_client_opts_init(&o);
    /* Options first: the broker's URL and, over TLS, the CA and a client certificate. */
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--url") == 0)
            o.url = argv[i + 1];
        else if (strcmp(argv[i], "--ca") == 0)
            o.tls_ca_file = argv[i + 1];
        else if (strcmp(argv[i], "--cert") == 0)
            o.tls_cert_file = argv[i + 1];
        else if (strcmp(argv[i], "--key") == 0)
            o.tls_key_file = argv[i + 1];
        else
            break;
    }
    if (i + 1 == argc && strcmp(argv[i], "serve") == 0)
        return serve(&o);
    int send = i + 3 == argc && strcmp(argv[i], "send") == 0;
    int recv = i + 2 == argc && strcmp(argv[i], "watch") == 0;
    if ((send || recv) && !user_valid(argv[i + 1], strlen(argv[i + 1]))) {
        fprintf(stderr, "notify: USER must be one topic token (no '.', '*', '>' or spaces)\n");
        return 2;
    }
    if (send)
        return send_one(&o, argv[i + 1], argv[i + 2]);
    if (recv)
        return watch(&o, argv[i + 1]);
    fprintf(stderr, "usage: herald-notify [OPTIONS] serve\n"
                    "       herald-notify [OPTIONS] send USER TEXT\n"
                    "       herald-notify [OPTIONS] watch USER\n"
                    "options: --url tcp://host:port (or ws://, tls://, wss://), and over TLS\n"
                    "         --ca FILE (the CA to trust), --cert FILE --key FILE (a client\n"
                    "         certificate)\n");
    return argc > 1 && strcmp(argv[argc - 1], "--help") == 0 ? 0 : 2;
}
