# CtxModule.cmake — ctx_add_module: how every layer above the core (loop,
# bus, wire, nats) becomes a library of its own.
#
# ctx_add_module(NAME <m> SOURCES <file>...
#                [STATIC_LIBS <target>...] [SHARED_LIBS <target>...]
#                [PUBLIC_DEFINES <def>...]
#                DESCRIPTION <text> PC_REQUIRES <text> [PC_CFLAGS <text>])
#
# Makes ctxvar_<m>_static (libctxvar_<m>.a, on top of ctxvar_static and
# STATIC_LIBS) and, when the shared core is built, ctxvar_<m>
# (libctxvar_<m>.so, on top of ctxvar and SHARED_LIBS, hidden visibility, the
# core's version), each with an alias ctxvar::<target>; links the benchmark
# and the demo with the static one and defines CTX_HAVE_<M>=1 for them; and
# installs the libraries with a relocatable pkg-config file ctxvar-<m>.pc
# (Requires: PC_REQUIRES).  The libraries stay out of the CMake export set:
# they may reference pkg-config targets (libuv, libnats) that
# ctxvarConfig.cmake does not create.
include_guard(GLOBAL)

function(_ctx_module_common target defines)
  target_include_directories(${target}
    PUBLIC  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
            $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>
    PRIVATE ${PROJECT_SOURCE_DIR}/src)
  if(CMAKE_C_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wmissing-prototypes)
  endif()
  if(defines)
    target_compile_definitions(${target} PUBLIC ${defines})
  endif()
endfunction()

function(ctx_add_module)
  cmake_parse_arguments(M "" "NAME;DESCRIPTION;PC_REQUIRES;PC_CFLAGS"
                        "SOURCES;STATIC_LIBS;SHARED_LIBS;PUBLIC_DEFINES" ${ARGN})
  set(static ctxvar_${M_NAME}_static)
  set(shared ctxvar_${M_NAME})

  add_library(${static} STATIC ${M_SOURCES})
  _ctx_module_common(${static} "${M_PUBLIC_DEFINES}")
  target_link_libraries(${static} PUBLIC ctxvar_static ${M_STATIC_LIBS} Threads::Threads)
  set_target_properties(${static} PROPERTIES OUTPUT_NAME ctxvar_${M_NAME})
  add_library(ctxvar::${static} ALIAS ${static})
  set(install_targets ${static})

  if(TARGET ctxvar)
    add_library(${shared} SHARED ${M_SOURCES})
    _ctx_module_common(${shared} "${M_PUBLIC_DEFINES}")
    target_link_libraries(${shared} PUBLIC ctxvar ${M_SHARED_LIBS} Threads::Threads)
    get_target_property(version ctxvar VERSION)
    get_target_property(soversion ctxvar SOVERSION)
    set_target_properties(${shared} PROPERTIES
      C_VISIBILITY_PRESET hidden
      VISIBILITY_INLINES_HIDDEN ON
      VERSION ${version}
      SOVERSION ${soversion})
    add_library(ctxvar::${shared} ALIAS ${shared})
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

  install(TARGETS ${install_targets}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
    set(pc_prefix "${CMAKE_INSTALL_PREFIX}")
  else()
    file(RELATIVE_PATH up "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
    string(REGEX REPLACE "/$" "" up "${up}")
    set(pc_prefix "\${pcfiledir}/${up}")
  endif()
  foreach(kind LIBDIR INCLUDEDIR)
    if(IS_ABSOLUTE "${CMAKE_INSTALL_${kind}}")
      set(pc_${kind} "${CMAKE_INSTALL_${kind}}")
    else()
      set(pc_${kind} "\${prefix}/${CMAKE_INSTALL_${kind}}")
    endif()
  endforeach()
  file(GENERATE OUTPUT "${PROJECT_BINARY_DIR}/ctxvar-${M_NAME}.pc" CONTENT
"prefix=${pc_prefix}
exec_prefix=\${prefix}
libdir=${pc_LIBDIR}
includedir=${pc_INCLUDEDIR}

Name: ctxvar-${M_NAME}
Description: ${M_DESCRIPTION}
Version: ${PROJECT_VERSION}
Requires: ${M_PC_REQUIRES}
Libs: -L\${libdir} -lctxvar_${M_NAME}
Cflags: -I\${includedir}${M_PC_CFLAGS}
")
  install(FILES "${PROJECT_BINARY_DIR}/ctxvar-${M_NAME}.pc"
          DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endfunction()
