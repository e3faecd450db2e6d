# SPDX-License-Identifier: MIT
# CtxModule.cmake — how every ctxvar module becomes a library users can
# install and link: options for optional dependencies, the libraries, their
# CMake package component and their pkg-config files.
#
# Names (one scheme for every module <m> of the README's table):
#   CMake, in the build tree and from find_package(ctxvar COMPONENTS <m>):
#     ctxvar::<m>          the shared library      (target ctxvar_<m> here)
#     ctxvar::<m>_static   the static library      (target ctxvar_<m>_static)
#   pkg-config:
#     ctxvar-<m>           the shared library (`--static` lists what a fully
#                          static link, `cc -static`, needs)
#     ctxvar-<m>-static    the static archives of ctxvar, by path, plus the
#                          dependencies' static archives where the system has
#                          them (Debian: libuv_a.a) and shared ones where not
#                          (libnats)
#   The modules libctxvar holds (CTX_LIBRARY_MODULES in the top-level
#   CMakeLists.txt: the core and the pool) are one library: ctxvar::core,
#   ctxvar::pool and ctxvar::ctxvar name the same library (likewise the
#   _static ones), and so do the pkg-config names ctxvar and ctxvar-pool.
#
# Functions
#   ctx_dependency_option(<VAR> <doc>)
#       a cache option AUTO (default) / ON / OFF for a module that needs an
#       outside library.
#   ctx_module_skip(<module> <reason>)
#       records that a module is not built, and says why.
#   ctx_module_missing(<module> <VAR> <what is missing>)
#       the module's dependency is missing: a configure error if <VAR> is ON,
#       else (AUTO) ctx_module_skip.
#   ctx_pkgconfig(NAME <pc name> DESCRIPTION <text> [REQUIRES <pkg>...]
#                 [REQUIRES_PRIVATE <pkg>...] [LIBS <flag>...]
#                 [LIBS_PRIVATE <flag>...] [CFLAGS <flag>...])
#       writes and installs <pc name>.pc (relocatable: ${pcfiledir}).
#   ctx_install_module(NAME <m> TARGETS <target>... [USES <module>...]
#                      [FIND_PKG "<PREFIX> <pkg-config spec>"...]
#                      [HINT <text>])
#       installs the targets as component <m> of the CMake package
#       (lib/cmake/ctxvar/ctxvar-<m>-targets.cmake) and records what
#       ctxvarConfig.cmake must find before loading it.
#   ctx_add_module(NAME <m> SOURCES <file>... DESCRIPTION <text>
#                  [USES <module>...] [SHARED_LIBS <target>...]
#                  [STATIC_LIBS <target>...] [PUBLIC_DEFINES <def>...]
#                  [PC_REQUIRES <pkg>...] [PC_REQUIRES_PRIVATE <pkg>...]
#                  [FIND_PKG "<PREFIX> <spec>"...] [HINT <text>])
#       a layer above the core: ctxvar_<m>_static and (with CTX_BUILD_SHARED)
#       ctxvar_<m> over libctxvar and the modules it USES (linked publicly),
#       SHARED_LIBS / STATIC_LIBS (outside libraries); links the demo and the
#       benchmark with the static one (CTX_HAVE_<M>=1 for them); installs
#       both, the component and the two pkg-config files.  PC_REQUIRES are
#       outside pkg-config packages whose headers the module's header
#       includes and whose functions users call; PC_REQUIRES_PRIVATE are
#       needed only to link the library statically.
include_guard(GLOBAL)

