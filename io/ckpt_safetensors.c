/* io/ckpt_safetensors.c — the safetensors layout.
 *
 *   bytes 0..7      N, the header length (uint64, little-endian)
 *   bytes 8..8+N    a JSON object: {"__metadata__": {str: str}, key: {"dtype":
 *                   "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...},
 *                   padded with spaces so the data starts 8-byte aligned
 *   bytes 8+N..     the data section: each tensor's raw little-endian bytes at
 *                   [begin, end) relative to its start
 *
 * bpc writes tensors in dict order, back to back, and puts {"format": "bpc",
 * "version": "1", "data_crc32": "<8 hex digits>"} in __metadata__: the CRC-32
 * of the whole data section. The reader takes any valid safetensors file of
 * the five dtypes bpc has, checks data_crc32 whenever __metadata__ holds one
 * (whatever its "format" says; "format": "bpc" requires it), so files of
 * other writers, which have none, load unchecked; and it rejects, before allocating a tensor: a header length past the
 * file, invalid JSON, duplicate keys, unknown dtypes or fields, a shape whose
 * byte size differs from its offsets, offsets out of range, overlapping, or
 * leaving bytes of the data section to no tensor (as the reference
 * implementation does). The data is then read straight into the tensors. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "ckpt_internal.h"

/* The reference implementation refuses headers over 100 MB; so does bpc. */
#define ST_MAX_HEADER (100u << 20)

static const struct {
    const char *name;
    bp_dtype dt;
} st_dtypes[] = {
    {"F32", BP_FLOAT32}, {"F64", BP_FLOAT64}, {"I32", BP_INT32}, {"I64", BP_INT64}, {"U8", BP_UINT8},
};

static const char *st_dtype_name(bp_dtype dt)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (st_dtypes[i].dt == dt) return st_dtypes[i].name;
    return NULL;
}

/* ------------------------------------------------------------------ write */

bp_status bp__st_write(bp__sink *s, const bp_dict *flat)
{
    size_t n = bp_dict_len(flat);
    uint32_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        const bp_tensor *t = bp_dict_tensor(flat, i);
        crc = bp__crc32(crc, t->data, bp_tensor_nbytes(t));
    }
    char crc_hex[16];
    snprintf(crc_hex, sizeof crc_hex, "%08" PRIx32, crc);
    char ver[16];
    snprintf(ver, sizeof ver, "%d", BP_CKPT_VERSION);

    json_t *hdr = json_object(), *meta = json_pack("{s:s, s:s, s:s}", "format", "bpc", "version", ver,
                                                   "data_crc32", crc_hex);
    bp_status st = hdr && meta && !json_object_set_new(hdr, "__metadata__", meta)
                       ? BP_OK
                       : bp_fail(BP_ENOMEM, "%s: out of memory", s->who);
    if (!hdr || st) json_decref(meta);
    uint64_t off = 0;
    for (size_t i = 0; !st && i < n; i++) {
        const bp_tensor *t = bp_dict_tensor(flat, i);
        const char *dn = st_dtype_name(t->dtype);
        if (!dn) {
            st = bp_fail(BP_EINVAL, "%s: \"%s\" has dtype %d, which safetensors cannot hold", s->who,
                         bp_dict_key(flat, i), (int)t->dtype);
            break;
        }
        json_t *shape = json_array();
        for (int d = 0; shape && d < t->ndim; d++)
            if (json_array_append_new(shape, json_integer((json_int_t)t->shape[d]))) {
                json_decref(shape);
                shape = NULL;
            }
        uint64_t end = off + bp_tensor_nbytes(t);
        json_t *e = shape ? json_pack("{s:s, s:o, s:[I, I]}", "dtype", dn, "shape", shape, "data_offsets",
                                      (json_int_t)off, (json_int_t)end)
                          : NULL;
        if (!e || json_object_set_new(hdr, bp_dict_key(flat, i), e))
            st = bp_fail(BP_ENOMEM, "%s: out of memory", s->who);
        off = end;
    }
    char *text = st ? NULL : json_dumps(hdr, JSON_COMPACT);
    json_decref(hdr);
    if (st) return st;
    if (!text) return bp_fail(BP_ENOMEM, "%s: out of memory", s->who);

    /* Pad with spaces so the data section starts at a multiple of 8. */
    size_t len = strlen(text), padded = (len + 7) & ~(size_t)7;
    unsigned char le[8];
    for (int b = 0; b < 8; b++) le[b] = (unsigned char)((uint64_t)padded >> (8 * b));
    bp__sink_write(s, le, 8);
    bp__sink_write(s, text, len);
    bp__sink_write(s, "        ", padded - len);
    free(text);
    for (size_t i = 0; i < n; i++) {
        const bp_tensor *t = bp_dict_tensor(flat, i);
        bp__sink_write(s, t->data, bp_tensor_nbytes(t));
    }
    return s->st;
}

