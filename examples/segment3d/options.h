/* examples/segment3d/options.h — segment3d's command line: the train and
 * predict subcommands, the checks on each value, and the options a resumed
 * run must share with the saved one. */
#ifndef SEGMENT3D_OPTIONS_H
#define SEGMENT3D_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <bpc/bpc.h>

/* The most OpenMP threads segment3d starts (--threads). */
#define SEG_MAX_THREADS 1024
/* The longest --out and --data directory names, in bytes, so every file name
 * made from them ("<data>/labelsTr/<name>") fits segment3d's 4096-byte path
 * buffers with a file name of up to 95 bytes. */
#define SEG_MAX_DIR 4000

typedef struct options {
    bool predict;                      /* the predict subcommand (else train) */
    int epochs, steps, batch, threads; /* threads -1: OpenMP's default */
    int size, train_vols, val_vols;    /* the synthetic data */
    int patch, base, depth;            /* patch side; the U-Net */
    double lr, val_split, fg_prob, overlap;
    double jitter;                     /* intensity augmentation: scale and shift amplitude */
    const char *norm, *intensity, *out, *data; /* intensity: dataset, volume or none */
    const char *model, *input, *output; /* predict */
    uint64_t seed;
    int resume, quiet, pictures;
} options;

/* Fills o from argv ("segment3d [train|predict] options..."). Returns 0, or
 * the exit status after printing the reason to stderr (2: a bad option or
 * value; the message names the option, the value and the rule it breaks), or
 * -1 after printing --help to stdout. */
int parse_args(int argc, char **argv, options *o);

/* The options a resumed run must share with the run that wrote the
 * checkpoint (everything that shapes the data, the model or the optimizer,
 * keyed by the option's name, "--lr", "--patch", ...), as a new flat dict. */
bp_status options_to_meta(const options *o, bp_dict **out);

#endif
