/* io/ckpt_npz.c — NumPy's .npz: a zip of .npy files, through libzip.
 *
 * Each entry "<key>" is the member "<key>.npy", stored (not compressed), as
 * np.savez writes it. A member is an NPY file:
 *
 *   "\x93NUMPY" major minor   magic and version (bpc writes 1.0)
 *   header length             uint16 LE (1.x) or uint32 LE (2.x, 3.x)
 *   header                    a Python dict literal, e.g.
 *                             {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 *                             padded with spaces and a '\n' so the data starts
 *                             at a multiple of 64 bytes
 *   data                      numel elements, C order unless fortran_order
 *
 * The reader takes np.savez and np.savez_compressed files (stored or deflate
 * members), NPY versions 1 to 3, little- or big-endian '<f4' '<f8' '<i4' '<i8'
 * '|u1', C or Fortran order. libzip checks the archive's consistency and each
 * member's CRC-32 (read to its end); bpc checks that the member's size is
 * exactly header + data, and bounds the size a deflate member may claim by
 * deflate's best ratio (1032:1) before allocating for it.
 *
 * The writer builds the archive in memory (libzip writes to a buffer source;
 * members are fragments pointing at the tensors, not copies), then streams it
 * to the sink: one extra copy of the state, which the atomic save needs anyway
 * to keep libzip's own file handling out of the way. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>
#include "ckpt_internal.h"

/* deflate cannot expand data more than ~1032 times. */
#define DEFLATE_MAX_RATIO 1032u
#define NPY_MAX_HEADER (1u << 20)
/* An NPY 1.0 preamble of up to 8 dims of 19 digits fits in 320 bytes. */
#define PRE_CAP 384

static const struct {
    const char *descr;   /* without the byte-order character */
    bp_dtype dt;
} npy_dtypes[] = {
    {"f4", BP_FLOAT32}, {"f8", BP_FLOAT64}, {"i4", BP_INT32}, {"i8", BP_INT64}, {"u1", BP_UINT8},
};

static const char *npy_descr(bp_dtype dt)
{
    switch (dt) {
    case BP_FLOAT32: return "<f4";
    case BP_FLOAT64: return "<f8";
    case BP_INT32: return "<i4";
    case BP_INT64: return "<i8";
    case BP_UINT8: return "|u1";
    }
    return NULL;
}

static const char *zip_msg(zip_error_t *ze) { return zip_error_strerror(ze); }

/* ------------------------------------------------------------------ write */

/* The NPY 1.0 preamble of t into buf (cap >= 256): magic, version, length,
 * header dict padded to 64 bytes. Returns its length. */
static size_t npy_preamble(const bp_tensor *t, char *buf, size_t cap)
{
    char dict[320];
    size_t k = (size_t)snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                                npy_descr(t->dtype));
    for (int d = 0; d < t->ndim; d++)
        k += (size_t)snprintf(dict + k, sizeof dict - k, d ? ", %" PRId64 : "%" PRId64, t->shape[d]);
    k += (size_t)snprintf(dict + k, sizeof dict - k, t->ndim == 1 ? ",), }" : "), }");
    size_t total = (10 + k + 1 + 63) / 64 * 64; /* + the '\n' */
    size_t hlen = total - 10;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (char)(hlen & 0xff);
    buf[9] = (char)(hlen >> 8);
    memcpy(buf + 10, dict, k);
    memset(buf + 10 + k, ' ', hlen - k - 1);
    buf[total - 1] = '\n';
    (void)cap;
    return total;
}

/* A fixed member time (1980-01-01 00:00 local, the zip epoch), so the same
 * state always gives the same bytes. */
static time_t zip_epoch(void)
{
    struct tm tm = {.tm_year = 80, .tm_mon = 0, .tm_mday = 1, .tm_hour = 12, .tm_isdst = -1};
    return mktime(&tm);
}

/* The smallest zip: only the end-of-central-directory record. */
static const unsigned char empty_zip[22] = {'P', 'K', 5, 6};