/* ------------------------------------------------------------------- read */

typedef struct st_entry {
    const char *key;   /* borrowed from the JSON tree */
    bp_dtype dt;
    int ndim;
    int64_t shape[BP_MAX_DIMS];
    uint64_t begin, end;
    bool skip;      /* read for the checksum, not kept (the filter's word) */
    bp_tensor *t;
} st_entry;

static int by_offset(const void *a, const void *b)
{
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* A JSON integer >= 0 into *out. */
static bool json_u64(const json_t *j, uint64_t *out)
{
    if (!json_is_integer(j) || json_integer_value(j) < 0) return false;
    *out = (uint64_t)json_integer_value(j);
    return true;
}

/* Checks one header entry and fills e (no allocation). */
static bp_status parse_entry(const char *who, const char *key, const json_t *v, uint64_t data_size, st_entry *e)
{
    BP_TRY(bp__ckpt_check_key(who, "key", key, BP_EFORMAT));
    e->key = key;
    if (!json_is_object(v)) return bp_fail(BP_EFORMAT, "%s: \"%s\" must be a JSON object", who, key);
    const char *field;
    json_t *fv;
    json_object_foreach((json_t *)v, field, fv) {
        if (strcmp(field, "dtype") && strcmp(field, "shape") && strcmp(field, "data_offsets"))
            return bp_fail(BP_EFORMAT, "%s: \"%s\" has the unknown field \"%s\" (expected dtype, shape, data_offsets)",
                           who, key, field);
    }
    const json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
                 *jo = json_object_get(v, "data_offsets");
    if (!jd || !js || !jo)
        return bp_fail(BP_EFORMAT, "%s: \"%s\" lacks \"%s\"", who, key, !jd ? "dtype" : !js ? "shape" : "data_offsets");
    if (!json_is_string(jd)) return bp_fail(BP_EFORMAT, "%s: \"%s\": dtype must be a string", who, key);
    const char *dn = json_string_value(jd);
    size_t k = 0, nd = sizeof st_dtypes / sizeof st_dtypes[0];
    while (k < nd && strcmp(st_dtypes[k].name, dn) != 0) k++;
    if (k == nd)
        return bp_fail(BP_EFORMAT, "%s: \"%s\" has the unknown dtype \"%.16s\" (bpc reads F32, F64, I32, I64, U8)", who,
                       key, dn);
    e->dt = st_dtypes[k].dt;
    if (!json_is_array(js) || json_array_size(js) > BP_MAX_DIMS)
        return bp_fail(BP_EFORMAT, "%s: \"%s\": shape must be an array of at most %d integers", who, key, BP_MAX_DIMS);
    e->ndim = (int)json_array_size(js);
    int64_t numel = 1;
    for (int d = 0; d < e->ndim; d++) {
        uint64_t dim;
        if (!json_u64(json_array_get(js, (size_t)d), &dim) || dim > (uint64_t)INT64_MAX)
            return bp_fail(BP_EFORMAT, "%s: \"%s\": shape[%d] must be an integer >= 0", who, key, d);
        e->shape[d] = (int64_t)dim;
        if (!bp__mul_ok(numel, (int64_t)dim, &numel))
            return bp_fail(BP_EFORMAT, "%s: \"%s\": the shape's element count overflows", who, key);
    }
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_u64(json_array_get(jo, 0), &e->begin) ||
        !json_u64(json_array_get(jo, 1), &e->end))
        return bp_fail(BP_EFORMAT, "%s: \"%s\": data_offsets must be [begin, end], two integers >= 0", who, key);
    if (e->begin > e->end || e->end > data_size)
        return bp_fail(BP_EFORMAT,
                       "%s: \"%s\": data_offsets [%" PRIu64 ", %" PRIu64 "] out of range (the data section has %" PRIu64
                       " bytes)",
                       who, key, e->begin, e->end, data_size);
    int64_t bytes;
    if (!bp__mul_ok(numel, (int64_t)bp_dtype_size(e->dt), &bytes) || (uint64_t)bytes != e->end - e->begin) {
        char sh[96];
        return bp_fail(BP_EFORMAT, "%s: \"%s\": shape %s of %s needs %" PRId64 " bytes but data_offsets span %" PRIu64,
                       who, key, bp_shape_str(sh, sizeof sh, e->ndim, e->shape), dn, numel,
                       e->end - e->begin);
    }
    return BP_OK;
}

