/* SPDX-License-Identifier: MIT */
/*
 * ctxvar/wire.h — context across processes (the wire module).
 *
 * When work crosses a process boundary its context must cross too, in the
 * formats the rest of the world already speaks.  This module has four parts:
 *
 *   codecs     W3C Trace Context (`traceparent`, `tracestate`), W3C Baggage
 *              (`baggage`) and gRPC's relative timeout (`grpc-timeout`):
 *              parse, validate, generate.  Strict to the specifications,
 *              allocation-free, usable without any context at all.
 *   carriers   a three-call interface over "a bag of header pairs" (get, set,
 *              iterate; names compared case-insensitively), so any transport
 *              (HTTP, NATS, a file, a test) can use the codecs.
 *   registry   ctx_wire_t: which variables cross.  Only variables registered
 *              here, each with the `encode` / `decode` value operations of
 *              the core (ctxvar.h) and a baggage key, cross the wire;
 *              everything else stays in the process.  The registry also owns
 *              a built-in variable, the trace (traceparent + tracestate).
 *   deadline   the deadline of the context's cancellation scope
 *              (ctxvar/cancel.h): sent as a relative `grpc-timeout` with
 *              the time left at each hop, and received as a scope whose
 *              deadline stops the work done for the caller (one deadline,
 *              not two: see "Deadlines" below).
 *   inject /   ctx_wire_inject writes a context into a carrier;
 *   extract    ctx_wire_extract builds a new (not entered) context from a
 *              carrier, in O(number of entries), never trusting its input.
 *
 * Untrusted input
 * ---------------
 * Every decoder reads at most a fixed number of bytes (the limits below),
 * allocates nothing of a size chosen by the input, and turns malformed,
 * oversize or hostile input into an error code or into a documented drop.
 * What is dropped, header by header, when ctx_wire_extract meets bad input:
 *
 *   traceparent   malformed, all-zero ids, version ff, uppercase hex, more
 *                 than one header: the traceparent is dropped, and with it
 *                 the tracestate (W3C Trace Context §3.3: "if the vendor
 *                 failed to parse traceparent, it MUST NOT attempt to parse
 *                 tracestate").
 *   tracestate    a malformed list-member, more than 32 list-members, or
 *                 more than CTX_WIRE_TRACESTATE_MAX_INPUT bytes in the
 *                 combined header: the whole tracestate is dropped (the
 *                 traceparent is kept), as the W3C test suite expects.  A
 *                 key that appears again is dropped alone: the first
 *                 (leftmost, most recent) member of each key is kept.
 *   baggage       a malformed list-member (bad key, bad value octet, bad
 *                 percent-escape, bad property, empty member) is dropped
 *                 alone; the others are kept.  The limits (64 members,
 *                 8192 bytes) apply to the header as it would be sent on
 *                 (each member re-encoded, joined by ',', no whitespace):
 *                 whitespace and malformed members in the input cost
 *                 nothing, and a member that would take the re-sent
 *                 list past a limit is dropped while later ones that
 *                 still fit are kept.  Bytes past
 *                 CTX_WIRE_BAGGAGE_MAX_INPUT of the combined input are
 *                 never looked at.  Members whose key is not registered
 *                 are dropped; a repeated key keeps its first member.
 *   grpc-timeout  malformed or repeated: dropped (the context has no
 *                 scope and no deadline).
 *
 * With CTX_WIRE_STRICT, ctx_wire_extract fails instead of dropping (unknown
 * baggage keys are still just ignored).
 *
 * Deadlines
 * ---------
 * A context's deadline is its cancellation scope's (ctxvar/cancel.h); the
 * wire adds no second one.
 *   extract  a valid grpc-timeout of t gives the new context a scope of
 *            its own: a root (the remote caller's time, which nothing in
 *            this process can extend or cancel) whose deadline is now + t
 *            (t = 0, sent for an expired deadline, makes a scope born
 *            cancelled with CTX_EDEADLINE; a t so large that now + t
 *            overflows, past 292 years of nanoseconds, a scope without a
 *            deadline, as gRPC reads it: no time limit).  Code that runs in the context
 *            (ctx_context_run, a NATS handler), and every copy of it (pool
 *            tasks, loop tasks, ...), sees ctx_cancel_check() turn
 *            CTX_EDEADLINE when the caller's time is up.
 *   inject   sends the time left until the deadline of the context's
 *            scope (rounded down; "0n" once it has passed).  A scope
 *            without a deadline, or no scope, sends no grpc-timeout.
 *   ctx_wire_deadline_set / _get / _remaining  are views of that scope.
 * Deadlines only shrink: a child scope never outlives its parent's
 * deadline, and each hop sends what is left when it sends.
 *
 * Threads
 * -------
 * The codecs are pure functions: any thread, no shared state (id generation
 * uses a per-thread generator).  A registry is configured (ctx_wire_register)
 * by one thread before its first use; from its first inject, extract or
 * trace/deadline call on, registration is closed and every other call may
 * run concurrently from any thread.
 *
 * Every function below says which threads may call it ("Any thread.", or
 * "Thread: ..." when there is a restriction).
 *
 * Callbacks
 * ---------
 * Every callback this module calls (ctx_wire_tracestate_fn, ctx_wire_baggage_fn,
 * ctx_wire_header_fn, and a carrier's iterate / get / set) returns 0 to go
 * on (get: 0 = found) and a negative code to stop or fail; the function
 * that called it returns that code as is.  A positive return is not a
 * count and never passes for success: it stops the walk too and the caller
 * returns CTX_ECALLBACK instead.
 *
 * Errors are the negative CTX_E* codes of ctxvar.h; each function lists its.
 */
