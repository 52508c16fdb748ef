#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# What `make test` runs after scripts/deps.sh: the formatting check, every suite in a release
# build, every suite again under AddressSanitizer + UndefinedBehaviorSanitizer, the threaded
# client tests under ThreadSanitizer, and short fuzzing runs. Stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1}

step() { printf '\n==> %s\n' "$*"; }

step "clang-format --dry-run --Werror"
git ls-files -z '*.c' '*.h' | xargs -0 -r clang-format --dry-run --Werror

step "release build and every suite"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$JOBS"
ctest --test-dir build --output-on-failure -j2 -LE 'fuzz|tsan'

step "AddressSanitizer + UndefinedBehaviorSanitizer build and every suite"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DHERALD_SANITIZE='address;undefined' >/dev/null
cmake --build build-asan -j"$JOBS"
ctest --test-dir build-asan --output-on-failure -j2 -LE 'fuzz|tsan|browser'

if grep -rqs 'LABELS.*tsan' --include=CMakeLists.txt tests; then
    step "ThreadSanitizer build: the threaded client tests"
    cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DHERALD_SANITIZE=thread >/dev/null
    cmake --build build-tsan -j"$JOBS"
    ctest --test-dir build-tsan --output-on-failure -L tsan
fi

if [ -f tests/fuzz/CMakeLists.txt ]; then
    step "fuzz targets, short bounded runs"
    # Only the fuzz targets (every test labelled fuzz is named after its target): with
    # HERALD_FUZZ every library carries coverage instrumentation, which the other
    # executables do not link.
    CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DHERALD_FUZZ=ON \
        -DHERALD_SANITIZE='address;undefined' >/dev/null
    fuzz_targets=$(ctest --test-dir build-fuzz -N -L fuzz | sed -n 's/.*Test *#[0-9]*: \(fuzz_[a-z0-9_]*\)$/\1/p')
    cmake --build build-fuzz -j"$JOBS" --target $fuzz_targets
    ctest --test-dir build-fuzz --output-on-failure -L fuzz
fi

step "all suites passed"
