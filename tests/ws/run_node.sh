#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs a Node test of tests/ws after installing its npm packages into tests/ws/node_modules
# (git-ignored). Missing node or npm, or a failed install, fails the test: it never skips.
# Usage: run_node.sh TEST.mjs   (HERALD_BIN must name the broker)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
for tool in node npm; do
    if ! command -v "$tool" >/dev/null; then
        echo "FAIL: '$tool' not found; install it with scripts/deps.sh browser" >&2
        exit 1
    fi
done
# One install at a time (ctest -j runs the Node and browser tests together).
exec 9>"${TMPDIR:-/tmp}/herald-ws-npm.lock"
flock -w 300 9 || { echo "FAIL: timed out waiting for another npm install" >&2; exit 1; }
if ! (cd "$here" && node -e "require.resolve('ws'); require.resolve('@msgpack/msgpack'); require.resolve('playwright-core')") 2>/dev/null; then
    echo "run_node.sh: installing npm packages into $here/node_modules" >&2
    (cd "$here" && timeout 600 npm install --no-audit --no-fund --no-package-lock --loglevel=error) || {
        echo "FAIL: npm install failed (is the npm registry reachable?)" >&2
        exit 1
    }
fi
flock -u 9
exec node --test "$here/$1"