#ifndef CTXVAR_WIRE_H
#define CTXVAR_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "../ctxvar.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Header names, lowercase (field names are case-insensitive: RFC 9110 §5.1). */
#define CTX_WIRE_TRACEPARENT "traceparent"
#define CTX_WIRE_TRACESTATE "tracestate"
#define CTX_WIRE_BAGGAGE "baggage"
#define CTX_WIRE_GRPC_TIMEOUT "grpc-timeout"

/* ====================================================================== */
/* W3C Trace Context: traceparent                                         */
/* ====================================================================== */

/* Length of a version-00 traceparent: "00-" 32 hex "-" 16 hex "-" 2 hex. */
#define CTX_WIRE_TRACEPARENT_LEN 55
/* The trace-flags this library knows (W3C Trace Context Level 2, §3.2.2.5):
 * sampled, and random (at least the right-most 7 bytes of the trace-id are
 * random).  Every other bit is reserved: it is kept as received in
 * ctx_wire_traceparent_t.flags, and written as zero (§3.2.2.5.3: "Vendors
 * MUST set those to zero"). */
#define CTX_WIRE_TRACE_FLAG_SAMPLED 0x01u
#define CTX_WIRE_TRACE_FLAG_RANDOM 0x02u
#define CTX_WIRE_TRACE_FLAGS_KNOWN 0x03u

/* A traceparent, parsed: the fields of W3C Trace Context §3.2.  A plain
 * value (copy it freely); its layout is the header's and is fixed: it is
 * not an options struct and has no size. */
typedef struct ctx_wire_traceparent {
    uint8_t version;      /* as received (0 for ids made here) */
    uint8_t trace_id[16]; /* never all zero in a valid traceparent */
    uint8_t parent_id[8]; /* never all zero in a valid traceparent */
    uint8_t flags;        /* trace-flags; bit 0 = sampled */
} ctx_wire_traceparent_t;

/* Parses a traceparent header value (`len` bytes, no NUL needed; optional
 * whitespace around the value — SP/HTAB, HTTP's OWS — is ignored).
 *   version 00: exactly "00-<32 hex>-<16 hex>-<2 hex>", lowercase hex only.
 *   a higher version (01..fe): at least 55 bytes; the first four fields are
 *     parsed as for 00, and byte 55, if present, must be '-' (§3.2.4: later
 *     versions may append fields after a dash).
 *   invalid: version ff, non-hex or uppercase hex, an all-zero trace-id or
 *     parent-id, any other length or separator.
 * Returns 0 and fills *out, or CTX_EPARSE (out untouched), CTX_EINVAL
 * (NULL argument).  Looks at the surrounding whitespace and at most 56
 * other bytes, whatever `len` is; never allocates.  Any thread. */
CTX_EXPORT int ctx_wire_traceparent_parse(const char *text, size_t len,
                                           ctx_wire_traceparent_t *out);

/* Writes `tp` as a version-00 traceparent (whatever tp->version says: a
 * vendor sends the version it knows, §3.2.4) plus a NUL: needs cap >= 56.
 * Flags outside CTX_WIRE_TRACE_FLAGS_KNOWN are written as zero.
 * Returns CTX_WIRE_TRACEPARENT_LEN, or CTX_ETRUNCATED (cap too small; buf
 * untouched), CTX_EINVAL (NULL, or an all-zero id).  Any thread. */
CTX_EXPORT int ctx_wire_traceparent_format(const ctx_wire_traceparent_t *tp,
                                            char *buf, size_t cap);

/* Starts a trace: random trace-id and parent-id (never all zero), version
 * 00, the given flags plus CTX_WIRE_TRACE_FLAG_RANDOM (the whole trace-id
 * is random: Level 2 §3.2.2.5.2 says the flag SHOULD then be set).  Ids
 * come from a per-thread generator seeded from the operating system
 * (getrandom / /dev/urandom), and seeded again in the child of a fork
 * (fork(), _Fork() or a raw clone: a page the kernel wipes in the child
 * tells, so a child never repeats its parent's ids).  Returns 0 or
 * CTX_EINVAL.  Any thread. */
CTX_EXPORT int ctx_wire_traceparent_new(uint8_t flags, ctx_wire_traceparent_t *out);

/* The traceparent for an outgoing call made on behalf of `parent`: same
 * trace-id, the known flags of `parent` (reserved bits cleared), a new
 * random parent-id, version 00 (§3.2.2.3 / §4: a participant that calls
 * another service sends its own span id as parent-id).  `out` may equal
 * `parent`.  Returns 0 or CTX_EINVAL.  Any thread. */
CTX_EXPORT int ctx_wire_traceparent_child(const ctx_wire_traceparent_t *parent,
                                           ctx_wire_traceparent_t *out);

/* Writes the 32-hex-digit trace-id and a NUL (cap >= 33).  Returns 32, or
 * CTX_ETRUNCATED (buf untouched), CTX_EINVAL.  For log lines.  Any thread. */
CTX_EXPORT int ctx_wire_traceparent_trace_id(const ctx_wire_traceparent_t *tp,
                                              char *buf, size_t cap);

/* Writes the 16-hex-digit parent-id — the span id of the sender, i.e. of
 * the call that carried this traceparent — and a NUL (cap >= 17).  For the
 * span id this process sent, see ctx_wire_inject_report_t.  Returns 16, or
 * CTX_ETRUNCATED (buf untouched), CTX_EINVAL.  For log lines.  Any thread. */
