"""Speed and memory of ``vizattn.attend`` next to PyTorch's dense masked SDPA, in the same run.

    python benchmarks/attention.py                 # the README table (several minutes on 2 cores)
    python benchmarks/attention.py --sizes 28 56   # a quicker look

For every pattern and map size it times vizattn's default backend and the obvious baseline,
``scaled_dot_product_attention`` over all N tokens with the pattern's ``[N, N]`` boolean mask
(PyTorch's fused CPU kernel), forward (no grad) and forward + backward, and measures the peak
memory that one forward + backward adds (Linux: resident-set high-water mark, reset before each
measurement). Columns ``t/dense`` and ``mem/dense`` are the ratios; below 1 is better.
B=2, heads=4, head_dim=32, float32 unless overridden.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vizattn import attend
from vizattn.patterns import Block, Global, Grid, LocalWindow, LongDistance, Neighborhood

PATTERNS = {
    "NA k7": Neighborhood(7),
    "DiNAT k7 d2": Neighborhood(7, dilation=2),
    "SASA k7": LocalWindow(7),
    "block 7": Block(7, pad=True),
    "grid 7": Grid(7, pad=True),
    "LDA I8": LongDistance(8, pad=True),
    "global": Global(),  # the same SDPA call on both sides: a check of the harness
}


def peak_rss_bytes(fn):
    """Extra resident memory at the peak of ``fn()`` (Linux, glibc), or None where unsupported.

    Glibc's mmap threshold is fixed at 64 KiB first, so freed tensors leave the resident set and
    it follows what is really allocated, not what malloc keeps cached. That slows allocation,
    so memory is measured in a child process (``--memory``), never next to a timing.
    """
    status, clear = Path("/proc/self/status"), Path("/proc/self/clear_refs")
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD

        def read(key):
            return int(next(line for line in status.read_text().splitlines() if line.startswith(key)).split()[1])

        fn()  # warm-up: caches
        gc.collect()
        clear.write_text("5")  # resets VmHWM to the current VmRSS
    except (OSError, AttributeError, StopIteration):
        return None
    base = read("VmRSS:")
    fn()
    return (read("VmHWM:") - base) * 1024


def seconds(fn, repeats):
    fn()  # warm-up: caches, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)  # the least disturbed run: interference only ever adds time


def steps(name, size, batch, heads, head_dim):
    """The two contenders as closures over fresh inputs: {"ours": fn, "dense": fn}."""
    pattern, H, W = PATTERNS[name], size, size
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, H, W, head_dim, generator=g).requires_grad_() for _ in range(3))
    mask = pattern.mask(H, W)  # [N, N]; the dense baseline uses the same geometry
    mask = None if mask.all() else mask
    flat = [t.flatten(2, 3) for t in (q, k, v)]
    return {
        "ours": lambda: attend(q, k, v, pattern),
        "dense": lambda: F.scaled_dot_product_attention(*flat, attn_mask=mask),
    }


def memory_in_child(name, size, method, args):
    cmd = [sys.executable, __file__, "--memory", name, str(size), method, "--batch", str(args.batch),
           "--heads", str(args.heads), "--head-dim", str(args.head_dim)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    return None if out == "None" else int(out)


def mib(b):
    return "n/a" if b is None else f"{b / 2**20:.0f}"


def ratio(a, b):
    return "n/a" if a is None or b is None or b <= 0 else f"{a / b:.2f}"


def measure(name, size, args):
    row = {}
    for method, fn in steps(name, size, args.batch, args.heads, args.head_dim).items():
        with torch.no_grad():
            row[f"{method} fwd"] = seconds(fn, args.repeats)
        row[f"{method} f+b"] = seconds(lambda fn=fn: fn().sum().backward(), args.repeats)
        row[f"{method} mem"] = memory_in_child(name, size, method, args)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 56, 96, 128])
    parser.add_argument("--patterns", nargs="+", default=list(PATTERNS), choices=list(PATTERNS))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory", nargs=3, metavar=("PATTERN", "SIZE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory:  # child process: print the peak of one forward + backward
        name, size, method = args.memory
        fn = steps(name, int(size), args.batch, args.heads, args.head_dim)[method]
        print(peak_rss_bytes(lambda: fn().sum().backward()))
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B={args.batch}, heads={args.heads}, "
          f"head_dim={args.head_dim}, float32; times in ms (best of {args.repeats}), memory in MiB\n")
    header = ("| pattern | map | ours fwd | dense fwd | t/dense | ours f+b | dense f+b | t/dense "
              "| ours mem | dense mem | mem/dense |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name in args.patterns:
        for size in args.sizes:
            r = measure(name, size, args)
            print(
                f"| {name} | {size}x{size} | {r['ours fwd'] * 1e3:.1f} | {r['dense fwd'] * 1e3:.1f} | "
                f"{ratio(r['ours fwd'], r['dense fwd'])} | {r['ours f+b'] * 1e3:.1f} | {r['dense f+b'] * 1e3:.1f} | "
                f"{ratio(r['ours f+b'], r['dense f+b'])} | {mib(r['ours mem'])} | {mib(r['dense mem'])} | "
                f"{ratio(r['ours mem'], r['dense mem'])} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
