#!/usr/bin/python3
"""PyTorch side of bench/conv3d: times Conv3d(cin->cout, k, pad) forward and
forward+backward on (N, C, D, H, W) with the given thread count, for the
default (oneDNN) path and the vol2col + BLAS path (mkldnn disabled).
Prints one line per path: '<path> <fwd_ms> <fwdbwd_ms>' (medians).
Buffers are reused across repetitions (warm-up first), so page faults of
fresh allocations are not counted."""
import sys
import time

import torch


def median_ms(fn, reps):
    fn()
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]


def main():
    threads, reps, n, cin, cout, s, k = (int(a) for a in sys.argv[1:8])
    torch.set_num_threads(threads)
    x = torch.randn(n, cin, s, s, s, requires_grad=True)
    conv = torch.nn.Conv3d(cin, cout, k, padding=k // 2)
    dy = torch.randn(n, cout, s, s, s)
    for path in ("onednn", "vol2col"):
        torch.backends.mkldnn.enabled = path == "onednn"

        def fwd():
            with torch.no_grad():
                conv(x)

        def fwdbwd():
            x.grad = None
            conv.zero_grad(set_to_none=False)
            conv(x).backward(dy)

        print(path, median_ms(fwd, reps), median_ms(fwdbwd, reps), flush=True)


if __name__ == "__main__":
    main()