bp_status bp__npz_write(bp__sink *s, const bp_dict *flat)
{
    size_t n = bp_dict_len(flat);
    /* libzip deletes an archive closed without entries: write the empty one. */
    if (n == 0) return bp__sink_write(s, empty_zip, sizeof empty_zip);
    zip_error_t ze;
    zip_error_init(&ze);
    char *pre = malloc(n ? n * PRE_CAP : 1);
    char *name = malloc(BP_CKPT_MAX_KEY + 8);
    zip_source_t *arch = pre && name ? zip_source_buffer_create(NULL, 0, 0, &ze) : NULL;
    zip_t *za = NULL;
    bp_status st = BP_OK;
    if (!arch) {
        st = bp_fail(BP_ENOMEM, "%s: out of memory", s->who);
        goto done;
    }
    zip_source_keep(arch); /* still ours after zip_close, to read the bytes back */
    if (!(za = zip_open_from_source(arch, ZIP_TRUNCATE, &ze))) {
        st = bp_fail(BP_ENOMEM, "%s: libzip cannot start an archive: %s", s->who, zip_msg(&ze));
        goto done;
    }
    time_t mtime = zip_epoch();
    for (size_t i = 0; i < n; i++) {
        const bp_tensor *t = bp_dict_tensor(flat, i);
        if (!npy_descr(t->dtype)) {
            st = bp_fail(BP_EINVAL, "%s: \"%s\" has dtype %d, which .npy cannot hold", s->who, bp_dict_key(flat, i),
                         (int)t->dtype);
            goto done;
        }
        char *p = pre + i * PRE_CAP;
        size_t plen = npy_preamble(t, p, PRE_CAP);
        zip_buffer_fragment_t frag[2] = {{(zip_uint8_t *)p, plen}, {(zip_uint8_t *)t->data, bp_tensor_nbytes(t)}};
        zip_source_t *m = zip_source_buffer_fragment_create(frag, frag[1].length ? 2 : 1, 0, &ze);
        snprintf(name, BP_CKPT_MAX_KEY + 8, "%s.npy", bp_dict_key(flat, i));
        zip_int64_t idx = m ? zip_file_add(za, name, m, ZIP_FL_ENC_UTF_8) : -1;
        if (idx < 0) {
            if (m) zip_source_free(m);
            st = bp_fail(BP_ENOMEM, "%s: libzip cannot add \"%s\": %s", s->who, name,
                         m ? zip_strerror(za) : zip_msg(&ze));
            goto done;
        }
        if (zip_set_file_compression(za, (zip_uint64_t)idx, ZIP_CM_STORE, 0) ||
            zip_file_set_mtime(za, (zip_uint64_t)idx, mtime, 0)) {
            st = bp_fail(BP_EINVAL, "%s: libzip: %s", s->who, zip_strerror(za));
            goto done;
        }
    }
    if (zip_close(za) != 0) {
        st = bp_fail(BP_ENOMEM, "%s: libzip cannot finish the archive: %s", s->who, zip_strerror(za));
        goto done;
    }
    za = NULL;
    if (zip_source_open(arch) != 0) {
        st = bp_fail(BP_ENOMEM, "%s: libzip: %s", s->who, zip_msg(zip_source_error(arch)));
        goto done;
    }
    enum { CHUNK = 1 << 20 };
    unsigned char *chunk = malloc(CHUNK);
    if (!chunk) st = bp_fail(BP_ENOMEM, "%s: out of memory", s->who);
    while (!st) {
        zip_int64_t k = zip_source_read(arch, chunk, CHUNK);
        if (k < 0) st = bp_fail(BP_ENOMEM, "%s: libzip: %s", s->who, zip_msg(zip_source_error(arch)));
        if (k <= 0) break;
        st = bp__sink_write(s, chunk, (size_t)k);
    }
    free(chunk);
    zip_source_close(arch);
done:
    if (za) zip_discard(za);
    if (arch) zip_source_free(arch);
    zip_error_fini(&ze);
    free(pre);
    free(name);
    return st;
}

