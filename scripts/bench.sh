#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# `make bench`: runs every herald-bench scenario against Herald, nats-server and redis-server
# (all on loopback, started here with the configurations written below, no persistence) and
# writes docs/benchmarks.md. Installs nothing: the Makefile runs scripts/deps.sh bench first.
#
# Environment:
#   BUILD=build-bench        build directory (a Release build of herald and herald-bench)
#   BENCH_DURATION=2         seconds each publishing scenario runs
#   BENCH_REPEAT=3           runs per scenario and broker (brokers take turns; median shown)
#   BENCH_SCENARIOS="..."    scenarios to run (default: all; each on freshly started brokers)
#   BENCH_ARGS="..."         extra herald-bench options (e.g. "--threads 4")
#   BENCH_PROFILE=1          also profile Herald with perf in the throughput, fanout and latency runs
#   BENCH_OUT=docs/benchmarks.md
#   BENCH_WORKERS=2          the cluster column: herald --workers N beside the one-worker herald
#   BENCH_CLUSTER_SCENARIOS="throughput fanout chat"   scenarios that get the cluster column
#   BENCH_TRANSFORMS="none filter fields rate conflate batch"   fanout with each SUB transform
#                            on Herald alone ("" to skip), against plain fanout in the same run
#   REDIS_PORT=16379 NATS_PORT=14222 NATS_WS_PORT=14223
#                            fixed high ports for the peers (Herald takes ephemeral ones)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${BUILD:-build-bench}
DURATION=${BENCH_DURATION:-2}
REPEAT=${BENCH_REPEAT:-3}
SCENARIOS=${BENCH_SCENARIOS:-"throughput fanout chat latency idle mixed slow reqrep"}
PROFILE=${BENCH_PROFILE:-1}
OUT=${BENCH_OUT:-docs/benchmarks.md}
REDIS_PORT=${REDIS_PORT:-16379}
NATS_PORT=${NATS_PORT:-14222}
NATS_WS_PORT=${NATS_WS_PORT:-14223}
JOBS=${JOBS:-2}
CWORKERS=${BENCH_WORKERS:-2}
CSCEN=${BENCH_CLUSTER_SCENARIOS:-"throughput fanout chat"}
XFORMS=${BENCH_TRANSFORMS-"none filter fields rate conflate batch"}

for cmd in redis-server nats-server cmake; do
    command -v "$cmd" >/dev/null || { echo "bench.sh: $cmd is missing (run: make bench)" >&2; exit 2; }
done

echo "bench.sh: building (Release) in $BUILD" >&2
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$JOBS" --target herald herald-bench >/dev/null
HERALD="$ROOT/$BUILD/broker/herald"
BENCH="$ROOT/$BUILD/bench/herald-bench"

WORK=$(mktemp -d /tmp/herald-bench.XXXXXX)
RESULTS="$ROOT/bench/results"
mkdir -p "$RESULTS" "$(dirname "$OUT")"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)

# Only the processes started here are stopped, by pid.
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$REDIS_PORT" "$NATS_PORT" "$NATS_WS_PORT"; do
    if port_busy "$p"; then
        echo "bench.sh: port $p is in use; set REDIS_PORT / NATS_PORT / NATS_WS_PORT" >&2
        exit 2
    fi
done

# The idle scenario opens 10,000 connections: every broker gets the hard file limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---- broker configurations (also written into the report) -------------------------------
cat >"$WORK/redis.conf" <<EOF
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize no
save ""
appendonly no
maxclients 20000
client-output-buffer-limit pubsub 32mb 8mb 60
logfile $WORK/redis.log
EOF
cat >"$WORK/nats.conf" <<EOF
listen: 127.0.0.1:$NATS_PORT
max_payload: 1MB
max_pending: 64MB
write_deadline: "2s"
max_connections: 65536
websocket {
  listen: "127.0.0.1:$NATS_WS_PORT"
  no_tls: true
}
EOF
HERALD_ARGS=(--workers 1 --bind 127.0.0.1 --port 0 --ws-port 0 --ready-file "$WORK/herald.ready" --log-level warn)
CLUSTER_ARGS=(--workers "$CWORKERS" --bind 127.0.0.1 --port 0 --ws-port 0 --ready-file "$WORK/cluster.ready" --log-level warn)

V_HERALD=$("$HERALD" --version 2>&1 | head -1)
V_REDIS=$(redis-server --version | sed 's/ sha=.*//')
V_NATS=$(nats-server --version)

