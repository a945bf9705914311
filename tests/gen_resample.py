#!/usr/bin/python3
"""Writes tests/data/resample.txt: PyTorch reference values for bp_upsample
(torch.nn.functional.interpolate, align_corners=False) and bp_concat
(torch.cat), channels-last, each with the gradient of sum(w * y) for a fixed
random w. Run: /usr/bin/python3 tests/gen_resample.py (python3-torch)."""
import os
import torch
import torch.nn.functional as F
from fixture_io import FixtureWriter

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    g = torch.Generator().manual_seed(11)
    cases = [  # name, channels-last shape, scale, mode
        ("up_nearest_3d", (2, 3, 2, 4, 3), (2, 2, 2), "nearest"),
        ("up_trilinear_3d", (2, 3, 2, 4, 3), (2, 2, 2), "trilinear"),
        ("up_trilinear_aniso", (1, 2, 3, 1, 2), (3, 1, 2), "trilinear"),
        ("up_bilinear_2d", (2, 4, 3, 5), (2, 3), "bilinear"),
        ("up_linear_1d", (3, 5, 2), (4,), "linear"),
        ("up_nearest_1d", (3, 5, 2), (3,), "nearest"),
    ]
    with FixtureWriter(os.path.join(HERE, "data", "resample.txt"),
                       "PyTorch %s values for tests/test_resample.c (tests/gen_resample.py)" % torch.__version__) as fw:
        for name, shape, scale, mode in cases:
            x = torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(True)
            k = len(scale)
            perm = (0, k + 1) + tuple(range(1, k + 1))       # channels-last -> channels-first
            back = (0,) + tuple(range(2, k + 2)) + (1,)
            y = F.interpolate(x.permute(*perm), scale_factor=scale, mode=mode,
                              **({} if mode == "nearest" else {"align_corners": False})).permute(*back)
            w = torch.randn(*y.shape, generator=g, dtype=torch.float64)
            (y * w).sum().backward()
            fw.add(name + "_x", x.detach().numpy())
            fw.add(name + "_scale", torch.tensor(scale, dtype=torch.float64).numpy())
            fw.add(name + "_y", y.detach().numpy())
            fw.add(name + "_w", w.numpy())
            fw.add(name + "_dx", x.grad.numpy())
        # concat of three along the channels, and along axis 1
        for name, shapes, axis in [("cat_channels", [(2, 3, 2, 1), (2, 3, 2, 4), (2, 3, 2, 2)], -1),
                                   ("cat_axis1", [(2, 1, 3), (2, 4, 3)], 1)]:
            xs = [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_(True) for s in shapes]
            y = torch.cat(xs, dim=axis)
            w = torch.randn(*y.shape, generator=g, dtype=torch.float64)
            (y * w).sum().backward()
            for i, x in enumerate(xs):
                fw.add("%s_x%d" % (name, i), x.detach().numpy())
                fw.add("%s_dx%d" % (name, i), x.grad.numpy())
            fw.add(name + "_y", y.detach().numpy())
            fw.add(name + "_w", w.numpy())


if __name__ == "__main__":
    main()
