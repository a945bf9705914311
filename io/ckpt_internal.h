/* io/ckpt_internal.h — shared by checkpoint.c and the per-format files
 * ckpt_safetensors.c, ckpt_npz.c, ckpt_json.c; not installed.
 *
 * A format writer produces bytes into a sink (a file being saved atomically,
 * or a memory buffer); a format reader takes bytes from a source (a file or a
 * memory buffer) and returns a flat bp_dict after validating everything. The
 * memory forms are what the fuzz harnesses drive, so fuzzing covers the same
 * code that reads files. */
#ifndef BPC_CKPT_INTERNAL_H
#define BPC_CKPT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <bpc/checkpoint.h>

/* Every system call of an atomic save goes through these pointers, so tests
 * can inject faults (short writes, ENOSPC, EIO, a crash between steps). They
 * follow the POSIX calls' contracts (return -1 and set errno on failure). */
typedef struct bp__ckpt_io {
    int (*open)(const char *path, int flags, mode_t mode);
    ssize_t (*write)(int fd, const void *buf, size_t n);
    int (*fsync)(int fd);
    int (*close)(int fd);
    int (*rename)(const char *from, const char *to);
} bp__ckpt_io;

/* The hooks in use; tests replace members and call bp__ckpt_io_reset after. */
extern bp__ckpt_io bp__ckpt_io_hooks;
/* Restores the real system calls. */
void bp__ckpt_io_reset(void);

/* Where a writer's bytes go: a file descriptor (through a write buffer) or a
 * growable memory buffer (fd < 0). The first failure sticks in st; later
 * writes do nothing and return it. */
typedef struct bp__sink {
    int fd;
    unsigned char *buf;
    size_t len, cap;
    uint64_t flushed;   /* bytes handed to the file */
    bp_status st;
    const char *who;    /* e.g. save_states "ck.npz", for messages */
    const char *path;   /* the file being written (the temporary one), or NULL */
} bp__sink;

bp_status bp__sink_write(bp__sink *s, const void *p, size_t n);
/* Writes a formatted string (printf-style, up to 4 KiB). */
bp_status bp__sink_printf(bp__sink *s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Hands buffered bytes to the file (no-op for memory sinks). */
bp_status bp__sink_flush(bp__sink *s);

/* What a read keeps, decided for each entry from its key, dtype and shape as
 * the file declares them, before any of its data is allocated: the bound on a
 * hostile file's memory (an npz member may inflate 1032 times). */
typedef struct bp__ckpt_filter bp__ckpt_filter;
struct bp__ckpt_filter {
    /* NULL: keep every entry. Else BP_OK with *skip false (keep it) or true
     * (read and check it, checksums included, but keep nothing), or an error
     * (the read stops). */
    bp_status (*admit)(bp__ckpt_filter *f, const char *who, const char *key, bp_dtype dt, int ndim,
                       const int64_t *shape, bool *skip);
    uint64_t max_bytes; /* tensor bytes the kept entries may hold in all */
    uint64_t kept;      /* ... held so far */
};

/* Where a reader's bytes come from: memory (mem != NULL) or an open regular
 * file (fd, path). size is the whole length. */
typedef struct bp__source {
    const unsigned char *mem;
    int fd;
    const char *path;
    uint64_t size;
    const char *who;          /* e.g. load_states "ck.npz" */
    bp__ckpt_filter *filter;  /* NULL: keep everything */
} bp__source;

/* Reads exactly n bytes at offset off; BP_EFORMAT (truncated) past the end,
 * BP_EIO if the file cannot be read. */
bp_status bp__source_read(const bp__source *s, uint64_t off, void *dst, size_t n);

/* Asks src's filter about an entry before its tensor is allocated: *skip as
 * the filter says; a kept entry is counted against max_bytes (BP_EFORMAT past
 * it). The readers call it once per entry, in file order. */
bp_status bp__source_admit(const bp__source *src, const char *key, bp_dtype dt, int ndim, const int64_t *shape,
                           bool *skip);

/* The formats. Writers get a dict already checked by bp__ckpt_check_dict. */
bp_status bp__st_write(bp__sink *s, const bp_dict *flat);
bp_status bp__st_read(const bp__source *src, bp_dict **out);
bp_status bp__npz_write(bp__sink *s, const bp_dict *flat);
bp_status bp__npz_read(const bp__source *src, bp_dict **out);
bp_status bp__json_write(bp__sink *s, const bp_dict *flat);
bp_status bp__json_read(const bp__source *src, bp_dict **out);

/* BP_OK if key is a valid checkpoint key (see checkpoint.h), else `st` with a
 * message "<who>: <what> ...". */
bp_status bp__ckpt_check_key(const char *who, const char *what, const char *key, bp_status st);
/* Checks a dict to be written: tensors only, valid keys. */
bp_status bp__ckpt_check_dict(const char *who, const bp_dict *flat);

/* BP_EIO "<who>: not a regular file (it is a FIFO)..." naming the kind of mode. */
bp_status bp__not_regular(const char *who, mode_t mode);

/* CRC-32 (ISO-HDLC, zlib's crc32 and Python's zlib.crc32) of n bytes,
 * continuing from crc (start with 0). */
uint32_t bp__crc32(uint32_t crc, const void *p, size_t n);

/* Exactly 8 lower-case hex digits (as "%08x" prints a CRC) into *out. */
bool bp__crc_from_hex(const char *hex, uint32_t *out);

/* x * y into *out unless it overflows an int64 range (both >= 0). */
static inline int bp__mul_ok(int64_t x, int64_t y, int64_t *out)
{
    if (x < 0 || y < 0) return 0;
    if (y != 0 && x > INT64_MAX / y) return 0;
    *out = x * y;
    return 1;
}

#endif
