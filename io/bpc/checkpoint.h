/* bpc/checkpoint.h — save_states / load_states: checkpoints on disk.
 *
 * A checkpoint is a flat map from keys to tensors. save_states writes a tree's
 * variables under BrainPy's absolute keys ("BatchNorm3d0.running_mean", as
 * vars().unique()), plus optional user metadata under "meta/<key>". The file
 * name's extension picks the format, as BrainPy's legacy save_states did
 * (docs/brainpy-semantics.md §2.8):
 *
 *   .safetensors  the safetensors layout: an 8-byte little-endian header length,
 *                 a JSON header (dtype "F32" "F64" "I32" "I64" "U8", shape,
 *                 data_offsets), raw little-endian data. __metadata__ holds
 *                 {"format": "bpc", "version": "1", "data_crc32": "<8 hex>"},
 *                 the CRC-32 (zlib's, as Python's zlib.crc32) of the data section.
 *                 Reading checks data_crc32 whenever __metadata__ has it, whatever
 *                 "format" says, and refuses a "format": "bpc" file without it;
 *                 only files with neither (other writers') load unchecked.
 *   .npz          NumPy's format: a zip of "<key>.npy" members (NPY 1.0, stored),
 *                 as np.savez writes it; np.load reads it. Reading also takes
 *                 np.savez_compressed files (deflate), big-endian and Fortran-
 *                 ordered arrays. Every member carries the zip's CRC-32.
 *   .json         {"format": "bpc", "version": 2, "tensors": {key: {"dtype":
 *                 "float32", "shape": [..], "data": [..]}}, "data_crc32":
 *                 "<8 hex>"}, row-major data, floats printed to round-trip
 *                 exactly (%.9g / %.17g); NaN and infinities as the strings
 *                 "NaN", "Infinity", "-Infinity". data_crc32 is the CRC-32 of,
 *                 for each entry in file order: the key, a NUL byte, the dtype
 *                 name, a NUL byte, ndim and the dimensions as int64
 *                 little-endian, the elements' little-endian bytes (every NaN
 *                 as the positive quiet NaN); so a changed digit anywhere (a
 *                 value, a shape, a key) fails the load. Version 1 files (from
 *                 before the checksum: no data_crc32, which they may not have)
 *                 still load, unchecked; bpc writes version 2.
 *
 * Saves are atomic: the file is written to "<filename>.tmp.<pid>.<n>" in the
 * same directory, fsync'ed, renamed over the old file, and the directory is
 * fsync'ed. Any failure (short write, full disk, a crash at any point) leaves
 * the previous file intact; a crash may leave the temporary file behind.
 * The temporary is flock'ed until the save ends, and a crash drops the lock,
 * so each save first removes the stale temporaries of the same target: files
 * in its directory named exactly "<filename>.tmp.<digits>.<digits>", regular
 * files (not links), that no save holds locked. Saves in progress, in this
 * process or another, are never touched; nor is any other file (other names,
 * other targets). Do not name files of your own that way. On a filesystem
 * without flock (ENOLCK) nothing is removed.
 *
 * Loads validate the whole file (structure, dtypes, shapes, offsets, duplicate
 * keys, checksums) and every key, shape and dtype against the model before the
 * first value is written: on any error the model is unchanged.
 *
 * Memory: a load into a model (bp_load_states, bp_checkpoint_load_file) checks
 * each entry's key, dtype and shape, as the file declares them, before its
 * data is allocated or inflated, and keeps only the model's variables plus at
 * most bp_load_opts.max_other_bytes of other entries: whatever a file claims,
 * it takes about the model's size. A read without a model takes what the file
 * holds (bp_checkpoint_read says how much that can be) unless capped with
 * bp_checkpoint_read_capped.
 *
 * Keys: 1 to BP_CKPT_MAX_KEY printable ASCII characters (0x20..0x7e); the
 * safetensors name "__metadata__" is reserved. Variable keys never contain
 * '/' (node names are identifiers), so prefixes ending in '/' ("meta/",
 * "optim/", "rng/") cannot collide with them.
 *
 * Checkpoints are regular files: a path naming a FIFO, a directory, a device
 * or a socket (or a symbolic link to one) is BP_EIO "not a regular file (it is
 * a FIFO)", on reads and on saves, in every format; a read never waits on a
 * FIFO, and a save never replaces one.
 *
 * Errors: BP_EINVAL (bad arguments, unsupported extension), BP_EIO (a file
 * that cannot be opened, read, written, synced or renamed, or is not a
 * regular file), BP_EFORMAT (a corrupt or truncated file, one of another
 * model, or one past a read's memory bound), BP_ESHAPE / BP_EDTYPE (a
 * variable whose shape or dtype differs), BP_ENOMEM. Messages name the file. */
