#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs the build into a temporary prefix, then builds both examples against the installed
# libherald: herald-chat with pkg-config, herald-notify with find_package(herald).
# Usage: install_test.sh BUILD_DIR SOURCE_DIR [EXTRA_CFLAGS]
set -eu
build=$1
src=$2
extra=${3:-}
tmp=$(mktemp -d /tmp/herald-install-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
pc=$(find "$tmp/prefix" -name herald.pc)
libdir=$(dirname "$(dirname "$pc")")
test -f "$tmp/prefix/include/herald/client.h"
test -f "$libdir/libherald.a"

# pkg-config, one line.
export PKG_CONFIG_PATH="$(dirname "$pc")"
# shellcheck disable=SC2046,SC2086
cc $extra -o "$tmp/chat" "$src/examples/chat.c" $(pkg-config --cflags --libs herald)
LD_LIBRARY_PATH="$libdir" "$tmp/chat" --help 2>/dev/null
# Static linking through the same file.
# shellcheck disable=SC2046,SC2086
cc $extra -o "$tmp/chat-static" "$src/examples/chat.c" $(pkg-config --cflags herald) \
    "$libdir/libherald.a" $(pkg-config --static --libs-only-l herald | sed 's/-lherald//')
"$tmp/chat-static" --help 2>/dev/null

# CMake package config.
mkdir "$tmp/app"
cp "$src/examples/notify.c" "$tmp/app/"
cat >"$tmp/app/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.20)
project(notify_app C)
find_package(herald 0.1 REQUIRED)
add_executable(notify notify.c)
target_link_libraries(notify PRIVATE herald::herald)
CM
cmake -S "$tmp/app" -B "$tmp/app/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
    -DCMAKE_C_FLAGS="$extra" -DCMAKE_EXE_LINKER_FLAGS="$extra" >/dev/null
cmake --build "$tmp/app/build" >/dev/null
LD_LIBRARY_PATH="$libdir" "$tmp/app/build/notify" --help 2>/dev/null
echo "install test: ok ($libdir)"
