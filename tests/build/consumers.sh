#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# tests/build/consumers.sh — ctest `build_consumers`: programs outside the
# source tree built against an installed ctxvar, the ways the README says,
# for every module that was built, and run.
#
#   consumers.sh PREFIX LIBDIR WORK CC CMAKE MODULE...
#
# PREFIX is an installation (ctest `build_install` makes it), LIBDIR its
# library directory relative to PREFIX.  For each module (tests/build/
# consumer/<module>.c: every module has one; a C++ module, grpc, has
# <module>.cpp instead, built with $CTX_CONSUMER_CXX, default c++, as
# C++17):
#   shared        cc app.c $(pkg-config --cflags --libs ctxvar-<m>)
#                 (loop.c calls libuv itself: ctxvar-loop libuv) must need
#                 libctxvar*.so; runs with LD_LIBRARY_PATH
#   static        cc app.c $(pkg-config --cflags --libs ctxvar-<m>-static)
#                 must need no libctxvar*.so (nor libuv.so when the system
#                 has libuv's archive); runs without LD_LIBRARY_PATH
#   fully static  cc -static app.c $(pkg-config --static --cflags --libs
#                 ctxvar-<m>), for the modules whose every dependency has an
#                 archive (all but nats: Debian ships no libnats archive, and
#                 grpc: gRPC's archives need a dozen more that Debian does
#                 not all ship);
#                 must have no dynamic section; runs
#   CMake         find_package(ctxvar CONFIG REQUIRED COMPONENTS <modules>),
#                 ctxvar::<m> and ctxvar::<m>_static (consumer/CMakeLists.txt)
# and the CMake package must name a component it cannot give: an unknown
# one, one missing from the installation, one whose dependency is missing.
set -euo pipefail

prefix="$1" libdir="$2" work="$3" cc="$4" cmake="$5"
shift 5
modules=("$@")
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/consumer"
lib="$prefix/$libdir"
failures=0

rm -rf "$work"
mkdir -p "$work"
export PKG_CONFIG_PATH="$lib/pkgconfig"
unset PKG_CONFIG_LIBDIR PKG_CONFIG_SYSROOT_DIR

fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

# run NAME CMD... — runs a command, prints its output, counts a failure.
run() {
    local name="$1"
    shift
    local out
    if out="$("$@" 2>&1)"; then
        printf '  %-28s %s\n' "$name" "$(tail -n 1 <<<"$out")"
        return 0
    fi
    printf '%s\n' "$out" >&2
    fail "$name: $*"
    return 1
}

needed() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }

pc_name() {
    if [ "$1" = core ]; then echo ctxvar; else echo "ctxvar-$1"; fi
}

cxx="${CTX_CONSUMER_CXX:-c++}"
for m in "${modules[@]}"; do
    pc="$(pc_name "$m")"
    app="$src/$m.c"
    cc_m="$cc"
    cflags=(-std=c11 -Wall -Wextra -Werror)
    if [ -f "$src/$m.cpp" ]; then
        app="$src/$m.cpp"
        cc_m="$cxx"
        cflags=(-std=c++17 -Wall -Wextra -Werror)
    fi
    echo "== $m ($pc)"
    if [ ! -f "$app" ]; then
        fail "no consumer program for module $m: add tests/build/consumer/$m.c"
        continue
    fi
    # A program that calls libuv itself links it too (ctxvar-loop's libuv is
    # private, so that a static link takes libuv's archive).
    also=()
    if [ "$m" = loop ]; then also=(libuv); fi
    # shellcheck disable=SC2046 # pkg-config output is meant to be split
    if run "$m shared: build" "$cc_m" "${cflags[@]}" $(pkg-config --cflags "$pc" "${also[@]}") "$app" \
        -o "$work/$m-shared" $(pkg-config --libs "$pc" "${also[@]}"); then
        if ! needed "$work/$m-shared" | grep -q '^libctxvar'; then
            fail "$m-shared does not need a libctxvar shared library"
        fi
        run "$m shared: run" env LD_LIBRARY_PATH="$lib" "$work/$m-shared"
    fi

    # shellcheck disable=SC2046
    if run "$m static: build" "$cc_m" "${cflags[@]}" $(pkg-config --cflags "$pc-static") "$app" \
        -o "$work/$m-static" $(pkg-config --libs "$pc-static"); then
        if needed "$work/$m-static" | grep -q '^libctxvar'; then
            fail "$m-static needs a libctxvar shared library: $(needed "$work/$m-static" | tr '\n' ' ')"
        fi
        if pkg-config --exists libuv-static && needed "$work/$m-static" | grep -q '^libuv'; then
            fail "$m-static needs libuv.so although libuv-static (libuv_a.a) is installed"
        fi
        run "$m static: run" env -u LD_LIBRARY_PATH "$work/$m-static"
    fi

    if [ "$m" != nats ] && [ "$m" != grpc ]; then
        # shellcheck disable=SC2046
        if run "$m fully static: build" "$cc" "${cflags[@]}" -static $(pkg-config --static --cflags "$pc") \
            "$app" -o "$work/$m-full" $(pkg-config --static --libs "$pc"); then
            if readelf -d "$work/$m-full" 2>/dev/null | grep -q NEEDED; then
                fail "$m-full is not fully static: $(needed "$work/$m-full" | tr '\n' ' ')"
            fi
            run "$m fully static: run" env -u LD_LIBRARY_PATH "$work/$m-full"
        fi
    fi
