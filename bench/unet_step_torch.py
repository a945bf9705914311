#!/usr/bin/python3
"""PyTorch side of bench/unet_step: the U-Net of tests/gen_unet.py (instance
norm, LeakyReLU, trilinear up-sampling) with the same depth and width, one
Adam training step on a (B, 1, S, S, S) patch with cross-entropy over K
classes, and sliding-window inference throughput over a V^3 volume
(windows of S^3, overlap 0.5, Gaussian-free averaging: the same number of
windows as bpc). Prints '<median step ms> <voxels/s> <peak RSS MiB>'."""
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from gen_unet import UNet  # noqa: E402


def main():
    threads, reps, batch, size, classes, depth, base, vol = (int(a) for a in sys.argv[1:9])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = UNet(1, classes, depth, base, "instance", 0.01)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, size, size, size)
    y = torch.randint(0, classes, (batch, size, size, size))

    def step():
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()

    for _ in range(2):
        step()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    # inference: the windows bpc's sliding window visits (stride S/2, last flush)
    net.eval()
    v = torch.randn(1, 1, vol, vol, vol)
    starts = list(range(0, vol - size + 1, size // 2))
    if starts[-1] != vol - size:
        starts.append(vol - size)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = torch.zeros(1, classes, vol, vol, vol)
        for a in starts:
            for b in starts:
                for c in starts:
                    out[:, :, a:a + size, b:b + size, c:c + size] += net(v[:, :, a:a + size, b:b + size, c:c + size])
    vps = vol ** 3 / (time.perf_counter() - t0)
    print(ts[len(ts) // 2], vps, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)


if __name__ == "__main__":
    main()
