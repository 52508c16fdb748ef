/* SPDX-License-Identifier: MIT */
/* Publish pipelines: exec stages (child processes) and the sequencer, as stream stages. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "pipeline.h"
#include "server.h"
#include "stage.h"

/*
 * One PUB on its way through a pipeline: a single allocation holding the
 * item, the copy of the PUB (topic, reply, payload, headers) and, once a
 * stage rejected it, the reason. A rewrite replaces the copy.
 */
typedef struct pmsg_s {
    hr_item_t link; /* first: a pmsg_t is the hr_item_t the stages pass on */
    uint64_t origin;
    int no_echo;
    hr_pipe_done_cb done;
    void *arg;
    char *mem; /* owned: what `cmd` points into */
    hr_pub_cmd_t cmd;
    /* exec stage state, for the stage the message is in */
    struct pmsg_s *qnext;
    uint64_t id, deadline;
    uint8_t sent, answered, pass;
    char why[HR_PIPE_REASON_MAX + 64];
} pmsg_t;

struct hr_pipeline_s {
    hr_pipeline_t *next;
    hr_server_t *s;
    char *pattern;
    size_t plen;
    hr_stage_t **stages; /* the exec stages, then the sequencer */
    size_t nstages;
};

/* ---- the message copy ------------------------------------------------------------- */

/* Copies the slices of `p` (with `payload` and `headers` in place of its own) into one
 * allocation and points m->cmd at it. HR_OK or HR_ENOMEM (m unchanged). */
static int pmsg_set(pmsg_t *m, const hr_pub_cmd_t *p, hr_slice_t payload, hr_slice_t headers)
{
    size_t n = p->topic.n + p->reply.n + payload.n + headers.n;
    char *mem = malloc(n ? n : 1), *w = mem;
    if (!mem)
        return HR_ENOMEM;
    hr_pub_cmd_t c = *p;
    const hr_slice_t *from[4] = {&p->topic, &p->reply, &payload, &headers};
    hr_slice_t *to[4] = {&c.topic, &c.reply, &c.payload, &c.headers};
    for (int i = 0; i < 4; i++) {
        if (from[i]->n)
            memcpy(w, from[i]->p, from[i]->n);
        *to[i] = (hr_slice_t){from[i]->n ? w : NULL, from[i]->n};
        w += from[i]->n;
    }
    free(m->mem);
    m->mem = mem;
    m->cmd = c;
    return HR_OK;
}

static void pmsg_finish(pmsg_t *m, int status, uint64_t seq)
{
    m->done(m->arg, status, seq, status == HR_EREJECTED ? m->why : NULL);
    free(m->mem);
    free(m);
}

/* ---- the sequencer: the sink of every pipeline ------------------------------------ */

typedef struct seqr_s {
    hr_stage_t st;
    hr_server_t *s;
} seqr_t;

static void on_routed(void *arg, int status, uint64_t seq)
{
    pmsg_finish(arg, status, seq);
}

static void seqr_write(hr_stage_t *st, hr_item_t *it)
{
    seqr_t *q = (seqr_t *)st;
    pmsg_t *m = (pmsg_t *)it;
    int r = hr__router_publish(q->s, &m->cmd, m->origin, m->no_echo, on_routed, m);
    if (r < 0)
        pmsg_finish(m, r, 0);
}

static void seqr_destroy(hr_stage_t *st)
{
    free(st);
}

static const hr_stage_ops_t seqr_ops = {"sequencer", seqr_write, NULL, seqr_destroy, NULL};

/* ---- the exec stage ---------------------------------------------------------------- */

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define STABLE_MS 10000 /* a child that ran this long restarts at once after a crash */

