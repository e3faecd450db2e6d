#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# tests/build/docs.sh — ctest `build_docs`: the documentation's code works.
#
#   docs.sh --prefix P --libdir L --work W --cc CC [--cc CC]...
#           [--cflags "FLAGS"] [--launcher "COMMAND"]
#           [--python-path PATH] [--nats-server PATH] FILE.md|DIR...
#
# Every fenced ```c block of the given Markdown files (a directory means
# every *.md below it) is compiled by each CC with -std=c11 -Wall -Wextra
# -Werror (and FLAGS: the sanitizer configurations pass theirs, and run the
# programs through COMMAND: valgrind, setarch) against the installation P
# (ctest `build_install`), linked with
# the pkg-config packages its includes name (ctxvar, ctxvar-<m>; libuv too
# for ctxvar/loop.h, whose users call libuv), or only compiled (-c) if it has
# no main().  Markers, on the last non-blank line before a block:
#   <!-- fragment -->   not a whole translation unit: not compiled (rare)
#   <!-- run -->        a whole program: also run (each build), and it must
#                       exit with status 0
#   <!-- run with nats-server -->
#                       the same, with a private nats-server started on a
#                       free loopback port and its URL as the argument
#                       (reported as skipped without --nats-server)
# ```python blocks are byte-compiled; those marked run are run with
# PYTHONPATH=PATH (the built binding), or reported as skipped when no PATH
# is given (the binding was not built).  A block whose module was not built
# (its pkg-config package is not installed) is reported and not compiled.
# Errors point at the Markdown file's own lines (#line).
set -euo pipefail

prefix="" libdir="" work="" python_path="" nats_server="" extra_cflags="" launcher=""
ccs=()
inputs=()
while [ $# -gt 0 ]; do
    case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --libdir) libdir="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --cc) [ -n "$2" ] && ccs+=("$2"); shift 2 ;;
    --python-path) python_path="$2"; shift 2 ;;
    --nats-server) nats_server="$2"; shift 2 ;;
    --cflags) extra_cflags="$2"; shift 2 ;;
    --launcher) launcher="$2"; shift 2 ;;
    *) inputs+=("$1"); shift ;;
    esac
