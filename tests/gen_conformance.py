#!/usr/bin/python3
"""Writes tests/data/conformance_layers.txt: PyTorch reference values for every
row of the layer conformance harness (tests/test_conformance.c).

Run with Debian's python3 (python3-torch, python3-numpy); the C tests never
need Python:
    /usr/bin/python3 tests/gen_conformance.py
or `cmake --build build --target fixtures`, which reruns every tests/gen_*.py.

Every case is computed in float64 on inputs and parameters rounded to float32
first, so the float32 and float64 test flavours read the same numbers and
compare with the exact answer. Stored per case, in bpc's channels-last layout:
  <case>.x               the input
  <case>.dy              the upstream gradient (shape of the output)
  <case>.y, <case>.dx    the output and the input gradient
  <case>.var.<key>       a value to assign to the layer's variable <key> (the
                         relative key of vars(), e.g. "w", "children-0.w")
  <case>.grad.<key>      the gradient of TrainVar <key>
  <case>.after.<key>     the value of variable <key> after the update (the
                         running statistics of BatchNorm while fitting)

Translations from PyTorch to bpc (BrainPy's semantics):
- data: PyTorch is channels-first (N, C, *S), bpc channels-last (N, *S, C);
  spatial dims keep their order.
- Conv: bpc's w is kernel + (C_in/groups, C_out) (PyTorch: (C_out, C_in/groups)
  + kernel), b is (1,)*n_spatial + (C_out,); padding "SAME" is BrainPy's
  (out = ceil(in/stride), total split low = total//2), applied with F.pad,
  as are explicit (low, high) pads.
- BatchNorm: bpc's momentum is BrainPy's retention factor: PyTorch's is
  1 - ours. scale/bias are PyTorch's weight/bias. running_var holds the
  unbiased variance in both.
- Pooling: padding reads -inf for max and is not counted by average pooling
  (BrainPy's window counts, PyTorch's count_include_pad=False); adaptive
  average pooling uses BrainPy's bins (the first L % n bins one longer).
- Dense: y = x @ W + b with W (in, out) (PyTorch's Linear weight transposed).
- LayerNorm: PyTorch's LayerNorm over the trailing normalized_shape dims;
  bpc's scale/bias are its weight/bias.
- Flatten: bpc's dims count per sample (batch axis kept): Flatten(0, -1) is
  torch.flatten(x, 1).
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_io import FixtureWriter  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "conformance_layers.txt")
GEN = torch.Generator().manual_seed(20261203)


def f32(t):
    """Rounded to float32 and back: exactly representable in both flavours."""
    return t.float().double()


def randn(*shape, scale=1.0, shift=0.0):
    return f32(torch.randn(*shape, generator=GEN, dtype=torch.float64) * scale + shift)


def to_cl(t):
    """(N, C, *S) -> (N, *S, C)"""
    return t.permute(0, *range(2, t.ndim), 1).contiguous()


def to_cf(t):
    """(N, *S, C) -> (N, C, *S)"""
    return t.permute(0, t.ndim - 1, *range(1, t.ndim - 1)).contiguous()


class Case:
    """Collects one case's tensors; `run` differentiates y = fn(x, *params)."""

    def __init__(self, w, name):
        self.w, self.name = w, name

    def put(self, what, value):
        self.w.add("%s.%s" % (self.name, what), value.detach().numpy() if torch.is_tensor(value) else value)

    def run(self, x_cl, fn, params=(), dy_scale=1.0):
        """x_cl: channels-last input; fn(x_cl) -> channels-last output; params:
        (bpc key, torch leaf, to-bpc-layout function) for the trainable ones."""
        x = x_cl.clone().requires_grad_(True)
        for _, p, _ in params:
            p.requires_grad_(True)
        y = fn(x)
        dy = randn(*y.shape, scale=dy_scale)
        y.backward(dy)
        self.put("x", x_cl)
        self.put("dy", dy)
        self.put("y", y)
        self.put("dx", x.grad)
        for key, p, layout in params:
            self.put("var." + key, layout(p.detach()))
            self.put("grad." + key, layout(p.grad))


def same_pads(size, k, s, d):
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def torch_pad(pads):
    flat = []
    for lo, hi in reversed(pads):
        flat += [lo, hi]
    return flat


CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def conv_case(w, name, shape, cout, k, stride, dil, groups, pads, bias=True, key=""):
    nsp = len(k)
    cin = shape[-1]
    wt = randn(cout, cin // groups, *k, scale=0.3)
    b = randn(cout, scale=0.1)
    if pads == "same":
        pads = [same_pads(shape[1 + i], k[i], stride[i], dil[i]) for i in range(nsp)]
    elif pads == "valid":
        pads = [(0, 0)] * nsp

    def fn(x):
        xp = F.pad(to_cf(x), torch_pad(pads))
        return to_cl(CONV[nsp](xp, wt, b if bias else None, stride=stride, dilation=dil, groups=groups))

    def w_layout(t):
        return t.permute(*range(2, 2 + nsp), 1, 0)

    def b_layout(t):
        return t.reshape((1,) * nsp + (cout,))

    params = [(key + "w", wt, w_layout)] + ([(key + "b", b, b_layout)] if bias else [])
    c = Case(w, name)
    c.run(randn(*shape), fn, params)
    return c


def bn_case(w, name, shape, momentum, eps, fit):
    """shape is channels-last (B, *S, C); bpc momentum (retention)."""
    C = shape[-1]
    cls = {3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}[len(shape)]
    bn = cls(C, eps=eps, momentum=1.0 - momentum).double()
    rm, rv = randn(C, scale=0.5), f32(torch.rand(C, generator=GEN, dtype=torch.float64) + 0.5)
    weight = f32(torch.rand(C, generator=GEN, dtype=torch.float64) + 0.5)
    bias = randn(C, scale=0.3)
    with torch.no_grad():
        bn.running_mean.copy_(rm)
        bn.running_var.copy_(rv)
        bn.weight.copy_(weight)
        bn.bias.copy_(bias)
    bn.train(fit)
    c = Case(w, name)
    c.put("var.running_mean", rm)
    c.put("var.running_var", rv)
    c.run(randn(*shape, scale=2.0, shift=1.0), lambda x: to_cl(bn(to_cf(x))),
          [("bias", bn.bias, lambda t: t), ("scale", bn.weight, lambda t: t)])
    c.put("after.running_mean", bn.running_mean)
    c.put("after.running_var", bn.running_var)


def pool_case(w, name, shape, kind, k, stride, pads):
    nsp = len(k)
    kk = tuple(k)

    def fn(x):
        xf = to_cf(x)
        fp = torch_pad(pads)
        if kind == "max":
            return to_cl({1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nsp](
                F.pad(xf, fp, value=float("-inf")), kk, stride))
        avg = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nsp]
        total = avg(F.pad(xf, fp), kk, stride)
        count = avg(F.pad(torch.ones_like(xf), fp), kk, stride)
        return to_cl(total / count)

    Case(w, name).run(randn(*shape), fn)


def brainpy_adaptive_avg(t, target):
    """BrainPy's adaptive average pooling of channels-first t: an axis of
    L = n*q + r elements is cut into n bins, the first r of q + 1 elements."""
    for i, n in enumerate(target):
        axis = 2 + i
        q, r = divmod(t.shape[axis], n)
        sizes = [q + 1] * r + [q] * (n - r)
        t = torch.stack([p.mean(dim=axis) for p in torch.split(t, sizes, dim=axis)], dim=axis)
    return t


def layernorm_case(w, name, shape, normalized_shape, eps, affine):
    ln = torch.nn.LayerNorm(normalized_shape, eps=eps, elementwise_affine=affine).double()
    params = []
    if affine:
        with torch.no_grad():
            ln.weight.copy_(f32(torch.rand(*normalized_shape, generator=GEN, dtype=torch.float64) + 0.5))
            ln.bias.copy_(randn(*normalized_shape, scale=0.3))
        params = [("bias", ln.bias, lambda t: t), ("scale", ln.weight, lambda t: t)]
    Case(w, name).run(randn(*shape, scale=1.5, shift=-0.5), ln, params)


def groupnorm_case(w, name, shape, groups, eps, affine):
    """torch.nn.GroupNorm on the channels-first view (InstanceNorm: groups = C)."""
    C = shape[-1]
    gn = torch.nn.GroupNorm(groups, C, eps=eps, affine=affine).double()
    params = []
    if affine:
        with torch.no_grad():
            gn.weight.copy_(f32(torch.rand(C, generator=GEN, dtype=torch.float64) + 0.5))
            gn.bias.copy_(randn(C, scale=0.3))
        params = [("bias", gn.bias, lambda t: t), ("scale", gn.weight, lambda t: t)]
    Case(w, name).run(randn(*shape, scale=1.5, shift=0.7), lambda x: to_cl(gn(to_cf(x))), params)


