/* io/checkpoint.c — save_states / load_states: formats by extension, atomic
 * saves, all-or-nothing loads of variables from a flat dict.
 *
 * Checkpoint code sees only variables and dicts: a training checkpoint is
 * built by the caller from the model's vars, the optimizer's vars (slots,
 * step, scheduler) and an RNG state under distinct prefixes.
 *
 * An atomic save: open "<file>.tmp.<pid>.<n>" (O_EXCL), write, fsync, close,
 * rename over <file>, fsync the directory. Until the rename the old file is
 * untouched; the rename is atomic, so a reader (or a crash) sees either the
 * whole old file or the whole new one.
 *
 * The temporary file is flock'ed for the whole save. A crash (kill -9
 * included) drops the lock with the process, so the next save of the same
 * target can tell a crashed save's temporary (unlocked) from one being
 * written (locked, by this or another process) and removes only the former. */
#define _DEFAULT_SOURCE /* flock */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include "ckpt_internal.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bpc checkpoints: the readers and writers assume a little-endian host"
#endif

/* ------------------------------------------------------------------ hooks */

static int sys_open(const char *path, int flags, mode_t mode) { return open(path, flags, mode); }

bp__ckpt_io bp__ckpt_io_hooks = {sys_open, write, fsync, close, rename};

void bp__ckpt_io_reset(void)
{
    bp__ckpt_io_hooks = (bp__ckpt_io){sys_open, write, fsync, close, rename};
}

/* -------------------------------------------------------------- utilities */

bp_status bp__not_regular(const char *who, mode_t mode)
{
    const char *kind = S_ISDIR(mode)    ? "a directory"
                       : S_ISFIFO(mode) ? "a FIFO"
                       : S_ISCHR(mode)  ? "a character device"
                       : S_ISBLK(mode)  ? "a block device"
                       : S_ISSOCK(mode) ? "a socket"
                                        : "of an unknown kind";
    return bp_fail(BP_EIO, "%s: not a regular file (it is %s); checkpoints are regular files", who, kind);
}

uint32_t bp__crc32(uint32_t crc, const void *p, size_t n)
{
    const unsigned char *b = p;
    /* zlib takes a uInt length: feed large buffers in 1 GiB pieces. */
    while (n > 0) {
        size_t k = n > (1u << 30) ? (1u << 30) : n;
        crc = (uint32_t)crc32(crc, b, (uInt)k);
        b += k;
        n -= k;
    }
    return crc;
}

bool bp__crc_from_hex(const char *hex, uint32_t *out)
{
    uint32_t c = 0;
    size_t i = 0;
    for (; hex[i] && i < 8; i++) {
        char h = hex[i];
        int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : -1;
        if (d < 0) return false;
        c = c << 4 | (uint32_t)d;
    }
    if (i != 8 || hex[8]) return false;
    *out = c;
    return true;
}

bp_status bp__ckpt_check_key(const char *who, const char *what, const char *key, bp_status st)
{
    size_t n = strlen(key);
    if (n == 0) return bp_fail(st, "%s: %s is empty (keys must have 1 to %d characters)", who, what, BP_CKPT_MAX_KEY);
    if (n > BP_CKPT_MAX_KEY)
        return bp_fail(st, "%s: %s \"%.40s...\" has %zu characters (at most %d)", who, what, key, n,
                       BP_CKPT_MAX_KEY);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x20 || c > 0x7e)
            return bp_fail(st, "%s: %s \"%.*s\" has the byte 0x%02x at %zu (keys are printable ASCII)", who, what,
                           (int)i, key, c, i);
    }
    if (strcmp(key, "__metadata__") == 0)
        return bp_fail(st, "%s: %s \"__metadata__\" is reserved by the safetensors format", who, what);
    return BP_OK;
}

bp_status bp__ckpt_check_dict(const char *who, const bp_dict *flat)
{
    if (!flat) return bp_fail(BP_EINVAL, "%s: the dict is NULL", who);
    for (size_t i = 0; i < bp_dict_len(flat); i++) {
        const char *key = bp_dict_key(flat, i);
        if (!bp_dict_tensor(flat, i))
            return bp_fail(BP_EINVAL, "%s: entry \"%s\" is a nested dict; a checkpoint holds a flat dict of tensors "
                                      "(use bp_checkpoint_put_vars)", who, key);
        BP_TRY(bp__ckpt_check_key(who, "key", key, BP_EINVAL));
    }
    return BP_OK;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

bp_status bp_checkpoint_format(const char *filename, bp_ckpt_format *out)
{
    if (!filename || !out) return bp_fail(BP_EINVAL, "checkpoint_format: %s is NULL", filename ? "out" : "filename");
    if (ends_with(filename, ".safetensors"))
        *out = BP_CKPT_SAFETENSORS;
    else if (ends_with(filename, ".npz"))
        *out = BP_CKPT_NPZ;
    else if (ends_with(filename, ".json"))
        *out = BP_CKPT_JSON;
    else
        return bp_fail(BP_EINVAL, "Unknown file format: \"%s\". bpc supports ['.safetensors', '.npz', '.json']",
                       filename);
    return BP_OK;
}

const char *bp_checkpoint_format_name(bp_ckpt_format fmt)
{
    switch (fmt) {
    case BP_CKPT_SAFETENSORS: return "safetensors";
    case BP_CKPT_NPZ: return "npz";
    case BP_CKPT_JSON: return "json";
    }
    return "?";
}

/* ------------------------------------------------------------------ sinks */

/* write(2) until all n bytes are out; a short write is retried, a write of 0
 * bytes or an error fails. */
static bp_status write_all(bp__sink *s, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = bp__ckpt_io_hooks.write(s->fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            int e = k < 0 ? errno : EIO;
            return s->st = bp_fail(BP_EIO, "%s: cannot write \"%s\" (after %llu bytes): %s", s->who, s->path,
                                   (unsigned long long)s->flushed, strerror(e));
        }
        s->flushed += (uint64_t)k;
        p += k;
        n -= (size_t)k;
    }
    return BP_OK;
}