# Starts the three brokers afresh (so RSS and memory figures belong to one scenario), and
# with `cluster` also herald --workers N beside them.
start_brokers() {
    T_CLUSTER=""
    CLUSTER_PID=""
    if [ "${1:-}" = cluster ]; then
        rm -f "$WORK/cluster.ready"
        "$HERALD" "${CLUSTER_ARGS[@]}" 2>>"$WORK/cluster.log" &
        CLUSTER_PID=$!
        PIDS+=("$CLUSTER_PID")
        for _ in $(seq 100); do
            grep -qs '^workers=' "$WORK/cluster.ready" && break
            sleep 0.1
        done
        grep -qs '^workers=' "$WORK/cluster.ready" || { echo "bench.sh: herald --workers $CWORKERS did not start" >&2; cat "$WORK/cluster.log" >&2; exit 1; }
        T_CLUSTER="herald://127.0.0.1:$(sed -n 's/^tcp=//p' "$WORK/cluster.ready")?pid=$CLUSTER_PID&ws=$(sed -n 's/^ws=//p' "$WORK/cluster.ready")&name=herald-${CWORKERS}w"
    fi
    rm -f "$WORK/herald.ready"
    "$HERALD" "${HERALD_ARGS[@]}" 2>>"$WORK/herald.log" &
    HERALD_PID=$!
    PIDS+=("$HERALD_PID")
    redis-server "$WORK/redis.conf" >/dev/null 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    nats-server -c "$WORK/nats.conf" -l "$WORK/nats.log" &
    NATS_PID=$!
    PIDS+=("$NATS_PID")
    for _ in $(seq 100); do
        [ -s "$WORK/herald.ready" ] && port_busy "$REDIS_PORT" && port_busy "$NATS_PORT" &&
            port_busy "$NATS_WS_PORT" && break
        sleep 0.1
    done
    [ -s "$WORK/herald.ready" ] || { echo "bench.sh: herald did not start" >&2; cat "$WORK/herald.log" >&2; exit 1; }
    port_busy "$REDIS_PORT" || { echo "bench.sh: redis-server did not start" >&2; exit 1; }
    port_busy "$NATS_PORT" || { echo "bench.sh: nats-server did not start" >&2; exit 1; }
    HERALD_PORT=$(sed -n 's/^tcp=//p' "$WORK/herald.ready")
    HERALD_WS=$(sed -n 's/^ws=//p' "$WORK/herald.ready")
    T_HERALD="herald://127.0.0.1:$HERALD_PORT?pid=$HERALD_PID"
    [ "${HERALD_WS:-0}" != 0 ] && T_HERALD="$T_HERALD&ws=$HERALD_WS"
    T_NATS="nats://127.0.0.1:$NATS_PORT?pid=$NATS_PID"
    [ -n "${NATS_WS_PORT:-}" ] && T_NATS="$T_NATS&ws=$NATS_WS_PORT"
    T_REDIS="redis://127.0.0.1:$REDIS_PORT?pid=$REDIS_PID"
}

# Stops exactly the brokers start_brokers started, and waits until their ports are free.
stop_brokers() {
    local p
    for p in "$HERALD_PID" "$REDIS_PID" "$NATS_PID" $CLUSTER_PID; do
        kill "$p" 2>/dev/null || true
    done
    for p in "$HERALD_PID" "$REDIS_PID" "$NATS_PID" $CLUSTER_PID; do
        wait "$p" 2>/dev/null || true
    done
    for _ in $(seq 50); do
        port_busy "$REDIS_PORT" || port_busy "$NATS_PORT" || port_busy "$NATS_WS_PORT" || break
        sleep 0.1
    done
}

read -r -a EXTRA <<<"${BENCH_ARGS:-}"
PLOT=()
command -v gnuplot >/dev/null && PLOT=(--plot "$RESULTS/$STAMP-plots" --plot-format svg)
read -r -a SCEN <<<"$SCENARIOS"
START=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$WORK/tables.md"
PROFILE_TXT=""
for scen in "${SCEN[@]}"; do
    CT=()
    case " $CSCEN " in
    *" $scen "*)
        start_brokers cluster
        CT=(-t "$T_CLUSTER")
        ;;
    *) start_brokers ;;
    esac
    # Memory per idle connection is the RSS growth of a fresh broker: one run each.
    reps=$REPEAT
    [ "$scen" = idle ] && reps=1
    BENCH_CMD=("$BENCH" -t "$T_HERALD" "${CT[@]}" -t "$T_NATS" -t "$T_REDIS" --duration "$DURATION" --repeat "$reps"
        --json "$RESULTS/$STAMP-$scen.json" --md "$WORK/$scen.md" "${PLOT[@]}" "${EXTRA[@]}" "$scen")
    echo "bench.sh: ${BENCH_CMD[*]}" >&2
    "${BENCH_CMD[@]}"
    cat "$WORK/$scen.md" >>"$WORK/tables.md"
    stop_brokers
