#!/usr/bin/python3
"""PyTorch side of bench/conv_transpose: times ConvTranspose3d(cin->cout,
kernel k, stride k) forward and forward+backward on (N, C, S, S, S) with the
given thread count, in PyTorch's default memory format (channels-first) and
in channels_last_3d, with its default (oneDNN, where built) path.
Prints one line per layout: '<layout> <fwd_ms> <fwdbwd_ms>' (medians, after
warm-up, buffers reused)."""
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
    for layout in ("channels_first", "channels_last"):
        fmt = torch.contiguous_format if layout == "channels_first" else torch.channels_last_3d
        conv = torch.nn.ConvTranspose3d(cin, cout, k, stride=k).to(memory_format=fmt)
        x = torch.randn(n, cin, s, s, s).to(memory_format=fmt).requires_grad_(True)
        dy = torch.randn(n, cout, s * k, s * k, s * k).to(memory_format=fmt)

        def fwd():
            with torch.no_grad():
                conv(x)

        def fwdbwd():
            x.grad = None
            conv.zero_grad(set_to_none=False)
            conv(x).backward(dy)

        print(layout, median_ms(fwd, reps), median_ms(fwdbwd, reps), flush=True)


if __name__ == "__main__":
    main()
