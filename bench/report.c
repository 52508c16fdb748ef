/* SPDX-License-Identifier: MIT */
/* herald-bench: JSON and Markdown reports of scenario results. */
#include "report.h"

#include <math.h>
#include <string.h>

void hb_result_finish(hb_result_t *r)
{
    r->pub_rate = r->pub_secs > 0 ? (double)r->published / r->pub_secs : 0;
    r->del_rate = r->del_secs > 0 ? (double)r->delivered / r->del_secs : 0;
    r->pub_mbps = r->pub_secs > 0 ? (double)r->pub_bytes / r->pub_secs / 1e6 : 0;
    r->del_mbps = r->del_secs > 0 ? (double)r->del_bytes / r->del_secs / 1e6 : 0;
    r->lost = r->expected > r->delivered ? r->expected - r->delivered : 0;
}

const char *hb_fmt_si(char *buf, size_t n, double v)
{
    const char *suf = "";
    if (fabs(v) >= 1e9) {
        v /= 1e9;
        suf = "G";
    } else if (fabs(v) >= 1e6) {
        v /= 1e6;
        suf = "M";
    } else if (fabs(v) >= 1e3) {
        v /= 1e3;
        suf = "k";
    }
    if (*suf == 0 && v == floor(v))
        snprintf(buf, n, "%.0f", v);
    else
        snprintf(buf, n, fabs(v) >= 100 ? "%.0f%s" : fabs(v) >= 10 ? "%.1f%s" : "%.2f%s", v, suf);
    return buf;
}

const char *hb_fmt_ns(char *buf, size_t n, double ns)
{
    if (ns < 1e3)
        snprintf(buf, n, "%.0fns", ns);
    else if (ns < 1e6)
        snprintf(buf, n, ns < 1e5 ? "%.1fus" : "%.0fus", ns / 1e3);
    else if (ns < 1e9)
        snprintf(buf, n, "%.2fms", ns / 1e6);
    else
        snprintf(buf, n, "%.2fs", ns / 1e9);
    return buf;
}

const char *hb_fmt_bytes(char *buf, size_t n, double b)
{
    if (b < 1024)
        snprintf(buf, n, "%.0f B", b);
    else if (b < 1024 * 1024)
        snprintf(buf, n, "%.1f KiB", b / 1024);
    else if (b < 1024.0 * 1024 * 1024)
        snprintf(buf, n, "%.1f MiB", b / (1024 * 1024));
    else
        snprintf(buf, n, "%.2f GiB", b / (1024.0 * 1024 * 1024));
    return buf;
}

/* ---- JSON ------------------------------------------------------------- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* JSON has no NaN or infinity: write null instead. */
static void json_num(FILE *f, double v)
{
    if (isnan(v) || isinf(v))
        fputs("null", f);
    else if (v == floor(v) && fabs(v) < 1e15)
        fprintf(f, "%.0f", v);
    else
        fprintf(f, "%.6g", v);
}

#define KV_U(k, v) fprintf(f, "%s\"%s\": %llu", sep(&first), k, (unsigned long long)(v))
#define KV_D(k, v) (fprintf(f, "%s\"%s\": ", sep(&first), k), json_num(f, v))
#define KV_S(k, v) (fprintf(f, "%s\"%s\": ", sep(&first), k), json_str(f, v))

static const char *sep(int *first)
{
    if (*first) {
        *first = 0;
        return "";
    }
    return ", ";
}

