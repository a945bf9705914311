/* io/ckpt_json.c — a human-readable checkpoint, for small models and debugging.
 *
 *   {"format": "bpc", "version": 2, "tensors": {
 *    "Linear0.w": {"dtype": "float32", "shape": [2, 3], "data": [0.5, -1, ...]},
 *    ...}, "data_crc32": "1fdc9849"}
 *
 * data_crc32 (version 2) is a CRC-32 over every entry's key, dtype, shape and
 * values in a canonical binary form (crc_entry below), so that a changed digit
 * cannot load as another number: text has no checksum of its own, and most
 * digit edits still parse. Version 1 files, written before it, load unchecked.
 *
 * data is the row-major element list. Floats are printed with enough digits to
 * read back to the same bits (%.9g for float32, %.17g for float64; -0 as
 * "-0.0", since JSON readers take "-0" for the integer 0); NaN and the
 * infinities, which JSON has no numbers for, as the strings "NaN",
 * "Infinity", "-Infinity" (NaN payloads are not kept). Integers print exactly.
 * The writer prints the text itself (for the digits above); the reader parses
 * with jansson, rejecting duplicate keys at every level. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "ckpt_internal.h"

/* ------------------------------------------------------------------ write */

/* A JSON string literal of a checked key (printable ASCII). */
static void put_key(bp__sink *s, const char *key)
{
    bp__sink_write(s, "\"", 1);
    for (const char *p = key; *p; p++) {
        if (*p == '"' || *p == '\\') bp__sink_write(s, "\\", 1);
        bp__sink_write(s, p, 1);
    }
    bp__sink_write(s, "\"", 1);
}

/* A float as JSON: shortest-exact digits, or a string for non-finite values.
 * The C locale's decimal point may be ',' : fix it up (jansson reads '.'). */
static void put_real(bp__sink *s, double v, int digits)
{
    char b[40];
    if (isnan(v))
        snprintf(b, sizeof b, "\"NaN\"");
    else if (isinf(v))
        snprintf(b, sizeof b, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
    else if (v == 0 && signbit(v))
        snprintf(b, sizeof b, "-0.0");
    else {
        snprintf(b, sizeof b, "%.*g", digits, v);
        for (char *p = b; *p; p++)
            if (!(*p >= '0' && *p <= '9') && *p != '-' && *p != '+' && *p != 'e') *p = '.';
    }
    bp__sink_write(s, b, strlen(b));
}

/* The checksum record of one entry, continuing crc: the key and a NUL, the
 * dtype name and a NUL, ndim and each dimension as int64 little-endian, then
 * the elements' little-endian bytes with every NaN as the positive quiet NaN
 * (0x7fc00000, 0x7ff8000000000000), which is what "NaN" reads back as. The
 * writer and the reader both compute it from a tensor, so it covers exactly
 * what a load gives. */
static uint32_t crc_entry(uint32_t crc, const char *key, const bp_tensor *t)
{
    crc = bp__crc32(crc, key, strlen(key) + 1);
    const char *dn = bp_dtype_name(t->dtype);
    crc = bp__crc32(crc, dn, strlen(dn) + 1);
    int64_t dims[BP_MAX_DIMS + 1] = {t->ndim};
    for (int d = 0; d < t->ndim; d++) dims[d + 1] = t->shape[d];
    crc = bp__crc32(crc, dims, sizeof dims[0] * (size_t)(t->ndim + 1));
    if (t->dtype != BP_FLOAT32 && t->dtype != BP_FLOAT64) return bp__crc32(crc, t->data, bp_tensor_nbytes(t));
    /* floats through a staging buffer, NaNs made canonical */
    unsigned char stage[4096];
    size_t es = bp_dtype_size(t->dtype), at = 0;
    const unsigned char *p = t->data;
    for (int64_t k = 0; k < t->numel; k++, p += es) {
        bool nan = es == 4 ? isnan(((const float *)t->data)[k]) : isnan(((const double *)t->data)[k]);
        if (nan && es == 4) memcpy(stage + at, &(const uint32_t){0x7fc00000u}, 4);
        else if (nan) memcpy(stage + at, &(const uint64_t){0x7ff8000000000000u}, 8);
        else memcpy(stage + at, p, es);
        at += es;
        if (at == sizeof stage) {
            crc = bp__crc32(crc, stage, at);
            at = 0;
        }
    }
    return bp__crc32(crc, stage, at);
}

bp_status bp__json_write(bp__sink *s, const bp_dict *flat)
{
    bp__sink_printf(s, "{\"format\": \"bpc\", \"version\": %d, \"tensors\": {", BP_CKPT_JSON_VERSION);
    uint32_t crc = 0;
    for (size_t i = 0; i < bp_dict_len(flat); i++) {
        const bp_tensor *t = bp_dict_tensor(flat, i);
        crc = crc_entry(crc, bp_dict_key(flat, i), t);
        bp__sink_write(s, i ? ",\n " : "\n ", i ? 3 : 2);
        put_key(s, bp_dict_key(flat, i));
        bp__sink_printf(s, ": {\"dtype\": \"%s\", \"shape\": [", bp_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) bp__sink_printf(s, d ? ", %" PRId64 : "%" PRId64, t->shape[d]);
        bp__sink_write(s, "], \"data\": [", 12);
        for (int64_t k = 0; k < t->numel && !s->st; k++) {
            if (k) bp__sink_write(s, ", ", 2);
            switch (t->dtype) {
            case BP_FLOAT32: put_real(s, ((const float *)t->data)[k], 9); break;
            case BP_FLOAT64: put_real(s, ((const double *)t->data)[k], 17); break;
            case BP_INT32: bp__sink_printf(s, "%" PRId32, ((const int32_t *)t->data)[k]); break;
            case BP_INT64: bp__sink_printf(s, "%" PRId64, ((const int64_t *)t->data)[k]); break;
            case BP_UINT8: bp__sink_printf(s, "%u", (unsigned)((const uint8_t *)t->data)[k]); break;
            }
        }
        bp__sink_write(s, "]}", 2);
    }
    bp__sink_printf(s, "\n}, \"data_crc32\": \"%08" PRIx32 "\"}\n", crc);
    return s->st;
}

/* ------------------------------------------------------------------- read */

static bool dtype_by_name(const char *name, bp_dtype *dt)
{
    static const bp_dtype all[] = {BP_FLOAT32, BP_FLOAT64, BP_INT32, BP_INT64, BP_UINT8};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(name, bp_dtype_name(all[i])) == 0) {
            *dt = all[i];
            return true;
        }
    return false;
}

