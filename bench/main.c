/* SPDX-License-Identifier: MIT */
/* herald-bench: command line, targets, running scenarios against each broker, reports. */
#include "hb.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

#define MAX_TARGETS 8
#define MAX_RESULTS 128

static void usage(FILE *f)
{
    fputs(
        "usage: herald-bench [options] [scenario ...]\n"
        "\n"
        "Scenarios: throughput fanout chat latency idle idle-ws mixed slow reqrep, or all\n"
        "(default). idle-ws is idle over WebSocket with every client connecting at once.\n"
        "presence (Herald only, not in all): --conns members join and leave one room\n"
        "while --subs watchers (default 3) watch it; set --interval MS to the\n"
        "broker's presence-interval (default 1000) for the per-interval columns.\n"
        "\n"
        "  -t, --target URL      broker to drive; repeat to compare several in one run:\n"
        "                        herald://HOST:PORT[?ws=PORT&pid=PID&version=V&name=COLUMN\n"
        "                                           &tls=CAFILE]  (tls: both ports speak TLS)\n"
        "                        nats://HOST:PORT[?pid=PID]   redis://HOST:PORT[?pid=PID]\n"
        "                        (default herald://127.0.0.1:7400?ws=7401); a herald target\n"
        "                        with &sub=PORT&subws=PORT puts its subscribers on another\n"
        "                        node (scale-out engines)\n"
        "      --broker-pid PID  pid of the last target: its CPU and RSS are reported\n"
        "      --pubs N          publishers (requesters in reqrep)\n"
        "      --subs N          subscribers\n"
        "      --topics N        topics (rooms in chat)\n"
        "      --conns N         connections in idle and idle-ws\n"
        "      --stalled N       stalled subscribers in slow\n"
        "      --size BYTES      payload size, including the 16-byte header (min 16)\n"
        "      --rate MSGS       total publish rate, open loop; 0 = as fast as the window allows\n"
        "      --duration SECS   publishing time (idle: settle time before memory is read)\n"
        "      --count N         messages per publisher instead of a duration\n"
        "      --window N        max deliveries in flight in max-rate mode\n"
        "      --transform T     Herald only: every subscriber asks for transform T (filter,\n"
        "                        fields, rate, conflate or batch; none: only the payloads\n"
        "                        change), set to let every message through; payloads become\n"
        "                        MessagePack maps (size at least 30)\n"
        "      --threads N       generator threads (default: number of CPUs)\n"
        "      --ramp RATE       connections per second during set-up (0: no limit)\n"
        "      --drain SECS      how long to wait for in-flight deliveries at the end\n"
        "      --warmup SECS     load before the measured run, not counted (default 0.5)\n"
        "      --smoke           tiny sizes for a quick check (CI)\n"
        "      --json FILE       write every result as JSON\n"
        "      --md FILE         write the Markdown tables (one per scenario, with ratios)\n"
        "      --plot DIR        draw latency percentiles and throughput over time (gnuplot)\n"
        "      --plot-format F   png (default) or svg\n"
        "      --check           exit 1 if a run failed, lost, duplicated or reordered messages\n"
        "      --repeat N        run each scenario N times per broker, brokers taking turns\n"
        "                        (each repeat starting with the next broker);\n"
        "                        tables and plots show the median run (JSON has every run)\n"
        "  -q, --quiet           no live progress line\n"
        "  -h, --help\n",
        f);
}

/* Parses scheme://host:port?k=v&k=v into `t`. */
static int parse_target(const char *url, hb_target_t *t)
{
    memset(t, 0, sizeof(*t));
    const char *sep = strstr(url, "://");
    if (!sep)
        return -1;
    char scheme[16];
    size_t sl = (size_t)(sep - url);
    if (sl >= sizeof scheme)
        return -1;
    memcpy(scheme, url, sl);
    scheme[sl] = 0;
    t->ad = hb_adapter_find(scheme);
    if (!t->ad)
        return -1;
    const char *h = sep + 3, *colon = strchr(h, ':');
    if (!colon || (size_t)(colon - h) >= sizeof t->host)
        return -1;
    memcpy(t->host, h, (size_t)(colon - h));
    t->port = atoi(colon + 1);
    if (t->port <= 0 || t->port > 65535)
        return -1;
    const char *q = strchr(colon, '?');
    while (q && *q) {
        q++;
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        if (!strncmp(q, "ws=", 3))
            t->ws_port = atoi(q + 3);
        else if (!strncmp(q, "sub=", 4))
            t->sub_port = atoi(q + 4);
        else if (!strncmp(q, "subws=", 6))
            t->sub_ws_port = atoi(q + 6);
        else if (!strncmp(q, "pid=", 4))
            t->pid = atoi(q + 4);
        else if (!strncmp(q, "name=", 5) && n - 5 < sizeof t->name)
            snprintf(t->name, sizeof t->name, "%.*s", (int)(n - 5), q + 5);
        else if (!strncmp(q, "tls=", 4) && n - 4 < sizeof t->tls_ca)
            snprintf(t->tls_ca, sizeof t->tls_ca, "%.*s", (int)(n - 4), q + 4);
        else if (!strncmp(q, "version=", 8) && n - 8 < sizeof t->version)
            snprintf(t->version, sizeof t->version, "%.*s", (int)(n - 8), q + 8);
        q = amp;
    }
    return t->tls_ca[0] && strcmp(t->ad->name, "herald") ? -1 : 0; /* TLS: Herald's adapter only */
}