void hb_report_json(FILE *f, const hb_result_t *r, int indent)
{
    int first = 1;
    const hb_params_t *p = &r->params;
    fprintf(f, "%*s{", indent, "");
    KV_S("scenario", r->scenario);
    KV_S("broker", r->broker);
    KV_S("version", r->version);
    fprintf(f, ", \"ok\": %s", r->ok ? "true" : "false");
    KV_S("error", r->error);

    fprintf(f, ", \"params\": {");
    first = 1;
    KV_U("pubs", p->pubs);
    KV_U("subs", p->subs);
    KV_U("topics", p->topics);
    KV_U("size", p->size);
    KV_U("threads", p->threads);
    KV_U("stalled", p->stalled);
    KV_U("conns", p->conns);
    KV_D("rate", p->rate);
    KV_D("duration", p->duration);
    KV_U("count", p->count);
    KV_U("window", p->window);
    KV_S("sub_transport", p->sub_transport ? p->sub_transport : "tcp");
    if (p->transform)
        KV_S("transform", p->transform);
    fputs("}", f);

    fprintf(f, ", \"results\": {");
    first = 1;
    KV_U("published", r->published);
    KV_U("expected", r->expected);
    KV_U("delivered", r->delivered);
    KV_U("lost", r->lost);
    KV_U("duplicates", r->duplicates);
    KV_U("reordered", r->reordered);
    KV_U("gaps", r->gaps);
    KV_U("errors", r->errors);
    KV_U("disconnects", r->disconnects);
    KV_U("stalled_closed", r->stalled_closed);
    KV_D("pub_secs", r->pub_secs);
    KV_D("del_secs", r->del_secs);
    KV_D("pub_msgs_per_s", r->pub_rate);
    KV_D("del_msgs_per_s", r->del_rate);
    KV_D("pub_mb_per_s", r->pub_mbps);
    KV_D("del_mb_per_s", r->del_mbps);
    KV_D("bench_cpu_pct", r->bench_cpu);
    KV_D("broker_cpu_pct", r->broker_cpu);
    KV_U("broker_rss_bytes", r->broker_rss);
    KV_U("broker_rss_peak_bytes", r->broker_rss_peak);
    KV_U("broker_rss_base_bytes", r->broker_rss_base);
    KV_D("mem_per_conn_bytes", r->mem_per_conn);
    fputs("}", f);

    fputs(", \"latency_ns\": ", f);
    if (r->lat && r->lat->count) {
        static const double pc[] = {50, 90, 99, 99.9, 99.99};
        static const char *nm[] = {"p50", "p90", "p99", "p99_9", "p99_99"};
        first = 1;
        fputc('{', f);
        KV_U("count", r->lat->count);
        KV_U("min", r->lat->min);
        KV_D("mean", hb_hist_mean(r->lat));
        for (size_t i = 0; i < sizeof(pc) / sizeof(pc[0]); i++)
            KV_U(nm[i], hb_hist_percentile(r->lat, pc[i]));
        KV_U("max", r->lat->max);
        fputc('}', f);
    } else {
        fputs("null", f);
    }

    fputs(", \"series\": [", f);
    for (int i = 0; i < r->nseries; i++) {
        const hb_sample_t *s = &r->series[i];
        fprintf(f, "%s[", i ? ", " : "");
        json_num(f, round(s->t * 1000) / 1000);
        fputs(", ", f);
        json_num(f, round(s->pub_rate));
        fputs(", ", f);
        json_num(f, round(s->del_rate));
        fputs(", ", f);
        json_num(f, round(s->broker_cpu * 10) / 10);
        fprintf(f, ", %llu]", (unsigned long long)s->broker_rss);
    }
    fputs("]}", f);
}

void hb_report_json_all(FILE *f, hb_result_t *const *rs, int n)
{
    fputs("[\n", f);
    for (int i = 0; i < n; i++) {
        hb_report_json(f, rs[i], 2);
        fputs(i + 1 < n ? ",\n" : "\n", f);
    }
    fputs("]\n", f);
}

/* ---- Markdown --------------------------------------------------------- */

hb_headline_t hb_headline(const hb_result_t *r)
{
    hb_headline_t h = {"delivered msgs/s", r->del_rate, 1};
    if (!strcmp(r->scenario, "latency")) {
        h.label = "p99 latency";
        h.value = r->lat ? (double)hb_hist_percentile(r->lat, 99) : 0;
        h.higher_better = 0;
    } else if (!strncmp(r->scenario, "idle", 4)) { /* idle, idle-ws */
        h.label = "memory per connection";
        h.value = r->mem_per_conn;
        h.higher_better = 0;
    } else if (!strcmp(r->scenario, "reqrep")) {
        h.label = "round trips/s";
    } else if (!strcmp(r->scenario, "slow")) {
        h.label = "delivered msgs/s to the healthy subscribers";
    }
    return h;
}

/* The performance targets, as ratios against a named peer or the better one. */
typedef struct target_s {
    const char *scenario;
    const char *peer; /* NULL: the better peer */
    double ratio;     /* Herald/peer must be >= (higher is better) or <= this */
    const char *text;
} target_t;

