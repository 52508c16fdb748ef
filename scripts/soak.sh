#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# `make soak`: the long soak. Builds a release broker in build-soak, then runs the soak suite
# for SECONDS (default 600) with CLIENTS clients (default 32) in rounds of 10 s, checking the
# delivery invariants every round and that RSS does not grow from round to round; then the
# fault suite. Set SOAK_SANITIZE=1 to soak an ASan/UBSan broker instead (slower).
# Usage: scripts/soak.sh [SECONDS] [CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
clients=${2:-32}
build=${SOAK_BUILD:-build-soak}
san=""
[ "${SOAK_SANITIZE:-0}" = 1 ] && san="address;undefined"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DHERALD_SANITIZE="$san" -DHERALD_TESTS=OFF \
    >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target herald
export HERALD_BIN=$PWD/$build/broker/herald
echo "soak: ${secs}s, ${clients} clients, broker $HERALD_BIN"
HERALD_SOAK_SECONDS=$secs HERALD_SOAK_CLIENTS=$clients /usr/bin/python3 tests/security/test_soak.py -v
/usr/bin/python3 tests/security/test_faults.py -v
echo "soak: passed"