/* ------------------------------------------------------------- NPY header */

typedef struct npy_hdr {
    bp_dtype dt;
    bool big_endian;
    bool fortran;
    int ndim;
    int64_t shape[BP_MAX_DIMS];
} npy_hdr;

typedef struct cursor {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static bool eat(cursor *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* A quoted Python string without escapes into buf (cap bytes). */
static bool py_string(cursor *c, char *buf, size_t cap)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return false;
    char q = *c->p++;
    size_t k = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || k + 1 >= cap) return false;
        buf[k++] = *c->p++;
    }
    if (c->p >= c->end) return false;
    c->p++;
    buf[k] = '\0';
    return true;
}

static bool py_word(cursor *c, const char *w)
{
    skip_ws(c);
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0) return false;
    c->p += n;
    return true;
}

/* A non-negative integer (Python 2 files may end it with 'L'). */
static bool py_int(cursor *c, int64_t *out)
{
    skip_ws(c);
    if (c->p >= c->end || *c->p < '0' || *c->p > '9') return false;
    int64_t v = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        int dgt = *c->p++ - '0';
        if (v > (INT64_MAX - dgt) / 10) return false;
        v = v * 10 + dgt;
    }
    if (c->p < c->end && *c->p == 'L') c->p++;
    *out = v;
    return true;
}

/* Parses the header dict; *why gets a short reason on failure. */
static bool parse_npy_header(const char *text, size_t len, npy_hdr *h, const char **why)
{
    cursor c = {text, text + len};
    bool have_descr = false, have_fortran = false, have_shape = false;
    char key[32], descr[32];
    *why = "expected a dict";
    if (!eat(&c, '{')) return false;
    for (;;) {
        if (eat(&c, '}')) break;
        *why = "expected a quoted key";
        if (!py_string(&c, key, sizeof key)) return false;
        *why = "expected ':'";
        if (!eat(&c, ':')) return false;
        if (strcmp(key, "descr") == 0 && !have_descr) {
            *why = "descr must be a string such as '<f4'";
            if (!py_string(&c, descr, sizeof descr)) return false;
            have_descr = true;
        } else if (strcmp(key, "fortran_order") == 0 && !have_fortran) {
            if (py_word(&c, "True"))
                h->fortran = true;
            else if (py_word(&c, "False"))
                h->fortran = false;
            else {
                *why = "fortran_order must be True or False";
                return false;
            }
            have_fortran = true;
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            *why = "shape must be a tuple of at most 8 integers >= 0";
            if (!eat(&c, '(')) return false;
            h->ndim = 0;
            while (!eat(&c, ')')) {
                if (h->ndim == BP_MAX_DIMS || !py_int(&c, &h->shape[h->ndim])) return false;
                h->ndim++;
                if (!eat(&c, ',')) {
                    if (!eat(&c, ')')) return false;
                    break;
                }
            }
            have_shape = true;
        } else {
            *why = "unknown or repeated key (expected descr, fortran_order, shape)";
            return false;
        }
        if (!eat(&c, ',')) {
            *why = "expected ',' or '}'";
            if (!eat(&c, '}')) return false;
            break;
        }
    }
    skip_ws(&c);
    *why = "text after the dict";
    if (c.p != c.end) return false;
    *why = "the dict lacks descr, fortran_order or shape";
    if (!have_descr || !have_fortran || !have_shape) return false;
    *why = "unknown dtype (bpc reads '<f4', '<f8', '<i4', '<i8', '|u1', either byte order)";
    char bo = descr[0];
    if (bo != '<' && bo != '>' && bo != '|' && bo != '=') return false;
    for (size_t i = 0; i < sizeof npy_dtypes / sizeof npy_dtypes[0]; i++) {
        if (strcmp(descr + 1, npy_dtypes[i].descr) != 0) continue;
        h->dt = npy_dtypes[i].dt;
        /* '|' (not applicable) is only meaningful for one-byte types. */
        if (bo == '|' && bp_dtype_size(h->dt) != 1) return false;
        h->big_endian = bo == '>' && bp_dtype_size(h->dt) > 1;
        return true;
    }
    return false;
}