CTX_EXPORT int ctx_wire_traceparent_span_id(const ctx_wire_traceparent_t *tp,
                                             char *buf, size_t cap);

/* ====================================================================== */
/* W3C Trace Context: tracestate                                          */
/* ====================================================================== */

/* The limits of W3C Trace Context §3.3.1: list-members, key and value
 * bytes. */
#define CTX_WIRE_TRACESTATE_MAX_MEMBERS 32
#define CTX_WIRE_TRACESTATE_MAX_KEY 256
#define CTX_WIRE_TRACESTATE_MAX_VALUE 256
/* The longest normalised list: 32 × (256 + "=" + 256) + 31 commas. */
#define CTX_WIRE_TRACESTATE_MAX_LEN (32 * (256 + 1 + 256) + 31)
/* The longest combined header value accepted (whitespace and empty members
 * included); longer input is refused with CTX_ELIMIT. */
#define CTX_WIRE_TRACESTATE_MAX_INPUT 32768

/* Called once per list-member, in order.  Key and value point into the
 * parsed text (not NUL terminated).  Return 0 to go on, or a negative code
 * to stop the walk: ctx_wire_tracestate_parse returns that code as is.  A
 * positive return also stops it, and is returned as CTX_ECALLBACK. */
typedef int (*ctx_wire_tracestate_fn)(const char *key, size_t key_len,
                                  const char *value, size_t value_len, void *user);

/* Validates a tracestate value.  Several tracestate headers are one list:
 * join them with ',' first (RFC 9110 §5.3; ctx_wire_extract does).
 * The grammar (W3C Trace Context Level 2, §3.3.1):
 *   list        = list-member 0*31( OWS "," OWS list-member )
 *   list-member = key "=" value / OWS          ; empty members are allowed
 *   key         = ( lcalpha / DIGIT ) 0*255( keychar )   ; 1..256 bytes
 *   keychar     = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"
 *   value       = 0*255(chr) nblk-chr          ; 1..256 bytes
 *   nblk-chr    = %x21-2B / %x2D-3C / %x3E-7E  ; printable, not ',' or '='
 *   chr         = %x20 / nblk-chr              ; so no trailing space
 * (Level 1's simple and multi-tenant keys are all Level 2 keys.)
 * Empty (whitespace-only) members are skipped and not counted; more than 32
 * non-empty members is CTX_ELIMIT; a malformed member is CTX_EPARSE for
 * the whole list.  A key that appears again is skipped: only the first
 * (leftmost) member of each key is delivered (Level 2 lets a vendor drop
 * or keep duplicates; the W3C suite expects the list kept).
 * If the whole list is valid and `fn` is not NULL, calls fn for each member
 * delivered.  Returns the number of members delivered (>= 0), or
 * CTX_EPARSE, CTX_ELIMIT (also for len > CTX_WIRE_TRACESTATE_MAX_INPUT),
 * CTX_EINVAL, or fn's negative code (CTX_ECALLBACK if fn returned a
 * positive value).  Never allocates.  Any thread (fn runs on the calling
 * thread). */
CTX_EXPORT int ctx_wire_tracestate_parse(const char *text, size_t len,
                                          ctx_wire_tracestate_fn fn, void *user);

/* Validates like ctx_wire_tracestate_parse and writes the list in normal form:
 * members joined by ',' with no whitespace, no empty members and no
 * repeated key (the first member of each key is kept), plus a NUL
 * (the form ctx_wire_tracestate_get/put expect and ctx_wire_inject sends).  At
 * most CTX_WIRE_TRACESTATE_MAX_LEN + 1 bytes are needed.  *out_len (if not NULL)
 * receives the length.  Returns 0, or CTX_ETRUNCATED (cap too small; buf
 * holds a NUL), or the codes of ctx_wire_tracestate_parse.  Any thread. */
CTX_EXPORT int ctx_wire_tracestate_normalize(const char *text, size_t len, char *buf,
                                              size_t cap, size_t *out_len);

/* Looks `key` (NUL terminated) up in a tracestate list (any valid form):
 * 0 and the value of its first member (pointing into `state`, not NUL
 * terminated), or
 * CTX_ENOTFOUND, CTX_EPARSE (state invalid), CTX_EINVAL.  Any thread. */
CTX_EXPORT int ctx_wire_tracestate_get(const char *state, size_t len, const char *key,
                                        const char **value, size_t *value_len);

/* The update rule of §3.5: writes to `buf` (normal form, NUL terminated) the
 * list `state` with key=value as its first (leftmost) member and every older
 * member of `key` removed; if that makes 33 members, the rightmost is
 * dropped.  `value` NULL deletes `key` instead.  `state` may be empty.
 * Returns 0 (*out_len = length if out_len not NULL), or CTX_EINVAL (a key or
 * value outside the grammar, NULL), CTX_EPARSE (state invalid),
 * CTX_ETRUNCATED (buf too small: CTX_WIRE_TRACESTATE_MAX_LEN + 1 always fits).
 * `buf` must not overlap `state`.  Any thread. */
CTX_EXPORT int ctx_wire_tracestate_put(const char *state, size_t len, const char *key,
                                        const char *value, char *buf, size_t cap,
                                        size_t *out_len);

/* 1 if `key` (`len` bytes) is a valid tracestate key, else 0.  Any thread. */
CTX_EXPORT int ctx_wire_tracestate_key_valid(const char *key, size_t len);
/* 1 if `value` (`len` bytes) is a valid tracestate value, else 0.  Any
 * thread. */