static const target_t targets[] = {
    {"throughput", "nats", 1.5, ">= 1.5x nats-server"},
    {"fanout", NULL, 2.0, ">= 2x the better peer"},
    {"chat", "nats", 2.0, ">= 2x nats-server"},
    {"latency", NULL, 0.5, "p99 <= half the better peer's"},
};

static const char *display(const char *broker)
{
    if (!strcmp(broker, "nats"))
        return "nats-server";
    if (!strcmp(broker, "redis"))
        return "redis-server";
    return broker;
}

/* How one row of the table reads its value from a result; NAN: not applicable. */
typedef struct row_s {
    const char *label;
    int kind; /* 0 count/rate (SI), 1 ns, 2 bytes, 3 percent, 4 plain integer */
    int dir;  /* +1 higher is better, -1 lower is better, 0 no ratio */
    double (*get)(const hb_result_t *r);
} row_t;

static int idle(const hb_result_t *r)
{
    return r->published == 0 && r->delivered == 0;
}
static double g_pub(const hb_result_t *r)
{
    return idle(r) ? NAN : r->pub_rate;
}
static double g_del(const hb_result_t *r)
{
    return idle(r) ? NAN : r->del_rate;
}
static double g_mbps(const hb_result_t *r)
{
    return idle(r) ? NAN : r->del_mbps;
}
static double lat_at(const hb_result_t *r, double p)
{
    return r->lat && r->lat->count ? (double)hb_hist_percentile(r->lat, p) : NAN;
}
static double g_p50(const hb_result_t *r)
{
    return lat_at(r, 50);
}
static double g_p90(const hb_result_t *r)
{
    return lat_at(r, 90);
}
static double g_p99(const hb_result_t *r)
{
    return lat_at(r, 99);
}
static double g_p999(const hb_result_t *r)
{
    return lat_at(r, 99.9);
}
static double g_max(const hb_result_t *r)
{
    return lat_at(r, 100);
}
static double g_lost(const hb_result_t *r)
{
    return idle(r) ? NAN : (double)r->lost;
}
static double g_dup(const hb_result_t *r)
{
    return idle(r) ? NAN : (double)(r->duplicates + r->reordered);
}
static double g_bcpu(const hb_result_t *r)
{
    return r->broker_cpu >= 0 ? r->broker_cpu : NAN;
}
static double g_rss(const hb_result_t *r)
{
    return r->broker_rss_peak ? (double)r->broker_rss_peak : NAN;
}
static double g_mpc(const hb_result_t *r)
{
    return r->mem_per_conn > 0 ? r->mem_per_conn : NAN;
}
/* Deliveries per second of broker CPU: what the broker did with the CPU it was given. */
static double g_eff(const hb_result_t *r)
{
    return idle(r) || r->broker_cpu <= 1 ? NAN : r->del_rate / (r->broker_cpu / 100);
}
static double g_cpu(const hb_result_t *r)
{
    return idle(r) ? NAN : r->bench_cpu;
}
static double g_cut(const hb_result_t *r)
{
    return r->params.stalled ? (double)r->stalled_closed : NAN;
}

static const row_t rows[] = {
    {"published msgs/s", 0, +1, g_pub},
    {"delivered msgs/s", 0, +1, g_del},
    {"delivered MB/s (payload)", 0, +1, g_mbps},
    {"latency p50", 1, -1, g_p50},
    {"latency p90", 1, -1, g_p90},
    {"latency p99", 1, -1, g_p99},
    {"latency p99.9", 1, -1, g_p999},
    {"latency max", 1, -1, g_max},
    {"lost", 4, 0, g_lost},
    {"duplicates + reordered", 4, 0, g_dup},
    {"stalled subscriber cut off", 4, 0, g_cut},
    {"memory per connection", 2, -1, g_mpc},
    {"broker CPU (% of a core)", 3, 0, g_bcpu},
    {"delivered msgs per broker CPU-second", 0, +1, g_eff},
    {"broker peak RSS", 2, -1, g_rss},
    {"herald-bench CPU (% of a core)", 3, 0, g_cpu},
};

