#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian packages Herald needs, only when some are missing.
# Usage: scripts/deps.sh [core|test|bench|browser|all]   (default: core)
set -euo pipefail

core=(build-essential cmake pkg-config libuv1-dev libwslay-dev libmsgpack-dev check
      libhttp-parser-dev libssl-dev libjwt-dev libhiredis-dev clang-format)
test=(python3 python3-websockets python3-msgpack clang libclang-rt-14-dev procps openssl redis-server)
bench=(redis-server nats-server gnuplot-nox linux-perf)
browser=(chromium nodejs npm libnss3-tools)

want=("${core[@]}")
case "${1:-core}" in
core) ;;
test) want+=("${test[@]}") ;;
bench) want+=("${test[@]}" "${bench[@]}") ;;
browser) want+=("${test[@]}" "${browser[@]}") ;;
all) want+=("${test[@]}" "${bench[@]}" "${browser[@]}") ;;
*) echo "deps.sh: unknown set '$1' (core|test|bench|browser|all)" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
    # nodejs/npm may come from elsewhere than Debian; a working binary is enough.
    case "$p" in nodejs) command -v node >/dev/null && continue ;; npm) command -v npm >/dev/null && continue ;; esac
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps.sh: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
