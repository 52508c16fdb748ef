#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs a Node test of tests/js with tests/ws/run_node.sh, which installs the npm packages both use
# into tests/ws/node_modules (git-ignored) and fails, never skips, when it cannot.
# Usage: run.sh TEST.mjs   (HERALD_BIN must name the broker)
set -euo pipefail
exec "$(cd "$(dirname "$0")" && pwd)/../ws/run_node.sh" "../js/$1"
