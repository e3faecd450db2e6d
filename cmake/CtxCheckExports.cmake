# CtxCheckExports.cmake — ctest `build_exports` (cmake -P).
#
# Checks the shared library's dynamic symbol table against the public headers:
#   1. every symbol it exports is public API: starts with `ctx_` and is not an
#      internal `ctx__` name (visibility is hidden by default; only CTX_EXPORT
#      declarations should escape);
#   2. every function declared `CTX_EXPORT ... name(` at the start of a line
#      in include/ is exported (declared but never defined is caught here).
#
# Inputs: -DLIBRARY=<path to libctxvar.so> -DHEADERS_DIR=<include/> -DNM=<nm>
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
  # "<address> <type> <name>[@version]"
  if(line MATCHES "^[0-9a-fA-F]+ +([A-Za-z]) +([^ @]+)")
    set(type "${CMAKE_MATCH_1}")
    set(name "${CMAKE_MATCH_2}")
    if(type MATCHES "^[TDBRVWGSi]$" AND NOT name MATCHES "^(_init|_fini|_edata|_end|__bss_start)$")
      list(APPEND exported "${name}")
      if(NOT name MATCHES "^ctx_" OR name MATCHES "^ctx__")
        list(APPEND bad "${name}")
      endif()
    endif()
  endif()
endforeach()

file(GLOB_RECURSE headers "${HEADERS_DIR}/*.h")
set(missing "")
set(declared 0)
foreach(header IN LISTS headers)
  file(STRINGS "${header}" decls REGEX "^CTX_EXPORT ")
  foreach(decl IN LISTS decls)
    if(decl MATCHES "([A-Za-z_][A-Za-z0-9_]*) *\\(")
      math(EXPR declared "${declared} + 1")
      if(NOT CMAKE_MATCH_1 IN_LIST exported)
        file(RELATIVE_PATH rel "${HEADERS_DIR}" "${header}")
        list(APPEND missing "${CMAKE_MATCH_1} (${rel})")
      endif()
    endif()
  endforeach()
endforeach()

list(LENGTH exported n_exported)
message(STATUS "${LIBRARY}: ${n_exported} symbols exported, ${declared} CTX_EXPORT functions declared")
set(failed FALSE)
if(bad)
  list(JOIN bad "\n  " bad_text)
  message(SEND_ERROR "exported but not public API (mark it static, or use the ctx_ prefix and CTX_EXPORT):\n  ${bad_text}")
  set(failed TRUE)
endif()
if(missing)
  list(JOIN missing "\n  " missing_text)
  message(SEND_ERROR "declared CTX_EXPORT in a public header but not exported by the library:\n  ${missing_text}")
  set(failed TRUE)
endif()
if(failed)
  message(FATAL_ERROR "export check failed")
endif()
