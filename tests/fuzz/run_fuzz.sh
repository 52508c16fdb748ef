#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs one libFuzzer target for a bounded time from its seeds; fails on any finding.
# Usage: run_fuzz.sh BINARY WORK_CORPUS_DIR SEED_DIR SECONDS [extra libFuzzer flags]
set -euo pipefail
bin=$1 work=$2 seeds=$3 secs=$4
shift 4
mkdir -p "$work"
artifacts="$work.artifacts"
mkdir -p "$artifacts"
# -close_fd_mask=2 silences the targets' stderr (config errors); findings still print.
exec "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -max_len=8192 \
    -close_fd_mask=2 -print_final_stats=1 -dict="$(dirname "$0")/herald.dict" -artifact_prefix="$artifacts/" "$@" "$work" "$seeds"