done

echo "== CMake: find_package(ctxvar CONFIG REQUIRED COMPONENTS ${modules[*]})"
modules_list="$(IFS=';'; echo "${modules[*]}")"
if run "cmake: configure" "$cmake" -S "$src" -B "$work/cmake" "-DCMAKE_PREFIX_PATH=$prefix" \
    "-DCMAKE_C_COMPILER=$cc" "-DCTX_MODULES=$modules_list" "-DCMAKE_C_FLAGS=-Wall -Wextra -Werror" \
    "-DCMAKE_CXX_COMPILER=$(command -v "$cxx")" "-DCMAKE_CXX_FLAGS=-Wall -Wextra -Werror" &&
    run "cmake: build" "$cmake" --build "$work/cmake" -j 2; then
    for m in "${modules[@]}"; do
        # The shared libraries of a scratch prefix are found as the
        # pkg-config ones are (CMake's RUNPATH names only the direct ones).
        run "cmake ctxvar::$m: run" env LD_LIBRARY_PATH="$lib" "$work/cmake/${m}_shared"
        run "cmake ctxvar::${m}_static: run" env -u LD_LIBRARY_PATH "$work/cmake/${m}_static"
        if needed "$work/cmake/${m}_static" | grep -q '^libctxvar'; then
            fail "cmake ${m}_static needs a libctxvar shared library"
        fi
        if ! needed "$work/cmake/${m}_shared" | grep -q '^libctxvar'; then
            fail "cmake ${m}_shared does not need a libctxvar shared library"
        fi
    done
fi

# expect_missing NAME PATTERN CMAKE-ARGS... — configuring a project that asks
# for a component must fail, naming it.
expect_missing() {
    local name="$1" pattern="$2"
    shift 2
    local dir="$work/missing-$name" out
    mkdir -p "$dir"
    cat >"$dir/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.21)
project(missing C)
find_package(ctxvar CONFIG REQUIRED COMPONENTS \${WANT})
EOF
    # CMake wraps the message: compare with the lines joined.
    if out="$("$@" -S "$dir" -B "$dir/build" 2>&1)"; then
        fail "component $name: the configuration succeeded"
        return
    fi
    out="$(tr -s ' \n' '  ' <<<"$out")"
    if grep -q -- "$pattern" <<<"$out"; then
        printf '  %-28s %s\n' "missing $name" "$(grep -o -- "component '[a-z]*' [^;]*" <<<"$out" | head -n 1 | cut -c 1-100)"
    else
        printf '%s\n' "$out" >&2
        fail "component $name: the error does not say \"$pattern\""
    fi
}

echo "== CMake: components it cannot give are named"
expect_missing unknown "component 'coffee' no such component" \
    "$cmake" "-DCMAKE_PREFIX_PATH=$prefix" -DWANT="pool;coffee"
# An installation without the nats module: this one's package, told so.
cp -r "$prefix" "$work/partial"
sed -i -E 's/^(set\(_ctxvar_installed .*);nats([;)])/\1\2/' "$work/partial/$libdir/cmake/ctxvar/ctxvarConfig.cmake"
expect_missing not-built "component 'nats' not built in this installation" \
    "$cmake" "-DCMAKE_PREFIX_PATH=$work/partial" -DWANT="wire;nats"
if [[ " ${modules[*]} " == *" loop "* ]]; then
    expect_missing no-libuv "component 'loop' missing its dependency libuv" \
        env PKG_CONFIG_LIBDIR=/nonexistent PKG_CONFIG_PATH= "$cmake" "-DCMAKE_PREFIX_PATH=$prefix" \
        -DWANT=loop
fi

if [ "$failures" -ne 0 ]; then
    echo "$failures failure(s)" >&2
    exit 1
fi
echo "every consumer built and ran"
