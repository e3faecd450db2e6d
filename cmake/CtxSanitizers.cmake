# SPDX-License-Identifier: MIT
# CtxSanitizers.cmake — the CTX_SANITIZE and CTX_VALGRIND modes.
#
# Sets, for cmake/CtxTesting.cmake:
#   CTX_TEST_LAUNCHER     command prepended to every test executable (valgrind,
#                         or `setarch <arch> -R` when a sanitizer runtime needs
#                         ASLR off to start on this kernel)
#   CTX_TEST_ENVIRONMENT  NAME=VALUE list given to every test
#   CTX_TEST_DEFINITIONS  compile definitions of test code:
#                           CTX_TEST_UNDER_VALGRIND=1  tests run under valgrind
#                           CTX_TEST_UNDER_TSAN=1      ThreadSanitizer build
#                           CTX_TEST_UNDER_ASAN=1      AddressSanitizer+UBSan build
#                         (each is defined only in its mode, so both `#ifdef X`
#                         and `#if X` work; tests use them to scale down loops).
#                         The same names are also set to 1 in the tests'
#                         environment, for code that prefers getenv().
#
# Suppression files are optional and picked up when present:
#   tests/tsan.supp, tests/lsan.supp, tests/ubsan.supp, tests/valgrind.supp

set(CTX_TEST_LAUNCHER "")
set(CTX_TEST_ENVIRONMENT "")
set(CTX_TEST_DEFINITIONS "")

if(NOT CTX_SANITIZE MATCHES "^(none|address|thread)$")
  message(FATAL_ERROR "CTX_SANITIZE must be none, address or thread (got '${CTX_SANITIZE}')")
endif()
if(CTX_VALGRIND AND NOT CTX_SANITIZE STREQUAL "none")
  message(FATAL_ERROR "CTX_VALGRIND=ON cannot be combined with CTX_SANITIZE=${CTX_SANITIZE}")
endif()

set(_ctx_supp_dir "${PROJECT_SOURCE_DIR}/tests")

if(CTX_SANITIZE STREQUAL "address")
  set(CTX_SANITIZER_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=all
                          -fno-omit-frame-pointer)
  list(APPEND CTX_TEST_DEFINITIONS CTX_TEST_UNDER_ASAN=1)
  set(_asan "detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1")
  set(_ubsan "print_stacktrace=1:halt_on_error=1")
  set(_lsan "")
  if(EXISTS "${_ctx_supp_dir}/lsan.supp")
    set(_lsan "suppressions=${_ctx_supp_dir}/lsan.supp")
  endif()
  if(EXISTS "${_ctx_supp_dir}/ubsan.supp")
    string(APPEND _ubsan ":suppressions=${_ctx_supp_dir}/ubsan.supp")
  endif()
  list(APPEND CTX_TEST_ENVIRONMENT "ASAN_OPTIONS=${_asan}" "UBSAN_OPTIONS=${_ubsan}"
       "LSAN_OPTIONS=${_lsan}" "CTX_TEST_UNDER_ASAN=1")
elseif(CTX_SANITIZE STREQUAL "thread")
  set(CTX_SANITIZER_FLAGS -fsanitize=thread -fno-omit-frame-pointer)
  list(APPEND CTX_TEST_DEFINITIONS CTX_TEST_UNDER_TSAN=1)
  set(_tsan "halt_on_error=0:second_deadlock_stack=1:exitcode=66")
  if(EXISTS "${_ctx_supp_dir}/tsan.supp")
    string(APPEND _tsan ":suppressions=${_ctx_supp_dir}/tsan.supp")
  endif()
  list(APPEND CTX_TEST_ENVIRONMENT "TSAN_OPTIONS=${_tsan}" "CTX_TEST_UNDER_TSAN=1")
  if(CMAKE_C_COMPILER_ID STREQUAL "GNU")
    # gcc warns that TSan does not model atomic_thread_fence (-Wtsan); keep the
    # warning visible but let a TSan build go on.
    include(CheckCCompilerFlag)
    check_c_compiler_flag(-Wno-error=tsan CTX_HAVE_WNO_ERROR_TSAN)
    if(CTX_HAVE_WNO_ERROR_TSAN)
      list(APPEND CTX_SANITIZER_FLAGS -Wno-error=tsan)
    endif()
  endif()
endif()