/* Checks __metadata__ (any str -> str map) and takes its checksum. The rule,
 * so that no edit of the file can switch the check off: data_crc32 is checked
 * whenever it is there, whatever "format" says, and a file whose format is
 * "bpc" must have it. Only a file that names neither (another writer's) loads
 * unchecked. *crc_given tells whether a checksum is to be checked. */
static bp_status parse_meta(const char *who, const json_t *m, bool *crc_given, uint32_t *crc)
{
    *crc_given = false;
    if (!json_is_object(m)) return bp_fail(BP_EFORMAT, "%s: __metadata__ must be a JSON object", who);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)m, k, v) {
        if (!json_is_string(v))
            return bp_fail(BP_EFORMAT, "%s: __metadata__ \"%.64s\" must be a string", who, k);
    }
    const char *fmt = json_string_value(json_object_get(m, "format"));
    const char *hex = json_string_value(json_object_get(m, "data_crc32"));
    if (fmt && strcmp(fmt, "bpc") == 0) {
        const char *ver = json_string_value(json_object_get(m, "version"));
        char want[16];
        snprintf(want, sizeof want, "%d", BP_CKPT_VERSION);
        if (!ver || strcmp(ver, want) != 0)
            return bp_fail(BP_EFORMAT, "%s: bpc checkpoint version \"%.16s\", this build reads version %d", who,
                           ver ? ver : "(none)", BP_CKPT_VERSION);
        if (!hex) return bp_fail(BP_EFORMAT, "%s: a bpc checkpoint without data_crc32 in __metadata__", who);
    }
    if (!hex) return BP_OK;
    if (!bp__crc_from_hex(hex, crc))
        return bp_fail(BP_EFORMAT, "%s: data_crc32 \"%.16s\" must be 8 lower-case hex digits", who, hex);
    *crc_given = true;
    return BP_OK;
}