CONVT = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def convt_pads(size, k, s, d, pads):
    """lax.conv_transpose's (low, high) padding of the stride-dilated input."""
    span = (k - 1) * d + 1
    if pads == "same":
        total = span + s - 2
        lo = span - 1 if s > span - 1 else -(-total // 2)
        return lo, total - lo
    if pads == "valid":
        return span - 1, span + s - 2 + max(span - s, 0) - (span - 1)
    return pads


def convt_case(w, name, shape, cout, k, stride, dil, groups, pads, out_pad, bias=True):
    """bpc's ConvTranspose (BrainPy's lax.conv_transpose: no kernel flip, pads of
    the dilated input) through PyTorch's conv_transpose: PyTorch's kernel is bpc's
    flipped, and its full output (padding 0) is cropped / zero-padded by
    lo - (span - 1) on the low and hi - (span - 1) on the high side."""
    nsp = len(k)
    cin = shape[-1]
    wt = randn(cin, cout // groups, *k, scale=0.3)
    b = randn(cout, scale=0.1)
    if isinstance(pads, str):
        pads = [pads] * nsp
    lohi = [convt_pads(shape[1 + i], k[i], stride[i], dil[i], pads[i]) for i in range(nsp)]
    lohi = [(lo, hi + out_pad[i]) for i, (lo, hi) in enumerate(lohi)]
    spans = [(k[i] - 1) * dil[i] + 1 for i in range(nsp)]

    def fn(x):
        full = CONVT[nsp](to_cf(x), wt, None, stride=stride, dilation=dil, groups=groups)
        y = F.pad(full, torch_pad([(lo - spans[i] + 1, hi - spans[i] + 1) for i, (lo, hi) in enumerate(lohi)]))
        if bias:
            y = y + b.reshape((1, cout) + (1,) * nsp)
        return to_cl(y)

    def w_layout(t):
        t = t.flip(list(range(2, 2 + nsp)))
        t = t.reshape((groups, cin // groups, cout // groups) + tuple(k))
        t = t.permute(*range(3, 3 + nsp), 1, 0, 2)
        return t.reshape(tuple(k) + (cin // groups, cout))

    def b_layout(t):
        return t.reshape((1,) * nsp + (cout,))

    params = [("w", wt, w_layout)] + ([("b", b, b_layout)] if bias else [])
    Case(w, name).run(randn(*shape), fn, params)


def main():
    with FixtureWriter(OUT, "PyTorch %s reference values (float64), written by tests/gen_conformance.py"
                       % torch.__version__) as w:
        # BatchNorm: (B, L, C), (B, H, W, C), (B, H, W, D, C); fit and eval.
        for fit in (True, False):
            tag = "fit" if fit else "eval"
            bn_case(w, "bn1d_" + tag, (3, 4, 5), 0.9, 1e-5, fit)
            bn_case(w, "bn2d_" + tag, (2, 3, 4, 3), 0.8, 1e-5, fit)
            bn_case(w, "bn3d_" + tag, (2, 3, 2, 3, 4), 0.7, 1e-3, fit)
        # Conv: SAME, VALID, explicit pads, stride, dilation, groups, no bias.
        conv_case(w, "conv1d_same", (2, 9, 3), 4, (3,), (1,), (1,), 1, "same")
        conv_case(w, "conv1d_s2_d2_g2", (2, 11, 4), 6, (3,), (2,), (2,), 2, "valid")
        conv_case(w, "conv2d_same_s2", (2, 7, 6, 3), 5, (3, 3), (2, 2), (1, 1), 1, "same")
        conv_case(w, "conv2d_pad_g2_nobias", (1, 6, 5, 4), 4, (2, 3), (1, 1), (1, 2), 2, [(1, 0), (0, 2)],
                  bias=False)
        conv_case(w, "conv3d_same", (2, 4, 3, 5, 3), 4, (3, 3, 3), (1, 1, 1), (1, 1, 1), 1, "same")
        conv_case(w, "conv3d_strided_g2", (1, 7, 5, 6, 4), 6, (3, 2, 3), (2, 1, 2), (1, 2, 1), 2,
                  [(1, 0), (0, 2), (2, 1)])
        conv_case(w, "conv3d_depthwise", (1, 5, 4, 4, 4), 4, (3, 3, 3), (1, 1, 1), (1, 1, 1), 4, "valid")
        # Pooling.
        pool_case(w, "maxpool1d", (2, 9, 3), "max", (3,), (2,), [(0, 0)])
        pool_case(w, "maxpool2d", (2, 6, 5, 3), "max", (2, 2), (2, 2), [(0, 0), (0, 0)])
        pool_case(w, "maxpool3d", (2, 4, 4, 4, 3), "max", (2, 2, 2), (2, 2, 2), [(0, 0)] * 3)
        pool_case(w, "maxpool3d_overlap_pad", (1, 5, 5, 4, 2), "max", (3, 2, 2), (2, 1, 2),
                  [(1, 1), (0, 1), (1, 0)])
        pool_case(w, "avgpool1d", (2, 8, 3), "avg", (2,), (1,), [(0, 0)])
        pool_case(w, "avgpool2d_pad", (2, 6, 6, 2), "avg", (3, 3), (2, 2), [(1, 1), (1, 1)])
        pool_case(w, "avgpool3d", (1, 6, 4, 5, 3), "avg", (2, 2, 3), (2, 2, 1), [(0, 0)] * 3)
        Case(w, "adaptive_avgpool1d").run(randn(2, 7, 3), lambda x: to_cl(brainpy_adaptive_avg(to_cf(x), (3,))))
        Case(w, "adaptive_avgpool3d").run(randn(1, 7, 5, 6, 3),
                                           lambda x: to_cl(brainpy_adaptive_avg(to_cf(x), (3, 2, 4))))
        # Dense (W is (in, out), as BrainPy).
        W, b = randn(7, 5, scale=0.4), randn(5, scale=0.1)
        Case(w, "dense").run(randn(4, 3, 7), lambda x: x @ W + b,
                             [("W", W, lambda t: t), ("b", b, lambda t: t)])
        # Dropout outside fit is the identity.
        Case(w, "dropout_eval").run(randn(3, 4, 5), lambda x: F.dropout(x, 0.3, training=False))
        # Element-wise layers.
        acts = {"relu": F.relu, "leaky_relu": lambda x: F.leaky_relu(x, 0.1), "sigmoid": torch.sigmoid,
                "tanh": torch.tanh, "gelu": F.gelu, "softmax": lambda x: F.softmax(x, dim=-1)}
        for name, fn in acts.items():
            Case(w, name).run(randn(3, 4, 5, scale=2.0), fn)
        Case(w, "flatten").run(randn(2, 3, 4, 5), lambda x: torch.flatten(x, 1))
        # Sequential(Conv2d(3 -> 4, kernel 3, SAME), ReLU).
        wt, bb = randn(4, 3, 3, 3, scale=0.3), randn(4, scale=0.1)
        Case(w, "sequential_conv_relu").run(
            randn(2, 5, 6, 3),
            lambda x: F.relu(to_cl(F.conv2d(to_cf(x), wt, bb, padding=1))),
            [("children-0.w", wt, lambda t: t.permute(2, 3, 1, 0)),
             ("children-0.b", bb, lambda t: t.reshape(1, 1, 4))])
        # LayerNorm over the trailing normalized_shape dims.
        layernorm_case(w, "layernorm_c", (2, 3, 4, 6), (6,), 1e-5, True)
        layernorm_case(w, "layernorm_wdc", (2, 3, 4, 5), (3, 4, 5), 1e-5, True)
        layernorm_case(w, "layernorm_sample", (2, 2, 3, 4, 5), (2, 3, 4, 5), 1e-5, True)
        layernorm_case(w, "layernorm_noaffine", (3, 2, 7), (7,), 1e-3, False)
        # GroupNorm / InstanceNorm per (sample, group), channels-last.
        groupnorm_case(w, "groupnorm3d_g2", (2, 3, 2, 3, 4), 2, 1e-5, True)
        groupnorm_case(w, "instancenorm3d", (1, 4, 3, 2, 3), 3, 1e-5, True)
        groupnorm_case(w, "groupnorm1d_g1_noaffine", (3, 5, 6), 1, 1e-3, False)
        # ConvTranspose (appended: the cases above keep their bytes).
        convt_case(w, "convt1d_same_s2", (2, 5, 3), 4, (2,), (2,), (1,), 1, "same", (0,))
        convt_case(w, "convt1d_valid_d2_g2_op1", (2, 4, 4), 6, (3,), (2,), (2,), 2, "valid", (1,))
        convt_case(w, "convt2d_same_k3_s2", (2, 4, 3, 3), 5, (3, 3), (2, 2), (1, 1), 1, "same", (0, 0))
        convt_case(w, "convt2d_pad_g2_nobias", (1, 4, 3, 4), 6, (3, 2), (1, 2), (2, 1), 2, [(1, 3), (0, 1)],
                   (1, 1), bias=False)
        convt_case(w, "convt3d_unet", (2, 3, 2, 3, 4), 3, (2, 2, 2), (2, 2, 2), (1, 1, 1), 1, "valid", (0, 0, 0))
        convt_case(w, "convt3d_strided_g2", (1, 3, 2, 3, 4), 4, (3, 2, 3), (2, 1, 3), (1, 2, 1), 2,
                   [(2, 1), (0, 2), (1, 0)], (1, 1, 2))
        convt_case(w, "convt3d_same_s1", (1, 3, 3, 2, 3), 4, (3, 3, 3), (1, 1, 1), (1, 1, 1), 1, "same", (0, 0, 0))


if __name__ == "__main__":
    main()