set(CTX_CMAKE_INSTALL_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/ctxvar")

function(ctx_dependency_option var doc)
  set(${var} AUTO CACHE STRING "Build ${doc}: AUTO (if found), ON (must be found), OFF")
  set_property(CACHE ${var} PROPERTY STRINGS AUTO ON OFF)
  string(TOUPPER "${${var}}" value)
  if(NOT value MATCHES "^(AUTO|ON|OFF)$")
    message(FATAL_ERROR "${var} must be AUTO, ON or OFF (got '${${var}}')")
  endif()
  set(${var} "${value}" PARENT_SCOPE)
endfunction()

function(ctx_module_skip module reason)
  message(STATUS "ctxvar: ${module} module skipped: ${reason}")
  set_property(GLOBAL APPEND PROPERTY CTX_SKIPPED_MODULES "${module} (${reason})")
endfunction()

function(ctx_module_missing module var what)
  if("${${var}}" STREQUAL "ON")
    message(FATAL_ERROR "ctxvar: ${var}=ON, but the ${module} module cannot be built: "
                        "${what}.  Install it, or set ${var}=AUTO (build what can be "
                        "built) or ${var}=OFF.")
  endif()
  ctx_module_skip(${module} "${what}; ${var}=ON makes this an error")
endfunction()

# The pkg-config name of module <m>: ctxvar for the core, ctxvar-<m> else.
function(_ctx_pc_name module static out)
  if(module STREQUAL "core")
    set(name ctxvar)
  else()
    set(name ctxvar-${module})
  endif()
  if(static)
    string(APPEND name "-static")
  endif()
  set(${out} "${name}" PARENT_SCOPE)
endfunction()

function(ctx_pkgconfig)
  cmake_parse_arguments(P "" "NAME;DESCRIPTION"
                        "REQUIRES;REQUIRES_PRIVATE;LIBS;LIBS_PRIVATE;CFLAGS" ${ARGN})
  # Relocatable: ${prefix} is found from where the file is (pkg-config's
  # ${pcfiledir}), so `cmake --install --prefix X` works for any X.
  if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
    set(PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  else()
    file(RELATIVE_PATH up "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
    string(REGEX REPLACE "/$" "" up "${up}")
    set(PC_PREFIX "\${pcfiledir}/${up}")
  endif()
  foreach(kind LIBDIR INCLUDEDIR)
    if(IS_ABSOLUTE "${CMAKE_INSTALL_${kind}}")
      set(PC_${kind} "${CMAKE_INSTALL_${kind}}")
    else()
      set(PC_${kind} "\${prefix}/${CMAKE_INSTALL_${kind}}")
    endif()
  endforeach()
  set(PC_NAME "${P_NAME}")
  set(PC_DESCRIPTION "${P_DESCRIPTION}")
  list(JOIN P_REQUIRES ", " PC_REQUIRES)
  list(JOIN P_REQUIRES_PRIVATE ", " PC_REQUIRES_PRIVATE)
  list(JOIN P_LIBS " " PC_LIBS)
  list(JOIN P_LIBS_PRIVATE " " PC_LIBS_PRIVATE)
  list(PREPEND P_CFLAGS "-I\${includedir}")
  list(JOIN P_CFLAGS " " PC_CFLAGS)
  configure_file("${PROJECT_SOURCE_DIR}/ctxvar.pc.in"
                 "${PROJECT_BINARY_DIR}/pkgconfig/${P_NAME}.pc" @ONLY)
  install(FILES "${PROJECT_BINARY_DIR}/pkgconfig/${P_NAME}.pc"
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endfunction()

function(ctx_install_module)
  cmake_parse_arguments(I "" "NAME;HINT" "TARGETS;USES;FIND_PKG" ${ARGN})
  install(TARGETS ${I_TARGETS} EXPORT ctxvar-${I_NAME}-targets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
    INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  install(EXPORT ctxvar-${I_NAME}-targets NAMESPACE ctxvar::
          FILE ctxvar-${I_NAME}-targets.cmake DESTINATION ${CTX_CMAKE_INSTALL_DIR})
  set_property(GLOBAL APPEND PROPERTY CTX_MODULES ${I_NAME})
  set_property(GLOBAL PROPERTY CTX_MODULE_USES_${I_NAME} ${I_USES})
  set_property(GLOBAL PROPERTY CTX_MODULE_FIND_PKG_${I_NAME} ${I_FIND_PKG})
  set_property(GLOBAL PROPERTY CTX_MODULE_HINT_${I_NAME} "${I_HINT}")
endfunction()

function(_ctx_module_common target defines)
  target_include_directories(${target}
    PUBLIC  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
            $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>
    PRIVATE ${PROJECT_SOURCE_DIR}/src)
  if(CMAKE_C_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:C>:-Wmissing-prototypes>)
  endif()
  if(defines)
    target_compile_definitions(${target} PUBLIC ${defines})
  endif()
endfunction()

function(ctx_add_module)
  cmake_parse_arguments(M "" "NAME;DESCRIPTION;HINT"
    "SOURCES;USES;SHARED_LIBS;STATIC_LIBS;PUBLIC_DEFINES;PC_REQUIRES;PC_REQUIRES_PRIVATE;FIND_PKG"
    ${ARGN})
  if(NOT M_NAME OR NOT M_SOURCES)
    message(FATAL_ERROR "ctx_add_module: NAME and SOURCES are required")
  endif()
  set(static ctxvar_${M_NAME}_static)
  set(shared ctxvar_${M_NAME})
  set(static_uses "")
  set(shared_uses "")
  foreach(used IN LISTS M_USES)
    list(APPEND static_uses ctxvar_${used}_static)
    list(APPEND shared_uses ctxvar_${used})
  endforeach()

  add_library(${static} STATIC ${M_SOURCES})
  _ctx_module_common(${static} "${M_PUBLIC_DEFINES}")
  target_link_libraries(${static} PUBLIC ${static_uses} ctxvar_static ${M_STATIC_LIBS}
                        Threads::Threads)
  set_target_properties(${static} PROPERTIES OUTPUT_NAME ctxvar_${M_NAME}
                        EXPORT_NAME ${M_NAME}_static)
  add_library(ctxvar::${M_NAME}_static ALIAS ${static})
  set(install_targets ${static})

  if(TARGET ctxvar)
    add_library(${shared} SHARED ${M_SOURCES})
    _ctx_module_common(${shared} "${M_PUBLIC_DEFINES}")
    ctx_tls_model(${shared}) # CMakeLists.txt: the thread-local model
    target_link_libraries(${shared} PUBLIC ${shared_uses} ctxvar ${M_SHARED_LIBS}
                          Threads::Threads)
    get_target_property(version ctxvar VERSION)
    get_target_property(soversion ctxvar SOVERSION)
    set_target_properties(${shared} PROPERTIES
      C_VISIBILITY_PRESET hidden
      CXX_VISIBILITY_PRESET hidden
      VISIBILITY_INLINES_HIDDEN ON
      VERSION ${version}
      SOVERSION ${soversion}
      EXPORT_NAME ${M_NAME})
    add_library(ctxvar::${M_NAME} ALIAS ${shared})
    list(APPEND install_targets ${shared})
  endif()

  # The benchmark and the demo have a part per module (bench/bench_<m>.c,
  # examples/demo_<m>.c): link them with it and tell them it exists.
  string(TOUPPER "${M_NAME}" upper)
  foreach(target ctxvar_bench ctxvar_demo)
    if(TARGET ${target})
      target_link_libraries(${target} PRIVATE ${static})
      target_compile_definitions(${target} PRIVATE CTX_HAVE_${upper}=1)
    endif()
  endforeach()

  ctx_install_module(NAME ${M_NAME} TARGETS ${install_targets} USES ${M_USES}
                     FIND_PKG ${M_FIND_PKG} HINT "${M_HINT}")

  # pkg-config: ctxvar-<m> (shared) and ctxvar-<m>-static.  The modules it
  # uses come first in Requires, so that an archive precedes the archives it
  # needs on a static link line.
  set(cflags "")
  foreach(def IN LISTS M_PUBLIC_DEFINES)
    list(APPEND cflags "-D${def}")
  endforeach()
  set(static_requires "")
  set(shared_requires "")
  foreach(used IN LISTS M_USES)
    _ctx_pc_name(${used} TRUE pc)
    list(APPEND static_requires "${pc} = ${PROJECT_VERSION}")
    _ctx_pc_name(${used} FALSE pc)
    list(APPEND shared_requires "${pc} = ${PROJECT_VERSION}")
  endforeach()
  list(APPEND static_requires "ctxvar-static = ${PROJECT_VERSION}" ${M_PC_REQUIRES}
       ${M_PC_REQUIRES_PRIVATE})
  list(APPEND shared_requires "ctxvar = ${PROJECT_VERSION}" ${M_PC_REQUIRES})
  ctx_pkgconfig(NAME ctxvar-${M_NAME}-static
    DESCRIPTION "${M_DESCRIPTION} (static)"
    REQUIRES ${static_requires}
    LIBS "\${libdir}/${CMAKE_STATIC_LIBRARY_PREFIX}ctxvar_${M_NAME}${CMAKE_STATIC_LIBRARY_SUFFIX}"
    CFLAGS -DCTX_STATIC ${cflags})
  if(TARGET ${shared})
    ctx_pkgconfig(NAME ctxvar-${M_NAME}
      DESCRIPTION "${M_DESCRIPTION}"
      REQUIRES ${shared_requires}
      REQUIRES_PRIVATE ${M_PC_REQUIRES_PRIVATE}
      LIBS "-L\${libdir}" "-lctxvar_${M_NAME}"
      CFLAGS ${cflags})
  else()
    # No shared library: -lctxvar_<m> finds the archive, so everything it
    # needs is public.
    ctx_pkgconfig(NAME ctxvar-${M_NAME}
      DESCRIPTION "${M_DESCRIPTION}"
      REQUIRES ${static_requires}
      LIBS "-L\${libdir}" "-lctxvar_${M_NAME}"
      CFLAGS -DCTX_STATIC ${cflags})
  endif()
endfunction()
