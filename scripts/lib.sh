# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# scripts/lib.sh — shared by demo.sh, test.sh and bench.sh (sourced, not run).
#
# ctx_ensure_packages PKG...   installs the Debian packages that are missing
#                              (apt-get update once per run, and only if
#                              something is missing, so reruns are fast);
#                              as root only: anyone else is told what to
#                              install, and it fails
# ctx_clang_runtime_package    the sanitizer runtime package of the
#                              installed clang (libclang-rt-<major>-dev)
# ctx_python_has_headers       0 if `python3` exists with its C headers
# ctx_configure DIR ARGS...    cmake configure into DIR (wiped first if it was
#                              configured from another source tree)

CTX_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CTX_BUILD_ROOT="${CTX_BUILD_ROOT:-$CTX_ROOT/build}"
CTX_JOBS="${CTX_JOBS:-2}"
export DEBIAN_FRONTEND=noninteractive

ctx_log() { printf '==> %s\n' "$*"; }

ctx_python_has_headers() {
    command -v python3 >/dev/null 2>&1 &&
        python3 - >/dev/null 2>&1 <<'EOF'
import os, sysconfig
raise SystemExit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
EOF
}

ctx_ensure_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        ctx_log "not a Debian system: make sure these are installed: $*"
        return 0
    fi
    local missing=() pkg
    for pkg in "$@"; do
        if [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" != "installed" ]; then
            missing+=("$pkg")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    # Installing is for root (CI runs as root); anyone else is told what to
    # install, once, and the script stops.
    if [ "$(id -u)" -ne 0 ]; then
        ctx_log "missing packages; as root, run: apt-get install ${missing[*]}"
        return 1
    fi
    ctx_log "installing: ${missing[*]}"
    if [ -z "${CTX_APT_UPDATED:-}" ]; then
        apt-get update -q || return 1
        CTX_APT_UPDATED=1
    fi
    apt-get install -y -q --no-install-recommends "${missing[@]}" || return 1
}

# The sanitizer runtime package of the installed clang (Debian splits it out
# as libclang-rt-<major>-dev from clang 14 on), or nothing if there is none.
ctx_clang_runtime_package() {
    local major
    major="$(clang -dumpversion 2>/dev/null | cut -d. -f1)"
    if [ -n "$major" ] && [ "$major" -ge 14 ] 2>/dev/null; then
        echo "libclang-rt-$major-dev"
    fi
}

ctx_configure() {
    local dir="$1"
    shift
    if [ -f "$dir/CMakeCache.txt" ]; then
        local home
        home="$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$dir/CMakeCache.txt")"
        if [ "$home" != "$CTX_ROOT" ]; then
            rm -rf "$dir"
        fi
    fi
    mkdir -p "$dir"
    cmake -S "$CTX_ROOT" -B "$dir" "$@"
}

# The packages every build needs.
# shellcheck disable=SC2034 # used by the scripts that source this file
CTX_BUILD_PACKAGES=(cmake make gcc libc6-dev pkg-config)
