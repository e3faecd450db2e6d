#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# scripts/docs.sh — the API reference: HTML rendered from the public headers
# with Doxygen (docs/Doxyfile; the headers' comments are read through
# scripts/doxygen-filter.awk).
#
#   bash scripts/docs.sh                 writes build/docs/html/index.html
#   bash scripts/docs.sh --out DIR       writes DIR/html/index.html
#   bash scripts/docs.sh --check ...     also fails on any Doxygen warning
#                                        (an undocumented public symbol, a
#                                        comment it cannot read): the ctest
#                                        build_apidocs
#
# Installs doxygen with apt-get when it is missing (root only: see lib.sh).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

check=0
out="$CTX_BUILD_ROOT/docs"
while [ $# -gt 0 ]; do
    case "$1" in
    --check) check=1; shift ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--check] [--out DIR]" >&2; exit 2 ;;
    esac
done

if ! command -v doxygen >/dev/null 2>&1; then
    ctx_ensure_packages doxygen || { echo "doxygen is needed (Debian: doxygen)" >&2; exit 1; }
fi

version="$(sed -n 's/^#define CTX_VERSION_STRING "\(.*\)"$/\1/p' "$CTX_ROOT/include/ctxvar/version.h")"
rm -rf "$out"
mkdir -p "$out"
(cd "$CTX_ROOT" && CTX_ROOT="$CTX_ROOT" CTX_DOCS_OUT="$out" CTX_VERSION="$version" \
    doxygen docs/Doxyfile) >"$out/doxygen.log" 2>&1 || { cat "$out/doxygen.log" >&2; exit 1; }

if [ -s "$out/warnings.log" ]; then
    cat "$out/warnings.log" >&2
    n="$(wc -l <"$out/warnings.log")"
    if [ "$check" -eq 1 ]; then
        echo "API reference: $n warning line(s) (above); every public symbol needs a comment" >&2
        exit 1
    fi
    echo "API reference: $n warning line(s) (above)" >&2
fi
ctx_log "API reference $version: $out/html/index.html"