/* Element k of a float tensor from a JSON number or one of the strings. */
static bool get_real(const json_t *j, double *v)
{
    if (json_is_integer(j)) {
        *v = (double)json_integer_value(j);
        return true;
    }
    if (json_is_real(j)) {
        *v = json_real_value(j);
        return true;
    }
    const char *s = json_string_value(j);
    if (!s) return false;
    if (strcmp(s, "NaN") == 0)
        *v = NAN;
    else if (strcmp(s, "Infinity") == 0)
        *v = INFINITY;
    else if (strcmp(s, "-Infinity") == 0)
        *v = -INFINITY;
    else
        return false;
    return true;
}

static bp_status fill(const char *who, const char *key, const json_t *data, bp_tensor *t)
{
    for (int64_t k = 0; k < t->numel; k++) {
        const json_t *j = json_array_get(data, (size_t)k);
        double r;
        json_int_t n = json_is_integer(j) ? json_integer_value(j) : 0;
        switch (t->dtype) {
        case BP_FLOAT32:
        case BP_FLOAT64:
            if (!get_real(j, &r))
                return bp_fail(BP_EFORMAT, "%s: \"%s\": data[%" PRId64 "] must be a number, \"NaN\", \"Infinity\" or "
                                           "\"-Infinity\"", who, key, k);
            if (t->dtype == BP_FLOAT32 && isfinite(r) && fabs(r) >= 0x1.ffffffp127)
                return bp_fail(BP_EFORMAT, "%s: \"%s\": data[%" PRId64 "] = %g is out of float32's range", who, key,
                               k, r);
            if (t->dtype == BP_FLOAT32)
                ((float *)t->data)[k] = (float)r;
            else
                ((double *)t->data)[k] = r;
            break;
        case BP_INT32:
            if (!json_is_integer(j) || n < INT32_MIN || n > INT32_MAX)
                return bp_fail(BP_EFORMAT, "%s: \"%s\": data[%" PRId64 "] must be an int32 integer", who, key, k);
            ((int32_t *)t->data)[k] = (int32_t)n;
            break;
        case BP_INT64:
            if (!json_is_integer(j))
                return bp_fail(BP_EFORMAT, "%s: \"%s\": data[%" PRId64 "] must be an integer", who, key, k);
            ((int64_t *)t->data)[k] = (int64_t)n;
            break;
        case BP_UINT8:
            if (!json_is_integer(j) || n < 0 || n > 255)
                return bp_fail(BP_EFORMAT, "%s: \"%s\": data[%" PRId64 "] must be an integer in [0, 255]", who, key, k);
            ((uint8_t *)t->data)[k] = (uint8_t)n;
            break;
        }
    }
    return BP_OK;
}