static void byteswap(void *data, int64_t numel, size_t esize)
{
    unsigned char *p = data;
    for (int64_t i = 0; i < numel; i++, p += esize)
        for (size_t a = 0, b = esize - 1; a < b; a++, b--) {
            unsigned char x = p[a];
            p[a] = p[b];
            p[b] = x;
        }
}

/* Fortran-ordered src (first index fastest) into C-ordered dst. */
static void fortran_to_c(void *dst, const void *src, const npy_hdr *h, size_t esize, int64_t numel)
{
    int64_t idx[BP_MAX_DIMS] = {0}, cstride[BP_MAX_DIMS];
    int64_t s = 1;
    for (int d = h->ndim - 1; d >= 0; d--) {
        cstride[d] = s;
        s *= h->shape[d];
    }
    const unsigned char *in = src;
    unsigned char *out = dst;
    int64_t c = 0;
    for (int64_t f = 0; f < numel; f++) {
        memcpy(out + (size_t)c * esize, in + (size_t)f * esize, esize);
        for (int d = 0; d < h->ndim; d++) {
            c += cstride[d];
            if (++idx[d] < h->shape[d]) break;
            c -= cstride[d] * idx[d];
            idx[d] = 0;
        }
    }
}

/* ------------------------------------------------------------------- read */

/* Reads exactly n bytes of an open member. */
/* Where NPY bytes come from: a zip member (zf) or a plain .npy file (fp). */
typedef struct npy_stream {
    zip_file_t *zf;
    FILE *fp;
} npy_stream;

static bp_status member_read(const char *who, const char *name, const npy_stream *in, void *dst, uint64_t n)
{
    unsigned char *p = dst;
    while (n > 0) {
        if (in->fp) {
            size_t k = fread(p, 1, n, in->fp);
            if (k == 0)
                return bp_fail(ferror(in->fp) ? BP_EIO : BP_EFORMAT, "%s: \"%s\" is %s", who, name,
                               ferror(in->fp) ? "unreadable" : "truncated");
            p += k;
            n -= (uint64_t)k;
            continue;
        }
        zip_int64_t k = zip_fread(in->zf, p, n);
        if (k < 0) return bp_fail(BP_EFORMAT, "%s: member \"%s\": %s", who, name, zip_file_strerror(in->zf));
        if (k == 0) return bp_fail(BP_EFORMAT, "%s: member \"%s\" is truncated", who, name);
        p += k;
        n -= (uint64_t)k;
    }
    return BP_OK;
}

/* Reads and drops n bytes of a stream, through a small buffer. */
static bp_status member_drain(const char *who, const char *name, const npy_stream *in, uint64_t n)
{
    unsigned char chunk[1 << 14];
    for (uint64_t k; n > 0; n -= k) {
        k = n < sizeof chunk ? n : sizeof chunk;
        BP_TRY(member_read(who, name, in, chunk, k));
    }
    return BP_OK;
}

/* One NPY stream of `size` bytes into a new tensor *out (all its bytes are
 * read). With src, its filter sees the entry `key` once the header is read and
 * before the data is allocated: a skipped entry's data is read and dropped,
 * and *out stays NULL. */
