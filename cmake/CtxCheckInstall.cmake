# CtxCheckInstall.cmake — ctest `build_install` (cmake -P).
#
# Installs the build tree into a scratch prefix, then builds and runs a small
# program against it three ways, as a user would: pkg-config + the shared
# library, pkg-config --static + libctxvar.a, and find_package(ctxvar) from a
# CMake project.  The program checks ctx_version() against the header.
#
# Inputs: -DBUILD_DIR -DSOURCE_DIR -DC_COMPILER -DVERSION
cmake_policy(VERSION 3.21)
set(work "${BUILD_DIR}/install-check")
set(prefix "${work}/prefix")
file(REMOVE_RECURSE "${work}")
file(MAKE_DIRECTORY "${work}")

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${out}\n${err}")
  endif()
  set(run_output "${out}" PARENT_SCOPE)
endfunction()

run(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}")

file(GLOB_RECURSE pcfiles "${prefix}/*/ctxvar.pc")
if(NOT pcfiles)
  message(FATAL_ERROR "ctxvar.pc was not installed under ${prefix}")
endif()
list(GET pcfiles 0 pcfile)
get_filename_component(pcdir "${pcfile}" DIRECTORY)
get_filename_component(libdir "${pcdir}" DIRECTORY)

file(WRITE "${work}/consumer.c" [=[
#include <ctxvar.h>
#include <stdio.h>
#include <string.h>
int main(void) {
    if (ctx_version() != CTX_VERSION_HEX || strcmp(ctx_version_string(), CTX_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s, library %s\n", CTX_VERSION_STRING, ctx_version_string());
        return 1;
    }
    printf("%s\n", ctx_version_string());
    return 0;
}
]=])

find_program(PKG_CONFIG pkg-config REQUIRED)
set(ENV{PKG_CONFIG_PATH} "${pcdir}")
run(${PKG_CONFIG} --modversion ctxvar)
string(STRIP "${run_output}" pc_version)
if(NOT pc_version STREQUAL VERSION)
  message(FATAL_ERROR "pkg-config --modversion ctxvar says '${pc_version}', expected '${VERSION}'")
endif()
run(${PKG_CONFIG} --cflags ctxvar)
string(STRIP "${run_output}" cflags)
separate_arguments(cflags UNIX_COMMAND "${cflags}")
run(${PKG_CONFIG} --libs ctxvar)
string(STRIP "${run_output}" libs)
separate_arguments(libs UNIX_COMMAND "${libs}")
run(${PKG_CONFIG} --static --libs-only-other --libs-only-l ctxvar)
string(STRIP "${run_output}" static_libs)
string(REPLACE "-lctxvar" "" static_libs "${static_libs}")
separate_arguments(static_libs UNIX_COMMAND "${static_libs}")

# Shared, through pkg-config.
run(${C_COMPILER} -std=c11 -Wall -Werror ${cflags} "${work}/consumer.c" -o "${work}/consumer_shared" ${libs})
set(ENV{LD_LIBRARY_PATH} "${libdir}")
run("${work}/consumer_shared")
string(STRIP "${run_output}" got)
if(NOT got STREQUAL VERSION)
  message(FATAL_ERROR "shared consumer printed '${got}', expected '${VERSION}'")
endif()
unset(ENV{LD_LIBRARY_PATH})

# Static: libctxvar.a plus pkg-config --static's private libraries.
run(${C_COMPILER} -std=c11 -Wall -Werror ${cflags} "${work}/consumer.c" -o "${work}/consumer_static"
    "${libdir}/libctxvar.a" ${static_libs})
run("${work}/consumer_static")

# CMake package.
file(WRITE "${work}/cmake-consumer/CMakeLists.txt" "
cmake_minimum_required(VERSION 3.21)
project(consumer C)
find_package(ctxvar ${VERSION} REQUIRED)
add_executable(consumer_cmake \"${work}/consumer.c\")
target_link_libraries(consumer_cmake PRIVATE ctxvar::ctxvar_static)
")
run(${CMAKE_COMMAND} -S "${work}/cmake-consumer" -B "${work}/cmake-consumer/build"
    "-DCMAKE_PREFIX_PATH=${prefix}" "-DCMAKE_C_COMPILER=${C_COMPILER}")
run(${CMAKE_COMMAND} --build "${work}/cmake-consumer/build")
run("${work}/cmake-consumer/build/consumer_cmake")

message(STATUS "installed ${VERSION} to ${prefix}; pkg-config shared, static and find_package consumers work")