/* One entry into a new tensor *out; *skip is src's filter's word on it, asked
 * before the tensor is allocated. (A skipped entry is still built, for the
 * checksum: its size is that of the text's array, parsed already.) */
static bp_status parse_tensor(const bp__source *src, const char *key, const json_t *v, bp_tensor **out, bool *skip)
{
    const char *who = src->who;
    *out = NULL;
    BP_TRY(bp__ckpt_check_key(who, "key", key, BP_EFORMAT));
    if (!json_is_object(v)) return bp_fail(BP_EFORMAT, "%s: \"%s\" must be a JSON object", who, key);
    const char *field;
    json_t *fv;
    json_object_foreach((json_t *)v, field, fv) {
        if (strcmp(field, "dtype") && strcmp(field, "shape") && strcmp(field, "data"))
            return bp_fail(BP_EFORMAT, "%s: \"%s\" has the unknown field \"%.32s\" (expected dtype, shape, data)", who,
                           key, field);
    }
    const json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
                 *jdata = json_object_get(v, "data");
    if (!jd || !js || !jdata)
        return bp_fail(BP_EFORMAT, "%s: \"%s\" lacks \"%s\"", who, key, !jd ? "dtype" : !js ? "shape" : "data");
    bp_dtype dt;
    if (!json_is_string(jd) || !dtype_by_name(json_string_value(jd), &dt))
        return bp_fail(BP_EFORMAT, "%s: \"%s\" has an unknown dtype %s%.16s%s (bpc reads float32, float64, int32, "
                                   "int64, uint8)", who, key, json_is_string(jd) ? "\"" : "",
                       json_is_string(jd) ? json_string_value(jd) : "(not a string)", json_is_string(jd) ? "\"" : "");
    if (!json_is_array(js) || json_array_size(js) > BP_MAX_DIMS)
        return bp_fail(BP_EFORMAT, "%s: \"%s\": shape must be an array of at most %d integers", who, key, BP_MAX_DIMS);
    int ndim = (int)json_array_size(js);
    int64_t shape[BP_MAX_DIMS], numel = 1;
    for (int d = 0; d < ndim; d++) {
        const json_t *e = json_array_get(js, (size_t)d);
        if (!json_is_integer(e) || json_integer_value(e) < 0)
            return bp_fail(BP_EFORMAT, "%s: \"%s\": shape[%d] must be an integer >= 0", who, key, d);
        shape[d] = (int64_t)json_integer_value(e);
        if (!bp__mul_ok(numel, shape[d], &numel))
            return bp_fail(BP_EFORMAT, "%s: \"%s\": the shape's element count overflows", who, key);
    }
    if (!json_is_array(jdata) || (uint64_t)json_array_size(jdata) != (uint64_t)numel) {
        char sh[96];
        return bp_fail(BP_EFORMAT, "%s: \"%s\": shape %s has %" PRId64 " elements but data %s %zu", who, key,
                       bp_shape_str(sh, sizeof sh, ndim, shape), numel,
                       json_is_array(jdata) ? "lists" : "is not an array, size", json_array_size(jdata));
    }
    bp_tensor *t;
    BP_TRY(bp__source_admit(src, key, dt, ndim, shape, skip));
    BP_TRY(bp_tensor_new(&t, dt, ndim, shape));
    bp_status st = fill(who, key, jdata, t);
    if (st) {
        bp_tensor_free(t);
        return st;
    }
    *out = t;
    return BP_OK;
}

/* What a JSON value is, for messages: its text (cut to 32 characters) and,
 * unless a number, its kind: "\"1\" (a string)", "1.5", "(none)". */
static const char *json_seen(char *buf, size_t cap, const json_t *v)
{
    if (!v) {
        snprintf(buf, cap, "(none)");
        return buf;
    }
    char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    const char *kind = json_is_string(v)    ? " (a string)"
                       : json_is_boolean(v) ? " (a boolean)"
                       : json_is_null(v)    ? ""
                       : json_is_object(v)  ? " (an object)"
                       : json_is_array(v)   ? " (an array)"
                                            : "";
    snprintf(buf, cap, "%.32s%s%s", text ? text : "?", text && strlen(text) > 32 ? "..." : "", kind);
    free(text);
    return buf;
}

