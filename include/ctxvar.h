/* SPDX-License-Identifier: MIT */
/*
 * ctxvar.h — context variables for C (the core module).
 *
 * What Python's `contextvars` (PEP 567) is, in C11: request-scoped state that
 * follows the work instead of the thread.
 *
 *   ctx_var_t      a variable: a name, an optional default, value operations.
 *   ctx_context_t  a mapping from variables to values.  A context is a small
 *                  reference-counted box around an immutable, structurally
 *                  shared map (a HAMT), so copying one is O(1) whatever it
 *                  holds, and a `set` in one copy is invisible to the others.
 *   ctx_token_t    what `ctx_var_set` returns, to undo that set later with
 *                  `ctx_var_reset`.
 *
 * Every thread has a *current context*: created empty the first time it is
 * needed, released when the thread exits (or by ctx_thread_release).
 * `ctx_var_get` / `ctx_var_set` act on it; `ctx_context_run` (or the
 * `ctx_context_enter` / `ctx_context_exit` pair) makes another context current
 * for a while and restores the previous one afterwards.
 *
 * Values
 * ------
 * A value is a `void *` the library stores but never looks into.  Each
 * successful `ctx_var_set` hands the library one *share* of the value; the
 * variable's `release` operation is called exactly once per share, on
 * whatever thread drops the last context, token or map node that refers to
 * it, before the ctxvar call that dropped it returns, and never while the
 * library holds a lock (so it may call back into ctxvar, the same context
 * included).  Order: the values a context held are released in its
 * iteration order; a value whose last holder is dropped *inside* a release
 * operation (a value that owns a context, a token, a capture or a variable)
 * is not released from inside it: it is released after that operation
 * returns, in the order the values were dropped, before the library goes
 * on.  So a chain of any length (a context holding a value that holds a
 * context ...) is released with constant stack.
 * Values are shared between copies of a context, not copied (the same
 * "shallow copy" as Python): if a value is a mutable structure, a change made
 * through one context is seen through every copy.  The way out is the
 * `clone` operation and `ctx_var_get_for_write` (see there).
 *
 * Errors
 * ------
 * Functions return 0 (or a documented non-negative status) on success and a
 * negative `CTX_E*` code on failure; `ctx_strerror` describes a code.  A call
 * that fails changes nothing: no context, token or variable is modified, and
 * a value or callback argument handed to a failing call stays owned by the
 * caller.  Bad input (a NULL where an object is required, a token used twice,
 * a context already entered) is an error code, never an abort.  There is no
 * global error state.
 *
 * Names (every module follows them; docs/api-rules.md has the whole set)
 * -----
 *   ctx_<object>_<verb>            core objects: ctx_var_set, ctx_context_run
 *   ctx_<module>_<object>_<verb>   module objects: ctx_pool_future_wait,
 *                                  ctx_loop_task_new, ctx_wire_baggage_parse
 *   ctx_<module>_<verb>            the module's main object: ctx_pool_submit
 *   CTX_<MODULE>_<NAME>            constants; CTX_E<NAME> error codes
 * One verb per lifetime: `new` / `retain` / `release` for heap objects
 * (the last release frees; for an object that owns threads or handles,
 * `release` also shuts it down if `shutdown` was not called); `shutdown`
 * to stop one that others may still hold; `init` / `clear` for objects in
 * storage the caller owns (captures, iterators).  Library-wide calls keep
 * their short names: ctx_strerror, ctx_error_name, ctx_version,
 * ctx_set_allocator, ctx_malloc, ctx_free.
 *
 * Threads
 * -------
 * Variables, contexts and tokens may be used from any thread.  A context may
 * be copied, read, iterated and released from several threads at once.  A
 * context is *entered* (current) in at most one thread at a time; entering it
 * while it is entered anywhere fails with CTX_EENTERED.  A token may be used
 * only in the context that made it, hence only in the thread where that
 * context is current.
 *
 * fork()
 * ------
 * In the child, the thread that called fork() keeps its current context and
 * every context it had entered, and they work as before (get, set, reset,
 * run, copies, captures).  The core has no global lock; its pthread_atfork
 * handler frees the locks of those contexts, which another thread may have
 * been holding to read one at the moment of the fork.  Contexts entered in
 * other threads at that moment stay entered for ever in the child (entering
 * them fails with CTX_EENTERED) and can be read and copied there, unless a
 * thread was changing one at that very moment: as with any memory another
 * thread was writing, POSIX says not to touch it in the child.  Objects of
 * the modules that own threads (pools, loops, buses, NATS bridges) say what
 * they do in their headers.
 *
 * Debug builds
 * ------------
 * Releasing a context, token or variable twice, clearing a capture twice,
 * or using one after that, is undefined behaviour.  A library built with
 * CTX_DEBUG (CMake -DCTX_DEBUG=ON; scripts/test.sh turns it on with
 * AddressSanitizer) aborts at once instead, with a line naming the call and
 * the object on stderr:
 *     ctxvar: ctx_context_release: context 0x55d1c2a0 already released
 * Reliable under AddressSanitizer (whose quarantine keeps freed memory from
 * reuse), best effort otherwise (until the allocator reuses the memory).
 */
#ifndef CTXVAR_H
#define CTXVAR_H

#include <stddef.h>
#include <stdint.h>