enum {
    O_PID = 256,
    O_PUBS,
    O_SUBS,
    O_TOPICS,
    O_CONNS,
    O_STALLED,
    O_SIZE,
    O_RATE,
    O_DURATION,
    O_COUNT,
    O_WINDOW,
    O_THREADS,
    O_RAMP,
    O_DRAIN,
    O_SMOKE,
    O_JSON,
    O_MD,
    O_PLOT,
    O_PLOTFMT,
    O_CHECK,
    O_REPEAT,
    O_WARMUP,
    O_INTERVAL,
    O_TRANSFORM
};

/* Overrides from the command line; a negative value means "not given". */
typedef struct overrides_s {
    int pubs, subs, topics, conns, stalled, size, threads;
    double rate, duration, ramp, drain, warmup;
    long long count, window;
} overrides_t;

static void apply(hb_plan_t *pl, const overrides_t *o)
{
    if (o->pubs >= 0)
        pl->p.pubs = o->pubs;
    if (o->subs >= 0)
        pl->p.subs = o->subs;
    if (o->topics > 0)
        pl->p.topics = o->topics;
    if (o->conns > 0)
        pl->p.conns = o->conns;
    if (o->stalled >= 0 && pl->p.stalled)
        pl->p.stalled = o->stalled;
    if (o->size >= 0)
        pl->p.size = o->size < HB_HDR ? HB_HDR : o->size;
    if (o->rate >= 0 && !pl->idle && !pl->reqrep)
        pl->p.rate = o->rate;
    if (o->duration > 0)
        pl->p.duration = o->duration;
    if (o->count >= 0)
        pl->p.count = (uint64_t)o->count;
    if (o->window > 0)
        pl->p.window = (uint64_t)o->window;
    if (o->threads > 0)
        pl->p.threads = o->threads;
    if (o->ramp >= 0)
        pl->ramp = o->ramp;
    if (o->drain >= 0)
        pl->drain = o->drain;
    if (o->warmup >= 0)
        pl->warmup = o->warmup;
    if (pl->reqrep)
        pl->p.subs = 1;
    if (pl->p.stalled > 0 && pl->p.stalled >= pl->p.subs)
        pl->p.stalled = pl->p.subs - 1;
}

/* The completed run of (scenario, broker) with the median headline figure, else the first. */
static hb_result_t *median_of(hb_result_t **rs, int n, const char *scen, const char *broker)
{
    hb_result_t *c[16];
    int k = 0;
    hb_result_t *any = NULL;
    for (int i = 0; i < n && k < 16; i++) {
        if (strcmp(rs[i]->scenario, scen) || strcmp(rs[i]->broker, broker))
            continue;
        if (!any)
            any = rs[i];
        if (rs[i]->ok)
            c[k++] = rs[i];
    }
    if (!k)
        return any;
    for (int i = 1; i < k; i++)
        for (int j = i; j > 0 && hb_headline(c[j]).value < hb_headline(c[j - 1]).value; j--) {
            hb_result_t *t = c[j];
            c[j] = c[j - 1];
            c[j - 1] = t;
        }
    return c[k / 2];
}