static bp_status read_npy(const char *who, const char *name, const npy_stream *in, uint64_t size,
                          const bp__source *src, const char *key, bp_tensor **out)
{
    *out = NULL;
    unsigned char pre[12];
    char *text = NULL;
    bp_tensor *t = NULL, *tmp = NULL;
    npy_hdr h = {0};
    const char *why;
    bp_status st = size < 10 ? bp_fail(BP_EFORMAT, "%s: member \"%s\" has %" PRIu64 " bytes, too short for NPY", who,
                                       name, size)
                             : member_read(who, name, in, pre, 10);
    if (!st && memcmp(pre, "\x93NUMPY", 6) != 0)
        st = bp_fail(BP_EFORMAT, "%s: member \"%s\" is not an NPY file (bad magic)", who, name);
    if (!st && (pre[6] < 1 || pre[6] > 3))
        st = bp_fail(BP_EFORMAT, "%s: member \"%s\": NPY version %d.%d, bpc reads 1.0 to 3.0", who, name, pre[6],
                     pre[7]);
    uint64_t hlen = 0, start = 10;
    if (!st && pre[6] == 1) hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
    if (!st && pre[6] > 1) {
        start = 12;
        st = size < 12 ? bp_fail(BP_EFORMAT, "%s: member \"%s\" is truncated", who, name)
                       : member_read(who, name, in, pre + 10, 2);
        for (int b = 11; !st && b >= 8; b--) hlen = hlen << 8 | pre[b];
    }
    if (!st && (hlen > NPY_MAX_HEADER || hlen > size - start))
        st = bp_fail(BP_EFORMAT, "%s: member \"%s\": header length %" PRIu64 " past the member's %" PRIu64 " bytes",
                     who, name, hlen, size);
    if (!st && !(text = malloc(hlen ? (size_t)hlen : 1))) st = bp_fail(BP_ENOMEM, "%s: out of memory", who);
    if (!st) st = member_read(who, name, in, text, hlen);
    if (!st && !parse_npy_header(text, (size_t)hlen, &h, &why))
        st = bp_fail(BP_EFORMAT, "%s: member \"%s\": bad NPY header (%s): \"%.*s\"", who, name, why,
                     (int)(hlen > 120 ? 120 : hlen), text);
    int64_t numel = 1, bytes = 0;
    for (int d = 0; !st && d < h.ndim; d++)
        if (!bp__mul_ok(numel, h.shape[d], &numel))
            st = bp_fail(BP_EFORMAT, "%s: member \"%s\": the shape's element count overflows", who, name);
    if (!st && (!bp__mul_ok(numel, (int64_t)bp_dtype_size(h.dt), &bytes) || (uint64_t)bytes != size - start - hlen)) {
        char sh[96];
        st = bp_fail(BP_EFORMAT,
                     "%s: member \"%s\": shape %s of %s needs %" PRId64 " data bytes, the member has %" PRIu64,
                     who, name, bp_shape_str(sh, sizeof sh, h.ndim, h.shape), bp_dtype_name(h.dt), bytes,
                     size - start - hlen);
    }
    bool skip = false;
    if (!st && src) st = bp__source_admit(src, key, h.dt, h.ndim, h.shape, &skip);
    if (!st && skip) {
        free(text);
        return member_drain(who, name, in, (uint64_t)bytes);
    }
    if (!st) st = bp_tensor_new(&t, h.dt, h.ndim, h.shape);
    if (!st && h.fortran && h.ndim > 1) st = bp_tensor_new(&tmp, h.dt, h.ndim, h.shape);
    if (!st) st = member_read(who, name, in, tmp ? tmp->data : t->data, (uint64_t)bytes);
    free(text);
    if (!st) {
        if (h.big_endian) byteswap(tmp ? tmp->data : t->data, numel, bp_dtype_size(h.dt));
        if (tmp) fortran_to_c(t->data, tmp->data, &h, bp_dtype_size(h.dt), numel);
    }
    bp_tensor_free(tmp);
    if (st) {
        bp_tensor_free(t);
        return st;
    }
    *out = t;
    return BP_OK;
}

