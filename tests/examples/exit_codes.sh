#!/bin/sh
# SPDX-License-Identifier: MIT
# The examples fail with a non-zero exit status when the broker is down, and with 2 for a
# usage error (a user name that is not one topic token), instead of exiting 0.
# Usage: exit_codes.sh BUILD_DIR
set -u
bin=$1/examples
down=tcp://127.0.0.1:1 # nothing listens on port 1: connection refused at once
fail=0

# expect STATUS CMD...: runs CMD with stdin from /dev/null and a time limit.
expect() {
    want=$1
    shift
    timeout 20 "$@" </dev/null >/dev/null 2>&1
    got=$?
    if [ "$got" -ne "$want" ]; then
        echo "FAIL: exit $got, wanted $want: $*"
        fail=1
    else
        echo "ok: exit $got: $*"
    fi
}

expect 1 "$bin/herald-chat" --url "$down" lobby
expect 1 "$bin/herald-notify" --url "$down" serve
expect 1 "$bin/herald-notify" --url "$down" send bob hello
expect 1 "$bin/herald-notify" --url "$down" watch bob
expect 2 "$bin/herald-chat" --url "$down" 'bad*room'
expect 2 "$bin/herald-notify" --url "$down" send bob.smith hello
expect 2 "$bin/herald-notify" --url "$down" watch 'a>'
expect 2 "$bin/herald-notify" --url "$down" bogus
# A CA file that does not load: the client cannot be made, exit 1.
expect 1 "$bin/herald-chat" --url tls://127.0.0.1:1 --ca /nonexistent/ca.pem lobby
expect 1 "$bin/herald-notify" --url tls://127.0.0.1:1 --ca /nonexistent/ca.pem watch bob
expect 0 "$bin/herald-chat" --help
exit $fail
