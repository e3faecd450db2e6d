#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# scripts/test.sh — the whole test suite, four ways.
#
#   bash scripts/test.sh              plain, asan, tsan, valgrind
#   bash scripts/test.sh plain tsan   just those configurations
#
# Configurations (each its own build directory under $CTX_BUILD_ROOT, default
# ./build, reused between runs):
#   plain     gcc -O2 -g: every test, plus the checks of the build (label
#             build: exports, install, consumers, docs, API reference)
#   asan      clang -O1 -g, AddressSanitizer + UndefinedBehaviorSanitizer,
#             CTX_DEBUG=ON (double release / use after release abort)
#   tsan      clang -O1 -g, ThreadSanitizer
#   valgrind  gcc -O2 -g (the plain flags), every test under valgrind memcheck
# The sanitizer builds use clang so that both compilers build everything with
# -Werror (CTX_WERROR=ON) on every run; every module must be built
# (CTX_WITH_LOOP/NATS/GRPC/PYTHON=ON), but for the grpc module under
# valgrind (below).  The C++ code (the grpc module, the test of
# include/ctxvar.hpp) is built with the matching C++ compiler (g++,
# clang++).
#
# The grpc module is the slowest to build (every file includes gRPC's and
# protobuf's headers): about 30 s of a plain build, 80 s of a sanitizer or
# valgrind one, here, on 2 cores.  The valgrind configuration leaves it out
# (CTX_WITH_GRPC=OFF): its build is the plain one's, ASan+LSan already run
# every grpc test (the chain's three processes included), and under
# valgrind the chain's B and C run natively and the example not at all, so
# what valgrind adds for gRPC costs more than 1.5 minutes of the suite and
# finds little (tests/grpc/CMakeLists.txt: run it by hand with
# -DCTX_WITH_GRPC=ON -DCTX_VALGRIND=ON).  TSan keeps it, for
# grpc_test_threads (the module's own threads), and builds neither the
# example nor the benchmark's grpc section there (they do not run there).
#
# Installs what it needs with apt-get when something is missing, which needs
# root (CI runs as root); anyone else is told which packages to install.
# Environment: CTX_JOBS (default 2), CTX_BUILD_ROOT, CTX_TEST_SEED (passed to
# the tests), CTX_CTEST_ARGS (extra ctest arguments, e.g. "-L core").
# The last line printed is "N passed, N failed" over every configuration; the
# exit status is non-zero if anything failed or failed to build.
set -uo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

configs=("$@")
if [ ${#configs[@]} -eq 0 ]; then
    configs=(plain asan tsan valgrind)
fi
for cfg in "${configs[@]}"; do
    case "$cfg" in
    plain | asan | tsan | valgrind) ;;
    *)
        echo "usage: $0 [plain|asan|tsan|valgrind]..." >&2
        exit 2
        ;;
    esac
done

packages=("${CTX_BUILD_PACKAGES[@]}" g++ clang valgrind libcmocka-dev libglib2.0-dev libuv1-dev
    libnats-dev nats-server libmicrohttpd-dev libcurl4-openssl-dev curl doxygen
    libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc)
if ! ctx_python_has_headers; then
    packages+=(python3 python3-dev)
fi
# clang first, then the sanitizer runtime of whichever clang that is.
# shellcheck disable=SC2046 # one package name or none
if ! ctx_ensure_packages "${packages[@]}" ||
    ! ctx_ensure_packages $(ctx_clang_runtime_package); then
    echo "could not install the packages the tests need" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

if [ -n "${CTX_TEST_SEED:-}" ]; then
    export CTX_TEST_SEED
    ctx_log "CTX_TEST_SEED=$CTX_TEST_SEED"
fi

total_passed=0
total_failed=0
summary=()
failed_tests=()
start_all=$SECONDS

