/* ctxvar/version.h — the version of the headers (ctx_version() gives the
 * library's). */
#ifndef CTXVAR_VERSION_H
#define CTXVAR_VERSION_H

#define CTX_VERSION_MAJOR 0
#define CTX_VERSION_MINOR 1
#define CTX_VERSION_PATCH 0
#define CTX_VERSION_HEX                                                      \
    ((CTX_VERSION_MAJOR << 16) | (CTX_VERSION_MINOR << 8) | CTX_VERSION_PATCH)
#define CTX_VERSION_STRING "0.1.0"

#endif /* CTXVAR_VERSION_H */