#ifndef BPC_CHECKPOINT_H
#define BPC_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <bpc/state.h>
#include <bpc/random.h>

BP_API_BEGIN
#ifdef __cplusplus
extern "C" {
#endif

typedef enum bp_ckpt_format {
    BP_CKPT_SAFETENSORS = 1,
    BP_CKPT_NPZ = 2,
    BP_CKPT_JSON = 3
} bp_ckpt_format;

/* The longest key a checkpoint may hold, in bytes. */
#define BP_CKPT_MAX_KEY 256
/* The version of bpc's safetensors layout (__metadata__ "version"). */
#define BP_CKPT_VERSION 1
/* The version of bpc's JSON layout that bpc writes (it reads 1 and 2). */
#define BP_CKPT_JSON_VERSION 2
/* Prefix of user metadata entries written by bp_save_states. */
#define BP_CKPT_META_PREFIX "meta/"

/* The format chosen by filename's extension (".safetensors", ".npz", ".json");
 * BP_EINVAL naming the supported ones for anything else. */
bp_status bp_checkpoint_format(const char *filename, bp_ckpt_format *out);
/* "safetensors", "npz", "json"; "?" otherwise. */
const char *bp_checkpoint_format_name(bp_ckpt_format fmt);

/* ------------------------------------------------------- flat dict files */

/* Writes every entry of `flat` (tensors only; a nested dict is BP_EINVAL)
 * atomically to filename, in the extension's format. */
bp_status bp_checkpoint_write(const char *filename, const bp_dict *flat);
/* Reads and validates a whole checkpoint into a new flat dict *out (in the
 * file's order; free with bp_dict_free). *out is NULL on failure. Memory: the
 * tensors' bytes are bounded by the file itself, about its size for
 * safetensors and stored npz members, and up to 1032 times a deflate npz
 * member's compressed size (deflate's largest ratio; a 1 MB file may claim
 * 1 GB) — for files you do not trust, use bp_checkpoint_read_capped, or load
 * into a model with bp_load_states / bp_checkpoint_load_file, which take only
 * what the model can hold. */
bp_status bp_checkpoint_read(const char *filename, bp_dict **out);
/* As bp_checkpoint_read, allocating at most max_bytes of tensor data in all:
 * each entry is checked against what is left from its declared dtype and
 * shape before any of its data is allocated or inflated (BP_EFORMAT "...
 * past the limit of this read" beyond). */
bp_status bp_checkpoint_read_capped(const char *filename, uint64_t max_bytes, bp_dict **out);
/* As bp_checkpoint_write, into a malloc'ed buffer (*buf, *len; free() it). */
bp_status bp_checkpoint_encode(bp_ckpt_format fmt, const bp_dict *flat, void **buf, size_t *len);
/* As bp_checkpoint_read, from len bytes at buf (never read past len). */
bp_status bp_checkpoint_decode(bp_ckpt_format fmt, const void *buf, size_t len, bp_dict **out);
/* As bp_checkpoint_decode with bp_checkpoint_read_capped's max_bytes. */
bp_status bp_checkpoint_decode_capped(bp_ckpt_format fmt, const void *buf, size_t len, uint64_t max_bytes,
                                      bp_dict **out);

/* ------------------------------------- building blocks of training checkpoints */

/* Puts every variable of `vars` into flat as "<prefix><key>" (prefix may be
 * NULL or ""). The dict holds references to the live values, not copies:
 * write it before the variables change. */
bp_status bp_checkpoint_put_vars(bp_dict *flat, const char *prefix, const bp_collector *vars);

/* One set of variables stored under a key prefix (NULL or "" for none). */
typedef struct bp_ckpt_vars {
    const char *prefix;
    const bp_collector *vars;
} bp_ckpt_vars;

/* What to do with keys of the model absent from the checkpoint (missing) and
 * keys of the checkpoint that match no variable (unexpected). */
typedef struct bp_load_opts {
    bool strict;   /* either kind is BP_EFORMAT listing them; nothing is loaded */
    bool warn;     /* not strict: load the intersection and warn as
                    * load_state_dict(warn=True): "Unexpected keys in state_dict:
                    * [...]", then "Missing keys in state_dict: [...]" */
    uint64_t max_other_bytes; /* loads from a file: the most tensor bytes that
                    * entries other than the model's variables (metadata) may
                    * hold; 0 = BP_CKPT_MAX_OTHER_BYTES */
} bp_load_opts;

/* The default bp_load_opts.max_other_bytes: 64 MiB. */
#define BP_CKPT_MAX_OTHER_BYTES ((uint64_t)64 << 20)

/* strict = true, warn = true, max_other_bytes = BP_CKPT_MAX_OTHER_BYTES. */
bp_load_opts bp_load_defaults(void);

/* Loads the groups' variables from flat, all or nothing. For each group, the
 * variable "<key>" takes the entry "<prefix><key>"; an entry is unexpected
 * when it starts with some group's prefix and matches no variable (entries
 * outside every prefix are the caller's, e.g. "rng/" and "meta/"). Every
 * shape (BP_ESHAPE) and dtype (BP_EDTYPE) is checked before any value is
 * written. opts NULL = bp_load_defaults(). result (may be NULL) receives the
 * full keys of missing and unexpected entries; clear it with
 * bp_load_result_clear. */
bp_status bp_checkpoint_load_vars(const bp_dict *flat, const bp_ckpt_vars *groups, size_t n_groups,
                                  const bp_load_opts *opts, bp_load_result *result);

/* Reads filename and loads the groups' variables from it (as
 * bp_checkpoint_read, then bp_checkpoint_load_vars), reading only what the
 * groups can take: an entry under a group's prefix is checked against the
 * variable it names (BP_ESHAPE, BP_EDTYPE) before its data is allocated or
 * inflated; one that names no variable is read for its checksum but not kept
 * (it is unexpected); entries outside every prefix (e.g. "meta/", "rng/") go
 * to a new dict *rest (may be NULL to drop them; free with bp_dict_free), at
 * most opts->max_other_bytes in all. So the memory is the model's size plus
 * that bound, whatever the file claims. All or nothing; *rest NULL on error. */
bp_status bp_checkpoint_load_file(const char *filename, const bp_ckpt_vars *groups, size_t n_groups,
                                  const bp_load_opts *opts, bp_load_result *result, bp_dict **rest);

/* Moves the entries of flat whose key starts with prefix (non-empty) into a
 * new dict *out, keyed without the prefix, and removes them from flat. */
bp_status bp_checkpoint_take_prefix(bp_dict *flat, const char *prefix, bp_dict **out);

/* Puts the generator's 4-word state as an int64 tensor of shape (4,) (the
 * words' bits unchanged) under key. */
bp_status bp_checkpoint_put_rng(bp_dict *flat, const char *key, const bp_rng *rng);
/* Restores a generator from the entry written by bp_checkpoint_put_rng;
 * BP_ENOTFOUND if absent, BP_EFORMAT if not an int64 (4,) valid state. */
bp_status bp_checkpoint_get_rng(const bp_dict *flat, const char *key, bp_rng *rng);

/* ------------------------------------------------ save_states / load_states */

/* save_states(filename, variables): writes `vars` (NULL: the node's
 * vars().unique(), absolute keys) and the tensors of `metadata` (may be NULL;
 * flat, e.g. {"epoch": int64 0-d}) under "meta/<key>" to filename. */
bp_status bp_save_states(bp_node *node, const char *filename, const bp_collector *vars,
                         const bp_dict *metadata);

/* load_states(filename): reads filename and loads it into `vars` (NULL: the
 * node's vars().unique()) with bp_checkpoint_load_vars (opts NULL: strict).
 * The "meta/" entries go, without the prefix, to a new dict *metadata (may be
 * NULL to drop them; free with bp_dict_free). On any error nothing is loaded
 * and *metadata is NULL. Reads as bp_checkpoint_load_file does: names,
 * shapes and dtypes are checked against vars before any data is allocated,
 * and the "meta/" entries may hold opts->max_other_bytes. */
bp_status bp_load_states(bp_node *node, const char *filename, const bp_collector *vars,
                         const bp_load_opts *opts, bp_load_result *result, bp_dict **metadata);

/* Reads one NumPy .npy file (NPY 1.0 to 3.0, as np.save writes it: any dtype
 * bpc knows, C or Fortran order, either byte order) into a new tensor *out.
 * Errors name the file: BP_EIO (cannot open or read), BP_EFORMAT (bad magic,
 * header, dtype, or a size that does not match the shape). */
bp_status bp_npy_read(const char *path, bp_tensor **out);

#ifdef __cplusplus
}
#endif
BP_API_END
#endif
