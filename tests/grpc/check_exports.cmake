# SPDX-License-Identifier: MIT
# check_exports.cmake — ctest `build_grpc_exports` (cmake -P): the C++
# counterpart of cmake/CtxCheckExports.cmake for libctxvar_grpc.so.
#   - every exported (defined, dynamic) symbol, demangled, belongs to the
#     ctxvar::grpc namespace (functions, or the typeinfo and vtables of its
#     classes): nothing internal (ctxvar::grpc::detail) and nothing else —
#     but for weak instantiations of the standard library's templates
#     (libstdc++ declares namespace std with default visibility, so a
#     std::multimap member the library instantiates is exported weak, as
#     in every C++ shared library);
#   - every function grpc.hpp declares out of line (the list below) is
#     exported.
# Inputs: -DLIBRARY=<libctxvar_grpc.so> -DNM=<nm> -DHEADER=<grpc.hpp> (named
#         in the messages)
cmake_policy(VERSION 3.21)
if(NOT NM)
  set(NM nm)
endif()
execute_process(COMMAND "${NM}" -D -C --defined-only "${LIBRARY}"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${NM} failed on ${LIBRARY}: ${err}")
endif()
string(REPLACE "\n" ";" lines "${out}")
set(bad "")
set(names "")
foreach(line IN LISTS lines)
  if(NOT line MATCHES "^[0-9a-fA-F]+ +([A-Za-z]) +(.*)$")
    continue()
  endif()
  set(kind "${CMAKE_MATCH_1}")
  set(name "${CMAKE_MATCH_2}")
  if(NOT kind MATCHES "^[TDBRVWuiG]$" OR name MATCHES "^(_init|_fini|_edata|_end|__bss_start)$")
    continue()
  endif()
  string(REGEX REPLACE "^(typeinfo name for|typeinfo for|vtable for|VTT for) " "" bare "${name}")
  # (A template function's demangled name starts with its return type, as
  # in "void std::__cxx11::basic_string<...>::_M_construct<...>(...)", which
  # an unoptimised build leaves out of line.)
  if(kind MATCHES "^[WVu]$" AND bare MATCHES "^([a-z_]+ )*std::")
    continue()
  endif()
  if(NOT bare MATCHES "^ctxvar::grpc::" OR bare MATCHES "^ctxvar::grpc::detail::")
    list(APPEND bad "${name}")
  endif()
  list(APPEND names "${bare}")
endforeach()

# The out-of-line functions of grpc.hpp (keep in step with the header).
set(required
  "ClientPropagation::Create" "ClientPropagation::~ClientPropagation"
  "ClientPropagation::NewInterceptorFactory" "ClientPropagation::NewChannel"
  "ClientPropagation::Stats" "ClientPropagation::operator new" "ClientPropagation::operator delete"
  "ApplyDeadline"
  "ServerPropagation::Create" "ServerPropagation::~ServerPropagation"
  "ServerPropagation::NewInterceptorFactory" "ServerPropagation::NewCallContext"
  "ServerPropagation::Stats" "ServerPropagation::HandleSync" "ServerPropagation::HandleCallback"
  "ServerPropagation::operator new" "ServerPropagation::operator delete")
set(missing "")
foreach(fn IN LISTS required)
  set(found FALSE)
  foreach(n IN LISTS names)
    string(FIND "${n}" "ctxvar::grpc::${fn}(" at)
    if(at EQUAL 0)
      set(found TRUE)
      break()
    endif()
  endforeach()
  if(NOT found)
    list(APPEND missing "${fn}")
  endif()
endforeach()

if(bad)
  list(JOIN bad "\n  " bad)
  message(FATAL_ERROR "${LIBRARY} exports what is not the public ctxvar::grpc API:\n  ${bad}")
endif()
if(missing)
  list(REMOVE_DUPLICATES missing)
  list(JOIN missing ", " missing)
  message(FATAL_ERROR "${LIBRARY} does not export what ${HEADER} declares: ${missing}")
endif()
list(LENGTH names n)
message(STATUS "${LIBRARY}: ${n} symbols, all of ctxvar::grpc; the functions of ${HEADER} all there")
