#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Herald over TLS beside Herald in plain TCP: the same herald-bench scenarios against two
# freshly started brokers per scenario, one with --tls-cert (both ports speak TLS), one
# without. Certificates come from tests/support/certs.py (EC P-256). Prints the Markdown
# tables; bench/NOTES.md records a run.
# Usage: bench/tls.sh [BUILD_DIR] [scenario ...]     (default: build; throughput fanout idle)
# Environment: BENCH_DURATION (2), BENCH_REPEAT (3), BENCH_ARGS (extra herald-bench options).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-build}
shift || true
SCEN=("$@")
[ ${#SCEN[@]} -eq 0 ] && SCEN=(throughput fanout idle)
HERALD="$ROOT/$BUILD/broker/herald"
BENCH="$ROOT/$BUILD/bench/herald-bench"
DURATION=${BENCH_DURATION:-2}
REPEAT=${BENCH_REPEAT:-3}
read -r -a EXTRA <<<"${BENCH_ARGS:-}"
[ -x "$HERALD" ] && [ -x "$BENCH" ] || { echo "tls.sh: build herald and herald-bench in $BUILD first" >&2; exit 2; }

WORK=$(mktemp -d /tmp/herald-bench-tls.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true # idle opens 10,000 connections
/usr/bin/python3 "$ROOT/tests/support/certs.py" "$WORK/certs" >/dev/null

# start NAME [herald options...]: a fresh one-worker broker; sets URL_<NAME> and PID_<NAME>.
start() {
    local name=$1
    shift
    rm -f "$WORK/$name.ready"
    "$HERALD" --workers 1 --bind 127.0.0.1 --port 0 --ws-port 0 --ready-file "$WORK/$name.ready" \
        --log-level warn "$@" 2>>"$WORK/$name.log" &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do
        grep -qs '^pid=' "$WORK/$name.ready" && break
        sleep 0.1
    done
    grep -qs '^pid=' "$WORK/$name.ready" || { cat "$WORK/$name.log" >&2; exit 1; }
    local tcp ws
    tcp=$(sed -n 's/^tcp=//p' "$WORK/$name.ready")
    ws=$(sed -n 's/^ws=//p' "$WORK/$name.ready")
    printf -v "URL_$name" 'herald://127.0.0.1:%s?ws=%s&pid=%s&name=herald-%s' "$tcp" "$ws" "$pid" "$name"
    printf -v "PID_$name" '%s' "$pid"
}

# idle connects 10,000 clients at once: with TLS more of them are still in their handshake
# at the same moment than the default max-pending (8192) admits, so both brokers get room.
for scen in "${SCEN[@]}"; do
    start tcp --max-pending 20000
    start tls --max-pending 20000 --tls-cert "$WORK/certs/server.pem" --tls-key "$WORK/certs/server.key"
    reps=$REPEAT
    [ "$scen" = idle ] && reps=1
    CMD=("$BENCH" -q -t "$URL_tcp" -t "$URL_tls&tls=$WORK/certs/ca.pem" --duration "$DURATION"
        --repeat "$reps" --check --md "$WORK/$scen.md" "${EXTRA[@]}" "$scen")
    echo "tls.sh: ${CMD[*]}" >&2
    "${CMD[@]}" >/dev/null
    cat "$WORK/$scen.md"
    kill "$PID_tcp" "$PID_tls"
    wait "$PID_tcp" "$PID_tls" 2>/dev/null || true
done
