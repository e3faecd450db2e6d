#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# tests/build/options.sh — ctest `build_options`: what configuring ctxvar
# does when an optional dependency is missing.  pkg-config is pointed at an
# empty directory, so that libuv, libnats and gRPC are "not installed":
#   CTX_WITH_LOOP=ON     the configuration fails and names libuv
#   CTX_WITH_NATS=ON     the configuration fails and names libnats
#   CTX_WITH_GRPC=ON     the configuration fails and names gRPC C++
#   AUTO (the default)   it succeeds, builds core, pool, bus and wire, says
#                        it skipped loop, nats and grpc, and why; -Werror is
#                        off (CTX_WERROR defaults to OFF for users)
#
#   options.sh SOURCE_DIR WORK CMAKE CC
set -euo pipefail

source_dir="$1" work="$2" cmake="$3" cc="$4"
failures=0
rm -rf "$work"
mkdir -p "$work"

# configure NAME ARGS... — configures the source tree without libuv and
# libnats visible; output in $work/NAME.log, status returned.
configure() {
    local name="$1"
    shift
    env PKG_CONFIG_LIBDIR="$work/empty" PKG_CONFIG_PATH= \
        "$cmake" -S "$source_dir" -B "$work/$name" -DCMAKE_C_COMPILER="$cc" \
        -DCTX_BUILD_TESTS=OFF -DCTX_BUILD_DEMO=OFF -DCTX_BUILD_BENCH=OFF \
        -DCTX_WITH_PYTHON=OFF "$@" >"$work/$name.log" 2>&1
}

# expect NAME PATTERN — the log of NAME says PATTERN (lines joined: CMake
# wraps long messages).
expect() {
    local text
    text="$(tr -s ' \n' '  ' <"$work/$1.log")"
    if grep -q -- "$2" <<<"$text"; then
        printf '  %-12s says: %s\n' "$1" "$(grep -o -- "$2.*" <<<"$text" | cut -c 1-100)"
    else
        cat "$work/$1.log" >&2
        echo "FAIL: $1: the output does not say \"$2\"" >&2
        failures=$((failures + 1))
    fi
}

mkdir -p "$work/empty"
if configure loop-on -DCTX_WITH_LOOP=ON; then
    echo "FAIL: CTX_WITH_LOOP=ON without libuv: the configuration succeeded" >&2
    failures=$((failures + 1))
fi
expect loop-on "CTX_WITH_LOOP=ON, but the loop module cannot be built: libuv"

if configure nats-on -DCTX_WITH_NATS=ON; then
    echo "FAIL: CTX_WITH_NATS=ON without libnats: the configuration succeeded" >&2
    failures=$((failures + 1))
fi
expect nats-on "CTX_WITH_NATS=ON, but the nats module cannot be built: libnats"

if configure grpc-on -DCTX_WITH_GRPC=ON; then
    echo "FAIL: CTX_WITH_GRPC=ON without gRPC: the configuration succeeded" >&2
    failures=$((failures + 1))
fi
expect grpc-on "CTX_WITH_GRPC=ON, but the grpc module cannot be built: gRPC C++"

if ! configure auto; then
    cat "$work/auto.log" >&2
    echo "FAIL: AUTO without libuv, libnats and gRPC: the configuration failed" >&2
    failures=$((failures + 1))
fi
expect auto "ctxvar: loop module skipped: libuv"
expect auto "ctxvar: nats module skipped: libnats"
expect auto "ctxvar: grpc module skipped: gRPC C++"
expect auto "ctxvar: modules built: core cancel pool bus wire;"
if ! grep -q '^CTX_WERROR:BOOL=OFF$' "$work/auto/CMakeCache.txt" 2>/dev/null; then
    echo "FAIL: CTX_WERROR does not default to OFF" >&2
    failures=$((failures + 1))
fi

if [ "$failures" -ne 0 ]; then
    exit 1
fi
echo "missing dependencies: ON fails, AUTO skips and says so"
