"""Writes tests/data/ops_*.txt: PyTorch reference values for bpc's autograd ops.

Run with Debian's python (torch 1.13, numpy):  /usr/bin/python3 tests/gen_ops.py
For each case it stores the inputs <case>.in0, <case>.in1 (labels as numbers),
the forward output <case>.out, an upstream gradient <case>.dy, and the input
gradients <case>.g0, <case>.g1 that backward from <case>.out with <case>.dy
gives. Everything is computed in float64.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_io import FixtureWriter  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
torch.manual_seed(20261124)
D = torch.float64


def randn(*shape, away_from_zero=False):
    x = torch.randn(*shape, dtype=D)
    if away_from_zero:
        # Keep |x| >= 0.1 so kinks (relu at 0) are far from the finite-difference step.
        x = torch.where(x.abs() < 0.1, torch.sign(x) * 0.1 + x, x)
    return x


def case(w, name, fn, inputs, grad_mask=None):
    """Records inputs, fn(*inputs), a random dy and the gradients of inputs in grad_mask."""
    ins = []
    for i, x in enumerate(inputs):
        if x.is_floating_point() and (grad_mask is None or grad_mask[i]):
            x = x.clone().requires_grad_(True)
        ins.append(x)
        w.add("%s.in%d" % (name, i), x.detach())
    out = fn(*ins)
    dy = torch.randn(out.shape, dtype=D)
    w.add(name + ".out", out.detach())
    w.add(name + ".dy", dy)
    out.backward(dy)
    for i, x in enumerate(ins):
        if x.requires_grad:
            w.add("%s.g%d" % (name, i), x.grad)


def elementwise():
    with FixtureWriter(os.path.join(DATA, "ops_elementwise.txt"), "tests/gen_ops.py: elementwise ops") as w:
        for op, fn in (("add", torch.add), ("sub", torch.sub), ("mul", torch.mul)):
            case(w, op + "_same", fn, [randn(3, 4), randn(3, 4)])
            case(w, op + "_suffix", fn, [randn(2, 3, 4), randn(3, 4)])
            case(w, op + "_prefix", fn, [randn(4), randn(2, 3, 4)])
            case(w, op + "_0d", fn, [randn(2, 5), randn(())])
        pos = lambda *s: torch.rand(*s, dtype=D) + 0.5  # noqa: E731
        case(w, "div_same", torch.div, [randn(3, 4), pos(3, 4)])
        case(w, "div_suffix", torch.div, [randn(2, 3, 4), pos(4)])
        case(w, "div_prefix", torch.div, [randn(4), pos(2, 3, 4)])
        case(w, "add_scalar", lambda a: a + 1.75, [randn(2, 3)])
        case(w, "mul_scalar", lambda a: a * -2.5, [randn(2, 3)])
        case(w, "pow_frac", lambda a: a ** 2.5, [pos(2, 3)])
        case(w, "pow_int", lambda a: a ** 3.0, [randn(2, 3)])


def matmul():
    with FixtureWriter(os.path.join(DATA, "ops_matmul.txt"), "tests/gen_ops.py: matmul") as w:
        case(w, "matmul_2d", torch.matmul, [randn(3, 4), randn(4, 5)])
        case(w, "matmul_3d", torch.matmul, [randn(2, 3, 4), randn(4, 5)])
        case(w, "matmul_1d", torch.matmul, [randn(4), randn(4, 5)])


def reduce():
    with FixtureWriter(os.path.join(DATA, "ops_reduce.txt"), "tests/gen_ops.py: sum and mean") as w:
        for op, fn in (("sum", torch.sum), ("mean", torch.mean)):
            x = randn(2, 3, 4)
            case(w, op + "_all", lambda a: fn(a), [x])
            case(w, op + "_ax1", lambda a: fn(a, dim=1), [x])
            case(w, op + "_ax02_keep", lambda a: fn(a, dim=(0, 2), keepdim=True), [x])
            case(w, op + "_axm1", lambda a: fn(a, dim=-1), [x])


def shape():
    with FixtureWriter(os.path.join(DATA, "ops_shape.txt"), "tests/gen_ops.py: reshape and flatten") as w:
        x = randn(2, 3, 4)
        case(w, "reshape", lambda a: a.reshape(4, -1), [x])
        case(w, "flatten", lambda a: torch.flatten(a, 1, -1), [x])
        case(w, "flatten_01", lambda a: torch.flatten(a, 0, 1), [x])


def activation():
    with FixtureWriter(os.path.join(DATA, "ops_activation.txt"), "tests/gen_ops.py: activations") as w:
        x = randn(3, 5, away_from_zero=True)
        case(w, "relu", F.relu, [x])
        case(w, "leaky_relu", lambda a: F.leaky_relu(a, 0.1), [x])
        wide = torch.cat([x.reshape(-1), torch.tensor([-40.0, 40.0, -8.0, 8.0, 0.0], dtype=D)])
        case(w, "sigmoid", torch.sigmoid, [wide])
        case(w, "tanh", torch.tanh, [wide])
        case(w, "gelu", lambda a: F.gelu(a), [wide])  # approximate='none': the erf form
        case(w, "softmax_2d", lambda a: torch.softmax(a, -1), [randn(3, 5)])
        case(w, "softmax_3d", lambda a: torch.softmax(a, -1), [randn(2, 3, 4) * 10])
        case(w, "log_softmax_2d", lambda a: torch.log_softmax(a, -1), [randn(3, 5)])
        case(w, "log_softmax_3d", lambda a: torch.log_softmax(a, -1), [randn(2, 3, 4) * 10])


def loss():
    with FixtureWriter(os.path.join(DATA, "ops_loss.txt"), "tests/gen_ops.py: losses") as w:
        lab = torch.tensor([0, 4, 2, 2], dtype=torch.int64)
        case(w, "ce_2d", lambda a, l: F.cross_entropy(a, l), [randn(4, 5), lab])
        lab3 = torch.randint(0, 5, (2, 3), dtype=torch.int64)
        # bpc's logits are (..., C); torch wants the classes in dim 1.
        case(w, "ce_3d", lambda a, l: F.cross_entropy(a.permute(0, 2, 1), l), [randn(2, 3, 5) * 3, lab3])
        case(w, "mse", F.mse_loss, [randn(3, 4), randn(3, 4)])


if __name__ == "__main__":
    os.makedirs(DATA, exist_ok=True)
    elementwise()
    matmul()
    reduce()
    shape()
    activation()
    loss()