#include "ctxvar/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the functions the shared libraries export (nothing else is).  Code
 * linking a static ctxvar library defines CTX_STATIC first (pkg-config's
 * ctxvar*-static and CMake's ctxvar::*_static do it), which empties it. */
#if defined(CTX_STATIC)
#define CTX_EXPORT
#elif defined(__GNUC__)
#define CTX_EXPORT __attribute__((visibility("default")))
#else
#define CTX_EXPORT
#endif

/* ---------------------------------------------------------------------- */
/* Errors                                                                  */
/* ---------------------------------------------------------------------- */

/* One table for every module's error codes: X(name, value, message). */
#define CTX_ERRNO_MAP(X)                                                        \
    X(ENOTFOUND, -1, "no value: the variable or key is not set")               \
    X(EINVAL, -2, "invalid argument")                                          \
    X(ENOMEM, -3, "out of memory")                                             \
    X(ETOKENUSED, -4, "token has already been used once")                      \
    X(ETOKENVAR, -5, "token was created by a different variable")              \
    X(ETOKENCTX, -6, "token was created in a different context")               \
    X(EENTERED, -7, "context is already entered")                              \
    X(ENOTENTERED, -8, "context has not been entered")                         \
    X(ENOTCURRENT, -9, "context is not this thread's current context")         \
    X(EBUSY, -10, "in use: the object is busy and the call is not allowed now") \
    X(EKEY, -11, "a key's hash or equality operation failed")                  \
    X(ENOCLONE, -12, "the variable has no clone operation")                    \
    X(ETRUNCATED, -13, "output truncated: the buffer is too small")            \
    X(ECALLBACK, -14, "a user callback reported failure")                      \
    X(ESHUTDOWN, -15, "already shut down")                                     \
    X(EFULL, -16, "queue is full")                                             \
    X(ECANCELLED, -17, "cancelled")                                            \
    X(ETIMEDOUT, -18, "timed out")                                             \
    X(ECLOSED, -19, "closed or closing")                                       \
    X(ENOTDONE, -20, "not finished yet")                                       \
    X(EPARSE, -21, "malformed input")                                          \
    X(ELIMIT, -22, "input exceeds a limit")                                    \
    X(ESYSTEM, -23, "an operating-system call failed")                        \
    X(EFORKED, -24, "the object was made before fork(): unusable in the child") \
    X(EDEADLINE, -25, "deadline exceeded")                                     \
    X(EEXIST, -26, "already exists: the name or key is taken")                 \
    X(ESEALED, -27, "sealed: no more changes are allowed after first use")     \
    X(ECONNECTION, -28, "connection failed or lost")

/* The codes: CTX_OK, and CTX_E<name> for each row of CTX_ERRNO_MAP. */
typedef enum ctx_errno {
    CTX_OK = 0, /* success */
#define CTX__ERRNO_ENUM(name, value, message) CTX_##name = (value),
    CTX_ERRNO_MAP(CTX__ERRNO_ENUM)
#undef CTX__ERRNO_ENUM
} ctx_errno_t;

/* ---------------------------------------------------------------------- */
/* Growable structs                                                        */
/* ---------------------------------------------------------------------- */

/* Every options, stats and report struct of every module starts with
 * `size_t size`, set to sizeof the struct as the caller's header defines it,
 * so that later versions can add members without breaking programs built
 * against this header.  CTX_STRUCT_INIT(type) is such a struct with its size
 * set and every other member zero; a zero member always means "the
 * default".  A library newer than the caller's header reads members the
 * caller's struct lacks as zero; an older library accepts a larger struct
 * only if the members it does not know are zero (else CTX_EINVAL); a size
 * smaller than the 1.0 layout is CTX_EINVAL.  Output structs (stats,
 * reports) are written up to the caller's size and no further.
 *
 *   ctx_pool_options_t o = CTX_STRUCT_INIT(ctx_pool_options_t);
 *   o.threads = 4;
 */
#ifdef __cplusplus
} /* extern "C" */
template <typename T> static inline T ctx_struct_init_() {
    T value{};
    value.size = sizeof(T);
    return value;
}
#define CTX_STRUCT_INIT(type) ctx_struct_init_<type>()
extern "C" {
#else
#define CTX_STRUCT_INIT(type) ((type){.size = sizeof(type)})
#endif

/* Lookup statuses (non-negative results of ctx_var_get). */
#define CTX_VALUE 0   /* the variable has a value in the context */
#define CTX_DEFAULT 1 /* it has none; the variable's default was returned */

/* A static, human-readable message for `err` ("unknown error" for a code that
 * is not in CTX_ERRNO_MAP).  Never NULL.  Any thread. */
CTX_EXPORT const char *ctx_strerror(int err);

/* The code's name without prefix, e.g. "EENTERED"; "UNKNOWN" if unknown. */
CTX_EXPORT const char *ctx_error_name(int err);

/* ---------------------------------------------------------------------- */
/* Version and allocator                                                   */
/* ---------------------------------------------------------------------- */

/* CTX_VERSION_HEX of the library actually linked (compare with the header). */
CTX_EXPORT unsigned ctx_version(void);
/* "MAJOR.MINOR.PATCH" of the library actually linked. */
CTX_EXPORT const char *ctx_version_string(void);

/* The allocator every module uses.  `malloc` returns NULL on failure; `free`
 * receives the size that was requested for the block (it may ignore it). */
typedef struct ctx_allocator {
    size_t size; /* sizeof(ctx_allocator_t): see "Growable structs" */
    void *(*malloc)(size_t size, void *user);         /* `size` bytes, or NULL */
    void (*free)(void *ptr, size_t size, void *user); /* a block from malloc */
    void *user;                                       /* passed to both */
} ctx_allocator_t;

/* Replaces the allocator (NULL restores the C library's malloc/free).  The
 * structure is copied.  Blocks allocated before the switch are later freed
 * through the *new* hooks, so switch only while no ctxvar object is alive, or
 * to hooks that can free the old hooks' blocks (a wrapper around malloc, as the
 * tests' failing allocator is).  Not thread-safe: call it while no other
 * thread uses the library, the library's own included: the timer thread
 * of ctxvar/cancel.h may be freeing a scope whose deadline it fired, so
 * stop it first with ctx_cancel_timer_release().  With the C library's malloc/free, each thread
 * keeps a few of the small blocks it frees (value boxes, tokens, contexts,
 * and ctx_malloc blocks of 24 to 96 bytes in steps of 8) for its next
 * allocations, and frees them at its exit or in
 * ctx_thread_release; installed hooks see every allocation and every free.
 * Returns 0, or CTX_EINVAL (a hook is NULL, or `size` breaks the growth
 * rule). */
CTX_EXPORT int ctx_set_allocator(const ctx_allocator_t *allocator);

/* Allocates `size` bytes through the installed allocator: what every ctxvar
 * module (pool, loop, bus, ...) allocates with, exported so that modules built
 * as separate shared libraries, and users who want their value objects
 * counted by the same hooks, reach it too.  NULL on failure.  Any thread. */
CTX_EXPORT void *ctx_malloc(size_t size);

/* Frees a block from ctx_malloc; `size` must be the size that was asked for
 * (a small block is kept for reuse by that size: a wrong one would hand a
 * later ctx_malloc a block too small; a CTX_DEBUG build checks it and
 * aborts with a message).  NULL is ignored.  Any thread. */
CTX_EXPORT void ctx_free(void *ptr, size_t size);

/* ---------------------------------------------------------------------- */
/* Variables                                                               */
/* ---------------------------------------------------------------------- */

/* A variable, a context, a token: opaque, reference counted (see the top of
 * this file). */
typedef struct ctx_var ctx_var_t;
typedef struct ctx_context ctx_context_t;
typedef struct ctx_token ctx_token_t;

/* Value operations of a variable.  Every member is optional.  `user` is
 * passed back to each of them.  Operations may run on any thread; the
 * library never holds a lock while it calls them, so they may call ctxvar
 * functions, on the same context too (see "Values" above for when release
 * runs). */
typedef struct ctx_value_ops {
    size_t size; /* sizeof(ctx_value_ops_t): see "Growable structs" */
    /* Drops one share of `value` (see "Values" above): called exactly once
     * per successful set, once for the default when the variable dies.  NULL:
     * values are not owned (plain pointers to static or caller-kept data). */
    void (*release)(void *value, void *user);
    /* Writes a text form of `value` for logs, snprintf-style: at most `cap`
     * bytes including a terminating NUL, returns the length the full text
     * needs (not counting the NUL), or a negative CTX_E* code on failure
     * (which ctx_context_format returns as is).  NULL: the formatter prints
     * the pointer. */
    int (*format)(const void *value, char *buf, size_t cap, void *user);
    /* Makes a private copy of `value` into *out (one share, released later
     * with `release`); returns 0 or a negative code.  Needed by
     * ctx_var_get_for_write. */
    int (*clone)(const void *value, void **out, void *user);
    /* Encoding for the wire layer (ctxvar/wire.h): `encode` writes text as
     * `format` does; `decode` parses `len` bytes into a new share in *out,
     * returning 0 or a negative code (CTX_EPARSE for malformed text). */
    int (*encode)(const void *value, char *buf, size_t cap, void *user);
    int (*decode)(const char *text, size_t len, void **out, void *user); /* see encode */
    void *user; /* passed back to every operation */
} ctx_value_ops_t;

/* How ctx_var_new makes a variable (a NULL pointer: no default, no value
 * operations). */
typedef struct ctx_var_options {
    size_t size; /* sizeof(ctx_var_options_t): see "Growable structs" */
    /* The default returned by ctx_var_get when the context holds no value.
     * Used only when `has_default` is non-zero (a NULL default is a value).
     * On success the variable owns one share of it. */
    void *default_value;
    int has_default; /* non-zero: default_value is the default */
    /* Copied into the variable; NULL means no operations at all. */
    const ctx_value_ops_t *ops;
    /* CTX_VAR_* bits, or 0. */
    unsigned flags;
} ctx_var_options_t;

/* A static variable: one made once and kept until every context, token,
 * capture and snapshot holding a value of it is gone, as a variable kept in
 * a C global for the program's life is (PEP 567 asks the same of Python's:
 * "ContextVar objects should be created at the top module level").  What
 * holds its values does not hold the variable: a counted variable (the
 * default) takes a reference for every value set, and drops it when the
 * value dies, which costs two atomic operations per value (about a third
 * of a set+reset, and a write to a line that every thread using the
 * variable shares; docs/guide/core.md has figures); a static one does
 * not.  Everything else is the same: values, defaults, tokens, errors, and
 * ctx_var_retain/release, which still count the owners of the variable.
 * The rule it asks for in exchange: drop the last reference only once
 * nothing holds a value or a token of it any more (after the threads using
 * it are done; a release made inside a value's release operation waits for
 * the values dropped before it, see "Values").  Dropping it earlier is
 * undefined behaviour; a library built with CTX_DEBUG aborts instead,
 * naming the variable and how many values and tokens still hold it. */
#define CTX_VAR_STATIC 1u

/* Creates a variable named `name` (copied; used by the formatter and for
 * debugging; need not be unique) with `options` (NULL: no default, no
 * operations).  On success *out holds the caller's reference; contexts and
 * tokens holding values of the variable keep it alive, so releasing it while
 * values remain is safe (unless it is CTX_VAR_STATIC: see there).  Errors:
 * CTX_EINVAL (name or out NULL; `options` or its `ops` breaking the growth
 * rule; an unknown bit in `flags`), CTX_ENOMEM (the default stays the
 * caller's). */
CTX_EXPORT int ctx_var_new(const char *name, const ctx_var_options_t *options,
                           ctx_var_t **out);

/* Drops the caller's reference.  When no context or token holds a value of
 * the variable any more, its default is released and its memory freed (a
 * CTX_VAR_STATIC variable: when its last reference goes).  NULL is
 * ignored.  Any thread. */
CTX_EXPORT void ctx_var_release(ctx_var_t *var);

/* Takes one more reference (for another owner); returns `var`. */
CTX_EXPORT ctx_var_t *ctx_var_retain(ctx_var_t *var);

/* The name given at creation (valid while the variable lives). */
CTX_EXPORT const char *ctx_var_name(const ctx_var_t *var);

/* The variable's value operations: the copy made at creation (borrowed,
 * valid while the variable lives; every member NULL if it was made without
 * operations), or NULL for a NULL variable.  For layers that store values
 * of any variable (the wire layer encodes and decodes through it).  Any
 * thread. */
CTX_EXPORT const ctx_value_ops_t *ctx_var_ops(const ctx_var_t *var);

/* Looks `var` up in the calling thread's current context.
 *   CTX_VALUE (0)    *out = the value set in the context (may be NULL);
 *   CTX_DEFAULT (1)  no value in the context; *out = the variable's default;
 *   CTX_ENOTFOUND    neither; *out is untouched (Python's LookupError).
 * CTX_EINVAL for NULL arguments.  The value is borrowed: it stays valid while
 * the current context holds it (until the next set, reset, exit or
 * get_for_write of this variable in this thread).  Never allocates; a repeated
 * get of the same variable is served from a per-thread cache. */
CTX_EXPORT int ctx_var_get(const ctx_var_t *var, void **out);

/* Python's var.get(default): the value `var` has in the calling thread's
 * current context (CTX_VALUE), or else `fallback` (CTX_DEFAULT): the call's
 * fallback wins over the variable's own default, as in Python.  Never
 * CTX_ENOTFOUND.  CTX_EINVAL for NULL `var` or `out`.  Borrowed, cached and
 * allocation-free like ctx_var_get. */
CTX_EXPORT int ctx_var_get_or(const ctx_var_t *var, void *fallback, void **out);

/* Sets `var` to `value` in the calling thread's current context (creating
 * the thread's context if it has none).  The context holds one share of `value` from now
 * on.  If `token` is not NULL, *token receives a new token (the caller owns it;
 * release it with ctx_token_release) with which ctx_var_reset restores the
 * previous state.  Other copies of the context are unaffected.  The value
 * it replaces, if no one else holds it, is released before the call
 * returns, after the change (its release operation sees the new value).
 * Errors (nothing changed; `value` stays the caller's): CTX_EINVAL,
 * CTX_ENOMEM (also when the thread had no state yet and none could be
 * made), CTX_ESYSTEM (the thread's state could not be registered). */
CTX_EXPORT int ctx_var_set(ctx_var_t *var, void *value, ctx_token_t **token);

/* Undoes the set that made `token`: restores the value the variable had
 * before it, or removes it if it had none.  Python's rules and errors:
 *   CTX_ETOKENUSED  the token was already used by a successful reset;
 *   CTX_ETOKENVAR   the token was made by another variable;
 *   CTX_ETOKENCTX   the current context is not the one the token was made in;
 *   CTX_ENOMEM      nothing changed, the token can be used again;
 *   CTX_EINVAL      NULL argument.
 * The value being replaced or removed, if no one else holds it, is released
 * before the call returns, after the change.  The token is not released
 * (ctx_token_release does that). */
CTX_EXPORT int ctx_var_reset(ctx_var_t *var, ctx_token_t *token);

/* The escape from the shallow-copy trap.  Returns in *out a value of `var`
 * that no other context, copy or token refers to, so it can be modified in
 * place: if the current context's value is already private it is returned as
 * is; otherwise it is cloned (the variable's `clone` operation) and the clone
 * is set in the current context first.  So the first write after a copy
 * clones once, and later ones reuse the clone.  If the context holds no
 * value but the variable has a default, the default is cloned and set (a
 * mutable default is never modified in place).
 *
 * "Private" means no other context, copy, token or map node refers to the
 * value at the moment of the call; it does not stop other threads from
 * reading the context while the caller writes.  Writing through the pointer
 * is safe only while both hold:
 *   - the context is not copied.  Any copy shares the value again (a copy by
 *     this thread, e.g. ctx_context_copy_current, ctx_capture_current, a
 *     pool submit or a loop call that captures, or by another thread with
 *     ctx_context_copy / ctx_capture_copy).  After a copy, call
 *     ctx_var_get_for_write again before the next write;
 *   - no other thread reads the value meanwhile.  Another thread that holds
 *     a reference to this context may at any time read it: ctx_context_get
 *     hands it the pointer, ctx_iter_* too, ctx_context_format runs the
 *     variable's format operation on it, a copy then lets it reach the value
 *     through the copy.  So either no other thread can reach the context
 *     (the thread's own context, a context only this thread holds, a pool
 *     task's), or the program keeps other threads from reading it while it
 *     writes, or the value synchronises itself (a lock inside it that the
 *     writer and the format, clone and encode operations all take).
 * Calling thread's current context only.
 * Errors: CTX_ENOTFOUND (no value, no default), CTX_ENOCLONE (a clone was
 * needed and the variable has none), CTX_ENOMEM, CTX_ESYSTEM, the clone's
 * own negative code (a positive one becomes CTX_ECALLBACK), CTX_EINVAL.  On
 * error nothing changed. */
CTX_EXPORT int ctx_var_get_for_write(ctx_var_t *var, void **out);

/* Drops a token (NULL ignored).  Any thread.  A token keeps its variable and
 * the previous value alive (as Python's Token does) but not its context: it
 * recognises the context by identity, so a token outliving it is harmless (a
 * reset with it fails with CTX_ETOKENCTX). */
CTX_EXPORT void ctx_token_release(ctx_token_t *token);

/* The variable that made `token` (borrowed: valid while the token lives). */
CTX_EXPORT ctx_var_t *ctx_token_var(const ctx_token_t *token);

/* The value the variable had before the set that made `token`: 0 and *out,
 * or CTX_ENOTFOUND (Python's Token.MISSING), or CTX_EINVAL. Borrowed. */
CTX_EXPORT int ctx_token_old_value(const ctx_token_t *token, void **out);

/* 1 once the token has been used by a successful reset, 0 before. */
CTX_EXPORT int ctx_token_used(const ctx_token_t *token);

/* ---- ready-made values: strings and 64-bit integers ----
 *
 * The operations most variables need, so that a string or an integer
 * variable is one call:
 *
 *   ctx_var_t *user;
 *   ctx_var_new_string("user", NULL, &user);       // no default
 *   ctx_var_set_string(user, "alice", NULL);       // copies the text
 *   const char *name;
 *   if (ctx_var_get_string(user, &name) == CTX_VALUE) ...
 *
 * A string variable's values are NUL-terminated copies the library owns
 * (`char *`, as ctx_var_get, ctx_context_get and iteration return them);
 * an int64 variable's are `int64_t *` blocks it owns.  Both are allocated
 * with ctx_malloc, released by the release operation; formatted and encoded
 * as the text itself / in decimal; decoded back (a string must not contain
 * a NUL byte, an integer is an optional '-' and decimal digits: CTX_EPARSE,
 * or CTX_ELIMIT out of range); cloned by copying (so ctx_var_get_for_write
 * works).  Set them with the helpers below, or, to use the operations with
 * ctx_var_set directly, hand over a block from ctx_malloc of exactly
 * strlen + 1 bytes / sizeof(int64_t). */

/* The operations (static, valid for ever), to put in ctx_var_options_t.ops:
 * functions rather than exported data, so that the struct may grow. */
CTX_EXPORT const ctx_value_ops_t *ctx_value_ops_string(void);
CTX_EXPORT const ctx_value_ops_t *ctx_value_ops_int64(void);

/* A variable with the string / int64 operations; `default_text` /
 * `default_value` NULL: no default, else it is copied and becomes the
 * default.  Errors: CTX_EINVAL (name or out NULL), CTX_ENOMEM. */
CTX_EXPORT int ctx_var_new_string(const char *name, const char *default_text,
                                  ctx_var_t **out);
CTX_EXPORT int ctx_var_new_int64(const char *name, const int64_t *default_value,
                                 ctx_var_t **out);

/* ctx_var_set of a copy of `text` / of `value`.  Errors: CTX_EINVAL (`var`
 * NULL or not made with the matching operations; `text` NULL), and those of
 * ctx_var_set (the copy is freed). */
CTX_EXPORT int ctx_var_set_string(ctx_var_t *var, const char *text, ctx_token_t **token);
CTX_EXPORT int ctx_var_set_int64(ctx_var_t *var, int64_t value, ctx_token_t **token);

/* ctx_context_set of a copy.  Errors: CTX_EINVAL (as above, or `ctx`
 * NULL), and those of ctx_context_set. */
CTX_EXPORT int ctx_context_set_string(ctx_context_t *ctx, ctx_var_t *var, const char *text);
CTX_EXPORT int ctx_context_set_int64(ctx_context_t *ctx, ctx_var_t *var, int64_t value);

/* ctx_var_get, typed: CTX_VALUE / CTX_DEFAULT and *out (the string is
 * borrowed as with ctx_var_get; the integer is copied), or CTX_ENOTFOUND.
 * CTX_EINVAL: an argument is NULL, `var` was not made with the matching
 * operations, or (int64) the value found is NULL (set with a plain
 * ctx_var_set).  Never allocates. */
CTX_EXPORT int ctx_var_get_string(const ctx_var_t *var, const char **out);
CTX_EXPORT int ctx_var_get_int64(const ctx_var_t *var, int64_t *out);

/* ---- scoped set: Python's `with var.set(value):` ---- */

/* The machinery of CTX_WITH_VALUE and friends (below). */
typedef struct ctx__with {
    ctx_var_t *var;
    ctx_token_t *token;
    int once;
} ctx__with_t;

static inline ctx__with_t ctx__with_started(ctx_var_t *var, ctx_token_t *token, int r, int *rc) {
    ctx__with_t w = {var, token, r == 0};
    if (rc)
        *rc = r;
    return w;
}

static inline ctx__with_t ctx__with_value(ctx_var_t *var, void *value, int *rc) {
    ctx_token_t *token = NULL;
    int r = ctx_var_set(var, value, &token);
    return ctx__with_started(var, token, r, rc);
}

static inline ctx__with_t ctx__with_string(ctx_var_t *var, const char *text, int *rc) {
    ctx_token_t *token = NULL;
    int r = ctx_var_set_string(var, text, &token);
    return ctx__with_started(var, token, r, rc);
}

static inline ctx__with_t ctx__with_int64(ctx_var_t *var, int64_t value, int *rc) {
    ctx_token_t *token = NULL;
    int r = ctx_var_set_int64(var, value, &token);
    return ctx__with_started(var, token, r, rc);
}

static inline void ctx__with_end(ctx__with_t *w) {
    if (w->token) {
        ctx_var_reset(w->var, w->token);
        ctx_token_release(w->token);
        w->token = NULL;
    }
    w->once = 0;
}

#define CTX__CAT2(a, b) a##b
#define CTX__CAT(a, b) CTX__CAT2(a, b)
#if defined(__COUNTER__)
#define CTX__UNIQUE(prefix) CTX__CAT(prefix, __COUNTER__)
#else
#define CTX__UNIQUE(prefix) CTX__CAT(prefix, __LINE__)
#endif

/* Portable: the outer loop's step resets; a break or continue in the block
 * ends the inner loop, which ends at the outer step.  No return or goto. */
#define CTX__WITH_LOOP(begin, w)                                                            \
    for (ctx__with_t w = (begin); w.once; ctx__with_end(&w))                                \
        for (; w.once; w.once = 0)
#if defined(__GNUC__)
/* The block's variable resets when it goes out of scope, however it does. */
#define CTX__WITH_CLEANUP(begin, w)                                                         \
    for (ctx__with_t w __attribute__((cleanup(ctx__with_end))) = (begin); w.once; w.once = 0)
#define CTX__WITH(begin) CTX__WITH_CLEANUP(begin, CTX__UNIQUE(ctx__with_))
#else
#define CTX__WITH(begin) CTX__WITH_LOOP(begin, CTX__UNIQUE(ctx__with_))
#endif

/* Scoped sets: Python's `with var.set(value):`.
 *
 *   int rc;
 *   CTX_WITH_VALUE(request_id, req, &rc) {
 *       handle();          // request_id is `req` in here
 *   }                      // and reset to what it was before, here
 *   if (rc) ...            // the set failed: the block did not run, and
 *                          // `req` is still the caller's
 *
 * Sets `var` to `value` in the current context (ctx_var_set with a token),
 * runs the block once if that succeeded, then resets the variable and
 * releases the token.  `rc` (an int *, may be NULL) receives the set's
 * result before the block runs.  CTX_WITH_STRING(var, text, rc) and
 * CTX_WITH_INT64(var, value, rc) do the same with ctx_var_set_string /
 * ctx_var_set_int64 (a copy is set; CTX_EINVAL for a variable of another
 * kind).
 *
 * Which exits reset: with GCC and Clang (and any compiler defining
 * __GNUC__), every exit from the block: its end, break, continue, return,
 * and goto out of it (the reset is a cleanup attribute on the block's
 * variable).  With other compilers: its end, break and continue only; a
 * return or goto out of the block skips the reset (use a flag and break).
 * longjmp out of it never resets.  Either way, break and continue act on
 * the block itself (it is a loop): they leave it, they do not reach a loop
 * around it.  If the block leaves another context current (entered and not
 * exited), the reset fails with CTX_ETOKENCTX and the value stays set in
 * the context where it was made; the token is released all the same. */
#define CTX_WITH_VALUE(var, value, rc) CTX__WITH(ctx__with_value((var), (value), (rc)))
#define CTX_WITH_STRING(var, text, rc) CTX__WITH(ctx__with_string((var), (text), (rc)))
#define CTX_WITH_INT64(var, value, rc) CTX__WITH(ctx__with_int64((var), (value), (rc)))

/* ---------------------------------------------------------------------- */
/* Contexts                                                                */
/* ---------------------------------------------------------------------- */

/* A new empty context (Python's `Context()`); the caller owns it.
 * Errors: CTX_EINVAL, CTX_ENOMEM. */
CTX_EXPORT int ctx_context_new(ctx_context_t **out);

/* A copy of the calling thread's current context (Python's
 * `copy_context()`), O(1).  Errors: CTX_EINVAL, CTX_ENOMEM. */
CTX_EXPORT int ctx_context_copy_current(ctx_context_t **out);

/* A copy of `ctx`, O(1) whatever it holds: the two share every map node until
 * one of them is changed.  `ctx` may be entered in another thread.
 * Errors: CTX_EINVAL, CTX_ENOMEM. */
CTX_EXPORT int ctx_context_copy(ctx_context_t *ctx, ctx_context_t **out);

/* A new context holding only those of `vars` (n of them) that have a value in
 * `ctx` (an allowlist), O(n log size).  Errors: CTX_EINVAL, CTX_ENOMEM. */
CTX_EXPORT int ctx_context_copy_only(ctx_context_t *ctx, ctx_var_t *const *vars,
                                     size_t n, ctx_context_t **out);

/* Takes one more reference; returns `ctx`. */
CTX_EXPORT ctx_context_t *ctx_context_retain(ctx_context_t *ctx);

/* Drops a reference (NULL ignored).  An entered context holds a reference of
 * its own until it exits.  Any thread. */
CTX_EXPORT void ctx_context_release(ctx_context_t *ctx);

/* Sets `var` to `value` directly in `ctx`, which must not be entered anywhere:
 * for building a context before handing it to ctx_context_run or a pool
 * (decoders, allowlists).  Ownership as ctx_var_set.  The value it replaces,
 * if no one else holds it, is released before the call returns, once the
 * context is free again (its release operation may use the context, even
 * set it).  Errors: CTX_EENTERED (also if another thread enters it
 * concurrently), CTX_EINVAL, CTX_ENOMEM. */
CTX_EXPORT int ctx_context_set(ctx_context_t *ctx, ctx_var_t *var, void *value);

/* A new context holding n values: vars[i] set to values[i] for each i, as
 * ctx_context_new followed by n calls of ctx_context_set would make it, but
 * built in one pass before any other thread can see it: no lock, no claim,
 * and its map's first node made once with room for all of them.  For
 * decoders that know every value before they make the context (the wire
 * layer's extract).  `values` may hold NULLs (a stored NULL is a value);
 * both arrays are read only during the call.  n = 0 makes an empty context
 * (`vars` and `values` may then be NULL).
 * Ownership: on success the context holds one share of each value (released
 * by the variable's `release` operation when no context, copy or token
 * holds it any more) and one reference to each variable, and *out is a new
 * context the caller owns (one reference, not entered).  On failure nothing
 * changed: every value is still the caller's, no release operation ran, and
 * *out is untouched.
 * Any thread; the variables may be used by other threads meanwhile.
 * Errors: CTX_EINVAL (`out` NULL, `vars` or `values` NULL with n > 0, a
 * NULL variable, or a variable listed twice), CTX_ENOMEM. */
CTX_EXPORT int ctx_context_new_from(ctx_var_t *const *vars, void *const *values, size_t n,
                                    ctx_context_t **out);

/* Makes `ctx` the calling thread's current context; the previous one becomes
 * current again at ctx_context_exit.  Errors: CTX_EENTERED (entered in this
 * or any other thread; this includes a thread's own base context),
 * CTX_ENOMEM / CTX_ESYSTEM (the thread had no context yet and none could be
 * made), CTX_EINVAL. */
CTX_EXPORT int ctx_context_enter(ctx_context_t *ctx);

/* Leaves `ctx`, which must be the calling thread's current context, and makes
 * the context that was current before its enter current again.  The context
 * is known by its address only, so the caller must hold a reference to it
 * (the address of a released context may already belong to a new one).
 * Errors: CTX_ENOTENTERED (not entered at all, or the thread's base
 * context), CTX_ENOTCURRENT (entered, but not current in this thread),
 * CTX_EINVAL. */
CTX_EXPORT int ctx_context_exit(ctx_context_t *ctx);

/* What ctx_context_run and ctx_capture_run call: fn(arg), whose return
 * value is the run's result. */
typedef void *(*ctx_run_fn)(void *arg);

/* Python's Context.run: enters `ctx`, calls fn(arg), exits, and stores fn's
 * return value in *result (if `result` is not NULL).  Sets made by `fn` land
 * in `ctx`.  `ctx` holds a reference to itself while entered, so `fn` may
 * release the caller's.  Calling thread; `ctx` may be any context not
 * entered anywhere.  Returns 0, or an error of ctx_context_enter (then `fn`
 * is not called), or CTX_ENOTCURRENT: fn returned with something other than
 * run's own entry of `ctx` current (it entered contexts it did not exit:
 * `ctx` then stays entered under them, as in Python, until they and it are
 * exited; or it exited `ctx` itself, and perhaps entered `ctx` again or a
 * new context that happens to have ctx's address: run tells entries apart,
 * not addresses, and leaves those entered); *result is stored all the
 * same. */
CTX_EXPORT int ctx_context_run(ctx_context_t *ctx, ctx_run_fn fn, void *arg,
                               void **result);

/* 1 if `ctx` is entered in some thread at the moment of the call, else 0. */
CTX_EXPORT int ctx_context_is_entered(const ctx_context_t *ctx);

/* ---- captures: copy_context() + run, in storage the caller owns ----
 *
 * What a scheduler needs for each piece of work it will run later in the
 * submitter's context (the pool and the loop use them): a copy of a context
 * kept inside the caller's own record instead of a heap object, so capturing
 * allocates nothing and cannot fail, and running touches no reference count.
 * A capture is private to its owner: it is never handed to the ctx_context_*
 * functions, and it must be cleared (ctx_capture_clear) exactly once before
 * its storage is reused or dropped; it must not be copied by value (a struct
 * assignment would make two owners of one reference).  Sets made while it
 * runs stay in it, as with a context given to ctx_context_run.  Unlike
 * ctx_context_run, a capture is always left when its run returns, so its
 * storage can always be cleared.
 *
 * Its size is fixed for 1.x: 96 bytes, of which this version uses at most
 * 64; the rest is room for later versions, so a capture embedded in a
 * caller's struct never needs a rebuild.  The library writes nothing past
 * sizeof(ctx_capture_t). */
typedef struct ctx_capture {
    uint64_t private_[12];
} ctx_capture_t;

/* Stores a copy of the calling thread's current context in `capture`: O(1)
 * (the map is shared), no allocation, no lock; an empty context if the
 * thread has none yet.  Any thread; the capture may then be run on any
 * thread.  NULL is ignored. */
CTX_EXPORT void ctx_capture_current(ctx_capture_t *capture);

/* Stores a copy of `ctx` (any context, entered anywhere or not) in
 * `capture`: O(1), no allocation.  Any thread.  Returns 0, or CTX_EINVAL
 * (nothing stored). */
CTX_EXPORT int ctx_capture_copy(ctx_capture_t *capture, ctx_context_t *ctx);

/* ctx_context_run for a capture: enters it, calls fn(arg), stores fn's return
 * value in *result (if not NULL) and leaves it.  Errors: CTX_EENTERED (the
 * same capture is being run in another thread or further up this one; fn is
 * not called), CTX_ENOMEM / CTX_ESYSTEM (the thread had no state and none
 * could be made; fn is not called), CTX_ENOTCURRENT (fn ran but left
 * contexts it entered still entered: they stay entered, above the context
 * that was current before the run, and the capture is left all the same),
 * CTX_EINVAL. */
CTX_EXPORT int ctx_capture_run(ctx_capture_t *capture, ctx_run_fn fn, void *arg,
                               void **result);

/* ctx_capture_run for a capture only the calling thread can reach while it
 * runs (a record the caller owns alone: an event loop's handle, run on the
 * loop thread).  The capture's entered flag is then set and cleared with
 * plain stores, without the two locked instructions ctx_capture_run needs
 * to tell a run on another thread: running the same capture on two
 * threads at once through this call is undefined.  A nested run of it on
 * this thread is still CTX_EENTERED.  Same effects and errors as
 * ctx_capture_run otherwise. */
CTX_EXPORT int ctx_capture_run_exclusive(ctx_capture_t *capture, ctx_run_fn fn, void *arg,
                                         void **result);

/* Drops what `capture` holds (values no other context holds are released).
 * Any thread, but not while the capture runs.  NULL is ignored. */
CTX_EXPORT void ctx_capture_clear(ctx_capture_t *capture);

/* ---- snapshots: the values alone, for work that runs once ----
 *
 * A snapshot is a reference to the values of a context, without the
 * context: 24 bytes the caller owns, taken in O(1) with no allocation.
 * Running it runs a function in a new context holding those values, made
 * for that run alone and gone when it returns, with every set the function
 * made: what asyncio does for a callback scheduled with call_soon (a copy of
 * the context, run once, then dropped).  A capture is a context; a snapshot
 * is only what a context holds, so it is smaller, and a run of it changes
 * nothing anyone else can see.
 *
 * A snapshot whose bytes are all zero is empty (a run of it starts from no
 * values; clearing it does nothing).  It must not be copied by value (two
 * owners of one reference), and it must be cleared or run before its storage
 * is reused or dropped.  Its size is fixed for 1.x: three pointers, of which
 * this version uses two (the rest is room for later versions). */
typedef struct ctx_snapshot {
    void *private_[3];
} ctx_snapshot_t;

/* Stores a reference to the values of the calling thread's current context
 * in `snapshot` (which must be empty: a snapshot still holding values would
 * lose them): O(1), no allocation, no lock; empty if the thread has no
 * context yet.  Any thread.  NULL is ignored. */
CTX_EXPORT void ctx_snapshot_current(ctx_snapshot_t *snapshot);

/* Runs fn(arg) in a new context that holds the snapshot's values and takes
 * over its reference: the snapshot is empty from the moment fn is called.
 * fn's return value goes to *result (if not NULL).  Sets made by fn land in
 * the run's own context, which is dropped when fn returns (values no other
 * context holds are released then); tokens made in it are refused
 * everywhere afterwards.  Any thread, and not while another run or clear of
 * the same snapshot is under way.  Returns 0, or CTX_ENOMEM / CTX_ESYSTEM
 * (the thread had no state and none could be made: fn is not called and
 * the snapshot is unchanged), CTX_ENOTCURRENT (fn ran but left contexts it
 * entered still entered: they stay entered, above the context that was
 * current before the run), CTX_EINVAL. */
CTX_EXPORT int ctx_snapshot_run(ctx_snapshot_t *snapshot, ctx_run_fn fn, void *arg,
                                void **result);

/* Drops what `snapshot` holds (values no other context holds are released)
 * and leaves it empty.  Any thread, not during a run of it.  NULL and an
 * empty snapshot are ignored. */
CTX_EXPORT void ctx_snapshot_clear(ctx_snapshot_t *snapshot);

/* ---- mapping view (any context, any thread) ----
 *
 * These, ctx_context_copy and the formatter read a context that may be
 * entered in another thread, whose owner changes it meanwhile.  The owner
 * changes it without a lock until the first such read; that read costs one
 * membarrier system call (microseconds), once in the context's life, and
 * the owner locks from then on.  Reading a context entered in the calling
 * thread, or entered nowhere, costs nothing of the kind. */

/* The value of `var` in `ctx` (the default is not consulted): 0 and *out
 * (borrowed: valid while `ctx` keeps it), or CTX_ENOTFOUND, or CTX_EINVAL. */
CTX_EXPORT int ctx_context_get(ctx_context_t *ctx, const ctx_var_t *var,
                               void **out);

/* 1 if `ctx` holds a value for `var`, 0 if not, CTX_EINVAL. */
CTX_EXPORT int ctx_context_contains(ctx_context_t *ctx, const ctx_var_t *var);

/* Number of variables holding a value in `ctx` (0 for NULL). */
CTX_EXPORT size_t ctx_context_length(ctx_context_t *ctx);

/* Iteration over a snapshot of a context: allocation-free, caller-owned
 * storage.  The snapshot is taken by ctx_iter_init and kept until
 * ctx_iter_clear, whatever later happens to the context.  Order: by key hash
 * (for variables, creation order for the first 32, then interleaved); stable
 * for a given snapshot.  Fixed size for 1.x (160 bytes, of which this version
 * uses at most 128); the library writes nothing past sizeof(ctx_iter_t). */
typedef struct ctx_iter {
    uint64_t private_[20];
} ctx_iter_t;

/* Starts iterating `ctx`.  Returns 0 or CTX_EINVAL.  Call ctx_iter_clear. */
CTX_EXPORT int ctx_iter_init(ctx_iter_t *it, ctx_context_t *ctx);
/* 1 and the next (variable, value) pair (borrowed, valid until
 * ctx_iter_clear; either out pointer may be NULL), or 0 at the end. */
CTX_EXPORT int ctx_iter_next(ctx_iter_t *it, ctx_var_t **var, void **value);
/* Releases the snapshot.  Safe to call twice. */
CTX_EXPORT void ctx_iter_clear(ctx_iter_t *it);

/* Writes the context as "name=value name=value ..." into `buf` (NUL
 * terminated, at most `cap` bytes), values formatted by their variables'
 * `format` operation (or as a pointer), in iteration order.  *len (if not
 * NULL) receives the length of the full text.  Returns 0, or CTX_ETRUNCATED
 * (buf holds the truncated text; *len says how much is needed), CTX_EINVAL,
 * or the negative code a format operation returned (passed on as is).
 * Never allocates. */
CTX_EXPORT int ctx_context_format(ctx_context_t *ctx, char *buf, size_t cap,
                                  size_t *len);

/* ctx_context_format of the calling thread's current context (empty text if
 * the thread has none yet). */
CTX_EXPORT int ctx_context_format_current(char *buf, size_t cap, size_t *len);

/* ---------------------------------------------------------------------- */
/* Threads                                                                 */
/* ---------------------------------------------------------------------- */

/* Releases the calling thread's current context and per-thread state now
 * instead of at thread exit (the main thread, whose exit runs no thread
 * destructors, and tests that check for leaks), including the small blocks
 * the thread keeps for reuse.  The thread starts over with an empty context
 * on next use.  Errors: CTX_EBUSY (a context entered with ctx_context_enter
 * has not exited; nothing is released).  Returns 0 if the thread had no
 * state. */
CTX_EXPORT int ctx_thread_release(void);

#ifdef __cplusplus
}
#endif

#endif /* CTXVAR_H */