CTX_EXPORT int ctx_wire_tracestate_value_valid(const char *value, size_t len);

/* ====================================================================== */
/* W3C Baggage                                                            */
/* ====================================================================== */

/* The limits of W3C Baggage §3.3.3 ("Limits"): a platform must propagate
 * at least 64 list-members and 8192 bytes, and may drop members beyond. */
#define CTX_WIRE_BAGGAGE_MAX_MEMBERS 64
#define CTX_WIRE_BAGGAGE_MAX_BYTES 8192
/* The most input bytes (several headers joined by ',') a parse examines:
 * whitespace and malformed members may make the input longer than what it
 * carries, so the input bound is larger than the 8192 bytes kept.  Bytes
 * past it are not looked at (stats.truncated). */
#define CTX_WIRE_BAGGAGE_MAX_INPUT 65536

/* One list-member, as ctx_wire_baggage_parse delivers it.  Pointers are borrowed
 * for the duration of the callback; only the value is NUL terminated. */
typedef struct ctx_wire_baggage_member {
    const char *key;        /* a token (RFC 9110 §5.6.2), as sent */
    size_t key_len;         /* its length in bytes */
    const char *value;      /* percent-decoded bytes (UTF-8, see below),
                               followed by a NUL (value[value_len] == 0;
                               "%00" can put a NUL inside too) */
    size_t value_len;       /* its length in bytes */
    const char *properties; /* the validated text after the first ';'
                               (raw, not decoded), or NULL */
    size_t properties_len;  /* their length in bytes */
} ctx_wire_baggage_member_t;

/* Return 0 to go on, or a negative code to stop the walk: ctx_wire_baggage_parse
 * returns that code as is.  A positive return also stops it, and is
 * returned as CTX_ECALLBACK. */
typedef int (*ctx_wire_baggage_fn)(const ctx_wire_baggage_member_t *member, void *user);

/* What ctx_wire_baggage_parse kept and dropped (an output struct: set
 * `size`, e.g. with CTX_STRUCT_INIT; the library writes no more than that). */
typedef struct ctx_wire_baggage_stats {
    size_t size; /* sizeof the struct as the caller knows it (CTX_STRUCT_INIT) */
    size_t members;    /* delivered to fn */
    size_t malformed;  /* dropped: outside the grammar (empty ones included) */
    size_t over_limit; /* dropped: re-encoded, it would take the list past
                          64 members or 8192 bytes */
    int truncated;     /* 1 if bytes beyond CTX_WIRE_BAGGAGE_MAX_INPUT were
                          not examined */
} ctx_wire_baggage_stats_t;

/* Parses a baggage header value (several headers: join them with ',').
 * The grammar (W3C Baggage §3.3):
 *   baggage-string = list-member *( OWS "," OWS list-member )
 *   list-member    = key OWS "=" OWS value *( OWS ";" OWS property )
 *   property       = key OWS "=" OWS value / key OWS
 *   key            = token                      ; RFC 9110 tchar+
 *   value          = *baggage-octet
 *   baggage-octet  = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
 * Values are percent-decoded (§3.3.1.3): "%" must start a two-hex-digit
 * escape (a lone '%' makes the member malformed); decoded byte sequences
 * that are not valid UTF-8 are replaced with U+FFFD, as the specification
 * requires.  Property values are validated but not decoded.
 * Limits: a member is kept if, re-encoded as ctx_wire_baggage_append would
 * write it (key=value[;properties], the value percent-encoded again), it
 * still fits in a list of the members kept before it within 64 members and
 * 8192 bytes; otherwise it is dropped and the scan goes on.  Drops are
 * documented at the top of this header; `stats` (if not NULL: an output
 * struct whose size is set) counts them.  Calls fn (if not NULL) for each
 * member kept.  Returns the number of members kept (>= 0), CTX_EINVAL
 * (also stats->size smaller than a size_t), or fn's negative code
 * (CTX_ECALLBACK if fn returned a positive value).  Never allocates; uses
 * CTX_WIRE_BAGGAGE_MAX_BYTES of stack for decoded values.  Any thread (fn
 * runs on the calling thread). */
CTX_EXPORT int ctx_wire_baggage_parse(const char *text, size_t len, ctx_wire_baggage_fn fn,
                                      void *user, ctx_wire_baggage_stats_t *stats);

/* Builds a baggage header value into caller storage, member by member.
 * Caller-owned storage (docs/api-rules.md): fields are private, `reserved`
 * is room for later versions; initialise with ctx_wire_baggage_writer_init,
 * never copy a writer by value.  `len` and `members` may be read. */
typedef struct ctx_wire_baggage_writer {
    char *buf;         /* private: the caller's buffer */
    size_t cap;        /* private: its size */
    size_t len;        /* bytes written, NUL excluded (may be read) */
    size_t members;    /* members written (may be read) */
    void *reserved[4]; /* private: room for later versions */
} ctx_wire_baggage_writer_t;

/* Starts an empty list in `buf` (buf[0] = NUL when cap > 0).  Any thread;
 * a writer is used by one thread at a time. */
CTX_EXPORT void ctx_wire_baggage_writer_init(ctx_wire_baggage_writer_t *w, char *buf, size_t cap);

/* Appends key=value[;properties].  The value (any bytes) is percent-encoded:
 * every byte outside baggage-octet, and '%', becomes %XX (uppercase hex).
 * `properties` (may be NULL) must itself match
 * `property *( OWS ";" OWS property )` and is copied as is.
 * Returns 0 (the text stays NUL terminated), or:
 *   CTX_EINVAL      NULL, key not a token, properties outside the grammar;
 *   CTX_ELIMIT      the list would exceed 64 members or 8192 bytes;
 *   CTX_ETRUNCATED  the buffer is too small.
 * On error nothing is appended.  Thread: one at a time per writer. */
