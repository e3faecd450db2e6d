#!/bin/sh
# SPDX-License-Identifier: MIT
# test_http_example.sh EXAMPLE CURL — starts the HTTP example on a free
# 127.0.0.1 port, calls it with curl, checks that the request's context was
# decoded, carried to the downstream call (same trace, a new parent-id, the
# same baggage, less time left), that bad headers are dropped, not fatal,
# and that a caller's expired deadline stops the work; then stops it.  Every wait is bounded; the server is killed on any exit.
set -u
example="$1"
curl="$2"
out="$(mktemp)"
"$example" --port 0 >"$out" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; sleep 0.2; kill -KILL $pid 2>/dev/null; rm -f "$out"' EXIT
port=""
i=0
while [ $i -lt 100 ] && [ -z "$port" ]; do
    port="$(sed -n 's|^listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$out")"
    [ -n "$port" ] || sleep 0.1
    i=$((i + 1))
done
if [ -z "$port" ]; then
    echo "FAIL: the example did not start"; cat "$out"; exit 1
fi
fail=0
check() { # check NAME TEXT PATTERN
    if printf '%s\n' "$2" | grep -Eq -- "$3"; then echo "ok   $1"; else echo "FAIL $1: /$3/ not in:"; printf '%s\n' "$2"; fail=1; fi
}
base="http://127.0.0.1:$port"

# 1. a request with a context
r="$("$curl" -sS --max-time 20 \
    -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
    -H 'Baggage: user=alice,tenant=acme%20inc' -H 'grpc-timeout: 5S' "$base/hello")"
check "the request runs in its decoded context" "$r" \
    '^hello trace=4bf92f3577b34da6a3ce929d0e0e4736 parent=00f067aa0ba902b7 user=alice tenant=acme inc left_ms=[0-9]+$'
check "the downstream call carries it (same trace, same baggage)" "$r" \
    '^downstream trace=4bf92f3577b34da6a3ce929d0e0e4736 parent=[0-9a-f]{16} user=alice tenant=acme inc left_ms=[0-9]+$'
down_parent="$(printf '%s\n' "$r" | sed -n 's/^downstream .* parent=\([0-9a-f]*\) .*/\1/p')"
[ "$down_parent" != "00f067aa0ba902b7" ] && echo "ok   the downstream call has a child parent-id" ||
    { echo "FAIL the downstream parent-id was not renewed"; fail=1; }
up_left="$(printf '%s\n' "$r" | sed -n 's/^hello .*left_ms=\([0-9]*\)$/\1/p')"
down_left="$(printf '%s\n' "$r" | sed -n 's/^downstream .*left_ms=\([0-9]*\)$/\1/p')"
if [ -n "$up_left" ] && [ -n "$down_left" ] && [ "$down_left" -le "$up_left" ] && [ "$up_left" -le 5000 ]; then
    echo "ok   the deadline shrinks: $up_left ms, then $down_left ms"
else
    echo "FAIL deadline: up=$up_left down=$down_left"; fail=1
fi

# 2. no context: the service starts a trace and carries it
r="$("$curl" -sS --max-time 20 "$base/hello")"
check "no headers: a new trace, no baggage, no deadline" "$r" '^hello trace=[0-9a-f]{32} parent=[0-9a-f]{16} user=- tenant=- left_ms=-1$'
t1="$(printf '%s\n' "$r" | sed -n 's/^hello trace=\([0-9a-f]*\).*/\1/p')"
check "... and carries it downstream" "$r" "^downstream trace=$t1 "

# 3. malformed headers are dropped, one by one, never fatal
r="$("$curl" -sS --max-time 20 \
    -H 'traceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01' \
    -H 'baggage: user=bob,bad member,tenant=%zz' -H 'grpc-timeout: soon' "$base/hello")"
check "bad traceparent dropped (a new trace), bad members dropped, good kept" "$r" \
    '^hello trace=[0-9a-f]{32} parent=[0-9a-f]{16} user=bob tenant=- left_ms=-1$'
if printf '%s\n' "$r" | grep -q 4bf92f3577b34da6a3ce929d0e0e4736; then echo "FAIL the uppercase trace-id was used"; fail=1; fi

# 4. the caller's time is up: the deadline is the context's cancellation
#    scope, so the service does not call downstream for nobody
r="$("$curl" -sS --max-time 20 -H 'grpc-timeout: 0n' "$base/hello")"
check "an expired deadline arrives expired" "$r" '^hello trace=[0-9a-f]{32} parent=[0-9a-f]{16} user=- tenant=- left_ms=0$'
check "... and the downstream call is skipped" "$r" '^downstream-skipped=EDEADLINE$'
if printf '%s\n' "$r" | grep -q '^downstream '; then echo "FAIL the downstream was called after the deadline"; fail=1; fi

r="$("$curl" -sS --max-time 20 -o /dev/null -w '%{http_code}' "$base/nowhere")"
check "unknown path" "$r" '^404$'

kill -TERM $pid
i=0
while kill -0 $pid 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if kill -0 $pid 2>/dev/null; then echo "FAIL the example did not stop on SIGTERM"; fail=1; else echo "ok   stopped on SIGTERM"; fi
[ $fail -eq 0 ] && echo "http example: every check held" || echo "http example: FAILED"
exit $fail