bp_status bp__st_read(const bp__source *src, bp_dict **out)
{
    const char *who = src->who;
    *out = NULL;
    unsigned char le[8];
    if (src->size < 8)
        return bp_fail(BP_EFORMAT, "%s: truncated: %" PRIu64 " bytes, a safetensors file starts with an 8-byte header "
                                   "length", who, src->size);
    BP_TRY(bp__source_read(src, 0, le, 8));
    uint64_t hlen = 0;
    for (int b = 7; b >= 0; b--) hlen = hlen << 8 | le[b];
    if (hlen > src->size - 8)
        return bp_fail(BP_EFORMAT, "%s: bad header length %" PRIu64 ": only %" PRIu64 " bytes follow it (truncated?)",
                       who, hlen, src->size - 8);
    if (hlen < 2 || hlen > ST_MAX_HEADER)
        return bp_fail(BP_EFORMAT, "%s: bad header length %" PRIu64 " (expected 2 to %u)", who, hlen, ST_MAX_HEADER);
    char *text = malloc((size_t)hlen);
    if (!text) return bp_fail(BP_ENOMEM, "%s: out of memory", who);
    bp_status st = bp__source_read(src, 8, text, (size_t)hlen);
    json_error_t jerr;
    json_t *hdr = st ? NULL : json_loadb(text, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (st) return st;
    if (!hdr)
        return bp_fail(BP_EFORMAT, "%s: invalid JSON header: %s (line %d, column %d)", who, jerr.text, jerr.line,
                       jerr.column);
    uint64_t data_start = 8 + hlen, data_size = src->size - data_start;
    size_t n = 0, cap = json_is_object(hdr) ? json_object_size(hdr) : 0;
    st_entry *ents = calloc(cap ? cap : 1, sizeof *ents);
    st_entry **order = calloc(cap ? cap : 1, sizeof *order);
    bool crc_given = false;
    uint32_t crc_want = 0;
    if (!json_is_object(hdr))
        st = bp_fail(BP_EFORMAT, "%s: the header must be a JSON object", who);
    else if (!ents || !order)
        st = bp_fail(BP_ENOMEM, "%s: out of memory", who);
    const char *key;
    json_t *v;
    if (!st) {
        json_object_foreach(hdr, key, v) {
            if (strcmp(key, "__metadata__") == 0)
                st = parse_meta(who, v, &crc_given, &crc_want);
            else if (!(st = parse_entry(who, key, v, data_size, &ents[n])))
                order[n] = &ents[n], n++;
            if (st) break;
        }
    }
    /* Sorted by offset, the tensors must tile the data section exactly. */
    if (!st) qsort(order, n, sizeof *order, by_offset);
    uint64_t at = 0;
    for (size_t i = 0; !st && i < n; i++) {
        const st_entry *e = order[i];
        if (e->begin < at)
            st = bp_fail(BP_EFORMAT, "%s: \"%s\" [%" PRIu64 ", %" PRIu64 ") overlaps \"%s\" (ends at %" PRIu64 ")",
                         who, e->key, e->begin, e->end, order[i - 1]->key, at);
        else if (e->begin > at)
            st = bp_fail(BP_EFORMAT, "%s: bytes [%" PRIu64 ", %" PRIu64 ") of the data section belong to no tensor",
                         who, at, e->begin);
        at = e->end;
    }
    if (!st && at != data_size)
        st = bp_fail(BP_EFORMAT, "%s: bytes [%" PRIu64 ", %" PRIu64 ") of the data section belong to no tensor", who,
                     at, data_size);
    /* Every entry past the filter (header order) before any data is allocated. */
    for (size_t i = 0; !st && i < n; i++)
        st = bp__source_admit(src, ents[i].key, ents[i].dt, ents[i].ndim, ents[i].shape, &ents[i].skip);
    /* Read in file order so the checksum runs over the data section as stored;
     * skipped entries pass through a small buffer. */
    uint32_t crc = 0;
    unsigned char chunk[1 << 14];
    for (size_t i = 0; !st && i < n; i++) {
        st_entry *e = order[i];
        if (e->skip) {
            for (uint64_t pos = e->begin; !st && pos < e->end; pos += sizeof chunk) {
                size_t k = e->end - pos < sizeof chunk ? (size_t)(e->end - pos) : sizeof chunk;
                st = bp__source_read(src, data_start + pos, chunk, k);
                if (!st) crc = bp__crc32(crc, chunk, k);
            }
            continue;
        }
        st = bp_tensor_new(&e->t, e->dt, e->ndim, e->shape);
        size_t bytes = e->t ? bp_tensor_nbytes(e->t) : 0;
        if (!st) st = bp__source_read(src, data_start + e->begin, e->t->data, bytes);
        if (!st) crc = bp__crc32(crc, e->t->data, bytes);
    }
    if (!st && crc_given && crc != crc_want)
        st = bp_fail(BP_EFORMAT, "%s: checksum mismatch: data_crc32 is %08" PRIx32 " in the header but the data "
                                 "gives %08" PRIx32 " (the file is corrupt)", who, crc_want, crc);
    bp_dict *d = NULL;
    if (!st) st = bp_dict_new(&d);
    for (size_t i = 0; !st && i < n; i++)
        if (!ents[i].skip) st = bp_dict_set_tensor(d, ents[i].key, ents[i].t);
    for (size_t i = 0; i < n; i++) bp_tensor_free(ents[i].t);
    free(ents);
    free(order);
    json_decref(hdr);
    if (st) {
        bp_dict_free(d);
        return st;
    }
    *out = d;
    return BP_OK;
}