typedef struct exec_s {
    hr_stage_t st; /* first */
    hr_server_t *s;
    char *cmdline; /* owned: as configured, for logs */
    char **argv;   /* owned: words of a copy of cmdline */
    char *words;   /* owned */
    uv_process_t proc;
    uv_pipe_t in, out; /* the child's stdin, stdout */
    uv_timer_t timer;  /* the oldest message's deadline, or the restart */
    int running;       /* the child is alive and its pipes are open */
    int killed;        /* it was sent SIGKILL */
    int open_handles;  /* of proc/in/out, not yet closed */
    int stopping;      /* the loop is stopping: no restart */
    int timer_on;
    hr_buf_t partial; /* an answer cut by the end of a read */
    char *rbuf;       /* owned: read buffer */
    pmsg_t *qh, *qt;  /* in this stage, oldest first: sent or waiting for the child */
    uint64_t next_id, started, restart_at;
    uint32_t backoff;
    hr_pipe_stats_t stats;
} exec_t;

#define RBUF_SIZE (64 * 1024)

static uint64_t now_of(exec_t *x)
{
    return hr__now_ms(x->s);
}

static void on_child_exit(uv_process_t *p, int64_t status, int sig);
static void on_exec_timer(uv_timer_t *t);

/* Sets the stage's timer for its next deadline: the oldest unanswered message's, or the
 * restart of a child that is down. */
static void arm(exec_t *x)
{
    if (x->stopping)
        return;
    uint64_t due = UINT64_MAX;
    for (pmsg_t *m = x->qh; m; m = m->qnext)
        if (!m->answered) {
            due = m->deadline;
            break;
        }
    if (!x->running && x->restart_at && x->restart_at < due)
        due = x->restart_at;
    if (due == UINT64_MAX) {
        uv_timer_stop(&x->timer);
        return;
    }
    uint64_t now = now_of(x);
    uv_timer_start(&x->timer, on_exec_timer, due > now ? due - now : 0, 0);
}

/* What a message the stage could not judge gets: `pipeline-on-error`. */
static void fail_msg(exec_t *x, pmsg_t *m, const char *what)
{
    m->answered = 1;
    m->pass = x->s->pipe_pass_on_error;
    snprintf(m->why, sizeof(m->why), "publish pipeline: %s", what);
    x->stats.failed++;
}

/* Hands on, in order, every message at the head that has its answer. */
static void complete_head(exec_t *x)
{
    while (x->qh && x->qh->answered) {
        pmsg_t *m = x->qh;
        x->qh = m->qnext;
        if (!x->qh)
            x->qt = NULL;
        if (m->pass)
            hr__stage_push(&x->st, &m->link);
        else
            pmsg_finish(m, HR_EREJECTED, 0);
        hr__stage_fill(&x->st, -1);
    }
    arm(x);
}

typedef struct cwrite_s {
    uv_write_t req;
    hr_buf_t b;
} cwrite_t;

static void on_child_write(uv_write_t *req, int status)
{
    (void)status; /* a child that stopped reading is handled by its exit */
    cwrite_t *w = (cwrite_t *)req;
    hr_buf_destroy(&w->b);
    free(w);
}

static void send_msg(exec_t *x, pmsg_t *m)
{
    cwrite_t *w = malloc(sizeof(*w));
    if (!w) {
        fail_msg(x, m, "out of memory");
        return;
    }
    hr_buf_init(&w->b);
    if (hr__pipe_request_encode(&w->b, m->id, &m->cmd, m->origin) != HR_OK) {
        free(w);
        fail_msg(x, m, "out of memory");
        return;
    }
    uv_buf_t b = uv_buf_init((char *)w->b.base, (unsigned)w->b.len);
    if (uv_write(&w->req, (uv_stream_t *)&x->in, &b, 1, on_child_write) != 0) {
        hr_buf_destroy(&w->b);
        free(w);
        fail_msg(x, m, "the stage's input is closed");
        return;
    }
    m->sent = 1;
}

static void kill_child(exec_t *x, const char *why)
{
    if (!x->running || x->killed)
        return;
    x->killed = 1;
    HR_LOG(HR_LOG_WARN, 0, "pipeline stage '%s': %s; restarting it", x->cmdline, why);
    uv_process_kill(&x->proc, SIGKILL);
}

