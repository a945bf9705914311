"""PyTorch's side of bench/op_overhead.c: the same chain of tiny ops.

A leaf x of n float32 elements goes through `chain` ops (x + c, x * c, relu,
repeating), then sum and backward. Prints the median time per op, in
microseconds, of the forward, the backward and both, and the best total, as
lines that op_overhead.c parses:  torch_fwd_us_per_op <v>  (and _bwd_,
_total_, _best_total_).
Run by op_overhead.c with Debian's /usr/bin/python3 (torch 1.13).
"""
import argparse
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--chain", type=int, default=1000)
    ap.add_argument("--n", type=int, default=100)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    idx = torch.arange(a.n)
    x = ((idx % 7).float() * 0.1 - 0.2).requires_grad_(True)
    c = 1.0 + (idx % 5).float() * 0.0001

    def run():
        t0 = time.perf_counter()
        h = x
        for i in range(a.chain):
            k = i % 3
            h = h + c if k == 0 else (h * c if k == 1 else torch.relu(h))
        loss = h.sum()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        x.grad = None
        return t1 - t0, t2 - t1

    for _ in range(10):
        run()
    f, b, t = [], [], []
    for _ in range(a.reps):
        tf, tb = run()
        f.append(tf)
        b.append(tb)
        t.append(tf + tb)
    us = 1e6 / a.chain
    print("torch_threads %d" % torch.get_num_threads())
    print("torch_fwd_us_per_op %.4f" % (statistics.median(f) * us))
    print("torch_bwd_us_per_op %.4f" % (statistics.median(b) * us))
    print("torch_total_us_per_op %.4f" % (statistics.median(t) * us))
    print("torch_best_total_us_per_op %.4f" % (min(t) * us))


if __name__ == "__main__":
    main()