done
# The cost of each subscription transform: fanout on Herald alone, plain and with every
# subscriber asking for one transform (herald-bench --transform), taking turns in each repeat.
XFORM_TXT=""
if [ -n "$XFORMS" ]; then
    start_brokers
    read -r -a XF <<<"$XFORMS"
    XF_JSON=()
    for r in $(seq "$REPEAT"); do
        for t in plain "${XF[@]}"; do
            j="$WORK/xf-$t-$r.json"
            XF_CMD=("$BENCH" -q -t "$T_HERALD" --duration "$DURATION" --json "$j" --md /dev/null "${EXTRA[@]}")
            [ "$t" != plain ] && XF_CMD+=(--transform "$t")
            echo "bench.sh: ${XF_CMD[*]} fanout" >&2
            "${XF_CMD[@]}" fanout >/dev/null || true
            XF_JSON+=("$j")
        done
    done
    stop_brokers
    XFORM_TXT=$(/usr/bin/python3 "$ROOT/bench/transform_table.py" "${XF_JSON[@]}")
fi
# Profiles are taken in separate runs of Herald alone, so that perf's sampling cannot
# weigh on Herald's figures above.
if [ "$PROFILE" = 1 ] && command -v perf >/dev/null; then
    for scen in throughput fanout latency; do
        case " ${SCEN[*]} " in *" $scen "*) ;; *) continue ;; esac
        start_brokers
        echo "bench.sh: profiling herald in $scen" >&2
        perf record -q -g -o "$WORK/perf.$scen" -p "$HERALD_PID" >/dev/null 2>&1 &
        PERF_PID=$!
        PIDS+=("$PERF_PID")
        sleep 0.3
        "$BENCH" -q -t "$T_HERALD" --duration "$DURATION" --md /dev/null "$scen" || true
        kill -INT "$PERF_PID" 2>/dev/null || true
        wait "$PERF_PID" 2>/dev/null || true
        PROFILE_TXT+="#### $scen"$'\n\n```\n'
        PROFILE_TXT+=$(perf report -i "$WORK/perf.$scen" --no-children --percent-limit 1.5 \
            --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -25 || true)
        PROFILE_TXT+=$'\n```\n\n'
        stop_brokers
    done
fi
CMD_SHOWN="$BENCH -t $T_HERALD -t $T_NATS -t $T_REDIS --duration $DURATION --repeat $REPEAT ${EXTRA[*]} --json bench/results/$STAMP-SCENARIO.json --md SCENARIO.md SCENARIO"

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
HERALD_SHOWN="${HERALD_ARGS[*]}"

