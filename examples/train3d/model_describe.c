/* examples/train3d/model_describe.c — a net's one-line description, read off
 * its node tree (so --help and the start-up line cannot drift from model.c). */
#include <stdio.h>
#include <string.h>
#include <bpc/conv.h>
#include <bpc/dense.h>
#include <bpc/pool.h>
#include "model.h"

/* Last dimension of the node's weight (Conv3d's "w", Dense's "W"): its
 * outputs; *in gets the one before it, its inputs. -1 without one. */
static int64_t out_width(const bp_node *n, const char *attr, int64_t *in)
{
    const bp_var *w = bp_node_var(n, attr);
    if (!w || w->value->ndim < 2) return -1;
    if (in) *in = w->value->shape[w->value->ndim - 2];
    return w->value->shape[w->value->ndim - 1];
}

bp_status net_describe(bp_node *net, bool symbolic, char *buf, size_t cap)
{
    bp_collect_opts co = bp_collect_defaults();
    co.include_self = false;
    bp_collector *nodes;
    BP_TRY(bp_node_nodes(net, &co, &nodes));
    char widths[128] = "";
    int blocks = 0;
    bool gap = false;
    int64_t fc_in = -1, fc_out = -1;
    for (size_t i = 0; i < bp_collector_len(nodes); i++) {
        const bp_node *n = bp_collector_node(nodes, i);
        size_t len = strlen(widths);
        int64_t in = 0, out;
        if (n->cls == &bp_conv3d_class && (out = out_width(n, "w", &in)) > 0) {
            if (blocks++ == 0) {
                if (symbolic) snprintf(widths, sizeof widths, "C");
                else snprintf(widths, sizeof widths, "%lld", (long long)in);
                len = strlen(widths);
            }
            snprintf(widths + len, sizeof widths - len, "->%lld", (long long)out);
        } else if (n->cls == &bp_adaptive_avgpool3d_class) {
            gap = true;
        } else if (n->cls == &bp_dense_class) {
            fc_out = out_width(n, "W", &fc_in);
        }
    }
    bp_collector_free(nodes);
    char k[32] = "K";
    if (!symbolic) snprintf(k, sizeof k, "%lld", (long long)fc_out);
    snprintf(buf, cap, "%d x [Conv3d-BatchNorm3d-ReLU-MaxPool3d] (%s), %s, Dense(%lld->%s)", blocks, widths,
             gap ? "global average pool" : "flatten", (long long)fc_in, k);
    return BP_OK;
}