static void fmt_cell(char *buf, size_t n, int kind, double v)
{
    if (isnan(v)) {
        snprintf(buf, n, "–");
        return;
    }
    switch (kind) {
    case 1:
        hb_fmt_ns(buf, n, v);
        break;
    case 2:
        hb_fmt_bytes(buf, n, v);
        break;
    case 3:
        snprintf(buf, n, "%.0f%%", v);
        break;
    case 4:
        snprintf(buf, n, "%.0f", v);
        break;
    default:
        hb_fmt_si(buf, n, v);
    }
}

static void write_scenario(FILE *f, const char *scen, hb_result_t *const *rs, int n)
{
    const hb_result_t *col[8];
    int ncol = 0;
    const hb_result_t *herald = NULL;
    for (int i = 0; i < n && ncol < 8; i++) {
        if (strcmp(rs[i]->scenario, scen))
            continue;
        col[ncol++] = rs[i];
        if (!herald && !strncmp(rs[i]->broker, "herald", 6))
            herald = rs[i];
    }
    const hb_params_t *p = &col[0]->params;
    char b1[32], b2[32];
    int anyok = 0;
    for (int c = 0; c < ncol; c++)
        anyok |= col[c]->ok;
    fprintf(f, "### %s\n\n", scen);
    if (!strncmp(scen, "idle", 4))
        fprintf(f,
                "%d idle connections%s, each subscribed to a topic of its own; memory per "
                "connection is the growth of the broker's RSS divided by the connections.\n\n",
                p->conns,
                p->sub_transport && !strcmp(p->sub_transport, "ws")
                    ? " over WebSocket, all connecting at once"
                    : "");
    else if (!strcmp(scen, "reqrep"))
        fprintf(f,
                "%d requesters and one responder, closed loop (one request outstanding per "
                "requester), %d B payloads, for %.1f s; latency is the round trip.\n\n",
                p->pubs, p->size, p->duration);
    else {
        fprintf(f, "%d publisher(s), %d subscriber(s)%s%s, %d topic(s), %d B payloads, ", p->pubs,
                p->subs,
                p->sub_transport && !strcmp(p->sub_transport, "ws") ? " over WebSocket" : "",
                p->stalled ? " (one of them stalled: it never reads)" : "", p->topics, p->size);
        if (p->rate > 0)
            fprintf(f,
                    "open loop at %s msgs/s for %.1f s (latency from the intended send "
                    "time).\n\n",
                    hb_fmt_si(b1, sizeof b1, p->rate), p->duration);
        else
            fprintf(f, "as fast as a window of %llu deliveries in flight allows, for %.1f s.\n\n",
                    (unsigned long long)p->window, p->duration);
    }
    if (!anyok)
        goto notes;

    fputs("| |", f);
    for (int c = 0; c < ncol; c++)
        fprintf(f, " %s |", display(col[c]->broker));
    for (int c = 0; c < ncol; c++)
        if (herald && col[c] != herald)
            fprintf(f, " herald/%s |", col[c]->broker);
    fputs("\n|---|", f);
    for (int c = 0; c < ncol; c++)
        fputs("---:|", f);
    for (int c = 0; c < ncol; c++)
        if (herald && col[c] != herald)
            fputs("---:|", f);
    fputc('\n', f);

    for (size_t ri = 0; ri < sizeof(rows) / sizeof(rows[0]); ri++) {
        const row_t *row = &rows[ri];
        int any = 0;
        for (int c = 0; c < ncol; c++)
            if (col[c]->ok && !isnan(row->get(col[c])))
                any = 1;
        if (!any)
            continue;
        fprintf(f, "| %s |", row->label);
        for (int c = 0; c < ncol; c++) {
            fmt_cell(b1, sizeof b1, row->kind, col[c]->ok ? row->get(col[c]) : NAN);
            fprintf(f, " %s |", b1);
        }
        for (int c = 0; c < ncol; c++) {
            if (!herald || col[c] == herald)
                continue;
            double h = herald->ok ? row->get(herald) : NAN;
            double o = col[c]->ok ? row->get(col[c]) : NAN;
            /* Under max-rate load latency is queueing inside the window, and at a fixed
             * rate the rates are the schedule: neither gets a ratio. */
            int maxrate = herald->params.rate <= 0 && strcmp(herald->scenario, "reqrep") != 0;
            int noratio = row->kind == 1      ? maxrate
                          : row->get == g_eff ? 0
                                              : row->kind == 0 && herald->params.rate > 0;
            if (row->dir == 0 || noratio || isnan(h) || isnan(o) || o == 0) {
                fputs(" |", f);
                continue;
            }
            double ratio = h / o;
            /* Within 1% is a tie on these machines. */
            int behind = row->dir > 0 ? ratio < 0.99 : ratio > 1.01;
            fprintf(f, " %.2fx%s |", ratio, behind ? " (behind)" : "");
        }
        fputc('\n', f);
    }
    fputc('\n', f);

notes:
    for (int c = 0; c < ncol; c++)
        if (col[c]->ok && col[c]->params.threads > 0 &&
            col[c]->bench_cpu >= 90.0 * col[c]->params.threads)
            fprintf(f,
                    "herald-bench was close to saturating its %d thread(s) in the %s run "
                    "(%.0f%% CPU): that figure may be the generator's limit, not the broker's.\n\n",
                    col[c]->params.threads, display(col[c]->broker), col[c]->bench_cpu);
    for (int c = 0; c < ncol; c++)
        if (!col[c]->ok)
            fprintf(f, "%s %s: %s.\n\n", display(col[c]->broker),
                    col[c]->skipped ? "was not run" : "did not complete",
                    col[c]->error[0] ? col[c]->error : "unknown error");
    if (!herald || !herald->ok)
        return;

    /* Say plainly where Herald stands on the headline figure. */
    hb_headline_t hh = hb_headline(herald);
    if (hh.value <= 0) {
        fprintf(f, "Herald's %s could not be measured in this run.\n\n", hh.label);
        return;
    }
    const hb_result_t *best = NULL;
    double bestv = 0;
    for (int c = 0; c < ncol; c++) {
        if (col[c] == herald || !col[c]->ok)
            continue;
        hb_headline_t ho = hb_headline(col[c]);
        if (ho.value <= 0)
            continue;
        int better = !best || (hh.higher_better ? ho.value > bestv : ho.value < bestv);
        if (better) {
            best = col[c];
            bestv = ho.value;
        }
        double ratio = hh.value / ho.value;
        int behind = hh.higher_better ? ratio < 1 : ratio > 1;
        if (fabs(ratio - 1) < 0.01)
            fprintf(f, "Herald is level with %s on %s: %.3fx.\n\n", display(col[c]->broker),
                    hh.label, ratio);
        else if (behind)
            fprintf(f, "**Herald is behind %s** on %s: %.2fx (%.0f%% %s).\n\n",
                    display(col[c]->broker), hh.label, ratio, fabs(1 - ratio) * 100,
                    hh.higher_better ? "lower" : "higher");
        else
            fprintf(f, "Herald is ahead of %s on %s: %.2fx.\n\n", display(col[c]->broker), hh.label,
                    ratio);
    }
    for (size_t t = 0; t < sizeof(targets) / sizeof(targets[0]); t++) {
        if (strcmp(targets[t].scenario, scen))
            continue;
        const hb_result_t *peer = NULL;
        double pv = 0;
        if (targets[t].peer) {
            for (int c = 0; c < ncol; c++)
                if (!strcmp(col[c]->broker, targets[t].peer) && col[c]->ok)
                    peer = col[c];
            if (peer)
                pv = hb_headline(peer).value;
        } else {
            peer = best;
            pv = bestv;
        }
        if (!peer || pv <= 0)
            continue;
        double ratio = hh.value / pv;
        int met = hh.higher_better ? ratio >= targets[t].ratio : ratio <= targets[t].ratio;
        fprintf(f, "Target %s: %s (%.3fx against %s).\n\n", targets[t].text,
                met ? "met" : "**missed**", ratio, display(peer->broker));
    }
    if (!strncmp(scen, "idle", 4)) {
        int met = hh.value <= 1024;
        fprintf(f, "Target <= 1 KB per idle connection: %s (%s).\n\n", met ? "met" : "**missed**",
                hb_fmt_bytes(b2, sizeof b2, hh.value));
    }
}

void hb_report_markdown(FILE *f, hb_result_t *const *rs, int n)
{
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++)
            if (!strcmp(rs[j]->scenario, rs[i]->scenario))
                seen = 1;
        if (!seen)
            write_scenario(f, rs[i]->scenario, rs, n);
    }
}