# run_config NAME CC CFLAGS CMAKE_ARGS...
run_config() {
    local name="$1" cc="$2" cflags="$3"
    shift 3
    local dir="$CTX_BUILD_ROOT/$name" start=$SECONDS
    local log="$CTX_BUILD_ROOT/$name.build.log"
    local passed=0 failed=0 note=""
    mkdir -p "$CTX_BUILD_ROOT"

    ctx_log "[$name] configure + build ($cc $cflags${*:+ $*})"
    # Every module must be built (ON: a missing dependency stops the
    # configuration) and warnings are errors.
    if ! ctx_configure "$dir" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        "-DCMAKE_C_FLAGS_RELWITHDEBINFO=$cflags" "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=$cflags" \
        -DCTX_BUILD_TESTS=ON -DCTX_WERROR=ON \
        -DCTX_WITH_LOOP=ON -DCTX_WITH_NATS=ON -DCTX_WITH_GRPC=ON -DCTX_WITH_PYTHON=ON "$@" \
        >"$log" 2>&1; then
        cat "$log"
        ctx_log "[$name] CONFIGURE FAILED"
        failed=1
        note="configure failed"
    else
        grep -E '^-- ctxvar' "$log" | sed "s/^/    [$name] /"
        # Keep going past a target that fails, so every test that can be
        # built still runs; the build failure itself counts as one failure.
        local keep_going=(-k)
        if grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja' "$dir/CMakeCache.txt"; then
            keep_going=(-k 0)
        fi
        if ! cmake --build "$dir" -j "$CTX_JOBS" -- "${keep_going[@]}" >>"$log" 2>&1; then
            grep -E -B2 -A12 'error|Error [0-9]' "$log" | head -n 120
            ctx_log "[$name] BUILD FAILED (full log: $log); running the tests that were built"
            failed=1
            note="build failed"
        fi
        ctx_log "[$name] ctest"
        local ctest_log="$CTX_BUILD_ROOT/$name.ctest.log"
        # shellcheck disable=SC2086
        (cd "$dir" && ctest --output-on-failure -j "$CTX_JOBS" --no-tests=error \
            ${CTX_CTEST_ARGS:-}) 2>&1 | tee "$ctest_log"
        local line
        line="$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$ctest_log" | tail -n 1)"
        if [ -n "$line" ]; then
            local total nfailed
            nfailed="$(sed -E 's/^.* ([0-9]+) tests? failed out of ([0-9]+).*$/\1/' <<<"$line")"
            total="$(sed -E 's/^.* out of ([0-9]+).*$/\1/' <<<"$line")"
            passed=$((total - nfailed))
            failed=$((failed + nfailed))
        else
            failed=$((failed + 1))
            note="${note:+$note; }ctest ran no test or crashed"
        fi
        local t
        while IFS= read -r t; do
            failed_tests+=("[$name] $t")
        done < <(sed -n '/The following tests FAILED:/,$p' "$ctest_log" | grep -E '^[[:space:]]+[0-9]+ - ' |
            sed -E 's/^[[:space:]]+//')
    fi
    local secs=$((SECONDS - start))
    total_passed=$((total_passed + passed))
    total_failed=$((total_failed + failed))
    summary+=("$(printf '%-9s %-6s %4d passed %4d failed %5ds  %s' "$name" "$cc" "$passed" "$failed" "$secs" "$note")")
    if [ -n "$note" ]; then
        failed_tests+=("[$name] $note")
    fi
}

for cfg in "${configs[@]}"; do
    case "$cfg" in
    plain) run_config plain gcc "-O2 -g" -DCMAKE_CXX_COMPILER=g++ ;;
    asan) run_config asan clang "-O1 -g" -DCMAKE_CXX_COMPILER=clang++ -DCTX_SANITIZE=address \
        -DCTX_DEBUG=ON ;;
    tsan) run_config tsan clang "-O1 -g" -DCMAKE_CXX_COMPILER=clang++ -DCTX_SANITIZE=thread ;;
    # The last -D wins: no grpc module under valgrind (see the top).
    valgrind) run_config valgrind gcc "-O2 -g" -DCMAKE_CXX_COMPILER=g++ -DCTX_VALGRIND=ON \
        -DCTX_WITH_GRPC=OFF ;;
    esac
done

echo
echo "================ ctxvar test summary ================"
for s in "${summary[@]}"; do
    echo "  $s"
done
if [ ${#failed_tests[@]} -gt 0 ]; then
    echo "  failed:"
    for t in "${failed_tests[@]}"; do
        echo "    $t"
    done
fi
echo "  wall time: $((SECONDS - start_all))s"
echo "====================================================="
echo "$total_passed passed, $total_failed failed"
[ "$total_failed" -eq 0 ]