# ---- the report ---------------------------------------------------------------------------
CPU_MODEL=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
CPUS=$(nproc)
MEM=$(free -g | awk '/^Mem:/ {print $2 " GiB"}')
KERNEL=$(uname -r)
OS=$(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release)
{
    cat <<EOF
# Herald benchmarks

Written by \`make bench\` (scripts/bench.sh) on $START; every figure below comes from that one
run, in which Herald and its peers were measured side by side with the same scenarios and the
same load generator (herald-bench). Raw results: \`bench/results/$STAMP-*.json\`, and latency-percentile and
throughput-over-time plots in \`bench/results/$STAMP-plots/\` (gnuplot SVG), on the machine
that ran it. Re-run with \`make bench\`; \`BENCH_DURATION=10 BENCH_REPEAT=5 make bench\` for a steadier one.

**Read the ratios, not the absolute numbers.** This machine is small and shared: while this
run was taken, other agents were compiling on the same two cores, and herald-bench itself
needs CPU on the same cores as the broker it drives (its own CPU use is in every table, so a
saturated generator is visible). The load average (1, 5, 15 min) was $LOAD_START when the
run started and $LOAD_END when it ended, on $(nproc) CPUs. Each scenario ran $REPEAT times per broker, ${DURATION} s each,
the brokers taking turns and each repeat starting with the next broker (herald, nats, redis;
nats, redis, herald; redis, herald, nats), so no broker is always first; the tables show each broker's
median run (by the scenario's headline figure), the JSON files hold every run. The idle
scenario runs once per broker, on freshly started brokers, since it measures their growth.

## Machine and versions

| | |
|---|---|
| CPU | $CPU_MODEL, $CPUS CPUs |
| memory | $MEM |
| OS | $OS, kernel $KERNEL |
| Herald | $V_HERALD (Release build, defaults below) |
| nats-server | $V_NATS (Debian package) |
| redis-server | $V_REDIS (Debian package) |

## How it was run

Brokers, all on 127.0.0.1, started by scripts/bench.sh, nothing persisted:

- Herald, the \`herald\` column: \`herald ${HERALD_SHOWN//$WORK\//\/tmp\/}\` — otherwise defaults: one worker, output limit
  8 MiB hard / 2 MiB soft for 10 s per connection (slow consumers get ERR 6), history of the
  last 128 messages per topic kept in memory.
- Herald as a cluster, the \`herald-${CWORKERS}w\` column (in $CSCEN): the same with
  \`--workers $CWORKERS\`: a primary and $CWORKERS worker processes sharing the ports, topics
  sharded across them, shared-memory rings between them. Its CPU and RSS are the sum over
  the primary and its workers.
- nats-server: \`nats-server -c nats.conf\` with
  \`$(tr '\n' ' ' <"$WORK/nats.conf" | sed 's/  */ /g; s/ $//')\` — no JetStream; a client
  more than 64 MB or 2 s behind is cut off as a slow consumer; WebSocket without TLS for the
  mixed scenario (NATS text protocol in binary messages).
- redis-server: \`redis-server redis.conf\` with
  \`$(grep -v logfile "$WORK/redis.conf" | tr '\n' ';' | sed 's/;$//; s/;/; /g')\` — no RDB, no AOF;
  the pub/sub output buffer limit is Redis's default, stated explicitly.

Load generator, once per scenario (SCENARIO = $SCENARIOS), each time against
freshly started brokers (the pids and ports change from one scenario to the next):

\`\`\`
$(echo "$CMD_SHOWN" | sed "s|$ROOT/||g; s|$WORK/|/tmp/|g")
\`\`\`

How herald-bench measures: every payload starts with a 16-byte header (publisher id,
per-publisher-per-topic sequence number, send timestamp), counted in the payload size.
Subscribers check the sequence numbers (loss, duplicates, order) and record latency in an
HDR-style histogram (1/128 relative precision). Max-rate scenarios publish as fast as a
window of deliveries in flight allows (so every broker is measured at the rate it can
*deliver*, without letting queues grow without bound); their latency is therefore mostly
queueing inside that window. The latency scenario is open loop at a fixed rate and measures
from the *intended* send time, so a stall cannot hide (no coordinated omission). Broker CPU
and RSS come from /proc/<pid>; memory per idle connection is the growth of the broker's RSS
over 10,000 idle subscribed connections. Every scenario starts from freshly started brokers, and every run
starts with 0.5 s of the same load that is not counted (warm-up), then a pause until it has
drained.
Redis has no reply subjects: in reqrep its responder answers on \`hb.inbox.<requester id>\`,
and the requesters and the responder use RESP3 so they can publish while subscribed.
redis-server has no WebSocket transport, so it sits out the mixed scenario.

To drive your own broker: \`herald-bench -t herald://HOST:PORT?pid=PID [-t nats://...] SCENARIO...\`
with \`--pubs --subs --topics --size --rate --duration --count --window --ramp --repeat\` to
resize any scenario, \`--json\` / \`--md\` for reports and \`--plot DIR\` for gnuplot charts
(\`herald-bench --help\` lists everything). While it runs it prints a progress line (publish
and delivery rates, deliveries in flight, its own CPU and the broker's CPU and RSS).

## Results

EOF
    cat "$WORK/tables.md"
    if [ -n "$XFORM_TXT" ]; then
        cat <<EOF
### The cost of subscription transforms

fanout (1 publisher, 100 subscribers, one topic) on Herald alone, the runs taking turns,
median of $REPEAT: plain, then with every subscriber asking for one transform
(\`herald-bench --transform T fanout\`). Each transform is set to let every message through
while doing all of its work (bench/transform.c): the filter \`["and", ["==", "k", 1],
["exists", "text"]]\` is evaluated on every payload, \`fields: ["h", "k"]\` builds a projected
body (shared by the 100 subscribers), \`rate\` counts against a limit it never reaches,
\`conflate\` (1 ms, keyed by a field unique to each message) keeps, sorts and re-emits every
message, and \`batch\` (64 messages or 1 ms) sends BATCH frames. With a transform the
payloads are 30-byte MessagePack maps, so "nothing, map payloads" is the baseline the ratios
compare with. This \`conflate\` is its worst case: every message has a key of its own, so every
message costs each subscriber a slot (a copy of its key) and a place in the sort when the
window ends (a chat room's typing indicators have a handful of keys); the filter's cost is
each of the 100 subscribers evaluating its own expression on every message.

$XFORM_TXT

EOF
    fi
    if [ -f bench/NOTES.md ]; then
        cat bench/NOTES.md
        echo
    fi
    if [ -n "$PROFILE_TXT" ]; then
        cat <<EOF
## Where Herald's time goes

\`perf record -g\` on the Herald process during a separate ${DURATION} s run of each scenario
with Herald alone (not during the measured runs above), functions above 1.5% of samples
(self time):

$PROFILE_TXT
EOF
    fi
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "bench.sh: wrote $OUT, bench/results/$STAMP-*.json and bench/results/$STAMP-plots/" >&2
