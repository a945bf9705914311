/* bench/checkpoint.c — save_states / load_states throughput of a large state.
 *
 * Builds a node with T float32 variables of 2 MiB each (100 MB by default),
 * then, for each format, times bp_save_states (encode, write, fsync, rename,
 * directory fsync) and bp_load_states (read, validate, checksum, copy into the
 * model), and prints MB/s (10^6 bytes of state per second) beside a plain
 * write(2) + fsync of the same bytes to a file in the same folder and a plain
 * read(2) of them back: the disk's and page cache's ceiling for this machine.
 * Loads read from the page cache (the file was just written) unless the
 * system drops it; so does the plain read, so the two compare like for like.
 * JSON prints every number as text (~11 bytes per float32), so it is timed
 * on a tenth of the state.
 *
 * Usage: checkpoint [--mb N] [--dir DIR] [--reps R] [--help]
 *   --mb N     state size in MB (default 100)
 *   --dir DIR  folder for the files (default: the current folder)
 *   --reps R   repetitions; the best time is printed (default 3) */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <bpc/bpc.h>
#include <bpc/checkpoint.h>

typedef struct plain {
    bp_node base;
} plain;
static const bp_node_class big_class = {.name = "Big", .size = sizeof(plain)};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "checkpoint: %s: %s\n", what, bp_last_error());
    exit(1);
}

/* A node with n float32 vars of `elems` elements, filled with varied bits. */
static bp_node *make_big(const char *name, int n, int64_t elems)
{
    bp_node *node;
    if (bp_node_create(&node, &big_class, name, NULL)) die("node_create");
    uint32_t x = 12345;
    for (int i = 0; i < n; i++) {
        bp_tensor *t;
        if (bp_tensor_new(&t, BP_FLOAT32, 1, &elems)) die("tensor_new");
        float *d = t->data;
        for (int64_t j = 0; j < elems; j++) {
            x = x * 1664525u + 1013904223u;
            d[j] = (float)(x >> 8) * (1.0f / 16777216.0f) - 0.5f;
        }
        char attr[32];
        snprintf(attr, sizeof attr, "p%d", i);
        if (bp_node_add_var(node, attr, BP_TRAINVAR, t, NULL)) die("add_var");
        bp_tensor_free(t);
    }
    return node;
}

static double file_mb(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    double mb = (double)ftell(f) / 1e6;
    fclose(f);
    return mb;
}

/* Plain write + fsync of every var's bytes, then a plain read back. */
static void plain_io(bp_collector *vars, const char *path, double *wsec, double *rsec)
{
    double t0 = now();
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror(path);
        exit(1);
    }
    for (size_t i = 0; i < bp_collector_len(vars); i++) {
        const bp_tensor *t = bp_collector_var(vars, i)->value;
        const char *p = t->data;
        size_t n = bp_tensor_nbytes(t);
        while (n) {
            ssize_t k = write(fd, p, n);
            if (k <= 0) {
                perror("write");
                exit(1);
            }
            p += k;
            n -= (size_t)k;
        }
    }
    if (fsync(fd) || close(fd)) {
        perror("fsync");
        exit(1);
    }
    *wsec = now() - t0;
    t0 = now();
    fd = open(path, O_RDONLY);
    for (size_t i = 0; i < bp_collector_len(vars); i++) {
        bp_tensor *t = bp_collector_var(vars, i)->value;
        char *p = t->data;
        size_t n = bp_tensor_nbytes(t);
        while (n) {
            ssize_t k = read(fd, p, n);
            if (k <= 0) {
                perror("read");
                exit(1);
            }
            p += k;
            n -= (size_t)k;
        }
    }
    close(fd);
    *rsec = now() - t0;
    unlink(path);
}

int main(int argc, char **argv)
{
    double mb = 100;
    const char *dir = ".";
    int reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: %s [--mb N] [--dir DIR] [--reps R]\n"
                   "Times bp_save_states / bp_load_states of an N MB float32 state (default 100) in each\n"
                   "format, beside a plain write+fsync / read of the same bytes in DIR (default .).\n"
                   "Prints the best of R repetitions (default 3) in MB/s of state.\n",
                   argv[0]);
            return 0;
        } else if (!strcmp(argv[i], "--mb") && i + 1 < argc)
            mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "checkpoint: unknown argument %s (try --help)\n", argv[i]);
            return 2;
        }
    }
    if (mb <= 0 || reps < 1) {
        fprintf(stderr, "checkpoint: --mb must be > 0 and --reps >= 1\n");
        return 2;
    }
    const int64_t elems = 1 << 19; /* 2 MiB per tensor */
    const char *exts[] = {".safetensors", ".npz", ".json"};
    printf("bench/checkpoint: save_states / load_states, files in %s, best of %d\n", dir, reps);
    printf("%-26s %9s %11s %11s\n", "", "state MB", "save MB/s", "load MB/s");
    for (int f = -1; f < 3; f++) {
        double state_mb = f == 2 ? mb / 10 : mb;
        int n = (int)(state_mb * 1e6 / (4.0 * (double)elems) + 0.5);
        if (n < 1) n = 1;
        bp_node *node = make_big("Big", n, elems);
        bp_collector *vars;
        if (bp_node_vars(node, NULL, &vars)) die("vars");
        double bytes = (double)n * 4.0 * (double)elems;
        char path[1024];
        snprintf(path, sizeof path, "%s/bench_checkpoint%s", dir, f < 0 ? ".raw" : exts[f]);
        double best_w = 1e30, best_r = 1e30;
        for (int r = 0; r < reps; r++) {
            double w, rd;
            if (f < 0) {
                plain_io(vars, path, &w, &rd);
            } else {
                double t0 = now();
                if (bp_save_states(node, path, NULL, NULL)) die("save_states");
                w = now() - t0;
                t0 = now();
                if (bp_load_states(node, path, NULL, NULL, NULL, NULL)) die("load_states");
                rd = now() - t0;
            }
            if (w < best_w) best_w = w;
            if (rd < best_r) best_r = rd;
        }
        char label[64];
        if (f < 0)
            snprintf(label, sizeof label, "plain write+fsync / read");
        else
            snprintf(label, sizeof label, "%s (file %.1f MB)", exts[f] + 1, file_mb(path));
        printf("%-26s %9.1f %11.0f %11.0f\n", label, bytes / 1e6, bytes / 1e6 / best_w, bytes / 1e6 / best_r);
        if (f >= 0) unlink(path);
        bp_collector_free(vars);
        bp_node_free(node);
    }
    return 0;
}
