#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# `make fuzz`: builds the libFuzzer targets with clang (fuzzer + ASan + UBSan) in build-fuzz and
# runs each for SECONDS (default 600), one after the other. Fails on any crash, leak or report.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (default: every target in tests/fuzz/CMakeLists.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
build=${FUZZ_BUILD:-build-fuzz}
CC=${FUZZ_CC:-clang} cmake -S . -B "$build" -DHERALD_FUZZ=ON -DHERALD_SANITIZE="address;undefined" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    # tests/fuzz/CMakeLists.txt lists the targets there; other areas add tests/<area>/fuzz_*.c
    # with seeds in tests/<area>/corpus_fuzz_*/ (tests/ws has fuzz_ws).
    read -r -a targets <<<"$(sed -n 's/^set(HERALD_FUZZ_TARGETS \(.*\))$/\1/p' tests/fuzz/CMakeLists.txt)"
    for f in tests/*/fuzz_*.c; do
        case "$f" in tests/fuzz/*) continue ;; esac
        t=${f##*/fuzz_}
        targets+=("${t%.c}")
    done
fi
cmake --build "$build" -j"${JOBS:-2}" --target "${targets[@]/#/fuzz_}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for t in "${targets[@]}"; do
    bin=$(find "$build/tests" -name "fuzz_$t" -type f -perm -u+x | head -1)
    seeds=tests/fuzz/corpus/$t
    [ -d "$seeds" ] || seeds=$(find tests -maxdepth 2 -type d -name "corpus_fuzz_$t" | head -1)
    log="$build/fuzz_$t.log"
    echo "fuzz: $t for ${secs}s (log: $log)"
    if tests/fuzz/run_fuzz.sh "$bin" "$build/fuzz-corpus/$t" "$seeds" "$secs" >"$log" 2>&1; then
        grep -E '^stat::(number_of_executed_units|new_units_added)' "$log" | sed "s/^/  $t /"
    else
        failed+=("$t")
        echo "fuzz: $t FAILED; findings in $build/fuzz-corpus/$t.artifacts/:" >&2
        grep -E 'ERROR|SUMMARY|check failed|runtime error' "$log" | head -20 >&2 || true
    fi
done
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz: findings in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: no findings"