if(CTX_SANITIZER_FLAGS)
  add_compile_options(${CTX_SANITIZER_FLAGS})
  add_link_options(${CTX_SANITIZER_FLAGS})

  # Probe: can this compiler build a sanitized program, and does it start?
  # Sanitizer runtimes of LLVM <= 17 (gcc 12's and clang 14's among them) can
  # die at start on kernels with a large mmap randomisation ("FATAL:
  # ThreadSanitizer: unexpected memory mapping"); running them with ASLR off
  # (setarch -R) is the known workaround.  setarch's personality is inherited
  # by children, so the launcher covers everything a test starts.
  set(_probe_dir "${PROJECT_BINARY_DIR}/CMakeFiles/ctx_sanitizer_probe")
  file(WRITE "${_probe_dir}/probe.c" [=[
#include <pthread.h>
#include <stdlib.h>
static int shared;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static void *worker(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    shared++;
    pthread_mutex_unlock(&lock);
    return NULL;
}
int main(void) {
    pthread_t t;
    char *p = malloc(16);
    if (pthread_create(&t, NULL, worker, NULL) != 0)
        return 2;
    worker(NULL);
    pthread_join(t, NULL);
    p[0] = (char)shared;
    int r = p[0] == 2 ? 0 : 3;
    free(p);
    return r;
}
]=])
  string(REPLACE ";" " " _probe_flags "${CTX_SANITIZER_FLAGS}")
  try_compile(_ctx_probe_compiled "${_probe_dir}/build" "${_probe_dir}/probe.c"
    CMAKE_FLAGS "-DCMAKE_C_FLAGS=${_probe_flags}"
    LINK_OPTIONS ${CTX_SANITIZER_FLAGS}
    LINK_LIBRARIES Threads::Threads
    OUTPUT_VARIABLE _probe_output
    COPY_FILE "${_probe_dir}/probe")
  if(NOT _ctx_probe_compiled)
    message(FATAL_ERROR
      "CTX_SANITIZE=${CTX_SANITIZE}: ${CMAKE_C_COMPILER} cannot build with "
      "'${_probe_flags}'. On Debian install the sanitizer runtime (gcc: libasan8 "
      "libubsan1 libtsan2; clang 14: libclang-rt-14-dev).\n${_probe_output}")
  endif()
  execute_process(COMMAND "${_probe_dir}/probe"
    RESULT_VARIABLE _probe_rc OUTPUT_VARIABLE _probe_out ERROR_VARIABLE _probe_err)
  if(NOT _probe_rc EQUAL 0)
    find_program(CTX_SETARCH setarch)
    set(_setarch_ok FALSE)
    if(CTX_SETARCH)
      execute_process(COMMAND "${CTX_SETARCH}" "${CMAKE_HOST_SYSTEM_PROCESSOR}" -R "${_probe_dir}/probe"
        RESULT_VARIABLE _probe_rc2 OUTPUT_QUIET ERROR_QUIET)
      if(_probe_rc2 EQUAL 0)
        set(_setarch_ok TRUE)
      endif()
    endif()
    if(_setarch_ok)
      set(CTX_TEST_LAUNCHER "${CTX_SETARCH}" "${CMAKE_HOST_SYSTEM_PROCESSOR}" -R)
      message(STATUS "ctxvar: the ${CTX_SANITIZE} sanitizer runtime needs ASLR off here; "
                     "tests run under '${CTX_SETARCH} ${CMAKE_HOST_SYSTEM_PROCESSOR} -R'")
    else()
      message(FATAL_ERROR "CTX_SANITIZE=${CTX_SANITIZE}: a sanitized probe program fails to run "
                          "(exit ${_probe_rc}), even with setarch -R:\n${_probe_err}")
    endif()
  endif()
endif()

if(CTX_VALGRIND)
  find_program(CTX_VALGRIND_EXECUTABLE valgrind REQUIRED)
  # A leak of any kind but "still reachable", or any memory error, makes
  # valgrind exit with 99, which fails the test.  --fair-sched keeps threads
  # that spin or wait on each other making progress under valgrind's lock.
  set(CTX_TEST_LAUNCHER "${CTX_VALGRIND_EXECUTABLE}"
      --error-exitcode=99 --leak-check=full
      --show-leak-kinds=definite,indirect,possible
      --errors-for-leak-kinds=definite,indirect,possible
      --track-origins=no --fair-sched=yes --num-callers=30)
  if(EXISTS "${_ctx_supp_dir}/valgrind.supp")
    list(APPEND CTX_TEST_LAUNCHER "--suppressions=${_ctx_supp_dir}/valgrind.supp")
  endif()
  list(APPEND CTX_TEST_DEFINITIONS CTX_TEST_UNDER_VALGRIND=1)
  list(APPEND CTX_TEST_ENVIRONMENT "CTX_TEST_UNDER_VALGRIND=1")
endif()