/* One answer frame from the child. */
static int on_answer(void *arg, const char *body, size_t n)
{
    exec_t *x = arg;
    hr_pipe_answer_t a;
    const char *why;
    if (hr__pipe_answer_decode(body, n, &a, &why) != HR_OK) {
        char msg[128];
        snprintf(msg, sizeof(msg), "bad answer (%s)", why);
        kill_child(x, msg);
        return 1;
    }
    pmsg_t *m = x->qh;
    while (m && m->id != a.id)
        m = m->qnext;
    if (!m || m->answered || !m->sent) {
        x->stats.late++; /* timed out already, or an id never sent */
        return 0;
    }
    m->answered = 1;
    m->pass = a.action == HR_PIPE_PASS;
    if (!m->pass) {
        x->stats.rejected++;
        if (a.reason.n)
            snprintf(m->why, sizeof(m->why), "rejected: %.*s", (int)a.reason.n, a.reason.p);
        else
            snprintf(m->why, sizeof(m->why), "rejected by the publish pipeline");
    } else if (a.has_payload || a.has_headers) {
        hr_slice_t pl = a.has_payload ? a.payload : m->cmd.payload;
        hr_slice_t hd = a.has_headers ? a.headers : m->cmd.headers;
        if (pl.n > (size_t)x->s->cfg.max_payload)
            fail_msg(x, m, "the rewritten payload is larger than max-payload");
        else if (pmsg_set(m, &m->cmd, pl, hd) != HR_OK)
            fail_msg(x, m, "out of memory");
        else
            x->stats.rewritten++;
    } else {
        x->stats.passed++;
    }
    return 0;
}

static void on_child_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    exec_t *x = h->data;
    *buf = uv_buf_init(x->rbuf, RBUF_SIZE);
}

static void on_child_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    exec_t *x = st->data;
    if (nread < 0) {
        kill_child(x, nread == UV_EOF ? "it closed its output" : uv_strerror((int)nread));
        return;
    }
    /* An answer is at most a payload of max-payload plus headers and framing. */
    size_t max = (size_t)x->s->cfg.max_payload + 2 * HR_PIPE_HEADERS_MAX * HR_PIPE_HEADER_MAX;
    int r =
        nread > 0 ? hr_lp_feed(&x->partial, buf->base, (size_t)nread, max, on_answer, x) : HR_OK;
    if (r == HR_ETOOBIG || r == HR_ENOMEM) /* HR_ECANCELED: on_answer already killed it */
        kill_child(x, r == HR_ETOOBIG ? "it wrote a frame that is too large" : "out of memory");
    complete_head(x);
}

static void on_handle_closed(uv_handle_t *h)
{
    exec_t *x = h->data;
    x->open_handles--;
}

static void close_child(exec_t *x)
{
    uv_close((uv_handle_t *)&x->proc, on_handle_closed);
    uv_close((uv_handle_t *)&x->in, on_handle_closed);
    uv_close((uv_handle_t *)&x->out, on_handle_closed);
}

