/* examples/segment3d/predict.c — `segment3d predict`: label a NIfTI scan with
 * the net of a training checkpoint, written as uint8 in the scan's geometry. */
#include <stdio.h>
#include <stdlib.h>
#include <bpc/bpc.h>
#include <bpc/checkpoint.h>
#include <bpc/nifti.h>
#include "intensity.h"
#include "model.h"
#include "progress.h"
#include "segment3d.h"
#include "volumes.h"

/* The net of checkpoint file, rebuilt from its meta/arch entries and loaded from its model/ entries, and
 * the intensity normalisation it was trained with (meta/intensity). */
static bp_status load_net(const char *file, bp_node **net, net_arch *a, intensity_norm *in)
{
    bp_dict *flat = NULL, *meta = NULL;
    BP_TRY(bp_checkpoint_read(file, &flat));
    bp_status st = bp_checkpoint_take_prefix(flat, "meta/", &meta);
    if (!st) st = arch_from_meta(meta, file, a);
    if (!st) st = intensity_from_meta(meta, file, a->channels, in);
    if (!st) st = net_new(net, a, 0);
    bp_collector *vars = NULL;
    if (!st) st = bp_node_vars(*net, NULL, &vars);
    if (!st) {
        bp_ckpt_vars g = {"model/", vars};
        bp_load_opts lo = bp_load_defaults();
        lo.warn = false;
        st = bp_checkpoint_load_vars(flat, &g, 1, &lo, NULL);
    }
    bp_collector_free(vars);
    bp_dict_free(meta);
    bp_dict_free(flat);
    return st;
}

static bp_status predict(const options *o)
{
    bp_node *net = NULL;
    net_arch a;
    intensity_norm in = {0};
    bp_tensor *img = NULL, *logits = NULL, *out = NULL;
    bp_volume_info info;
    uint8_t *lab = NULL;
    double t0 = progress_now();
    bp_status st = load_net(o->model, &net, &a, &in);
    if (!st) st = bp_nifti_read(o->input, true, &img, &info);
    if (!st && img->shape[3] != a.channels)
        st = bp_fail(BP_ESHAPE, "%s: %lld channel(s), but the net of %s takes %lld", o->input,
                     (long long)img->shape[3], o->model, (long long)a.channels);
    if (!st) st = intensity_apply(&in, img);
    if (!st) st = net_sliding_window(net, &a, img, o->overlap, &logits);
    int64_t n = img ? img->numel / img->shape[3] : 0;
    if (!st && !(lab = malloc((size_t)n))) st = bp_fail(BP_ENOMEM, "out of memory");
    if (!st) st = bp_tensor_new(&out, BP_REAL_DTYPE, 3, img->shape);
    if (!st) {
        logits_argmax(logits, lab);
        bp_real *y = bp_tensor_reals(out);
        for (int64_t v = 0; v < n; v++) y[v] = lab[v];
        st = bp_nifti_write(o->output, out, 2, &info);
    }
    if (!st) {
        int64_t count[256] = {0};
        for (int64_t v = 0; v < n; v++) count[lab[v]]++;
        printf("labelled %s (%lldx%lldx%lld) with the %lld-class net of %s in %.1fs: %s; voxels per class:",
               o->input, (long long)img->shape[0], (long long)img->shape[1], (long long)img->shape[2],
               (long long)a.classes, o->model, progress_now() - t0, o->output);
        for (int c = 0; c < a.classes; c++) printf(" %d: %lld", c, (long long)count[c]);
        printf("\n");
    }
    free(lab);
    bp_tensor_free(out);
    bp_tensor_free(logits);
    bp_tensor_free(img);
    bp_node_free(net);
    intensity_free(&in);
    return st;
}

int predict_main(const options *o)
{
    if (predict(o)) {
        fprintf(stderr, "segment3d: %s\n", bp_last_error());
        return 1;
    }
    return 0;
}
