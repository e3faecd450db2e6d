/* SPDX-License-Identifier: MIT */
/* ctxvar/version.h — the version of the headers (ctx_version() gives the
 * library's). */
#ifndef CTXVAR_VERSION_H
#define CTXVAR_VERSION_H

/* The headers' version: MAJOR.MINOR.PATCH (a 1.x release never breaks a
 * program built against 1.0). */
#define CTX_VERSION_MAJOR 1
#define CTX_VERSION_MINOR 0
#define CTX_VERSION_PATCH 0
/* 0xMMmmpp: compare with ctx_version(), the library's. */
#define CTX_VERSION_HEX                                                      \
    ((CTX_VERSION_MAJOR << 16) | (CTX_VERSION_MINOR << 8) | CTX_VERSION_PATCH)
/* "MAJOR.MINOR.PATCH": compare with ctx_version_string(). */
#define CTX_VERSION_STRING "1.0.0"

#endif /* CTXVAR_VERSION_H */
