# SPDX-License-Identifier: MIT
# tests/build/install.cmake — ctest `build_install` (cmake -P), the setup of
# the consumer and documentation checks: installs the build tree into a
# fresh scratch prefix, as a user would (`cmake --install --prefix`), and
# checks that every module built is there whole: both libraries, the header,
# the two pkg-config files (with the right version) and the CMake component.
#
# Inputs: -DBUILD_DIR -DPREFIX -DLIBDIR (relative to PREFIX) -DVERSION
#         -DMODULES=<m>,... (those built: core pool loop bus wire nats grpc;
#         grpc's header is grpc.hpp)
#         -DLIBRARY_MODULES=<m>,... (those in libctxvar: core pool)
#         -DSHARED=ON|OFF
cmake_policy(VERSION 3.21)
file(REMOVE_RECURSE "${PREFIX}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc}):\n${out}\n${err}")
endif()

set(lib "${PREFIX}/${LIBDIR}")
set(expected
  "${PREFIX}/include/ctxvar.h" "${PREFIX}/include/ctxvar/version.h"
  "${lib}/cmake/ctxvar/ctxvarConfig.cmake" "${lib}/cmake/ctxvar/ctxvarConfigVersion.cmake")
string(REPLACE "," ";" modules "${MODULES}")
string(REPLACE "," ";" library_modules "${LIBRARY_MODULES}")
foreach(m IN LISTS modules)
  if(m STREQUAL "core")
    set(base ctxvar)
    set(pc ctxvar)
    list(APPEND expected "${lib}/cmake/ctxvar/ctxvar-core-targets.cmake")
  elseif(m IN_LIST library_modules)
    set(base ctxvar)
    set(pc ctxvar-${m})
    list(APPEND expected "${PREFIX}/include/ctxvar/${m}.h")
  else()
    set(base ctxvar_${m})
    set(pc ctxvar-${m})
    set(header "${m}.h")
    if(m STREQUAL "grpc")
      set(header "grpc.hpp")
    endif()
    list(APPEND expected "${PREFIX}/include/ctxvar/${header}"
                         "${lib}/cmake/ctxvar/ctxvar-${m}-targets.cmake")
  endif()
  list(APPEND expected "${lib}/lib${base}.a" "${lib}/pkgconfig/${pc}.pc"
                       "${lib}/pkgconfig/${pc}-static.pc")
  if(SHARED)
    list(APPEND expected "${lib}/lib${base}.so")
  endif()
endforeach()
set(missing "")
foreach(f IN LISTS expected)
  if(NOT EXISTS "${f}")
    list(APPEND missing "${f}")
  endif()
endforeach()
if(missing)
  list(JOIN missing "\n  " missing)
  message(FATAL_ERROR "not installed:\n  ${missing}")
endif()

file(GLOB pcfiles "${lib}/pkgconfig/*.pc")
foreach(pcfile IN LISTS pcfiles)
  file(STRINGS "${pcfile}" version_line REGEX "^Version: ")
  if(NOT version_line STREQUAL "Version: ${VERSION}")
    message(FATAL_ERROR "${pcfile}: '${version_line}', expected 'Version: ${VERSION}'")
  endif()
endforeach()
list(LENGTH expected n)
message(STATUS "installed ${VERSION} into ${PREFIX}: ${n} files checked (modules ${MODULES})")
