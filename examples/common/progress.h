/* examples/common/progress.h — a per-epoch progress bar (samples/s, ETA) on a
 * terminal, plain lines every 10% when stdout is not one. */
#ifndef EXAMPLES_PROGRESS_H
#define EXAMPLES_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct progress {
    const char *label;
    int64_t total, done;
    double t0, last_print;
    int last_decile;
    bool tty;
} progress;

double progress_now(void);
void progress_start(progress *p, const char *label, int64_t total);
/* Adds n samples; loss and acc are the running averages to show. */
void progress_step(progress *p, int64_t n, double loss, double acc);
void progress_end(progress *p);

#endif