bp_status bp__sink_flush(bp__sink *s)
{
    if (s->st || s->fd < 0 || s->len == 0) return s->st;
    size_t n = s->len;
    s->len = 0;
    return write_all(s, s->buf, n);
}

enum { SINK_BUFFER = 1 << 20 };

bp_status bp__sink_write(bp__sink *s, const void *p, size_t n)
{
    if (s->st) return s->st;
    if (n == 0) return BP_OK;
    if (s->fd >= 0) {
        if (!s->buf) {
            if (!(s->buf = malloc(SINK_BUFFER))) return s->st = bp_fail(BP_ENOMEM, "%s: out of memory", s->who);
            s->cap = SINK_BUFFER;
        }
        /* Large pieces (tensor data) go straight to the file, unbuffered. */
        if (n >= s->cap / 2) {
            BP_TRY(bp__sink_flush(s));
            return write_all(s, p, n);
        }
        if (s->len + n > s->cap) BP_TRY(bp__sink_flush(s));
        memcpy(s->buf + s->len, p, n);
        s->len += n;
        return BP_OK;
    }
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n) {
            if (cap > SIZE_MAX / 2) return s->st = bp_fail(BP_ENOMEM, "%s: output too large", s->who);
            cap *= 2;
        }
        unsigned char *grown = realloc(s->buf, cap);
        if (!grown) return s->st = bp_fail(BP_ENOMEM, "%s: cannot grow the output to %zu bytes", s->who, cap);
        s->buf = grown;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    return BP_OK;
}

bp_status bp__sink_printf(bp__sink *s, const char *fmt, ...)
{
    char tmp[4096];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= sizeof tmp)
        return s->st = bp_fail(BP_EINVAL, "%s: internal: formatted text longer than %zu bytes", s->who, sizeof tmp);
    return bp__sink_write(s, tmp, (size_t)k);
}

/* ---------------------------------------------------------------- sources */

bp_status bp__source_read(const bp__source *s, uint64_t off, void *dst, size_t n)
{
    if (off > s->size || n > s->size - off)
        return bp_fail(BP_EFORMAT, "%s: truncated: needs bytes %llu..%llu, the file has %llu", s->who,
                       (unsigned long long)off, (unsigned long long)(off + n), (unsigned long long)s->size);
    if (s->mem) {
        if (n) memcpy(dst, s->mem + off, n);
        return BP_OK;
    }
    unsigned char *p = dst;
    while (n > 0) {
        size_t want = n > (1u << 30) ? (1u << 30) : n;
        ssize_t k = pread(s->fd, p, want, (off_t)off);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return bp_fail(BP_EIO, "%s: cannot read \"%s\": %s", s->who, s->path, strerror(errno));
        if (k == 0)
            return bp_fail(BP_EFORMAT, "%s: truncated: the file ended at %llu bytes while reading", s->who,
                           (unsigned long long)off);
        p += k;
        off += (uint64_t)k;
        n -= (size_t)k;
    }
    return BP_OK;
}

bp_status bp__source_admit(const bp__source *src, const char *key, bp_dtype dt, int ndim, const int64_t *shape,
                           bool *skip)
{
    *skip = false;
    bp__ckpt_filter *f = src->filter;
    if (!f) return BP_OK;
    if (f->admit) BP_TRY(f->admit(f, src->who, key, dt, ndim, shape, skip));
    if (*skip) return BP_OK;
    int64_t numel = 1, bytes = 0;
    for (int d = 0; d < ndim; d++)
        if (!bp__mul_ok(numel, shape[d], &numel)) numel = INT64_MAX;
    if (!bp__mul_ok(numel, (int64_t)bp_dtype_size(dt), &bytes)) bytes = INT64_MAX;
    if ((uint64_t)bytes > f->max_bytes - f->kept) {
        char sh[96];
        return bp_fail(BP_EFORMAT,
                       "%s: \"%s\" (%s %s) needs %" PRId64 " bytes, past the limit of this read (%" PRIu64
                       " bytes, %" PRIu64 " taken)",
                       src->who, key, bp_dtype_name(dt), bp_shape_str(sh, sizeof sh, ndim, shape), bytes,
                       f->max_bytes, f->kept);
    }
    f->kept += (uint64_t)bytes;
    return BP_OK;
}

/* -------------------------------------------------------- encode / decode */