done
if [ -z "$prefix" ] || [ -z "$work" ] || [ ${#ccs[@]} -eq 0 ]; then
    echo "usage: $0 --prefix P --libdir L --work W --cc CC... [--python-path X] FILE|DIR..." >&2
    echo "(no compiler given: the plain configuration needs gcc and clang, Debian: gcc clang)" >&2
    exit 2
fi
read -r -a extra <<<"$extra_cflags"
read -r -a run_with <<<"$launcher"
lib="$prefix/$libdir"
export PKG_CONFIG_PATH="$lib/pkgconfig"
unset PKG_CONFIG_LIBDIR

files=()
for input in "${inputs[@]}"; do
    if [ -d "$input" ]; then
        while IFS= read -r f; do files+=("$f"); done < <(find "$input" -name '*.md' | sort)
    else
        files+=("$input")
    fi
done

rm -rf "$work"
mkdir -p "$work/blocks"

# Extract the blocks: one file per block, named <n>.<c|py>, with a line
# "kind file line" in $work/index.
: >"$work/index"
n=0
for f in "${files[@]}"; do
    awk -v file="$f" -v dir="$work/blocks" -v start="$n" '
        BEGIN { n = start; inside = 0; other = 0; last = "" }
        other {
            if ($0 ~ /^```[[:space:]]*$/) { other = 0; last = "" }
            next
        }
        inside {
            if ($0 ~ /^```[[:space:]]*$/) { inside = 0; close(out); last = ""; next }
            print > out
            next
        }
        /^```(c|python)[[:space:]]*$/ {
            marker = "compile"
            if (last ~ /<!--[[:space:]]*fragment[[:space:]]*-->/) marker = "fragment"
            if (last ~ /<!--[[:space:]]*run[[:space:]]*-->/) marker = "run"
            if (last ~ /<!--[[:space:]]*run with nats-server[[:space:]]*-->/) marker = "run-nats"
            lang = ($0 ~ /python/) ? "py" : "c"
            out = dir "/" n "." lang
            if (lang == "c") printf "#line %d \"%s\"\n", NR + 1, file > out
            else printf "" > out
            print lang, marker, n, file, NR + 1
            n++
            inside = 1
            next
        }
        /^```/ { other = 1; next }
        /[^[:space:]]/ { last = $0 }
    ' "$f" >>"$work/index"
    n=$(wc -l <"$work/index")
done

pkgs_for() {
    local src="$1" pkgs=(ctxvar) m
    for m in pool loop bus wire nats; do
        if grep -Eq "^[[:space:]]*#[[:space:]]*include[[:space:]]*<ctxvar/$m\.h>" "$src"; then
            pkgs+=("ctxvar-$m")
            [ "$m" = loop ] && pkgs+=(libuv)
        fi
    done
    echo "${pkgs[@]}"
}

failures=0 compiled=0 ran=0 fragments=0 python_ran=0 python_skipped=0 nats_skipped=0
missing_modules=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# A private nats-server on a free loopback port, for the blocks that need
# one: started on first use, its URL in $nats_url, stopped at exit.
nats_url="" nats_pid=""
start_nats() {
    [ -n "$nats_url" ] && return 0
    "$nats_server" -a 127.0.0.1 -p -1 >"$work/nats-server.log" 2>&1 &
    nats_pid=$!
    local port=""
    for _ in $(seq 100); do
        port="$(sed -n 's/.*Listening for client connections on 127\.0\.0\.1:\([0-9]*\).*/\1/p' \
            "$work/nats-server.log")"
        [ -n "$port" ] && break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        cat "$work/nats-server.log" >&2
        return 1
    fi
    nats_url="nats://127.0.0.1:$port"
}
trap 'if [ -n "$nats_pid" ]; then kill "$nats_pid" 2>/dev/null; wait "$nats_pid" 2>/dev/null || true; fi' EXIT

while read -r lang marker id file line; do
    src="$work/blocks/$id.$lang"
    where="$file:$line"
    if [ "$marker" = fragment ]; then
        fragments=$((fragments + 1))
        continue
    fi
    if [ "$lang" = py ]; then
        if ! python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[2])' \
            "$src" "$where" 2>"$work/$id.log"; then
            cat "$work/$id.log" >&2
            fail "$where: Python block does not parse"
            continue
        fi
        if [ "$marker" = run ]; then
            if [ -z "$python_path" ]; then
                python_skipped=$((python_skipped + 1))
            elif (cd "$work" && PYTHONPATH="$python_path" PYTHONDONTWRITEBYTECODE=1 \
                timeout 120 python3 "$src") >"$work/$id.out" 2>&1; then
                python_ran=$((python_ran + 1))
            else
                cat "$work/$id.out" >&2
                fail "$where: Python block failed"
            fi
        fi
        continue
    fi
    read -r -a pkgs <<<"$(pkgs_for "$src")"
    if ! pkg-config --exists "${pkgs[@]}"; then # a module this build skipped
        missing_modules=$((missing_modules + 1))
        echo "$where: not compiled: needs ${pkgs[*]}, not installed" >&2
        continue
    fi
    has_main=0
    if grep -Eq '^(int|static int)[[:space:]]+main[[:space:]]*\(' "$src"; then has_main=1; fi
    if [ "$marker" != compile ] && [ $has_main -eq 0 ]; then
        fail "$where: marked run but has no main()"
        continue
    fi
    args=()
    if [ "$marker" = run-nats ]; then
        if [ -z "$nats_server" ]; then
            nats_skipped=$((nats_skipped + 1))
            marker=compile
        elif start_nats; then
            args=("$nats_url")
        else
            fail "$where: could not start $nats_server"
            marker=compile
        fi
    fi
    read -r -a cflags <<<"$(pkg-config --cflags "${pkgs[@]}") ${extra[*]}"
    read -r -a libs <<<"$(pkg-config --libs "${pkgs[@]}")"
    for cc in "${ccs[@]}"; do
        exe="$work/$id-$(basename "$cc")"
        if [ $has_main -eq 1 ]; then
            cmd=("$cc" -std=c11 -Wall -Wextra -Werror "${cflags[@]}" -x c "$src" -x none -o "$exe" "${libs[@]}"
                "${extra[@]}")
        else
            cmd=("$cc" -std=c11 -Wall -Wextra -Werror "${cflags[@]}" -x c -c "$src" -o "$exe.o")
        fi
        if ! "${cmd[@]}" >"$work/$id.log" 2>&1; then
            cat "$work/$id.log" >&2
            fail "$where: does not compile with $cc (${pkgs[*]})"
            continue
        fi
        compiled=$((compiled + 1))
        if [ "$marker" != compile ]; then
            if (cd "$work" && LD_LIBRARY_PATH="$lib" timeout 300 "${run_with[@]}" "$exe" "${args[@]}") \
                >"$work/$id.out" 2>&1; then
                ran=$((ran + 1))
            else
                cat "$work/$id.out" >&2
                fail "$where: built with $cc, exits with an error"
            fi
        fi
    done
done <"$work/index"

echo "documentation: ${#files[@]} files; $compiled C builds (${ccs[*]}), $ran runs;" \
    "$fragments fragments not compiled; $python_ran Python blocks run" \
    "$([ $python_skipped -gt 0 ] && echo "($python_skipped skipped: no binding built)")" \
    "$([ $nats_skipped -gt 0 ] && echo "($nats_skipped NATS programs not run: no nats-server)")" \
    "$([ $missing_modules -gt 0 ] && echo "($missing_modules blocks for modules not built)")"
[ "$failures" -eq 0 ]