static int cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"target", required_argument, 0, 't'},
                                         {"broker-pid", required_argument, 0, O_PID},
                                         {"pubs", required_argument, 0, O_PUBS},
                                         {"subs", required_argument, 0, O_SUBS},
                                         {"topics", required_argument, 0, O_TOPICS},
                                         {"conns", required_argument, 0, O_CONNS},
                                         {"stalled", required_argument, 0, O_STALLED},
                                         {"size", required_argument, 0, O_SIZE},
                                         {"rate", required_argument, 0, O_RATE},
                                         {"duration", required_argument, 0, O_DURATION},
                                         {"count", required_argument, 0, O_COUNT},
                                         {"window", required_argument, 0, O_WINDOW},
                                         {"threads", required_argument, 0, O_THREADS},
                                         {"ramp", required_argument, 0, O_RAMP},
                                         {"drain", required_argument, 0, O_DRAIN},
                                         {"smoke", no_argument, 0, O_SMOKE},
                                         {"json", required_argument, 0, O_JSON},
                                         {"md", required_argument, 0, O_MD},
                                         {"plot", required_argument, 0, O_PLOT},
                                         {"plot-format", required_argument, 0, O_PLOTFMT},
                                         {"check", no_argument, 0, O_CHECK},
                                         {"repeat", required_argument, 0, O_REPEAT},
                                         {"warmup", required_argument, 0, O_WARMUP},
                                         {"interval", required_argument, 0, O_INTERVAL},
                                         {"transform", required_argument, 0, O_TRANSFORM},
                                         {"quiet", no_argument, 0, 'q'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    hb_target_t targets[MAX_TARGETS];
    int ntargets = 0, smoke = 0, quiet = 0, check = 0, repeat = 1, pres_interval = 0;
    const char *json = NULL, *md = NULL, *plot = NULL, *plotfmt = "png", *transform = NULL;
    overrides_t o = {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
    int c;
    while ((c = getopt_long(argc, argv, "t:qh", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            if (ntargets == MAX_TARGETS || parse_target(optarg, &targets[ntargets])) {
                fprintf(stderr, "herald-bench: bad --target '%s'\n", optarg);
                return 2;
            }
            ntargets++;
            break;
        case O_PID:
            if (!ntargets) {
                fprintf(stderr, "herald-bench: --broker-pid must follow a --target\n");
                return 2;
            }
            targets[ntargets - 1].pid = atoi(optarg);
            break;
        case O_PUBS:
            o.pubs = atoi(optarg);
            break;
        case O_SUBS:
            o.subs = atoi(optarg);
            break;
        case O_TOPICS:
            o.topics = atoi(optarg);
            break;
        case O_CONNS:
            o.conns = atoi(optarg);
            break;
        case O_STALLED:
            o.stalled = atoi(optarg);
            break;
        case O_SIZE:
            o.size = atoi(optarg);
            break;
        case O_RATE:
            o.rate = atof(optarg);
            break;
        case O_DURATION:
            o.duration = atof(optarg);
            break;
        case O_COUNT:
            o.count = atoll(optarg);
            break;
        case O_WINDOW:
            o.window = atoll(optarg);
            break;
        case O_THREADS:
            o.threads = atoi(optarg);
            break;
        case O_RAMP:
            o.ramp = atof(optarg);
            break;
        case O_DRAIN:
            o.drain = atof(optarg);
            break;
        case O_SMOKE:
            smoke = 1;
            break;
        case O_JSON:
            json = optarg;
            break;
        case O_MD:
            md = optarg;
            break;
        case O_PLOT:
            plot = optarg;
            break;
        case O_PLOTFMT:
            plotfmt = optarg;
            break;
        case O_CHECK:
            check = 1;
            break;
        case O_REPEAT:
            repeat = atoi(optarg);
            break;
        case O_INTERVAL:
            pres_interval = atoi(optarg);
            break;
        case O_WARMUP:
            o.warmup = atof(optarg);
            break;
        case O_TRANSFORM: {
            uint32_t ne;
            size_t len;
            if (!hb_transform_opts(optarg, &ne, &len)) {
                fprintf(stderr, "herald-bench: --transform must be none, filter, fields, "
                                "rate, conflate or batch\n");
                return 2;
            }
            transform = optarg;
            break;
        }
        case 'q':
            quiet = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (repeat < 1 || repeat > 9) {
        fprintf(stderr, "herald-bench: --repeat must be 1..9\n");
        return 2;
    }
    if (strcmp(plotfmt, "png") && strcmp(plotfmt, "svg")) {
        fprintf(stderr, "herald-bench: --plot-format must be png or svg\n");
        return 2;
    }
    if (!ntargets) {
        const char *def = "herald://127.0.0.1:7400?ws=7401";
        if (parse_target(def, &targets[0])) {
            fprintf(stderr, "herald-bench: no --target given (this build has no herald adapter)\n");
            return 2;
        }
        ntargets = 1;
    }
    const char *names[16];
    int nnames = 0;
    for (int i = optind; i < argc; i++) {
        if (!strcmp(argv[i], "all")) {
            for (int k = 0; hb_scenarios[k] && nnames < 16; k++)
                names[nnames++] = hb_scenarios[k];
            continue;
        }
        hb_plan_t tmp;
        if (!strcmp(argv[i], "presence") && nnames < 16) { /* Herald only: not in `all` */
            names[nnames++] = argv[i];
            continue;
        }
        if (hb_scenario_plan(argv[i], 0, &tmp) || nnames == 16) {
            fprintf(stderr, "herald-bench: unknown scenario '%s'\n", argv[i]);
            return 2;
        }
        names[nnames++] = argv[i];
    }
    if (!nnames)
        for (int k = 0; hb_scenarios[k]; k++)
            names[nnames++] = hb_scenarios[k];

    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    static hb_result_t results[MAX_RESULTS];
    hb_result_t *rs[MAX_RESULTS];
    int nr = 0, bad = 0;
    for (int s = 0; s < nnames; s++) {
        if (!strcmp(names[s], "presence")) { /* its own table, on stdout */
            for (int ti = 0; ti < ntargets; ti++)
                if (hb_presence_run(&targets[ti], o.conns, o.subs, pres_interval, smoke) != 0)
                    bad = 1;
            continue;
        }
        for (int k = 0; k < repeat * ntargets && nr < MAX_RESULTS; k++) {
            /* Brokers take turns, and each repeat starts with the next broker, so none
             * is always first (just after set-up) or always last. */
            int ti = (k % ntargets + k / ntargets) % ntargets;
            hb_plan_t pl;
            hb_scenario_plan(names[s], smoke, &pl);
            pl.p.threads = cpu_count();
            apply(&pl, &o);
            pl.quiet = quiet;
            char tname[64];
            if (transform) { /* its own table: "fanout+filter" */
                pl.p.transform = transform;
                if (pl.p.size < HB_MAP_MIN)
                    pl.p.size = HB_MAP_MIN;
                snprintf(tname, sizeof tname, "%s+%s", pl.name, transform);
                pl.name = tname;
            }
            hb_result_t *r = &results[nr];
            rs[nr++] = r;
            if ((pl.sub_ws && (!targets[ti].ad->ws || !targets[ti].ws_port)) ||
                (transform && strcmp(targets[ti].ad->name, "herald"))) {
                memset(r, 0, sizeof(*r));
                snprintf(r->scenario, sizeof r->scenario, "%s", pl.name);
                snprintf(r->broker, sizeof r->broker, "%s",
                         targets[ti].name[0] ? targets[ti].name : targets[ti].ad->name);
                r->params = pl.p;
                r->skipped = 1;
                snprintf(r->error, sizeof r->error, "%s for %s",
                         transform ? "no subscription transforms" : "no WebSocket transport driven",
                         targets[ti].ad->name);
                if (!quiet)
                    fprintf(stderr, "  %-7s %-10s skipped: %s\n", r->broker, pl.name, r->error);
                continue;
            }
            hb_run(&pl, &targets[ti], r);
            int flawed = !r->ok || r->lost || r->duplicates || r->reordered || r->errors;
            if (flawed) {
                fprintf(stderr,
                        "  %-7s %-10s %s: lost %llu, duplicates %llu, reordered %llu, "
                        "errors %llu%s%s\n",
                        r->broker, pl.name, r->ok ? "flawed" : "FAILED",
                        (unsigned long long)r->lost, (unsigned long long)r->duplicates,
                        (unsigned long long)r->reordered, (unsigned long long)r->errors,
                        r->error[0] ? ": " : "", r->error);
                bad = 1;
            }
        }
    }

    /* Tables and plots show, per scenario and broker, the run with the median headline. */
    hb_result_t *med[MAX_RESULTS];
    int nm = 0;
    for (int i = 0; i < nr; i++) {
        int first = 1;
        for (int j = 0; j < i; j++)
            if (!strcmp(rs[j]->scenario, rs[i]->scenario) && !strcmp(rs[j]->broker, rs[i]->broker))
                first = 0;
        if (first)
            med[nm++] = median_of(rs, nr, rs[i]->scenario, rs[i]->broker);
    }

    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            fprintf(stderr, "herald-bench: %s: %s\n", json, strerror(errno));
            return 2;
        }
        hb_report_json_all(f, rs, nr);
        fclose(f);
    }
    if (md) {
        FILE *f = fopen(md, "w");
        if (!f) {
            fprintf(stderr, "herald-bench: %s: %s\n", md, strerror(errno));
            return 2;
        }
        hb_report_markdown(f, med, nm);
        fclose(f);
    } else if (!json) {
        hb_report_markdown(stdout, med, nm);
    }
    if (plot && hb_plot(plot, plotfmt, med, nm))
        fprintf(stderr, "herald-bench: plotting failed (is gnuplot installed?)\n");
    for (int i = 0; i < nr; i++) {
        free(rs[i]->lat);
        free(rs[i]->series);
    }
    return check && bad ? 1 : 0;
}
