/* tests/fixture.h — reads the text fixtures that tests/gen_*.py write.
 *
 * Format (whitespace separated, '#' starts a comment line):
 *   tensor <name> <ndim> <d0> ... <d{ndim-1}>
 *   <numel values, printed with 17 significant digits>
 * Values are read as double, so one fixture serves both flavours. */
#ifndef BP_FIXTURE_H
#define BP_FIXTURE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fx_tensor {
    char name[128];
    int ndim;
    int64_t shape[8];
    int64_t numel;
    double *data;
} fx_tensor;

typedef struct fx_file {
    fx_tensor *t;
    size_t n;
} fx_file;

static void fx_free(fx_file *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) free(f->t[i].data);
    free(f->t);
    free(f);
}

/* Loads BP_TEST_DATA_DIR/<name>; NULL (with a message on stderr) on any error. */
static fx_file *fx_load(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", BP_TEST_DATA_DIR, name);
    FILE *fp = fopen(path, "r");
    if (!fp) {
        fprintf(stderr, "fixture: cannot open %s\n", path);
        return NULL;
    }
    fx_file *f = calloc(1, sizeof *f);
    char word[256];
    int ok = 1;
    while (ok && fscanf(fp, "%255s", word) == 1) {
        if (word[0] == '#') {
            int c;
            while ((c = fgetc(fp)) != EOF && c != '\n') {}
            continue;
        }
        if (strcmp(word, "tensor") != 0) { ok = 0; break; }
        fx_tensor t = {0};
        if (fscanf(fp, "%127s %d", t.name, &t.ndim) != 2 || t.ndim < 0 || t.ndim > 8) { ok = 0; break; }
        t.numel = 1;
        for (int i = 0; i < t.ndim; i++) {
            long long d;
            if (fscanf(fp, "%lld", &d) != 1 || d < 0) { ok = 0; break; }
            t.shape[i] = d;
            t.numel *= d;
        }
        if (!ok) break;
        t.data = malloc(sizeof(double) * (size_t)(t.numel ? t.numel : 1));
        for (int64_t i = 0; i < t.numel; i++)
            if (fscanf(fp, "%lf", &t.data[i]) != 1) { ok = 0; break; }
        fx_tensor *grown = realloc(f->t, sizeof *f->t * (f->n + 1));
        if (!grown) { free(t.data); ok = 0; break; }
        f->t = grown;
        f->t[f->n++] = t;
    }
    fclose(fp);
    if (!ok) {
        fprintf(stderr, "fixture: %s is malformed\n", path);
        fx_free(f);
        return NULL;
    }
    return f;
}

/* The tensor called name, or NULL. */
static const fx_tensor *fx_get(const fx_file *f, const char *name)
{
    for (size_t i = 0; f && i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    fprintf(stderr, "fixture: no tensor named %s\n", name);
    return NULL;
}

#endif
