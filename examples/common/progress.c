/* examples/common/progress.c — see progress.h. */
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include "progress.h"

double progress_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void progress_start(progress *p, const char *label, int64_t total)
{
    *p = (progress){.label = label, .total = total, .t0 = progress_now(), .tty = isatty(STDOUT_FILENO)};
}

void progress_step(progress *p, int64_t n, double loss, double acc)
{
    p->done += n;
    double now = progress_now(), el = now - p->t0, rate = el > 0 ? p->done / el : 0;
    double eta = rate > 0 ? (p->total - p->done) / rate : 0;
    if (p->tty) {
        if (now - p->last_print < 0.1 && p->done < p->total) return;
        p->last_print = now;
        int width = 30, fill = p->total ? (int)(width * p->done / p->total) : width;
        char bar[64];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = '\0';
        printf("\r%s [%s] %lld/%lld  %.0f samples/s  ETA %4.0fs  loss %.4f  acc %.3f ", p->label, bar,
               (long long)p->done, (long long)p->total, rate, eta, loss, acc);
        fflush(stdout);
        return;
    }
    int decile = p->total ? (int)(10 * p->done / p->total) : 10;
    if (decile > p->last_decile) {
        p->last_decile = decile;
        printf("%s %3d%% %lld/%lld  %.0f samples/s  ETA %.0fs  loss %.4f  acc %.3f\n", p->label, decile * 10,
               (long long)p->done, (long long)p->total, rate, eta, loss, acc);
        fflush(stdout);
    }
}

void progress_end(progress *p)
{
    if (p->tty) printf("\n");
    fflush(stdout);
}
