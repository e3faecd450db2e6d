# SPDX-License-Identifier: MIT
# CtxCheckExports.cmake — the ctest `build_exports` (libctxvar.so) and
# `build_<module>_exports` of each module built as its own shared library
# (cmake -P; the latter added by ctx_add_exports_check in CtxTesting.cmake):
# the library exports exactly the functions its headers declare with the
# export macro (a line starting `MACRO ... name(`), all of them, and nothing
# else; an exported name must also be public API (`ctx_`, not `ctx__`).
#
# Inputs: -DLIBRARY=<lib.so> -DHEADER=<header>[,<header>...] or
#         -DHEADERS_DIR=<dir> (every .h below it) -DMACRO=<CTX_EXPORT>
#         -DNM=<nm>
#         -DOPTIONAL=<a,b> declared functions the library may lack (built only
#         with an optional dependency)
cmake_policy(VERSION 3.21)
if(NOT NM)
  set(NM nm)
endif()
execute_process(COMMAND "${NM}" -D --defined-only --extern-only "${LIBRARY}"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${NM} failed on ${LIBRARY}: ${err}")
endif()
string(REPLACE "\n" ";" lines "${out}")
set(exported "")
set(bad "")
foreach(line IN LISTS lines)
  if(line MATCHES "^[0-9a-fA-F]+ +([A-Za-z]) +([^ @]+)")
    set(name "${CMAKE_MATCH_2}")
    if(CMAKE_MATCH_1 MATCHES "^[TDBRVWGSi]$" AND NOT name MATCHES "^(_init|_fini|_edata|_end|__bss_start)$")
      list(APPEND exported "${name}")
      if(NOT name MATCHES "^ctx_" OR name MATCHES "^ctx__")
        list(APPEND bad "${name}")
      endif()
    endif()
  endif()
endforeach()
string(REPLACE "," ";" optional "${OPTIONAL}")
if(HEADERS_DIR)
  file(GLOB_RECURSE headers "${HEADERS_DIR}/*.h")
else()
  string(REPLACE "," ";" headers "${HEADER}")
endif()
set(decls "")
foreach(header IN LISTS headers)
  file(STRINGS "${header}" header_decls REGEX "^${MACRO} ")
  list(APPEND decls ${header_decls})
endforeach()
set(missing "")
set(declared "")
foreach(decl IN LISTS decls)
  if(decl MATCHES "([A-Za-z_][A-Za-z0-9_]*) *\\(")
    list(APPEND declared "${CMAKE_MATCH_1}")
    if(NOT CMAKE_MATCH_1 IN_LIST exported AND NOT CMAKE_MATCH_1 IN_LIST optional)
      list(APPEND missing "${CMAKE_MATCH_1}")
    endif()
  endif()
endforeach()
foreach(name IN LISTS exported)
  if(NOT name IN_LIST declared)
    list(APPEND bad "${name}")
  endif()
endforeach()
list(LENGTH exported n)
message(STATUS "${LIBRARY}: ${n} symbols exported")
if(bad OR missing)
  message(FATAL_ERROR "export check failed\n  exported, not declared ${MACRO}: ${bad}\n  declared, not exported: ${missing}")
endif()
