#!/usr/bin/python3
"""PyTorch side of bench/train_step: the same small 3-D CNN (NCDHW), batch B,
S^3 input, cross-entropy, SGD step, at the given thread count. Prints
'<median step ms> <peak RSS MiB>' after a warm-up."""
import resource
import sys
import time

import torch
import torch.nn as nn


def main():
    threads, reps, batch, size, classes = (int(a) for a in sys.argv[1:6])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    flat = 32 * (size // 4) ** 3
    net = nn.Sequential(
        nn.Conv3d(1, 16, 3, padding=1), nn.BatchNorm3d(16), nn.ReLU(), nn.MaxPool3d(2),
        nn.Conv3d(16, 32, 3, padding=1), nn.BatchNorm3d(32), nn.ReLU(), nn.MaxPool3d(2),
        nn.Flatten(), nn.Linear(flat, classes))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 1, size, size, size)
    y = torch.randint(0, classes, (batch,))
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()

    for _ in range(2):
        step()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    print(ts[len(ts) // 2], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)


if __name__ == "__main__":
    main()