static bp_status parse_root(const bp__source *src, const json_t *root, bp_dict **out)
{
    const char *who = src->who;
    if (!json_is_object(root)) return bp_fail(BP_EFORMAT, "%s: the file must hold a JSON object", who);
    const char *fmt = json_string_value(json_object_get(root, "format"));
    if (!fmt || strcmp(fmt, "bpc") != 0)
        return bp_fail(BP_EFORMAT, "%s: \"format\" must be \"bpc\", got %s%.32s%s", who, fmt ? "\"" : "",
                       fmt ? fmt : "(none)", fmt ? "\"" : "");
    /* Version 1 files (before the checksum) have no data_crc32 and load
     * unchecked; version 2 files must have it. A digit changed in either
     * direction leaves a file the other version refuses. */
    const json_t *ver = json_object_get(root, "version");
    char seen[64];
    json_int_t v_num = json_is_integer(ver) ? json_integer_value(ver) : 0;
    if (v_num != 1 && v_num != BP_CKPT_JSON_VERSION)
        return bp_fail(BP_EFORMAT, "%s: bpc checkpoint version %s, this build reads versions 1 and %d (integers)",
                       who, json_seen(seen, sizeof seen, ver), BP_CKPT_JSON_VERSION);
    bool checked = v_num >= 2;
    const char *field;
    json_t *fv;
    json_object_foreach((json_t *)root, field, fv) {
        if (strcmp(field, "format") && strcmp(field, "version") && strcmp(field, "tensors") &&
            (!checked || strcmp(field, "data_crc32")))
            return bp_fail(BP_EFORMAT, "%s: unknown field \"%.32s\" (version %d has format, version, tensors%s)",
                           who, field, (int)v_num, checked ? ", data_crc32" : "");
    }
    uint32_t crc_want = 0;
    if (checked) {
        const json_t *jc = json_object_get(root, "data_crc32");
        if (!jc) return bp_fail(BP_EFORMAT, "%s: a version %d checkpoint without \"data_crc32\"", who, (int)v_num);
        if (!json_is_string(jc) || !bp__crc_from_hex(json_string_value(jc), &crc_want))
            return bp_fail(BP_EFORMAT, "%s: data_crc32 %s must be a string of 8 lower-case hex digits", who,
                           json_seen(seen, sizeof seen, jc));
    }
    const json_t *ts = json_object_get(root, "tensors");
    if (!json_is_object(ts)) return bp_fail(BP_EFORMAT, "%s: \"tensors\" must be a JSON object", who);
    bp_dict *d;
    BP_TRY(bp_dict_new(&d));
    const char *key;
    json_t *v;
    uint32_t crc = 0;
    json_object_foreach((json_t *)ts, key, v) {
        bp_tensor *t;
        bool skip = false;
        bp_status st = parse_tensor(src, key, v, &t, &skip);
        if (!st && checked) crc = crc_entry(crc, key, t);
        if (!st && !skip) st = bp_dict_set_tensor(d, key, t);
        bp_tensor_free(t);
        if (st) {
            bp_dict_free(d);
            return st;
        }
    }
    if (checked && crc != crc_want) {
        bp_dict_free(d);
        return bp_fail(BP_EFORMAT, "%s: checksum mismatch: data_crc32 is %08" PRIx32 " in the file but the tensors "
                                   "give %08" PRIx32 " (the file is corrupt)", who, crc_want, crc);
    }
    *out = d;
    return BP_OK;
}

bp_status bp__json_read(const bp__source *src, bp_dict **out)
{
    *out = NULL;
    const char *who = src->who;
    unsigned char *owned = NULL;
    const unsigned char *text = src->mem;
    if (!text) {
        if (src->size > SIZE_MAX - 1) return bp_fail(BP_ENOMEM, "%s: file too large", who);
        if (!(owned = malloc((size_t)src->size + 1))) return bp_fail(BP_ENOMEM, "%s: out of memory", who);
        bp_status st = bp__source_read(src, 0, owned, (size_t)src->size);
        if (st) {
            free(owned);
            return st;
        }
        text = owned;
    }
    json_error_t jerr;
    json_t *root = json_loadb((const char *)text, (size_t)src->size, JSON_REJECT_DUPLICATES, &jerr);
    free(owned);
    if (!root)
        return bp_fail(BP_EFORMAT, "%s: invalid JSON: %s (line %d, column %d)", who, jerr.text, jerr.line,
                       jerr.column);
    bp_status st = parse_root(src, root, out);
    json_decref(root);
    return st;
}