CTX_EXPORT int ctx_wire_baggage_append(ctx_wire_baggage_writer_t *w, const char *key,
                                       size_t key_len, const char *value, size_t value_len,
                                       const char *properties, size_t properties_len);

/* Percent-encodes `len` bytes as ctx_wire_baggage_append does, plus a NUL.
 * Returns 0 and *out_len, or CTX_ETRUNCATED (buf holds nothing useful),
 * CTX_EINVAL.  Any thread. */
CTX_EXPORT int ctx_wire_baggage_percent_encode(const char *in, size_t len, char *buf,
                                               size_t cap, size_t *out_len);

/* Decodes a baggage value as ctx_wire_baggage_parse does (escapes, U+FFFD for
 * invalid UTF-8), plus a NUL.  The output is never longer than the input.
 * Returns 0 and *out_len, or CTX_EPARSE (an octet outside baggage-octet, a
 * bad escape), CTX_ETRUNCATED, CTX_EINVAL.  Any thread. */
CTX_EXPORT int ctx_wire_baggage_percent_decode(const char *in, size_t len, char *buf,
                                               size_t cap, size_t *out_len);

/* 1 if `key` (`len` bytes) is a valid baggage key (a non-empty token).  Any
 * thread. */
CTX_EXPORT int ctx_wire_baggage_key_valid(const char *key, size_t len);

/* ====================================================================== */
/* Deadlines: grpc-timeout                                                */
/* ====================================================================== */

/* Longest grpc-timeout text: 8 digits and a unit. */
#define CTX_WIRE_TIMEOUT_MAX_LEN 9

/* Parses gRPC's relative timeout (PROTOCOL-HTTP2.md):
 *   Timeout      = TimeoutValue TimeoutUnit
 *   TimeoutValue = 1*8DIGIT
 *   TimeoutUnit  = "H" / "M" / "S" / "m" / "u" / "n"
 *                  (hour, minute, second, milli-, micro-, nanosecond)
 * The value is "a positive integer"; this library also accepts 0, which
 * grpc-go itself sends for an expired deadline.  No whitespace inside (OWS
 * around the value is ignored).  The result saturates at INT64_MAX (8
 * digits of hours exceed an int64 of nanoseconds).
 * Returns 0 and *timeout_ns, or CTX_EPARSE, CTX_EINVAL.  Any thread. */
CTX_EXPORT int ctx_wire_timeout_parse(const char *text, size_t len,
                                           int64_t *timeout_ns);

/* Writes `timeout_ns` in the finest unit whose value fits in 8 digits,
 * rounded *down* (so a deadline never grows across a hop; grpc-go rounds
 * up), plus a NUL (cap >= 10 always fits).  timeout_ns <= 0 writes "0n".
 * Returns the length, or CTX_ETRUNCATED, CTX_EINVAL.  Any thread. */
CTX_EXPORT int ctx_wire_timeout_format(int64_t timeout_ns, char *buf, size_t cap);

/* The clock deadlines are measured on: CLOCK_MONOTONIC, in nanoseconds.
 * Any thread. */
CTX_EXPORT int64_t ctx_wire_now_ns(void);

/* ====================================================================== */
/* Carriers                                                               */
/* ====================================================================== */

/* Receives one header pair; pointers are borrowed for the call, not NUL
 * terminated.  Return 0 to go on, or a negative code to stop (the carrier's
 * iterate passes it back, and so do ctx_wire_extract and
 * ctx_wire_carrier_get).  Callbacks of this library never return a
 * positive value; the library treats one that comes back from iterate as
 * CTX_ECALLBACK. */
typedef int (*ctx_wire_header_fn)(const char *name, size_t name_len, const char *value,
                                  size_t value_len, void *user);

/* A transport's headers, seen through three calls.  `self` is passed back.
 * A carrier is used by one thread at a time (ctx_wire_inject/extract call
 * it only from the calling thread).  Names are compared case-insensitively
 * (ASCII), as HTTP and NATS users expect.  An input struct that can grow:
 * set `size` (CTX_STRUCT_INIT(ctx_wire_carrier_t), or .size = sizeof);
 * a size smaller than this layout, or a larger struct whose unknown tail
 * is not zero, is CTX_EINVAL for every call that takes a carrier. */
typedef struct ctx_wire_carrier {
    size_t size; /* sizeof the struct as the caller knows it (CTX_STRUCT_INIT) */
    /* Calls fn for every header pair, in order, repeated names included;
     * stops at and returns fn's first non-zero result, else 0 (or its own
     * negative code).  A positive result reaches the library's callers as
     * CTX_ECALLBACK.  Needed by ctx_wire_extract. */
    int (*iterate)(void *self, ctx_wire_header_fn fn, void *user);
    /* The first value of header `name` (NUL terminated, lowercase): 0 and
     * *value / *value_len (borrowed until the carrier changes), or
     * CTX_ENOTFOUND, or another negative code (returned as is; a positive
     * result becomes CTX_ECALLBACK).  Optional: NULL means "search with
     * iterate". */
    int (*get)(void *self, const char *name, const char **value, size_t *value_len);
    /* Sets header `name` (lowercase) to `value` (`value_len` bytes, printable
     * ASCII), replacing every value it had under any spelling of the name.
     * Returns 0 or a negative code (a positive result becomes
     * CTX_ECALLBACK).  Needed by ctx_wire_inject. */
    int (*set)(void *self, const char *name, const char *value, size_t value_len);
    void *self; /* passed to the three calls */
} ctx_wire_carrier_t;

