/* core/error.c — the thread-local last error and the warning handler. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <bpc/error.h>
#include <bpc/config.h>

static _Thread_local char last_msg[1024];
static _Thread_local bp_status last_status;

const char *bp_last_error(void) { return last_msg; }
bp_status bp_last_status(void) { return last_status; }

void bp_clear_error(void)
{
    last_msg[0] = '\0';
    last_status = BP_OK;
}

bp_status bp_fail(bp_status st, const char *fmt, ...)
{
    /* Format into a local buffer first: callers may pass bp_last_error()
     * itself as an argument to add context to a lower-level message. */
    char buf[sizeof last_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(last_msg, buf, sizeof buf);
    last_status = st;
    return st;
}

const char *bp_status_name(bp_status st)
{
    static const char *const names[] = {
        "BP_OK", "BP_EINVAL", "BP_ESHAPE", "BP_EDTYPE", "BP_ENOMEM", "BP_ENAME", "BP_ECONFLICT",
        "BP_EMODE", "BP_ENOTFOUND", "BP_EUNSUPPORTED", "BP_EIO", "BP_EFORMAT", "BP_ENUMERIC",
        "BP_ESTATE", "BP_ECOMM"};
    if ((unsigned)st < sizeof names / sizeof names[0]) return names[st];
    return "BP_E?";
}

static void default_warning(const char *msg, void *user)
{
    (void)user;
    fprintf(stderr, "bpc warning: %s\n", msg);
}

static bp_warning_fn warn_fn = default_warning;
static void *warn_user;

void bp_set_warning_handler(bp_warning_fn fn, void *user)
{
    warn_fn = fn ? fn : default_warning;
    warn_user = fn ? user : NULL;
}

void bp_warn(const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    warn_fn(buf, warn_user);
}

size_t bp_library_real_size(void) { return sizeof(bp_real); }
const char *bp_version(void) { return BP_VERSION_STRING; }
