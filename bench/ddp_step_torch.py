#!/usr/bin/python3
"""PyTorch side of bench/ddp_step: train3d's model (NCDHW; BatchNorm per
process: PyTorch has no SyncBatchNorm on CPU) under DistributedDataParallel
with the gloo backend on 2 local processes, the global batch split over them,
one SGD step at a time. Prints '<median step ms> 0' (DDP overlaps its
reduction with backward, so it is not timed apart)."""
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn


def net(classes=8):
    return nn.Sequential(
        nn.Conv3d(1, 16, 3, padding=1), nn.BatchNorm3d(16), nn.ReLU(), nn.MaxPool3d(2),
        nn.Conv3d(16, 32, 3, padding=1), nn.BatchNorm3d(32), nn.ReLU(), nn.MaxPool3d(2),
        nn.Conv3d(32, 64, 3, padding=1), nn.BatchNorm3d(64), nn.ReLU(), nn.MaxPool3d(2),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(64, classes))


def worker(rank, reps, batch, size, port, q):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(net())
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    n = batch // 2
    x = torch.randn(n, 1, size, size, size)
    y = torch.randint(0, 8, (n,))
    loss_fn = nn.CrossEntropyLoss()
    ts = []
    for rep in range(reps + 2):
        dist.barrier()
        t0 = time.perf_counter()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        if rep >= 2:
            ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    if rank == 0:
        q.put(ts[len(ts) // 2])
    dist.destroy_process_group()


def main():
    reps, batch, size = (int(a) for a in sys.argv[1:4])
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = 29500 + os.getpid() % 1000
    ps = [ctx.Process(target=worker, args=(r, reps, batch, size, port, q)) for r in range(2)]
    for p in ps:
        p.start()
    step = q.get()
    for p in ps:
        p.join()
    print(step, 0.0)


if __name__ == "__main__":
    main()
