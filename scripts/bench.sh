#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# scripts/bench.sh — builds ctxvar (Release), runs ctxvar_bench and the
# Python binding's benchmark (bench/bench_python.py: ctxvar / contextvars
# ratios measured in the same run).
#
#   bash scripts/bench.sh             tables of figures
#   bash scripts/bench.sh --json      one JSON object on stdout (both sets of keys)
#   bash scripts/bench.sh --quick     fewer iterations per round (smoke run)
#   bash scripts/bench.sh --rounds N  N interleaved rounds per figure (11..64)
#   bash scripts/bench.sh --only pool only some sections (core,cancel,pool,loop,bus,wire,grpc)
#   bash scripts/bench.sh --python    the Python figures only
#
# The table shows every figure (the median of its rounds, or a ratio of
# medians), its p10/p90, its spread (flagged when above 30%) and its goal
# with a check or a cross; bench/bench.h explains the method.
#
# Other arguments are passed to ctxvar_bench unchanged; build messages go to
# stderr so that --json output stays clean.  Installs what it needs with
# apt-get (GLib is the pool benchmark's baseline; gRPC, protobuf and protoc
# the grpc section's).  Without python3 and its headers the Python figures
# are left out.
# Environment: CTX_BUILD_ROOT (default ./build), CTX_JOBS (default 2).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

json=0
python_only=0
bench_args=()
py_args=()
for arg in "$@"; do
    case "$arg" in
    --json) json=1; bench_args+=("$arg"); py_args+=("$arg") ;;
    --quick) bench_args+=("$arg"); py_args+=("$arg") ;;
    --python) python_only=1 ;;
    *) bench_args+=("$arg") ;;
    esac
done

with_python=0
{
    ctx_ensure_packages "${CTX_BUILD_PACKAGES[@]}" libglib2.0-dev libuv1-dev libnats-dev nats-server \
        g++ libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
    dir="$CTX_BUILD_ROOT/release"
    mkdir -p "$CTX_BUILD_ROOT"
    ctx_log "building ctxvar_bench (Release) in $dir"
    ctx_configure "$dir" -DCMAKE_BUILD_TYPE=Release -DCTX_BUILD_TESTS=OFF >"$dir.configure.log" 2>&1 ||
        { cat "$dir.configure.log"; exit 1; }
    targets=(ctxvar_bench)
    if ctx_python_has_headers; then
        targets+=(ctxvar_python)
        with_python=1
    else
        ctx_log "python3 with its headers not found: no Python figures"
    fi
    cmake --build "$dir" -j "$CTX_JOBS" --target "${targets[@]}" >"$dir.build.log" 2>&1 ||
        { tail -n 80 "$dir.build.log"; exit 1; }
    # OpenTelemetry JS, the baseline of traceparent_extract_vs_otel_js_ratio
    # (bench/bench_wire.c): installed once with npm into <build root>/otel-js;
    # without node or npm the figure is left out.
    otel="$CTX_BUILD_ROOT/otel-js"
    if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 &&
        [ ! -f "$otel/node_modules/@opentelemetry/core/package.json" ]; then
        ctx_log "installing @opentelemetry/api and @opentelemetry/core into $otel (npm)"
        mkdir -p "$otel"
        npm install --prefix "$otel" --no-audit --no-fund --silent \
            @opentelemetry/api@1.9.1 @opentelemetry/core@1.30.1 >"$otel.log" 2>&1 ||
            ctx_log "npm install failed (see $otel.log): the OpenTelemetry JS figures are skipped"
    fi
    export CTX_BENCH_OTEL_DIR="$otel"
} 1>&2

run_python() {
    PYTHONPATH="$dir/src/python:$CTX_ROOT/python" python3 "$CTX_ROOT/bench/bench_python.py" "${py_args[@]}"
}

if [ "$python_only" = 1 ]; then
    [ "$with_python" = 1 ] || { echo "no Python binding built" >&2; exit 1; }
    ctx_log "running bench_python.py ${py_args[*]}" >&2
    run_python
    exit
fi
ctx_log "running ctxvar_bench ${bench_args[*]}" >&2
if [ "$json" = 0 ]; then
    "$dir/ctxvar_bench" "${bench_args[@]}"
    if [ "$with_python" = 1 ]; then
        echo
        ctx_log "running bench_python.py ${py_args[*]}" >&2
        run_python
    fi
    exit
fi
c_json="$("$dir/ctxvar_bench" "${bench_args[@]}")"
if [ "$with_python" = 0 ]; then
    printf '%s\n' "$c_json"
    exit
fi
ctx_log "running bench_python.py ${py_args[*]}" >&2
py_json="$(run_python)"
# One JSON object: the C figures, then the Python ones.
python3 -c 'import json, sys; a = json.loads(sys.argv[1]); a.update(json.loads(sys.argv[2])); print(json.dumps(a, indent=2))' \
    "$c_json" "$py_json"