static bp_status encode_to(bp_ckpt_format fmt, bp__sink *s, const bp_dict *flat)
{
    bp_status st;
    switch (fmt) {
    case BP_CKPT_SAFETENSORS: st = bp__st_write(s, flat); break;
    case BP_CKPT_NPZ: st = bp__npz_write(s, flat); break;
    case BP_CKPT_JSON: st = bp__json_write(s, flat); break;
    default: return bp_fail(BP_EINVAL, "%s: unknown format %d", s->who, (int)fmt);
    }
    if (!st) st = bp__sink_flush(s);
    return st;
}

static bp_status decode_from(bp_ckpt_format fmt, const bp__source *src, bp_dict **out)
{
    switch (fmt) {
    case BP_CKPT_SAFETENSORS: return bp__st_read(src, out);
    case BP_CKPT_NPZ: return bp__npz_read(src, out);
    case BP_CKPT_JSON: return bp__json_read(src, out);
    }
    return bp_fail(BP_EINVAL, "%s: unknown format %d", src->who, (int)fmt);
}

bp_status bp_checkpoint_encode(bp_ckpt_format fmt, const bp_dict *flat, void **buf, size_t *len)
{
    const char *who = "checkpoint_encode";
    if (!buf || !len) return bp_fail(BP_EINVAL, "%s: %s is NULL", who, buf ? "len" : "buf");
    *buf = NULL;
    *len = 0;
    if (fmt != BP_CKPT_SAFETENSORS && fmt != BP_CKPT_NPZ && fmt != BP_CKPT_JSON)
        return bp_fail(BP_EINVAL, "%s: unknown format %d", who, (int)fmt);
    BP_TRY(bp__ckpt_check_dict(who, flat));
    bp__sink s = {.fd = -1, .who = who};
    bp_status st = encode_to(fmt, &s, flat);
    if (st) {
        free(s.buf);
        return st;
    }
    *buf = s.buf ? (void *)s.buf : malloc(1);
    if (!*buf) return bp_fail(BP_ENOMEM, "%s: out of memory", who);
    *len = s.len;
    return BP_OK;
}

bp_status bp_checkpoint_decode_capped(bp_ckpt_format fmt, const void *buf, size_t len, uint64_t max_bytes,
                                      bp_dict **out)
{
    const char *who = "checkpoint_decode";
    if (!out) return bp_fail(BP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (!buf && len) return bp_fail(BP_EINVAL, "%s: buf is NULL with len %zu", who, len);
    static const unsigned char empty[1];
    bp__ckpt_filter cap = {.max_bytes = max_bytes};
    bp__source src = {.mem = buf ? buf : empty, .fd = -1, .size = len, .who = who, .filter = &cap};
    return decode_from(fmt, &src, out);
}

bp_status bp_checkpoint_decode(bp_ckpt_format fmt, const void *buf, size_t len, bp_dict **out)
{
    return bp_checkpoint_decode_capped(fmt, buf, len, UINT64_MAX, out);
}

/* -------------------------------------------------------------- file I/O */

/* "<fn> \"<path>\"" for messages. */
static const char *who_of(char *buf, size_t cap, const char *fn, const char *path)
{
    snprintf(buf, cap, "%s \"%s\"", fn, path);
    return buf;
}

/* fsync of the directory holding path, so the rename itself is durable. */
static int sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return -1;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0) return -1;
    int rc = bp__ckpt_io_hooks.fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* "<base>.tmp.<digits>.<digits>": the name of one of base's temporaries. */
static bool is_temp_of(const char *name, const char *base)
{
    size_t n = strlen(base);
    if (strncmp(name, base, n) != 0 || strncmp(name + n, ".tmp.", 5) != 0) return false;
    const char *p = name + n + 5;
    for (int field = 0; field < 2; field++) {
        const char *q = p;
        while (*q >= '0' && *q <= '9') q++;
        if (q == p || *q != (field == 0 ? '.' : '\0')) return false;
        p = q + 1;
    }
    return true;
}

/* Removes the temporaries that crashed saves of filename left: files named as
 * is_temp_of says in its directory, regular (not followed through a link),
 * that no save holds locked. Best effort: whatever cannot be checked stays. */
static void sweep_stale_temps(const char *filename)
{
    const char *slash = strrchr(filename, '/');
    const char *base = slash ? slash + 1 : filename;
    size_t dlen = slash ? (size_t)(slash - filename) + 1 : 0; /* with the '/' */
    char *dir = slash ? strndup(filename, dlen == 1 ? 1 : dlen - 1) : strdup(".");
    if (!dir) return;
    DIR *d = opendir(dir);
    free(dir);
    if (!d) return;
    size_t cap = dlen + 256 + 1;
    char *path = malloc(cap);
    struct dirent *e;
    while (path && (e = readdir(d))) {
        if (!is_temp_of(e->d_name, base) || dlen + strlen(e->d_name) + 1 > cap) continue;
        memcpy(path, filename, dlen);
        strcpy(path + dlen, e->d_name);
        int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) continue;
        struct stat by_fd, by_name;
        /* Unlocked: its writer is gone. The same file still under that name
         * (not replaced since it was opened): it is the one checked. */
        if (fstat(fd, &by_fd) == 0 && S_ISREG(by_fd.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0 &&
            lstat(path, &by_name) == 0 && by_name.st_dev == by_fd.st_dev && by_name.st_ino == by_fd.st_ino)
            unlink(path);
        close(fd);
    }
    free(path);
    closedir(d);
}