/* One member into a new tensor *out. */
static bp_status read_member(const bp__source *src, zip_t *za, zip_uint64_t i, const char *name, const char *key,
                             uint64_t size, bp_tensor **out)
{
    *out = NULL;
    const char *who = src->who;
    zip_file_t *zf = zip_fopen_index(za, i, 0);
    if (!zf) return bp_fail(BP_EFORMAT, "%s: member \"%s\" cannot be opened: %s", who, name, zip_strerror(za));
    npy_stream in = {zf, NULL};
    bp_status st = read_npy(who, name, &in, size, src, key, out);
    /* Reading to the end makes libzip check the member's CRC-32. */
    unsigned char extra;
    zip_int64_t k = st ? 0 : zip_fread(zf, &extra, 1);
    if (!st && k < 0) st = bp_fail(BP_EFORMAT, "%s: member \"%s\": %s", who, name, zip_file_strerror(zf));
    if (!st && k > 0) st = bp_fail(BP_EFORMAT, "%s: member \"%s\" is longer than its directory entry says", who, name);
    zip_fclose(zf);
    if (st) {
        bp_tensor_free(*out);
        *out = NULL;
    }
    return st;
}

bp_status bp_npy_read(const char *path, bp_tensor **out)
{
    if (!out) return bp_fail(BP_EINVAL, "npy_read: out is NULL");
    *out = NULL;
    if (!path) return bp_fail(BP_EINVAL, "npy_read: path is NULL");
    char who[512];
    snprintf(who, sizeof who, "npy_read \"%s\"", path);
    /* O_NONBLOCK so that a FIFO is refused below instead of waiting for a writer. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return bp_fail(BP_EIO, "npy_read: cannot open \"%s\": %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        bp_status st = fstat(fd, &sb) != 0 ? bp_fail(BP_EIO, "%s: cannot stat: %s", who, strerror(errno))
                                           : bp__not_regular(who, sb.st_mode);
        close(fd);
        return st;
    }
    FILE *fp = fdopen(fd, "rb");
    if (!fp) {
        close(fd);
        return bp_fail(BP_ENOMEM, "%s: cannot open a stream: %s", who, strerror(errno));
    }
    npy_stream in = {NULL, fp};
    bp_status st = read_npy("npy_read", path, &in, (uint64_t)sb.st_size, NULL, NULL, out);
    fclose(fp);
    return st;
}

static bp_status read_archive(const bp__source *src, zip_t *za, bp_dict **out)
{
    const char *who = src->who;
    bp_dict *d;
    BP_TRY(bp_dict_new(&d));
    bp_status st = BP_OK;
    zip_int64_t n = zip_get_num_entries(za, 0);
    char key[BP_CKPT_MAX_KEY + 8];
    for (zip_int64_t i = 0; !st && i < n; i++) {
        zip_stat_t zs;
        zip_stat_init(&zs);
        if (zip_stat_index(za, (zip_uint64_t)i, ZIP_FL_ENC_RAW, &zs) != 0) {
            st = bp_fail(BP_EFORMAT, "%s: member %" PRId64 ": %s", who, (int64_t)i, zip_strerror(za));
            break;
        }
        const char *name = zs.name ? zs.name : "";
        size_t nl = strlen(name);
        if (nl < 5 || strcmp(name + nl - 4, ".npy") != 0) {
            st = bp_fail(BP_EFORMAT, "%s: member \"%.64s\" is not a .npy array", who, name);
            break;
        }
        if (nl - 4 > BP_CKPT_MAX_KEY) {
            st = bp_fail(BP_EFORMAT, "%s: member \"%.40s...\" has a key of %zu characters (at most %d)", who, name,
                         nl - 4, BP_CKPT_MAX_KEY);
            break;
        }
        memcpy(key, name, nl - 4);
        key[nl - 4] = '\0';
        if ((st = bp__ckpt_check_key(who, "key", key, BP_EFORMAT))) break;
        if (bp_dict_get_tensor(d, key)) {
            st = bp_fail(BP_EFORMAT, "%s: duplicate key \"%s\" (two members \"%s\")", who, key, name);
            break;
        }
        if (!(zs.valid & ZIP_STAT_SIZE) || !(zs.valid & ZIP_STAT_COMP_SIZE) || !(zs.valid & ZIP_STAT_COMP_METHOD)) {
            st = bp_fail(BP_EFORMAT, "%s: member \"%s\" has no size in the directory", who, name);
            break;
        }
        if ((zs.valid & ZIP_STAT_ENCRYPTION_METHOD) && zs.encryption_method != ZIP_EM_NONE) {
            st = bp_fail(BP_EFORMAT, "%s: member \"%s\" is encrypted", who, name);
            break;
        }
        if (zs.comp_method == ZIP_CM_STORE) {
            if (zs.size != zs.comp_size)
                st = bp_fail(BP_EFORMAT,
                             "%s: stored member \"%s\" has size %" PRIu64 " but %" PRIu64 " bytes in the file", who,
                             name, (uint64_t)zs.size, (uint64_t)zs.comp_size);
        } else if (zs.comp_method == ZIP_CM_DEFLATE) {
            if (zs.size / DEFLATE_MAX_RATIO > zs.comp_size + 1)
                st = bp_fail(BP_EFORMAT, "%s: member \"%s\" claims %" PRIu64 " bytes from %" PRIu64
                                         " compressed, more than deflate can give",
                             who, name, (uint64_t)zs.size, (uint64_t)zs.comp_size);
        } else {
            st = bp_fail(BP_EFORMAT, "%s: member \"%s\" uses compression method %d (bpc reads stored and deflate)",
                         who, name, (int)zs.comp_method);
        }
        bp_tensor *t = NULL;
        if (!st) st = read_member(src, za, (zip_uint64_t)i, name, key, zs.size, &t);
        if (!st && t) st = bp_dict_set_tensor(d, key, t);
        bp_tensor_free(t);
    }
    if (st) {
        bp_dict_free(d);
        return st;
    }
    *out = d;
    return BP_OK;
}

bp_status bp__npz_read(const bp__source *src, bp_dict **out)
{
    *out = NULL;
    /* libzip takes an empty file for an empty archive; NumPy does not. */
    if (src->size < sizeof empty_zip)
        return bp_fail(BP_EFORMAT, "%s: truncated: %" PRIu64 " bytes, a zip archive has at least %zu", src->who,
                       src->size, sizeof empty_zip);
    zip_error_t ze;
    zip_error_init(&ze);
    zip_t *za = NULL;
    if (src->mem) {
        zip_source_t *zs = zip_source_buffer_create(src->mem, src->size, 0, &ze);
        if (zs && !(za = zip_open_from_source(zs, ZIP_RDONLY | ZIP_CHECKCONS, &ze))) zip_source_free(zs);
    } else {
        /* Through the descriptor already checked to be a regular file, never by
         * the path again (which could name something else by now). zip_fdopen
         * closes the descriptor it is given on success only. */
        int code = 0, fd = dup(src->fd);
        if (fd < 0) {
            bp_status st = bp_fail(BP_EIO, "%s: cannot read the file: %s", src->who, strerror(errno));
            zip_error_fini(&ze);
            return st;
        }
        za = zip_fdopen(fd, ZIP_RDONLY | ZIP_CHECKCONS, &code);
        if (!za) {
            close(fd);
            zip_error_init_with_code(&ze, code);
        }
    }
    if (!za) {
        int code = zip_error_code_zip(&ze);
        /* The file was opened and sized already: what libzip cannot read is corrupt. */
        bp_status kind = code == ZIP_ER_MEMORY ? BP_ENOMEM : BP_EFORMAT;
        bp_status st = code == ZIP_ER_EXISTS
                           ? bp_fail(BP_EFORMAT, "%s: duplicate keys: two members of the archive have the same name",
                                     src->who)
                           : bp_fail(kind, "%s: not a valid .npz (zip) archive: %s", src->who, zip_msg(&ze));
        zip_error_fini(&ze);
        return st;
    }
    zip_error_fini(&ze);
    bp_status st = read_archive(src, za, out);
    zip_discard(za);
    return st;
}
