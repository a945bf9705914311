/* bpc/error.h — status codes and the thread-local error message.
 *
 * Every bpc function that can fail returns a bp_status. BP_OK is 0, so
 * `if (st) ...` tests for failure. On failure bp_last_error() returns a
 * message naming the argument and the values seen; it stays valid until the
 * next failing call on the same thread. */
#ifndef BPC_ERROR_H
#define BPC_ERROR_H

#include <bpc/config.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

typedef enum bp_status {
    BP_OK = 0,
    BP_EINVAL,       /* an argument out of range or NULL where a value is needed */
    BP_ESHAPE,       /* a tensor of the wrong shape or number of dimensions */
    BP_EDTYPE,       /* a tensor of the wrong element type */
    BP_ENOMEM,       /* an allocation failed */
    BP_ENAME,        /* an invalid name, or a name already used by a live node */
    BP_ECONFLICT,    /* one key bound to two different objects in a collector */
    BP_EMODE,        /* a computing mode the node does not support */
    BP_ENOTFOUND,    /* a key, variable or node that does not exist */
    BP_EUNSUPPORTED, /* a feature not available in this build */
    BP_EIO,          /* a file could not be opened, read or written */
    BP_EFORMAT,      /* a file or buffer that is corrupt, truncated or of another model */
    BP_ENUMERIC,     /* a NaN or Inf where a finite value is required */
    BP_ESTATE,       /* a call out of order (e.g. backward twice over a freed graph) */
    BP_ECOMM         /* a collective failed, or the processes taking part disagree on it */
} bp_status;

/* The message of the last failure on this thread ("" if none). Never NULL. */
const char *bp_last_error(void);

/* The status of the last failure on this thread (BP_OK if none). */
bp_status bp_last_status(void);

/* A short constant name for a status, e.g. "BP_ESHAPE". */
const char *bp_status_name(bp_status st);

/* Clears the last error on this thread. */
void bp_clear_error(void);

/* Records a failure: formats the message (printf-style) and returns st, so
 * library code can write `return bp_fail(BP_EINVAL, "...", ...);`. */
bp_status bp_fail(bp_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Warnings (e.g. missing keys in load_state_dict with warn = true) go to a
 * handler; the default prints "bpc warning: <msg>" to stderr. NULL restores
 * the default. */
typedef void (*bp_warning_fn)(const char *msg, void *user);
void bp_set_warning_handler(bp_warning_fn fn, void *user);

/* Emits a warning through the current handler (printf-style). */
void bp_warn(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* Propagates a failure: evaluates expr once and returns its status if not BP_OK. */
#define BP_TRY(expr)                         \
    do {                                     \
        bp_status bp_try_st_ = (expr);       \
        if (bp_try_st_ != BP_OK) return bp_try_st_; \
    } while (0)

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