static bp_status write_file(const char *who, const char *filename, bp_ckpt_format fmt, const bp_dict *flat)
{
    static atomic_uint counter;
    /* The rename would replace a FIFO or a device node by a regular file, or fail
     * on a directory after all the writing: refuse them first. */
    struct stat sb;
    if (stat(filename, &sb) == 0 && !S_ISREG(sb.st_mode)) return bp__not_regular(who, sb.st_mode);
    /* Before writing: the space they hold may be what this save needs. */
    sweep_stale_temps(filename);
    size_t cap = strlen(filename) + 64;
    char *tmp = malloc(cap);
    if (!tmp) return bp_fail(BP_ENOMEM, "%s: out of memory", who);
    int fd = -1, lock = -1;
    for (int tries = 0; tries < 100 && fd < 0; tries++) {
        snprintf(tmp, cap, "%s.tmp.%ld.%u", filename, (long)getpid(), atomic_fetch_add(&counter, 1u));
        fd = bp__ckpt_io_hooks.open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
        if (fd < 0) continue;
        /* The lock marks the save as alive until after the rename. It is taken
         * on a duplicate so that it outlives close(fd), which comes before the
         * rename. A sweep may have removed the file between open and flock
         * (no links left): then take another name. Where flock is unsupported
         * (ENOLCK) the save goes on: sweeps cannot lock such files either. */
        lock = dup(fd);
        struct stat ls;
        if (lock >= 0 && flock(lock, LOCK_EX) == 0 && fstat(lock, &ls) == 0 && ls.st_nlink == 0) {
            close(lock);
            bp__ckpt_io_hooks.close(fd);
            fd = lock = -1;
        }
    }
    if (fd < 0) {
        bp_status st = bp_fail(BP_EIO, "%s: cannot create the temporary file \"%s\": %s", who, tmp, strerror(errno));
        free(tmp);
        return st;
    }
    bp__sink s = {.fd = fd, .who = who, .path = tmp};
    bp_status st = encode_to(fmt, &s, flat);
    free(s.buf);
    if (!st && bp__ckpt_io_hooks.fsync(fd) != 0)
        st = bp_fail(BP_EIO, "%s: cannot fsync \"%s\": %s", who, tmp, strerror(errno));
    if (bp__ckpt_io_hooks.close(fd) != 0 && !st)
        st = bp_fail(BP_EIO, "%s: cannot close \"%s\": %s", who, tmp, strerror(errno));
    if (!st && bp__ckpt_io_hooks.rename(tmp, filename) != 0)
        st = bp_fail(BP_EIO, "%s: cannot rename \"%s\" over \"%s\": %s", who, tmp, filename, strerror(errno));
    if (st) unlink(tmp);
    if (lock >= 0) close(lock);
    free(tmp);
    if (st) return st;
    if (sync_dir(filename) != 0)
        return bp_fail(BP_EIO, "%s: the file was written and renamed, but its directory cannot be fsync'ed: %s", who,
                       strerror(errno));
    return BP_OK;
}

bp_status bp_checkpoint_write(const char *filename, const bp_dict *flat)
{
    char who[512];
    if (!filename) return bp_fail(BP_EINVAL, "checkpoint_write: filename is NULL");
    who_of(who, sizeof who, "checkpoint_write", filename);
    bp_ckpt_format fmt;
    BP_TRY(bp_checkpoint_format(filename, &fmt));
    BP_TRY(bp__ckpt_check_dict(who, flat));
    return write_file(who, filename, fmt, flat);
}

static bp_status read_file(const char *who, const char *filename, bp__ckpt_filter *filter, bp_dict **out)
{
    *out = NULL;
    bp_ckpt_format fmt;
    BP_TRY(bp_checkpoint_format(filename, &fmt));
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer
     * (forever); the fstat below then refuses it. Regular files ignore the flag. */
    int fd = open(filename, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT) return bp_fail(BP_EIO, "%s: Cannot find the file path: %s", who, filename);
        return bp_fail(BP_EIO, "%s: cannot open the file: %s", who, strerror(errno));
    }
    struct stat sb;
    bp_status st = BP_OK;
    if (fstat(fd, &sb) != 0)
        st = bp_fail(BP_EIO, "%s: cannot stat the file: %s", who, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        st = bp__not_regular(who, sb.st_mode);
    if (!st) {
        bp__source src = {.fd = fd, .path = filename, .size = (uint64_t)sb.st_size, .who = who, .filter = filter};
        st = decode_from(fmt, &src, out);
    }
    close(fd);
    return st;
}

bp_status bp_checkpoint_read_capped(const char *filename, uint64_t max_bytes, bp_dict **out)
{
    char who[512];
    if (!out) return bp_fail(BP_EINVAL, "checkpoint_read: out is NULL");
    *out = NULL;
    if (!filename) return bp_fail(BP_EINVAL, "checkpoint_read: filename is NULL");
    bp__ckpt_filter cap = {.max_bytes = max_bytes};
    return read_file(who_of(who, sizeof who, "checkpoint_read", filename), filename, &cap, out);
}