static void spawn(exec_t *x)
{
    if (x->running || x->open_handles || x->stopping)
        return;
    x->restart_at = 0;
    uv_pipe_init(x->s->loop, &x->in, 0);
    uv_pipe_init(x->s->loop, &x->out, 0);
    x->in.data = x->out.data = x->proc.data = x;
    x->open_handles = 3;
    uv_stdio_container_t io[3];
    io[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    io[0].data.stream = (uv_stream_t *)&x->in;
    io[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    io[1].data.stream = (uv_stream_t *)&x->out;
    io[2].flags = UV_INHERIT_FD;
    io[2].data.fd = 2; /* the child's own messages go to the broker's stderr */
    uv_process_options_t o = {0};
    o.exit_cb = on_child_exit;
    o.file = x->argv[0];
    o.args = x->argv;
    o.stdio = io;
    o.stdio_count = 3;
    int r = uv_spawn(x->s->loop, &x->proc, &o);
    if (r != 0) {
        HR_LOG(HR_LOG_ERROR, 0, "pipeline stage '%s': cannot start: %s; retrying in %u ms",
               x->cmdline, uv_strerror(r), x->backoff);
        close_child(x);
        x->restart_at = now_of(x) + x->backoff;
        x->backoff = x->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : x->backoff * 2;
        arm(x);
        return;
    }
    x->running = 1;
    x->killed = 0;
    x->started = now_of(x);
    hr_buf_reset(&x->partial);
    uv_read_start((uv_stream_t *)&x->out, on_child_alloc, on_child_read);
    for (pmsg_t *m = x->qh; m; m = m->qnext) /* what waited for the restart */
        if (!m->answered && !m->sent)
            send_msg(x, m);
    complete_head(x);
}

static void on_child_exit(uv_process_t *p, int64_t status, int sig)
{
    exec_t *x = p->data;
    x->running = 0;
    x->stats.restarts += !x->stopping;
    uint64_t now = now_of(x);
    if (now - x->started >= STABLE_MS)
        x->backoff = BACKOFF_MIN_MS;
    if (!x->stopping)
        HR_LOG(HR_LOG_WARN, 0,
               "pipeline stage '%s' exited (status %lld, signal %d); restarting in %u ms",
               x->cmdline, (long long)status, sig, x->backoff);
    for (pmsg_t *m = x->qh; m; m = m->qnext)
        if (m->sent && !m->answered)
            fail_msg(x, m, "the stage exited before answering");
    close_child(x);
    if (!x->stopping) {
        x->restart_at = now + x->backoff;
        x->backoff = x->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : x->backoff * 2;
    }
    complete_head(x);
}

static void on_exec_timer(uv_timer_t *t)
{
    exec_t *x = t->data;
    uint64_t now = now_of(x);
    for (pmsg_t *m = x->qh; m && m->deadline <= now; m = m->qnext)
        if (!m->answered) {
            x->stats.timeouts++;
            fail_msg(x, m,
                     x->running ? "the stage did not answer in time" : "the stage is not running");
        }
    if (!x->running && x->restart_at && x->restart_at <= now)
        spawn(x);
    complete_head(x);
}

static void exec_write(hr_stage_t *st, hr_item_t *it)
{
    exec_t *x = (exec_t *)st;
    pmsg_t *m = (pmsg_t *)it;
    m->qnext = NULL;
    m->id = ++x->next_id;
    m->deadline = now_of(x) + (uint64_t)x->s->cfg.pipeline_timeout_ms;
    m->sent = m->answered = 0;
    if (x->qt)
        x->qt->qnext = m;
    else
        x->qh = m;
    x->qt = m;
    st->fill++;
    if (x->running)
        send_msg(x, m);
    if (m->answered) /* could not even be sent */
        complete_head(x);
    else if (m == x->qh)
        arm(x);
}

static void drop_item(hr_stage_t *st, hr_item_t *it)
{
    (void)st;
    pmsg_t *m = (pmsg_t *)it;
    snprintf(m->why, sizeof(m->why), "the broker is stopping");
    pmsg_finish(m, HR_EREJECTED, 0);
}

static void exec_destroy(hr_stage_t *st)
{
    exec_t *x = (exec_t *)st;
    while (x->qh) {
        pmsg_t *m = x->qh;
        x->qh = m->qnext;
        drop_item(st, &m->link);
    }
    hr_buf_destroy(&x->partial);
    free(x->rbuf);
    free(x->argv);
    free(x->words);
    free(x->cmdline);
    free(x);
}

static const hr_stage_ops_t exec_ops = {"exec", exec_write, NULL, exec_destroy, drop_item};

/* Stops the child for good and answers what it holds (the loop is stopping). */
static void exec_stop(exec_t *x)
{
    x->stopping = 1;
    for (pmsg_t *m = x->qh; m; m = m->qnext)
        if (!m->answered)
            fail_msg(x, m, "the broker is stopping");
    if (x->running) {
        uv_process_kill(&x->proc, SIGKILL); /* a filter keeps no state worth a grace period */
        uv_read_stop((uv_stream_t *)&x->out);
    }
    if (x->timer_on) {
        uv_close((uv_handle_t *)&x->timer, NULL);
        x->timer_on = 0;
    }
    complete_head(x);
}

/* "exec:PROGRAM ARG ..." split on spaces (no shell: nothing is interpreted). */
static exec_t *exec_new(hr_server_t *s, const char *spec, size_t n)
{
    exec_t *x = calloc(1, sizeof(*x));
    if (!x)
        return NULL;
    x->s = s;
    x->backoff = BACKOFF_MIN_MS;
    hr_buf_init(&x->partial);
    x->cmdline = strndup(spec, n);
    x->words = strndup(spec, n);
    x->rbuf = malloc(RBUF_SIZE);
    x->argv = calloc(n / 2 + 2, sizeof(char *));
    if (!x->cmdline || !x->words || !x->rbuf || !x->argv) {
        exec_destroy(&x->st);
        return NULL;
    }
    size_t k = 0;
    for (char *save = NULL, *w = strtok_r(x->words, " ", &save); w; w = strtok_r(NULL, " ", &save))
        x->argv[k++] = w;
    hr__stage_init(&x->st, &exec_ops, (size_t)s->cfg.pipeline_inflight);
    return x;
}

/* ---- configuration ------------------------------------------------------------------ */

static void pipeline_free(hr_pipeline_t *pl)
{
    if (pl->nstages)
        hr__stage_destroy_chain(pl->stages[0]);
    free(pl->stages);
    free(pl->pattern);
    free(pl);
}

static void on_first_drain(void *arg, hr_stage_t *st)
{
    (void)st;
    hr__server_release(arg, HR_C_STAGE_WAIT);
}

/* One "pattern=stage|stage" entry. HR_OK, HR_EINVAL (printed) or HR_ENOMEM. */
static int parse_one(hr_server_t *s, const char *spec, size_t n, hr_pipeline_t **out)
{
    const char *eq = memchr(spec, '=', n);
    size_t plen = eq ? (size_t)(eq - spec) : 0;
    if (!eq || hr_pattern_validate(spec, plen) != HR_OK) {
        fprintf(stderr, "herald: pipeline: '%.*s' is not pattern=exec:PROGRAM [ARGS]\n", (int)n,
                spec);
        return HR_EINVAL;
    }
    hr_pipeline_t *pl = calloc(1, sizeof(*pl));
    if (!pl || !(pl->pattern = strndup(spec, plen))) {
        free(pl);
        return HR_ENOMEM;
    }
    pl->s = s;
    pl->plen = plen;
    const char *p = eq + 1, *end = spec + n;
    int r = HR_OK;
    while (r == HR_OK) {
        const char *bar = memchr(p, '|', (size_t)(end - p));
        const char *stop = bar ? bar : end;
        while (p < stop && *p == ' ')
            p++;
        size_t len = (size_t)(stop - p);
        while (len && p[len - 1] == ' ')
            len--;
        if (len <= 5 || memcmp(p, "exec:", 5) != 0 || p[5] == ' ') {
            fprintf(stderr, "herald: pipeline: stage '%.*s' of '%.*s' is not exec:PROGRAM [ARGS]\n",
                    (int)len, p, (int)plen, spec);
            r = HR_EINVAL;
            break;
        }
        hr_stage_t **v = realloc(pl->stages, (pl->nstages + 2) * sizeof(*v));
        exec_t *x = v ? exec_new(s, p + 5, len - 5) : NULL;
        if (v)
            pl->stages = v;
        if (!x) {
            r = HR_ENOMEM;
            break;
        }
        pl->stages[pl->nstages++] = &x->st;
        if (strchr(x->argv[0], '/') && access(x->argv[0], X_OK) != 0) {
            fprintf(stderr, "herald: pipeline: cannot run '%s': %s\n", x->argv[0], strerror(errno));
            r = HR_EINVAL;
            break;
        }
        if (!bar)
            break;
        p = bar + 1;
    }
    seqr_t *q = r == HR_OK ? calloc(1, sizeof(*q)) : NULL;
    if (r == HR_OK && !q)
        r = HR_ENOMEM;
    if (r != HR_OK) {
        hr__stage_chain(pl->stages, pl->nstages); /* so pipeline_free() reaches every stage */
        pipeline_free(pl);
        return r;
    }
    q->s = s;
    hr__stage_init(&q->st, &seqr_ops, 0);
    pl->stages[pl->nstages++] = &q->st;
    hr__stage_chain(pl->stages, pl->nstages);
    pl->stages[0]->on_drain = on_first_drain;
    pl->stages[0]->arg = s;
    *out = pl;
    return HR_OK;
}

int hr__pipeline_init(hr_server_t *s)
{
    const char *spec = s->cfg.pipeline;
    const char *oe = s->cfg.pipeline_on_error;
    if (strcmp(oe, "reject") != 0 && strcmp(oe, "pass") != 0) {
        fprintf(stderr, "herald: pipeline-on-error: '%s' is not reject or pass\n", oe);
        return HR_EINVAL;
    }
    s->pipe_pass_on_error = strcmp(oe, "pass") == 0;
    hr_pipeline_t **tail = &s->pipelines;
    while (*spec) {
        const char *end = strchr(spec, ',');
        size_t n = end ? (size_t)(end - spec) : strlen(spec);
        int r = parse_one(s, spec, n, tail);
        if (r != HR_OK)
            return r;
        tail = &(*tail)->next;
        spec += n + (end != NULL);
    }
    return HR_OK;
}

/* Starts every child (from the loop: spawn failures are logged and retried). */
void hr__pipeline_start(hr_server_t *s)
{
    for (hr_pipeline_t *pl = s->pipelines; pl; pl = pl->next)
        for (size_t i = 0; i + 1 < pl->nstages; i++) {
            exec_t *x = (exec_t *)pl->stages[i];
            uv_timer_init(s->loop, &x->timer);
            x->timer.data = x;
            x->timer_on = 1;
            spawn(x);
        }
}

void hr__pipeline_close(hr_server_t *s)
{
    for (hr_pipeline_t *pl = s->pipelines; pl; pl = pl->next)
        for (size_t i = 0; i + 1 < pl->nstages; i++)
            exec_stop((exec_t *)pl->stages[i]);
}

void hr__pipeline_destroy(hr_server_t *s)
{
    while (s->pipelines) {
        hr_pipeline_t *pl = s->pipelines;
        s->pipelines = pl->next;
        pipeline_free(pl);
    }
}

hr_pipeline_t *hr__pipeline_find(hr_server_t *s, hr_slice_t topic)
{
    for (hr_pipeline_t *pl = s->pipelines; pl; pl = pl->next)
        if (hr_topic_match(pl->pattern, pl->plen, topic.p, topic.n))
            return pl;
    return NULL;
}

int hr__pipeline_publish(hr_pipeline_t *pl, hr_conn_t *c, const hr_pub_cmd_t *p, int no_echo,
                         hr_pipe_done_cb done, void *arg)
{
    pmsg_t *m = calloc(1, sizeof(*m));
    if (!m || pmsg_set(m, p, p->payload, p->headers) != HR_OK) {
        free(m);
        return HR_ENOMEM;
    }
    m->origin = c->id;
    m->no_echo = no_echo;
    m->done = done;
    m->arg = arg;
    if (!hr__stage_write(pl->stages[0], &m->link))
        hr__conn_hold(c, HR_C_STAGE_WAIT); /* the first stage is full: stop reading */
    return HR_OK;
}

void hr__pipeline_stats(hr_server_t *s, hr_pipe_stats_t *st)
{
    *st = (hr_pipe_stats_t){0};
    for (hr_pipeline_t *pl = s->pipelines; pl; pl = pl->next)
        for (size_t i = 0; i + 1 < pl->nstages; i++) {
            exec_t *x = (exec_t *)pl->stages[i];
            st->passed += x->stats.passed;
            st->rewritten += x->stats.rewritten;
            st->rejected += x->stats.rejected;
            st->failed += x->stats.failed;
            st->timeouts += x->stats.timeouts;
            st->restarts += x->stats.restarts;
            st->late += x->stats.late;
            st->inflight += x->st.fill;
        }
}