/* 1 if the two names are equal ignoring ASCII case, else 0.  Any thread. */
CTX_EXPORT int ctx_wire_name_equal(const char *a, size_t a_len, const char *b,
                                        size_t b_len);

/* The first value of `name` through the carrier's get (or iterate).
 * Returns 0, CTX_ENOTFOUND, CTX_EINVAL, or the carrier's negative code
 * (CTX_ECALLBACK for a positive one).  Thread: any, one at a time per
 * carrier. */
CTX_EXPORT int ctx_wire_carrier_get(const ctx_wire_carrier_t *carrier, const char *name,
                                         const char **value, size_t *value_len);

/* ---- a ready-made carrier: an ordered list of header pairs ---- */

/* At most this many pairs and bytes (names + values) in one list. */
#define CTX_WIRE_HEADERS_MAX_PAIRS 256
#define CTX_WIRE_HEADERS_MAX_BYTES 65536

/* A list of header pairs (opaque). */
typedef struct ctx_wire_headers ctx_wire_headers_t;

/* A new empty list; the caller owns it (ctx_wire_headers_release).
 * Errors: CTX_EINVAL, CTX_ENOMEM.  Any thread.  A list is not locked: the
 * calls below on one list must not run concurrently (concurrent reads —
 * get, count, at — are fine while nothing changes it). */
CTX_EXPORT int ctx_wire_headers_new(ctx_wire_headers_t **out);
/* Frees the list and every string in it (NULL ignored).  Thread: no other
 * call on the list may be running. */
CTX_EXPORT void ctx_wire_headers_release(ctx_wire_headers_t *h);
/* Appends a pair (both copied): `name` and `value` are NUL-terminated.
 * The name must be a token, the value must not contain CR or LF.  Errors:
 * CTX_EINVAL, CTX_ELIMIT (the list limits), CTX_ENOMEM; on error the list
 * is unchanged.  Thread: one at a time per list. */
CTX_EXPORT int ctx_wire_headers_add(ctx_wire_headers_t *h, const char *name,
                                    const char *value);
/* ctx_wire_headers_add with explicit lengths (no NUL needed; the value must
 * not contain CR, LF or NUL). */
CTX_EXPORT int ctx_wire_headers_add_n(ctx_wire_headers_t *h, const char *name,
                                      size_t name_len, const char *value,
                                      size_t value_len);
/* Removes every pair named `name` (any case), then appends name=value
 * (NUL-terminated).  Errors as ctx_wire_headers_add; on error the list is
 * unchanged.  Thread: one at a time per list. */
CTX_EXPORT int ctx_wire_headers_set(ctx_wire_headers_t *h, const char *name,
                                    const char *value);
/* ctx_wire_headers_set with explicit lengths. */
CTX_EXPORT int ctx_wire_headers_set_n(ctx_wire_headers_t *h, const char *name,
                                      size_t name_len, const char *value,
                                      size_t value_len);
/* The first value of `name` (any case): 0 and the value (NUL terminated,
 * borrowed until the list changes), or CTX_ENOTFOUND, CTX_EINVAL.  Thread:
 * not while the list changes. */
CTX_EXPORT int ctx_wire_headers_get(const ctx_wire_headers_t *h, const char *name,
                                         const char **value, size_t *value_len);
/* Number of pairs (0 for NULL).  Thread: not while the list changes. */
CTX_EXPORT size_t ctx_wire_headers_count(const ctx_wire_headers_t *h);
/* Pair number `i` (borrowed, NUL terminated): 0, or CTX_ENOTFOUND.
 * Thread: not while the list changes. */
CTX_EXPORT int ctx_wire_headers_at(const ctx_wire_headers_t *h, size_t i,
                                        const char **name, const char **value);
/* Removes every pair.  Thread: one at a time per list. */
CTX_EXPORT void ctx_wire_headers_clear(ctx_wire_headers_t *h);
/* A carrier over the list (valid while the list lives; used as the list
 * is: one thread at a time).  Any thread. */
CTX_EXPORT ctx_wire_carrier_t ctx_wire_headers_carrier(ctx_wire_headers_t *h);

/* ====================================================================== */
/* The registry: which variables cross                                    */
/* ====================================================================== */

/* A registry (opaque, reference counted). */
typedef struct ctx_wire ctx_wire_t;

/* At most this many registered variables (the baggage member limit). */
#define CTX_WIRE_MAX_VARS 64

/* A new registry with the built-in variable (the trace, see
 * ctx_wire_trace_var) and no registered variable; the caller owns one
 * reference.  Any thread.  Errors: CTX_EINVAL, CTX_ENOMEM. */
CTX_EXPORT int ctx_wire_new(ctx_wire_t **out);
/* One more reference; returns `w`.  Any thread. */
CTX_EXPORT ctx_wire_t *ctx_wire_retain(ctx_wire_t *w);
/* Drops a reference (NULL ignored); the last one releases the registered
 * variables and the built-in one.  Any thread. */
CTX_EXPORT void ctx_wire_release(ctx_wire_t *w);

