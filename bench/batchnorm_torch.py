"""PyTorch's CPU BatchNorm3d timed the way bench/batchnorm.c times bpc's kernels.

bench/batchnorm.c runs this with Debian's /usr/bin/python3 (torch 1.13) through
popen, once per shape and thread count, and reads lines of the form
    RESULT <layout> <op> <median ms (or minimum with --min)>
with layout in {ncdhw, channels_last_3d} and op in {fwd_train, fwd_eval, bwd}.

PyTorch 1.13 has no CPU `.out` overload of native_batch_norm, so every call
allocates its outputs. glibc serves allocations over 32 MiB with a fresh mmap
and page-faults them in on every call (performance-anchors.md, trap 2); to time
PyTorch's kernels rather than the kernel's page faults, this script re-executes
itself with MALLOC_MMAP_MAX_=0 and a huge MALLOC_TRIM_THRESHOLD_, so freed
outputs stay in the heap and the next call reuses them. It reports the minor
page faults per timed call (INFO lines) to show that it worked. The backward is
aten::native_batch_norm_backward with the saved mean/invstd of a training
forward, computing dx, dweight and dbias, like bpc's.

Usage: batchnorm_torch.py --shape N C D H W --threads T [--reps R] [--warmup W] [--min]
"""
import argparse
import os
import resource
import statistics
import sys
import time

if os.environ.get("MALLOC_MMAP_MAX_") != "0":
    env = dict(os.environ, MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_="1000000000000")
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import torch  # noqa: E402


def median_ms(fn, reps, warmup, name, use_min=False):
    for _ in range(warmup):
        fn()
    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print("INFO %s page faults per call %.0f" % (name, faults / reps), flush=True)
    return min(times) if use_min else statistics.median(times)


def run(shape, layout, reps, warmup, use_min):
    fmt = torch.contiguous_format if layout == "ncdhw" else torch.channels_last_3d
    g = torch.Generator().manual_seed(0)
    C = shape[1]
    x = torch.randn(shape, generator=g).contiguous(memory_format=fmt)
    dy = torch.randn(shape, generator=g).contiguous(memory_format=fmt)
    w = torch.rand(C, generator=g) + 0.5
    b = torch.randn(C, generator=g)
    rm = torch.zeros(C)
    rv = torch.ones(C)
    eps = 1e-5
    aten = torch.ops.aten
    saved = {}

    def fwd_train():
        saved["y"], saved["mean"], saved["invstd"] = aten.native_batch_norm(
            x, w, b, rm, rv, True, 0.1, eps)

    def fwd_eval():
        saved["ye"] = aten.native_batch_norm(x, w, b, rm, rv, False, 0.1, eps)[0]

    def bwd():
        saved["dx"] = aten.native_batch_norm_backward(
            dy, x, w, rm, rv, saved["mean"], saved["invstd"], True, eps, [True, True, True])[0]

    res = {}
    res["fwd_train"] = median_ms(fwd_train, reps, warmup, layout + " fwd_train", use_min)
    assert saved["y"].is_contiguous(memory_format=fmt), "y lost the layout"
    res["fwd_eval"] = median_ms(fwd_eval, reps, warmup, layout + " fwd_eval", use_min)
    fwd_train()  # saved statistics of a training forward for the backward
    res["bwd"] = median_ms(bwd, reps, warmup, layout + " bwd", use_min)
    assert saved["dx"].is_contiguous(memory_format=fmt), "dx lost the layout"
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=5, required=True, metavar=("N", "C", "D", "H", "W"))
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--min", action="store_true", help="report the fastest rep, not the median")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print("INFO torch %s threads %d" % (torch.__version__, torch.get_num_threads()), flush=True)
    with torch.no_grad():
        for layout in ("ncdhw", "channels_last_3d"):
            for op, ms in run(tuple(a.shape), layout, a.reps, a.warmup, a.min).items():
                print("RESULT %s %s %.4f" % (layout, op, ms), flush=True)


if __name__ == "__main__":
    main()
