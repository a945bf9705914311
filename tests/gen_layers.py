#!/usr/bin/python3
"""Writes tests/data/layers_torch.txt: PyTorch reference values for bpc's
Conv3d / Conv2d / MaxPool3d / AvgPool3d / AdaptiveAvgPool3d / Dense layers.
Adaptive pooling uses BrainPy's bin split (written with torch ops here), and
padded average pooling excludes the padding from the count, as BrainPy does.

Run with Debian's python3 (python3-torch, python3-numpy):
    /usr/bin/python3 tests/gen_layers.py
Every case stores, in bpc's channels-last layout: the input x, the parameters
(bpc layouts: conv w (k0,k1,k2,Cin/groups,Cout), b (1,1,1,Cout); Dense W
(in,out), b (out,)), an upstream gradient dy, the output y and the gradients
dx, dw, db. PyTorch runs NCDHW; spatial dims keep their order (bpc's H,W,D are
torch's D,H,W positions 2,3,4). Asymmetric padding is applied with F.pad.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_io import FixtureWriter  # noqa: E402

torch.manual_seed(0)
np.random.seed(0)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "layers_torch.txt")


def to_cl(t):
    """NC... -> N...C"""
    return t.permute(0, *range(2, t.ndim), 1).contiguous()


def same_pads(size, k, s, d):
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def conv_case(w, name, shape_cl, cout, k, stride, dil, groups, pads):
    """pads: list of (lo, hi) per spatial dim, or 'same'."""
    nsp = len(k)
    x = torch.randn(*shape_cl, dtype=torch.float64)
    cin = shape_cl[-1]
    wt = torch.randn(cout, cin // groups, *k, dtype=torch.float64) * 0.3
    b = torch.randn(cout, dtype=torch.float64) * 0.1
    if pads == "same":
        pads = [same_pads(shape_cl[1 + i], k[i], stride[i], dil[i]) for i in range(nsp)]
    xn = x.permute(0, nsp + 1, *range(1, nsp + 1)).clone().requires_grad_(True)
    wt.requires_grad_(True)
    b.requires_grad_(True)
    flat = []
    for lo, hi in reversed(pads):
        flat += [lo, hi]
    xp = F.pad(xn, flat)
    conv = F.conv3d if nsp == 3 else F.conv2d
    y = conv(xp, wt, b, stride=stride, dilation=dil, groups=groups)
    dy = torch.randn_like(y)
    y.backward(dy)
    w.add(name + ".x", x.numpy())
    w.add(name + ".w", wt.detach().permute(*range(2, 2 + nsp), 1, 0).numpy())
    w.add(name + ".b", b.detach().numpy())
    w.add(name + ".dy", to_cl(dy).numpy())
    w.add(name + ".y", to_cl(y.detach()).numpy())
    w.add(name + ".dx", to_cl(xn.grad).numpy())
    w.add(name + ".dw", wt.grad.permute(*range(2, 2 + nsp), 1, 0).numpy())
    w.add(name + ".db", b.grad.numpy())


def brainpy_adaptive_avg(t, target):
    """BrainPy's adaptive average pooling of NCDHW t: along each spatial axis of
    L = n*q + r elements, the first r bins take q + 1 elements, the rest q."""
    for axis, n in zip((2, 3, 4), target):
        L = t.shape[axis]
        q, r = divmod(L, n)
        sizes = [q + 1] * r + [q] * (n - r)
        t = torch.stack([c.mean(dim=axis) for c in torch.split(t, sizes, dim=axis)], dim=axis)
    return t


def pool_case(w, name, shape_cl, fn):
    x = torch.randn(*shape_cl, dtype=torch.float64)
    xn = x.permute(0, 4, 1, 2, 3).clone().requires_grad_(True)
    y = fn(xn)
    dy = torch.randn_like(y)
    y.backward(dy)
    w.add(name + ".x", x.numpy())
    w.add(name + ".dy", to_cl(dy).numpy())
    w.add(name + ".y", to_cl(y.detach()).numpy())
    w.add(name + ".dx", to_cl(xn.grad).numpy())


def main():
    with FixtureWriter(OUT, "PyTorch %s reference values, written by tests/gen_layers.py" % torch.__version__) as w:
        conv_case(w, "conv3d_same", (2, 4, 3, 5, 3), 4, (3, 3, 3), (1, 1, 1), (1, 1, 1), 1, "same")
        conv_case(w, "conv3d_strided", (1, 7, 5, 6, 4), 6, (3, 2, 3), (2, 1, 2), (1, 2, 1), 2,
                  [(1, 0), (0, 2), (2, 1)])
        conv_case(w, "conv3d_valid_c1", (2, 6, 5, 4, 1), 5, (3, 3, 2), (1, 2, 1), (1, 1, 1), 1,
                  [(0, 0), (0, 0), (0, 0)])
        conv_case(w, "conv2d_same_s2", (2, 7, 6, 3), 5, (3, 3), (2, 2), (1, 1), 1, "same")
        pool_case(w, "maxpool3d", (2, 4, 4, 4, 3), lambda t: F.max_pool3d(t, (2, 2, 2), (2, 2, 2)))
        pool_case(w, "maxpool3d_overlap", (2, 5, 5, 4, 2), lambda t: F.max_pool3d(t, (3, 2, 2), (2, 1, 2)))
        pool_case(w, "avgpool3d", (1, 6, 4, 5, 3), lambda t: F.avg_pool3d(t, (2, 2, 3), (2, 2, 1)))
        pool_case(w, "adaptive3d", (1, 7, 5, 6, 3), lambda t: brainpy_adaptive_avg(t, (3, 2, 4)))
        pool_case(w, "avgpool3d_pad", (1, 5, 6, 4, 2),
                  lambda t: F.avg_pool3d(t, 3, 2, padding=1, count_include_pad=False))
        x = torch.randn(4, 3, 7, dtype=torch.float64, requires_grad=True)
        W = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
        b = torch.randn(5, dtype=torch.float64, requires_grad=True)
        y = x @ W + b
        dy = torch.randn_like(y)
        y.backward(dy)
        for k, v in (("x", x), ("w", W), ("b", b), ("dy", dy), ("y", y), ("dx", x.grad), ("dw", W.grad),
                     ("db", b.grad)):
            w.add("dense." + k, v.detach().numpy())


if __name__ == "__main__":
    main()