/* Lets `var` cross the wire as baggage member `baggage_key` (NUL
 * terminated, copied).  The variable must have both `encode` and `decode`
 * value operations; `encode` writes the text sent (any bytes: it is
 * percent-encoded), `decode` receives the decoded bytes and makes a new
 * value share (CTX_EPARSE to refuse: the member is dropped).  The registry
 * retains `var`.  Call before the registry is first used, from one thread.
 * Errors (checked in this order; on error nothing changed):
 *   CTX_EINVAL   NULL argument, or the variable lacks encode or decode;
 *   CTX_EPARSE   the key is not a baggage key (a token of 1..256 bytes);
 *   CTX_ESEALED  the registry has been used (any inject, extract or
 *                trace/deadline call): registration is closed;
 *   CTX_EEXIST   the key, or the variable, is registered already;
 *   CTX_ELIMIT   CTX_WIRE_MAX_VARS variables are registered already;
 *   CTX_ENOMEM.
 * Thread: one thread, before any other thread uses the registry. */
CTX_EXPORT int ctx_wire_register(ctx_wire_t *w, ctx_var_t *var, const char *baggage_key);

/* The built-in trace variable (borrowed: valid for the life of the
 * process).  There is one for the process, whatever the registry: a trace
 * is the request's, so one extracted through a registry is read, and
 * injected, through any other (a gRPC server's registry and a NATS
 * bridge's, say).  It is made by the first ctx_wire_new and never released
 * (a CTX_VAR_STATIC variable: setting a trace costs no reference to it).
 * Its values are private: use the calls below.  It formats for logs
 * ("00-…-01;tracestate"), so ctx_context_format shows it.  Any thread.
 * (There is no deadline variable any more — ctx_wire_deadline_var is gone:
 * the deadline is the cancellation scope's, which ctx_context_format shows
 * as "ctxvar.cancel=active, 12.500ms left".) */
CTX_EXPORT ctx_var_t *ctx_wire_trace_var(ctx_wire_t *w);

/* Every call below takes the context it acts on: `ctx` NULL means the
 * calling thread's current context; any other context is read as it is
 * (it may be entered anywhere) and, for the setters, changed in place with
 * ctx_context_set — so it must not be entered anywhere (CTX_EENTERED):
 * that is how a context made by ctx_wire_extract is read or completed
 * without entering it. */

/* The trace of `ctx`: 0 and *parent (if not NULL) and the normalised
 * tracestate (if state is not NULL: borrowed, NUL terminated, valid while
 * the context holds this value), or CTX_ENOTFOUND, CTX_EINVAL.  Any
 * thread. */
CTX_EXPORT int ctx_wire_trace_get(ctx_wire_t *w, ctx_context_t *ctx,
                                  ctx_wire_traceparent_t *parent, const char **state,
                                  size_t *state_len);

/* Sets the trace of `ctx` (like ctx_var_set / ctx_context_set): `parent`
 * (must be valid) and a tracestate (`state` NULL or empty: none), which is
 * validated and normalised.  Errors: CTX_EINVAL (NULL, invalid parent),
 * CTX_EPARSE / CTX_ELIMIT (state), CTX_EENTERED (ctx not NULL and
 * entered), CTX_ENOMEM.  Any thread. */
CTX_EXPORT int ctx_wire_trace_set(ctx_wire_t *w, ctx_context_t *ctx,
                                  const ctx_wire_traceparent_t *parent, const char *state,
                                  size_t state_len);

/* Starts a new trace in `ctx` (ctx_wire_traceparent_new, no tracestate)
 * and copies it to *out if `out` is not NULL.  Errors: CTX_EINVAL,
 * CTX_EENTERED, CTX_ENOMEM.  Any thread. */
CTX_EXPORT int ctx_wire_trace_start(ctx_wire_t *w, ctx_context_t *ctx, uint8_t flags,
                                    ctx_wire_traceparent_t *out);

/* Gives `ctx` a deadline `timeout_ns` from now: its scope becomes a new
 * child of the scope it had (a root if none) with that timeout
 * (ctx_cancel_enter_child for the current context, kept like a
 * ctx_var_set without a token; ctx_cancel_context_set for another one).
 * Deadlines only shrink: the context's deadline becomes the earlier of the
 * one it had and now + timeout_ns, and cancelling the scope it had still
 * cancels it.  timeout_ns <= 0: the deadline has passed (the scope is born
 * cancelled with CTX_EDEADLINE); one so large that now + timeout_ns
 * overflows: no deadline of its own.  To cancel the scope or take it
 * back, use ctxvar/cancel.h directly (ctx_cancel_enter_child and
 * ctx_cancel_exit).  Errors: CTX_EINVAL, CTX_EENTERED (ctx not NULL and
 * entered), CTX_ENOMEM, CTX_ESYSTEM (the timer thread could not be
 * started); nothing changed.  Any thread. */
CTX_EXPORT int ctx_wire_deadline_set(ctx_wire_t *w, ctx_context_t *ctx, int64_t timeout_ns);

/* The deadline of the scope of `ctx` (ctx_cancel_scope_deadline): 0 and
 * *deadline_ns (absolute, on ctx_wire_now_ns's clock), or CTX_ENOTFOUND
 * (no scope, or a scope without a deadline), CTX_EINVAL.  Any thread. */
CTX_EXPORT int ctx_wire_deadline_get(ctx_wire_t *w, ctx_context_t *ctx,
                                     int64_t *deadline_ns);

/* The time left until the deadline of the scope of `ctx`
 * (ctx_cancel_scope_remaining): 0 and *remaining_ns (0 once it has
 * passed), or CTX_ENOTFOUND (no scope, or no deadline), CTX_EINVAL.  What
 * ctx_wire_inject sends.  Any thread. */
CTX_EXPORT int ctx_wire_deadline_remaining(ctx_wire_t *w, ctx_context_t *ctx,
                                           int64_t *remaining_ns);