bp_status bp_checkpoint_read(const char *filename, bp_dict **out)
{
    return bp_checkpoint_read_capped(filename, UINT64_MAX, out);
}

/* ---------------------------------------------------- vars <-> flat dicts */

static size_t plen(const char *prefix) { return prefix ? strlen(prefix) : 0; }

/* "<prefix><key>" in a new string. */
static char *join(const char *prefix, const char *key)
{
    size_t a = plen(prefix), b = strlen(key);
    char *s = malloc(a + b + 1);
    if (!s) return NULL;
    if (a) memcpy(s, prefix, a);
    memcpy(s + a, key, b + 1);
    return s;
}

bp_status bp_checkpoint_put_vars(bp_dict *flat, const char *prefix, const bp_collector *vars)
{
    if (!flat || !vars) return bp_fail(BP_EINVAL, "checkpoint_put_vars: %s is NULL", flat ? "vars" : "flat");
    for (size_t i = 0; i < bp_collector_len(vars); i++) {
        bp_var *v = bp_collector_var(vars, i);
        if (!v) return bp_fail(BP_EINVAL, "checkpoint_put_vars: the collector holds nodes, not variables");
        char *key = join(prefix, bp_collector_key(vars, i));
        if (!key) return bp_fail(BP_ENOMEM, "checkpoint_put_vars: out of memory");
        bp_status st = bp__ckpt_check_key("checkpoint_put_vars", "key", key, BP_EINVAL);
        if (!st) st = bp_dict_set_tensor(flat, key, v->value);
        free(key);
        BP_TRY(st);
    }
    return BP_OK;
}

bp_load_opts bp_load_defaults(void)
{
    return (bp_load_opts){.strict = true, .warn = true, .max_other_bytes = BP_CKPT_MAX_OTHER_BYTES};
}

/* A growable list of key strings. */
typedef struct keys {
    char **s;
    size_t n;
} keys;

static bp_status keys_push(keys *l, char *owned)
{
    if (!owned) return bp_fail(BP_ENOMEM, "load: out of memory");
    char **grown = realloc(l->s, sizeof *grown * (l->n + 1));
    if (!grown) {
        free(owned);
        return bp_fail(BP_ENOMEM, "load: out of memory");
    }
    l->s = grown;
    l->s[l->n++] = owned;
    return BP_OK;
}

static void keys_free(keys *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
    *l = (keys){0};
}

/* "['a', 'b', ...]" into buf (cap bytes), cut with ", ...]" when it does not fit. */
static const char *keys_str(char *buf, size_t cap, const keys *l)
{
    size_t at = (size_t)snprintf(buf, cap, "[");
    for (size_t i = 0; i < l->n && at < cap; i++) {
        size_t need = strlen(l->s[i]) + 4 + 8;
        if (at + need >= cap) {
            snprintf(buf + at, cap - at, "%s... %zu more]", i ? ", " : "", l->n - i);
            return buf;
        }
        at += (size_t)snprintf(buf + at, cap - at, "%s'%s'", i ? ", " : "", l->s[i]);
    }
    if (at < cap) snprintf(buf + at, cap - at, "]");
    return buf;
}

static void warn_keys(const char *what, const keys *l)
{
    if (!l->n) return;
    char buf[1800];
    bp_warn("%s keys in state_dict: %s", what, keys_str(buf, sizeof buf, l));
}

