#!/usr/bin/env bash
# scripts/bench.sh — builds ctxvar (Release) and runs ctxvar_bench.
#
#   bash scripts/bench.sh             table of figures
#   bash scripts/bench.sh --json      one JSON object on stdout
#   bash scripts/bench.sh --quick     fewer iterations per round (smoke run)
#   bash scripts/bench.sh --rounds N  N interleaved rounds per figure (11..64)
#   bash scripts/bench.sh --only pool only some sections (core,cancel,pool,loop,bus,wire,grpc)
#
# The table shows every figure (the median of its rounds, or a ratio of
# medians), its p10/p90, its spread (flagged when above 30%) and its goal
# with a check or a cross; bench/bench.h explains the method.
#
# Arguments are passed to ctxvar_bench unchanged; build messages go to stderr
# so that --json output stays clean.  Installs what it needs with apt-get
# (GLib is the pool benchmark's baseline; gRPC, protobuf and protoc the
# grpc section's).
# Environment: CTX_BUILD_ROOT (default ./build), CTX_JOBS (default 2).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

{
    ctx_ensure_packages "${CTX_BUILD_PACKAGES[@]}" libglib2.0-dev libuv1-dev libnats-dev nats-server \
        g++ libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
    dir="$CTX_BUILD_ROOT/release"
    mkdir -p "$CTX_BUILD_ROOT"
    ctx_log "building ctxvar_bench (Release) in $dir"
    ctx_configure "$dir" -DCMAKE_BUILD_TYPE=Release -DCTX_BUILD_TESTS=OFF >"$dir.configure.log" 2>&1 ||
        { cat "$dir.configure.log"; exit 1; }
    cmake --build "$dir" -j "$CTX_JOBS" --target ctxvar_bench >"$dir.build.log" 2>&1 ||
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
    ctx_log "running ctxvar_bench $*"
} 1>&2
exec "$dir/ctxvar_bench" "$@"