/* ====================================================================== */
/* Inject and extract                                                     */
/* ====================================================================== */

/* ctx_wire_inject flag: send the context's traceparent as it is instead of
 * a child (for a hop that is not a new call, e.g. re-publishing). */
#define CTX_WIRE_SAME_PARENT 0x1u
/* ctx_wire_extract flag: fail (CTX_EPARSE / CTX_ELIMIT) instead of
 * dropping anything malformed or over a limit. */
#define CTX_WIRE_STRICT 0x2u

/* What ctx_wire_inject wrote: an output struct (set `size`, e.g. with
 * CTX_STRUCT_INIT; the library writes no more than that). */
typedef struct ctx_wire_inject_report {
    size_t size; /* sizeof the struct as the caller knows it (CTX_STRUCT_INIT) */
    int traceparent;               /* 1 if a traceparent was written */
    ctx_wire_traceparent_t parent; /* the traceparent written: its parent_id
                                      is the span id of this call (format
                                      it with ctx_wire_traceparent_span_id) */
    int tracestate;                /* 1 if a tracestate was written */
    int deadline;                  /* 1 if a grpc-timeout was written */
    int64_t timeout_ns;            /* the time left it carries (rounded
                                      down to its unit) */
    size_t baggage_members;        /* members written */
    size_t baggage_left_out;       /* members left out (the limits) */
} ctx_wire_inject_report_t;

/* Writes `ctx` (NULL: the calling thread's current context) into `carrier`:
 *   traceparent + tracestate  if the context has a trace: a child
 *                             traceparent (new parent-id) unless
 *                             CTX_WIRE_SAME_PARENT; the tracestate as is;
 *                             reserved trace-flags written as zero;
 *   grpc-timeout              if its cancellation scope has a deadline:
 *                             the time left now (see "Deadlines" above);
 *   baggage                   one member per registered variable with a
 *                             value in the context (defaults are not sent),
 *                             in registration order, text from `encode`.
 * Headers the context has nothing for are not touched.  A value whose text
 * would take the list past 64 members or 8192 bytes is left out (the
 * specification allows dropping); the count left out is returned.
 * `report` (may be NULL) says what was written; it is filled whenever the
 * carrier was called.
 * Returns that count (>= 0), or CTX_EINVAL (NULL, no set, a carrier or
 * report whose size is wrong), an `encode` error (nothing was written), or
 * the carrier's `set` error (some headers may have been written; a
 * positive one is CTX_ECALLBACK, never a count).  Uses about 16 KiB of
 * stack.  Any thread (the carrier is called on the calling thread only). */
CTX_EXPORT int ctx_wire_inject(ctx_wire_t *w, ctx_context_t *ctx,
                               const ctx_wire_carrier_t *carrier, unsigned flags,
                               ctx_wire_inject_report_t *report);

/* What ctx_wire_extract found, header by header: an output struct (set
 * `size`, e.g. with CTX_STRUCT_INIT; the library writes no more than
 * that).  For the four int fields: 0 the header was absent, 1 it was used,
 * a negative code: it was dropped for that reason (CTX_EPARSE,
 * CTX_ELIMIT; for tracestate also CTX_ENOTFOUND: not examined because
 * there was no valid traceparent). */
typedef struct ctx_wire_extract_report {
    size_t size;               /* sizeof the struct as the caller knows it */
    int traceparent;           /* the traceparent header */
    int tracestate;            /* the tracestate header */
    int deadline;              /* the grpc-timeout header */
    int baggage;               /* 1 if at least one baggage header was seen */
    size_t baggage_used;       /* members decoded into the context */
    size_t baggage_unknown;    /* key not registered: ignored */
    size_t baggage_malformed;  /* outside the grammar: dropped */
    size_t baggage_over_limit; /* past 64 members / 8192 bytes: dropped */
    size_t baggage_duplicate;  /* a registered key seen again: dropped */
    size_t baggage_rejected;   /* the variable's decode refused it */
    int baggage_truncated;     /* input past CTX_WIRE_BAGGAGE_MAX_INPUT was
                                  not examined */
    size_t tracestate_duplicate; /* tracestate members dropped: key repeated */
} ctx_wire_extract_report_t;

/* Builds a new context (not entered; the caller owns it) from `carrier`'s
 * headers: the trace, a cancellation scope with the deadline (a root scope
 * whose deadline is now + grpc-timeout: see "Deadlines" above) and every
 * registered baggage member.  O(number of entries); reads at most the
 * limits above of each header; never trusts the input: drops as documented
 * at the top of this header, or with CTX_WIRE_STRICT fails instead.
 * `report` (may be NULL) says what was used and dropped; it is written on
 * success and on a strict-mode failure.
 * Returns 0, or CTX_EINVAL (NULL, carrier without iterate, a carrier or
 * report whose size is wrong), CTX_ENOMEM, CTX_ESYSTEM (the timer thread
 * a deadline needs could not be started), CTX_EPARSE / CTX_ELIMIT
 * (strict only), the carrier's negative code (a positive result of
 * iterate is CTX_ECALLBACK, never success).  On error *out is untouched
 * and no value is leaked.  Uses about 32 KiB of stack.  Any thread (the
 * carrier is called on the calling thread only). */
CTX_EXPORT int ctx_wire_extract(ctx_wire_t *w, const ctx_wire_carrier_t *carrier,
                                unsigned flags, ctx_context_t **out,
                                ctx_wire_extract_report_t *report);

#ifdef __cplusplus
}
#endif

#endif /* CTXVAR_WIRE_H */
