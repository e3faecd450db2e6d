# SPDX-License-Identifier: MIT
# CtxTesting.cmake — cmocka, the shared test support library, ctx_add_test.
#
#   ctx_add_test(NAME <target> MODULE <module> SOURCES <file>...
#                [LIBRARIES <lib>...] [LABELS <label>...] [TIMEOUT <seconds>])
#
# builds one test executable (linked with ctxvar_static, ctx_test_support,
# cmocka and threads; `src/` and `tests/` are on its include path), and
# registers it with ctest under the same name, labelled with its module,
# run through CTX_TEST_LAUNCHER (valgrind or setarch) with
# CTX_TEST_ENVIRONMENT, compiled with CTX_TEST_DEFINITIONS (see
# CtxSanitizers.cmake).  A tests/<module>/CMakeLists.txt calls it for tests
# that need more (libuv, Python, ...).

if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "pkg-config is needed to find cmocka (Debian: pkg-config), "
                      "or configure with -DCTX_BUILD_TESTS=OFF")
endif()
pkg_check_modules(CMOCKA IMPORTED_TARGET cmocka)
if(NOT CMOCKA_FOUND)
  message(FATAL_ERROR "cmocka not found (Debian: libcmocka-dev), "
                      "or configure with -DCTX_BUILD_TESTS=OFF")
endif()

add_library(ctx_test_support STATIC "${PROJECT_SOURCE_DIR}/tests/support/support.c")
target_include_directories(ctx_test_support PUBLIC
  "${PROJECT_SOURCE_DIR}/tests/support" "${PROJECT_SOURCE_DIR}/tests" "${PROJECT_SOURCE_DIR}/src")
target_link_libraries(ctx_test_support PUBLIC ctxvar_static Threads::Threads)
target_compile_definitions(ctx_test_support PUBLIC ${CTX_TEST_DEFINITIONS})

function(ctx_add_test)
  cmake_parse_arguments(T "" "NAME;MODULE;TIMEOUT" "SOURCES;LIBRARIES;LABELS" ${ARGN})
  if(NOT T_NAME OR NOT T_SOURCES)
    message(FATAL_ERROR "ctx_add_test: NAME and SOURCES are required")
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT ${CTX_TEST_TIMEOUT})
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBRARIES} ctx_test_support ctxvar_static
                        PkgConfig::CMOCKA Threads::Threads)
  # Tests of libctxvar itself (core, pool) may look at its private headers.
  if(T_MODULE STREQUAL "core" OR T_MODULE STREQUAL "pool")
    target_compile_definitions(${T_NAME} PRIVATE CTX_BUILD_CORE)
  endif()
  add_test(NAME ${T_NAME} COMMAND ${CTX_TEST_LAUNCHER} $<TARGET_FILE:${T_NAME}>)
  set(_labels ${T_MODULE} ${T_LABELS})
  if(CTX_VALGRIND)
    list(APPEND _labels valgrind)
  endif()
  if(NOT CTX_SANITIZE STREQUAL "none")
    list(APPEND _labels ${CTX_SANITIZE})
  endif()
  set_tests_properties(${T_NAME} PROPERTIES
    LABELS "${_labels}"
    TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "${CTX_TEST_ENVIRONMENT}")
endfunction()

# ctx_add_exports_check(MODULE <m> TARGET <shared lib target> HEADER <path>
#                       MACRO <export macro> [OPTIONAL <function>...])
# Plain builds only: the test build_<m>_exports checks that the module's
# shared library exports exactly what its header declares with MACRO
# (cmake/CtxCheckExports.cmake).  OPTIONAL names declared functions
# that exist only with an optional dependency.
function(ctx_add_exports_check)
  cmake_parse_arguments(A "" "MODULE;TARGET;HEADER;MACRO" "OPTIONAL" ${ARGN})
  if(NOT CTX_SANITIZE STREQUAL "none" OR CTX_VALGRIND OR NOT TARGET ${A_TARGET})
    return()
  endif()
  string(REPLACE ";" "," _optional "${A_OPTIONAL}")
  add_test(NAME build_${A_MODULE}_exports
    COMMAND ${CMAKE_COMMAND} -DLIBRARY=$<TARGET_FILE:${A_TARGET}> -DNM=${CMAKE_NM}
            -DHEADER=${A_HEADER} -DMACRO=${A_MACRO} "-DOPTIONAL=${_optional}"
            -P "${PROJECT_SOURCE_DIR}/cmake/CtxCheckExports.cmake")
  set_tests_properties(build_${A_MODULE}_exports PROPERTIES LABELS "build;${A_MODULE}" TIMEOUT 120)
endfunction()
