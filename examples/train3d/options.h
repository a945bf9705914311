/* examples/train3d/options.h — train3d's command line: parsing, the checks on
 * each value, and the options a resumed run must share with the saved one. */
#ifndef TRAIN3D_OPTIONS_H
#define TRAIN3D_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <bpc/bpc.h>

/* The most OpenMP threads train3d starts (--threads). */
#define TRAIN3D_MAX_THREADS 1024
/* The longest --out and --data directory names, in bytes: the file names
 * made from them ("<out>/checkpoint.safetensors", "<data>/labels.csv") fit
 * train3d's 4096-byte path buffers, never truncated to another file. */
#define TRAIN3D_MAX_DIR 4000

typedef struct options {
    int epochs, batch, threads, size;  /* threads 0: OpenMP's default */
    double lr, val_split;
    const char *optimizer, *out, *data;
    uint64_t seed;
    int64_t train_n, val_n;
    int resume, quiet;
    int no_sync_bn;                    /* under MPI: each rank's BatchNorm uses its own statistics */
} options;

/* Fills o from argv. Returns 0, or the exit status after printing the reason
 * to stderr (2: a bad option or value; the message names the option, the
 * value and the rule it breaks), or -1 after printing --help to stdout. */
int parse_args(int argc, char **argv, options *o);

/* The options a resumed run must share with the run that wrote the checkpoint
 * (everything that shapes the data, the model or the optimizer, keyed by the
 * option's name, "--lr", "--size", ...), as a new flat dict. */
bp_status options_to_meta(const options *o, bp_dict **out);

#endif
