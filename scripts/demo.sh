#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# scripts/demo.sh — builds ctxvar (Release) and runs the demo.
# Installs what it needs with apt-get (only when something is missing).
# Environment: CTX_BUILD_ROOT (default ./build), CTX_JOBS (default 2).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# libuv and libnats: the loop and NATS parts of the demo; nats-server: its NATS hop.
ctx_ensure_packages "${CTX_BUILD_PACKAGES[@]}" libuv1-dev libnats-dev nats-server

dir="$CTX_BUILD_ROOT/release"
mkdir -p "$CTX_BUILD_ROOT"
ctx_log "building ctxvar_demo (Release) in $dir"
ctx_configure "$dir" -DCMAKE_BUILD_TYPE=Release -DCTX_BUILD_TESTS=OFF >"$dir.configure.log" 2>&1 ||
    { cat "$dir.configure.log"; exit 1; }
cmake --build "$dir" -j "$CTX_JOBS" --target ctxvar_demo >"$dir.build.log" 2>&1 ||
    { tail -n 80 "$dir.build.log"; exit 1; }
ctx_log "running ctxvar_demo"
exec "$dir/ctxvar_demo" "$@"