static bool starts_with(const char *s, const char *prefix)
{
    return !prefix || strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The entry `key` of dtype dt and that shape against the model's value:
 * BP_ESHAPE or BP_EDTYPE naming both. */
static bp_status check_entry(const char *who, const char *key, const bp_tensor *model, bp_dtype dt, int ndim,
                             const int64_t *shape)
{
    char a[96], b[96];
    bool same = model->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = model->shape[d] == shape[d];
    if (!same)
        return bp_fail(BP_ESHAPE, "%s: \"%s\" has shape %s in the model but %s in the checkpoint", who, key,
                       bp_shape_str(a, sizeof a, model->ndim, model->shape), bp_shape_str(b, sizeof b, ndim, shape));
    if (model->dtype != dt)
        return bp_fail(BP_EDTYPE, "%s: \"%s\" has dtype %s in the model but %s in the checkpoint", who, key,
                       bp_dtype_name(model->dtype), bp_dtype_name(dt));
    return BP_OK;
}

static bp_status check_groups(const char *who, const bp_ckpt_vars *groups, size_t n_groups)
{
    if (!groups && n_groups) return bp_fail(BP_EINVAL, "%s: groups is NULL with n_groups %zu", who, n_groups);
    for (size_t g = 0; g < n_groups; g++)
        if (!groups[g].vars) return bp_fail(BP_EINVAL, "%s: groups[%zu].vars is NULL", who, g);
    return BP_OK;
}

/* skipped (may be NULL): unexpected keys a filtered read left out of flat;
 * they are taken over (moved into the unexpected list, first). */
static bp_status load_vars(const char *who, const bp_dict *flat, const bp_ckpt_vars *groups, size_t n_groups,
                           const bp_load_opts *opts, bp_load_result *result, keys *skipped)
{
    keys unexpected = {0};
    if (skipped) {
        unexpected = *skipped;
        *skipped = (keys){0};
    }
    if (result) memset(result, 0, sizeof *result);
    bp_status st0 = !flat ? bp_fail(BP_EINVAL, "%s: the dict is NULL", who) : check_groups(who, groups, n_groups);
    if (st0) {
        keys_free(&unexpected);
        return st0;
    }
    bp_load_opts o = opts ? *opts : bp_load_defaults();

    size_t total = 0;
    for (size_t g = 0; g < n_groups; g++) total += bp_collector_len(groups[g].vars);
    bp_var **dst = calloc(total ? total : 1, sizeof *dst);
    const bp_tensor **src = calloc(total ? total : 1, sizeof *src);
    keys missing = {0};
    size_t n = 0;
    bp_status st = dst && src ? BP_OK : bp_fail(BP_ENOMEM, "%s: out of memory", who);

    /* 1. every variable of every group against its entry */
    for (size_t g = 0; !st && g < n_groups; g++) {
        const bp_collector *c = groups[g].vars;
        for (size_t i = 0; !st && i < bp_collector_len(c); i++) {
            bp_var *v = bp_collector_var(c, i);
            if (!v) {
                st = bp_fail(BP_EINVAL, "%s: groups[%zu] holds nodes, not variables", who, g);
                break;
            }
            char *key = join(groups[g].prefix, bp_collector_key(c, i));
            if (!key) {
                st = bp_fail(BP_ENOMEM, "%s: out of memory", who);
                break;
            }
            const bp_tensor *t = bp_dict_get_tensor(flat, key);
            if (!t && bp_dict_get_dict(flat, key))
                st = bp_fail(BP_EFORMAT, "%s: \"%s\" must be a tensor, got a nested dict", who, key);
            else if (!t) {
                st = keys_push(&missing, key);
                key = NULL;
            } else if (!(st = check_entry(who, key, v->value, t->dtype, t->ndim, t->shape))) {
                dst[n] = v;
                src[n++] = t;
            }
            free(key);
        }
    }
    /* 2. entries under some group's prefix that match no variable */
    for (size_t i = 0; !st && i < bp_dict_len(flat); i++) {
        const char *key = bp_dict_key(flat, i);
        bool claimed = false, matched = false;
        for (size_t g = 0; g < n_groups && !matched; g++) {
            if (!starts_with(key, groups[g].prefix)) continue;
            claimed = true;
            matched = bp_collector_find(groups[g].vars, key + plen(groups[g].prefix)) >= 0;
        }
        if (claimed && !matched) st = keys_push(&unexpected, strdup(key));
    }
    if (!st && o.strict && (missing.n || unexpected.n)) {
        char ub[400], mb[400];
        st = bp_fail(BP_EFORMAT,
                     "%s: the checkpoint does not match the model (nothing was loaded): %zu unexpected keys %s, "
                     "%zu missing keys %s",
                     who, unexpected.n, keys_str(ub, sizeof ub, &unexpected), missing.n,
                     keys_str(mb, sizeof mb, &missing));
    }
    if (!st) {
        if (o.warn) {
            warn_keys("Unexpected", &unexpected);
            warn_keys("Missing", &missing);
        }
        /* Cannot fail: every pair was checked above. */
        for (size_t i = 0; i < n; i++) bp_tensor_copy(dst[i]->value, src[i]);
        if (result) {
            *result = (bp_load_result){missing.s, missing.n, unexpected.s, unexpected.n};
            missing = (keys){0};
            unexpected = (keys){0};
        }
    }
    keys_free(&missing);
    keys_free(&unexpected);
    free(dst);
    free(src);
    return st;
}

bp_status bp_checkpoint_load_vars(const bp_dict *flat, const bp_ckpt_vars *groups, size_t n_groups,
                                  const bp_load_opts *opts, bp_load_result *result)
{
    return load_vars("checkpoint_load_vars", flat, groups, n_groups, opts, result, NULL);
}

/* ----------------------------------------- reading only what a model takes */

/* The filter of a model-aware load: an entry claimed by a group (under its
 * prefix) is kept only as the variable it names, checked for shape and dtype
 * before its data is allocated, and skipped (recorded as unexpected) when it
 * names none; every other entry (under caller_prefix, or outside every prefix)
 * is the caller's, kept up to other_max bytes in all. So a load allocates at
 * most the model's own bytes plus other_max. */
typedef struct vars_filter {
    bp__ckpt_filter base; /* first: the readers see only this */
    const bp_ckpt_vars *groups;
    size_t n_groups;
    const char *caller_prefix; /* may be NULL */
    uint64_t other_max, other_kept;
    keys skipped;
} vars_filter;

static bp_status admit_for_vars(bp__ckpt_filter *f, const char *who, const char *key, bp_dtype dt, int ndim,
                                const int64_t *shape, bool *skip)
{
    vars_filter *vf = (vars_filter *)f;
    bool claimed = false;
    if (!vf->caller_prefix || !starts_with(key, vf->caller_prefix))
        for (size_t g = 0; g < vf->n_groups; g++) {
            if (!starts_with(key, vf->groups[g].prefix)) continue;
            claimed = true;
            long i = bp_collector_find(vf->groups[g].vars, key + plen(vf->groups[g].prefix));
            bp_var *v = i >= 0 ? bp_collector_var(vf->groups[g].vars, (size_t)i) : NULL;
            if (v) return check_entry(who, key, v->value, dt, ndim, shape);
        }
    if (claimed) {
        *skip = true;
        return keys_push(&vf->skipped, strdup(key));
    }
    int64_t numel = 1, bytes = 0;
    for (int d = 0; d < ndim; d++)
        if (!bp__mul_ok(numel, shape[d], &numel)) numel = INT64_MAX;
    if (!bp__mul_ok(numel, (int64_t)bp_dtype_size(dt), &bytes)) bytes = INT64_MAX;
    if ((uint64_t)bytes > vf->other_max - vf->other_kept) {
        char sh[96];
        return bp_fail(BP_EFORMAT,
                       "%s: \"%s\" (%s %s, %" PRId64 " bytes) is no variable of the model, and such entries may "
                       "hold %" PRIu64 " bytes in all (bp_load_opts.max_other_bytes; %" PRIu64 " taken)",
                       who, key, bp_dtype_name(dt), bp_shape_str(sh, sizeof sh, ndim, shape), bytes, vf->other_max,
                       vf->other_kept);
    }
    vf->other_kept += (uint64_t)bytes;
    return BP_OK;
}

/* Reads filename through a vars_filter and loads the groups from it. The
 * caller's entries go to *rest (NULL: dropped): those under caller_prefix,
 * without it, when given; else those outside every group's prefix. */
static bp_status load_file(const char *who, const char *filename, const bp_ckpt_vars *groups, size_t n_groups,
                           const char *caller_prefix, const bp_load_opts *opts, bp_load_result *result,
                           bp_dict **rest)
{
    BP_TRY(check_groups(who, groups, n_groups));
    bp_load_opts o = opts ? *opts : bp_load_defaults();
    vars_filter vf = {.base = {.admit = admit_for_vars, .max_bytes = UINT64_MAX},
                      .groups = groups,
                      .n_groups = n_groups,
                      .caller_prefix = caller_prefix,
                      .other_max = o.max_other_bytes ? o.max_other_bytes : BP_CKPT_MAX_OTHER_BYTES};
    bp_dict *flat = NULL, *other = NULL;
    bp_status st = read_file(who, filename, &vf.base, &flat);
    if (!st && caller_prefix) st = bp_checkpoint_take_prefix(flat, caller_prefix, &other);
    if (!st) st = load_vars(who, flat, groups, n_groups, opts, result, &vf.skipped);
    if (!st && !caller_prefix && rest) {
        st = bp_dict_new(&other);
        for (size_t i = 0; !st && i < bp_dict_len(flat); i++) {
            const char *key = bp_dict_key(flat, i);
            bool claimed = false;
            for (size_t g = 0; g < n_groups && !claimed; g++) claimed = starts_with(key, groups[g].prefix);
            if (!claimed) st = bp_dict_set_tensor(other, key, bp_dict_tensor(flat, i));
        }
        if (st && result) bp_load_result_clear(result);
    }
    if (!st && rest) {
        *rest = other;
        other = NULL;
    }
    keys_free(&vf.skipped);
    bp_dict_free(other);
    bp_dict_free(flat);
    return st;
}

bp_status bp_checkpoint_load_file(const char *filename, const bp_ckpt_vars *groups, size_t n_groups,
                                  const bp_load_opts *opts, bp_load_result *result, bp_dict **rest)
{
    char who[512];
    if (result) memset(result, 0, sizeof *result);
    if (rest) *rest = NULL;
    if (!filename) return bp_fail(BP_EINVAL, "checkpoint_load_file: filename is NULL");
    return load_file(who_of(who, sizeof who, "checkpoint_load_file", filename), filename, groups, n_groups, NULL,
                     opts, result, rest);
}

bp_status bp_checkpoint_take_prefix(bp_dict *flat, const char *prefix, bp_dict **out)
{
    if (!out) return bp_fail(BP_EINVAL, "checkpoint_take_prefix: out is NULL");
    *out = NULL;
    if (!flat || !prefix || !*prefix)
        return bp_fail(BP_EINVAL, "checkpoint_take_prefix: %s", !flat ? "flat is NULL" : "prefix is NULL or empty");
    for (size_t i = 0; i < bp_dict_len(flat); i++)
        if (starts_with(bp_dict_key(flat, i), prefix) && !bp_dict_tensor(flat, i))
            return bp_fail(BP_EINVAL, "checkpoint_take_prefix: entry \"%s\" is a nested dict", bp_dict_key(flat, i));
    bp_dict *d;
    BP_TRY(bp_dict_new(&d));
    size_t k = strlen(prefix);
    for (size_t i = 0; i < bp_dict_len(flat); i++) {
        const char *key = bp_dict_key(flat, i);
        if (!starts_with(key, prefix)) continue;
        bp_status st = bp_dict_set_tensor(d, key + k, bp_dict_tensor(flat, i));
        if (st) {
            bp_dict_free(d);
            return st;
        }
    }
    /* Now that the copy is complete, removing cannot leave a half-moved state. */
    for (size_t i = bp_dict_len(flat); i-- > 0;)
        if (starts_with(bp_dict_key(flat, i), prefix)) bp_dict_remove(flat, bp_dict_key(flat, i));
    *out = d;
    return BP_OK;
}

bp_status bp_checkpoint_put_rng(bp_dict *flat, const char *key, const bp_rng *rng)
{
    if (!flat || !key || !rng)
        return bp_fail(BP_EINVAL, "checkpoint_put_rng: %s is NULL", !flat ? "flat" : !key ? "key" : "rng");
    BP_TRY(bp__ckpt_check_key("checkpoint_put_rng", "key", key, BP_EINVAL));
    uint64_t s[4];
    bp_rng_get_state(rng, s);
    bp_tensor *t;
    BP_TRY(bp_tensor_from_data(&t, BP_INT64, 1, (const int64_t[]){4}, s));
    bp_status st = bp_dict_set_tensor(flat, key, t);
    bp_tensor_free(t);
    return st;
}

bp_status bp_checkpoint_get_rng(const bp_dict *flat, const char *key, bp_rng *rng)
{
    if (!flat || !key || !rng)
        return bp_fail(BP_EINVAL, "checkpoint_get_rng: %s is NULL", !flat ? "flat" : !key ? "key" : "rng");
    const bp_tensor *t = bp_dict_get_tensor(flat, key);
    if (!t) return bp_fail(BP_ENOTFOUND, "checkpoint_get_rng: no tensor \"%s\" in the checkpoint", key);
    char sh[96];
    if (t->dtype != BP_INT64 || !bp_tensor_has_shape(t, 1, (const int64_t[]){4}))
        return bp_fail(BP_EFORMAT, "checkpoint_get_rng: \"%s\" must be an int64 tensor of shape (4,), got %s %s", key,
                       bp_dtype_name(t->dtype), bp_shape_str(sh, sizeof sh, t->ndim, t->shape));
    uint64_t s[4];
    memcpy(s, t->data, sizeof s);
    if (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0)
        return bp_fail(BP_EFORMAT, "checkpoint_get_rng: \"%s\" is the all-zero state, which no generator has", key);
    return bp_rng_set_state(rng, s);
}

/* ------------------------------------------------ save_states / load_states */

/* vars().unique() of the whole tree, absolute keys. */
static bp_status tree_vars(bp_node *node, bp_collector **out)
{
    bp_collector *all;
    BP_TRY(bp_node_vars(node, NULL, &all));
    bp_status st = bp_collector_unique(all, out);
    bp_collector_free(all);
    return st;
}

bp_status bp_save_states(bp_node *node, const char *filename, const bp_collector *vars, const bp_dict *metadata)
{
    char who[512];
    if (!node || !filename) return bp_fail(BP_EINVAL, "save_states: %s is NULL", node ? "filename" : "node");
    who_of(who, sizeof who, "save_states", filename);
    bp_ckpt_format fmt;
    BP_TRY(bp_checkpoint_format(filename, &fmt));
    bp_collector *own = NULL;
    if (!vars) {
        BP_TRY(tree_vars(node, &own));
        vars = own;
    }
    bp_dict *flat;
    bp_status st = bp_dict_new(&flat);
    if (!st) st = bp_checkpoint_put_vars(flat, NULL, vars);
    for (size_t i = 0; !st && metadata && i < bp_dict_len(metadata); i++) {
        const char *k = bp_dict_key(metadata, i);
        if (!bp_dict_tensor(metadata, i)) {
            st = bp_fail(BP_EINVAL, "%s: metadata \"%s\" is a nested dict; metadata is a flat dict of tensors", who, k);
            break;
        }
        char *key = join(BP_CKPT_META_PREFIX, k);
        st = key ? bp_dict_set_tensor(flat, key, bp_dict_tensor(metadata, i))
                 : bp_fail(BP_ENOMEM, "%s: out of memory", who);
        free(key);
    }
    if (!st) st = bp__ckpt_check_dict(who, flat);
    if (!st) st = write_file(who, filename, fmt, flat);
    bp_dict_free(flat);
    bp_collector_free(own);
    return st;
}

bp_status bp_load_states(bp_node *node, const char *filename, const bp_collector *vars, const bp_load_opts *opts,
                         bp_load_result *result, bp_dict **metadata)
{
    char who[512];
    if (result) memset(result, 0, sizeof *result);
    if (metadata) *metadata = NULL;
    if (!node || !filename) return bp_fail(BP_EINVAL, "load_states: %s is NULL", node ? "filename" : "node");
    who_of(who, sizeof who, "load_states", filename);
    bp_collector *own = NULL;
    if (!vars) {
        BP_TRY(tree_vars(node, &own));
        vars = own;
    }
    bp_ckpt_vars g = {NULL, vars};
    bp_status st = load_file(who, filename, &g, 1, BP_CKPT_META_PREFIX, opts, result, metadata);
    bp_collector_free(own);
    return st;
}
