"""Speed and memory of ``vizattn.attend`` next to PyTorch's dense masked SDPA, in the same run.

    python benchmarks/attention.py                          # the README table (about 25 minutes on 2 cores)
    python benchmarks/attention.py --sizes 28 56            # a quicker look
    python benchmarks/attention.py --only NA,DiNAT --sizes 56,96 --peer-sizes   # the targets, no peer table
    python benchmarks/attention.py --backend tiled --sizes 56   # another backend of attend than its default

For every pattern and map size it times vizattn's default backend (or ``--backend``) and the obvious baseline,
``scaled_dot_product_attention`` over all N tokens with the pattern's ``[N, N]`` boolean mask
(PyTorch's fused CPU kernel), forward (no grad) and forward + backward, and measures the peak
memory that one forward + backward adds (Linux: resident-set high-water mark of a child process,
reset before the measurement), once with glibc's mmap threshold fixed ("tuned": freed tensors leave
the resident set) and once plain. Columns ``t/dense`` and ``mem/dense`` are the ratios; below 1 is
better. A second table times the forward of the peers that have no CPU backward, next to ours and
dense in the same run: NATTEN's ``na2d`` (NA, DiNAT) and FlexAttention compiled with a
neighbourhood block mask (patterns without zero slots). Every contender's output is checked
against ours before it is timed (dense only where the pattern has no zero slots: it has no zero keys).
B=2, heads=4, head_dim=32, float32 unless overridden.

The contenders of a row run interleaved, round by round, so that load from other jobs on a shared
machine hits them alike; a cell is the best (``--stat median``: the median) of ``--repeats`` runs,
and the header prints the load average the run started under.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from vizattn import attend, functional
from vizattn.backends import flex as flex_backend
from vizattn.patterns import Block, Global, Grid, LocalWindow, LongDistance, Neighborhood

STATS = {"best": min, "median": statistics.median}
PATTERNS = {
    "NA k7": Neighborhood(7),
    "DiNAT k7 d2": Neighborhood(7, dilation=2),
    "SASA k7": LocalWindow(7),
    "block 7": Block(7, pad=True),
    "grid 7": Grid(7, pad=True),
    "LDA I8": LongDistance(8, pad=True),
    "global": Global(),  # the same SDPA call on both sides: a check of the harness
}


def peak_rss_bytes(fn, tuned=True):
    """Extra resident memory at the peak of ``fn()`` (Linux, glibc), or None where unsupported.

    ``tuned``: glibc's mmap threshold is fixed at 64 KiB first, so freed tensors leave the resident
    set and it follows what is really allocated, not what malloc keeps cached. That slows
    allocation, so memory is measured in a child process (``--memory``), never next to a timing.
    """
    status, clear = Path("/proc/self/status"), Path("/proc/self/clear_refs")
    try:
        if tuned:
            ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD
        read = lambda key: int(next(l for l in status.read_text().splitlines() if l.startswith(key)).split()[1])  # noqa: E731
        fn()  # warm-up: caches
        gc.collect()
        clear.write_text("5")  # resets VmHWM to the current VmRSS
    except (OSError, AttributeError, StopIteration):
        return None
    base = read("VmRSS:")
    fn()
    return (read("VmHWM:") - base) * 1024


def interleaved(fns, repeats, stat=min):
    """Seconds per call of each of ``fns`` ({name: (fn, grad)}), their runs interleaved round by round.

    One warm-up round first (caches, allocator). Interleaving makes a burst of load on a shared
    machine hit every contender alike; ``stat`` (min: the least disturbed run, since interference
    only ever adds time; or a median) summarises each one's ``repeats`` runs.
    """
    times = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, (fn, grad) in fns.items():
            with torch.set_grad_enabled(grad):
                start = time.perf_counter()
                fn()
                if round_:
                    times[name].append(time.perf_counter() - start)
    return {name: stat(t) for name, t in times.items()}


def steps(name, size, batch, heads, head_dim, backend="auto"):
    """The two contenders as closures over fresh inputs: {"ours": fn, "dense": fn}."""
    pattern, H, W = PATTERNS[name], size, size
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, H, W, head_dim, generator=g).requires_grad_() for _ in range(3))
    mask = pattern.mask(H, W)  # [N, N]; the dense baseline uses the same geometry
    mask = None if mask.all() else mask
    flat = [t.flatten(2, 3) for t in (q, k, v)]
    return {
        "ours": lambda: attend(q, k, v, pattern, backend=backend),
        "dense": lambda: F.scaled_dot_product_attention(*flat, attn_mask=mask),
    }


def peers(name, size, batch, heads, head_dim, backend="auto"):
    """Forward-only contenders for the pattern (closures over fresh inputs), each checked against ours."""
    pattern, H, W = PATTERNS[name], size, size
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, H, W, head_dim, generator=g) for _ in range(3))
    mask = pattern.mask(H, W)
    flat = [t.flatten(2, 3) for t in (q, k, v)]
    fns = {"ours": lambda: attend(q, k, v, pattern, backend=backend),
           "dense": lambda: F.scaled_dot_product_attention(*flat, attn_mask=None if mask.all() else mask)}
    if isinstance(pattern, Neighborhood):
        import natten  # dev.py installs it

        last = [t.permute(0, 2, 3, 1, 4).contiguous() for t in (q, k, v)]  # NATTEN's [B, H, W, heads, d]
        fns["natten"] = lambda: natten.na2d(*last, kernel_size=pattern.kernel_size, dilation=pattern.dilation)
    if not pattern.partition and not pattern.zero_slots:
        flex = torch.compile(torch.nn.attention.flex_attention.flex_attention, dynamic=False)
        block_mask = flex_backend.block_mask(pattern, H, W, q.device)  # the pattern as a block mask
        fns["flex"] = lambda: flex(*flat, block_mask=block_mask)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = fns["ours"]().flatten(2, 3)
        for peer, fn in fns.items():
            got = fn()
            got = got.permute(0, 3, 1, 2, 4) if peer == "natten" else got
            torch.testing.assert_close(got.reshape(want.shape), want, atol=1e-4, rtol=1e-4, msg=f"{peer} differs")
    return fns


def memory_in_child(name, size, method, args, tuned):
    cmd = [sys.executable, __file__, "--memory", name, str(size), method, "--batch", str(args.batch),
           "--heads", str(args.heads), "--head-dim", str(args.head_dim), "--backend", args.backend]
    cmd += [] if tuned else ["--plain"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    return None if out == "None" else int(out)


def measure(name, size, args):
    contenders = steps(name, size, args.batch, args.heads, args.head_dim, args.backend)
    fns = {}
    for method, fn in contenders.items():
        fns[f"{method} fwd"] = (fn, False)
        fns[f"{method} f+b"] = (lambda fn=fn: fn().sum().backward(), True)
    row = interleaved(fns, args.repeats, STATS[args.stat])
    if not PATTERNS[name].zero_slots:  # dense SDPA has no zero keys: for SASA it is a timing baseline only
        with torch.no_grad():
            want = contenders["ours"]().flatten(2, 3)
            torch.testing.assert_close(contenders["dense"](), want, atol=1e-4, rtol=1e-4, msg="dense differs")
    for method in contenders:
        for tuned in (True, False):
            row[f"{method} mem" + ("" if tuned else " plain")] = memory_in_child(name, size, method, args, tuned)
    return row


def measure_peers(name, size, args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NATTEN's CPU path: unfused FlexAttention
        fns = peers(name, size, args.batch, args.heads, args.head_dim, args.backend)
        return interleaved({peer: (fn, False) for peer, fn in fns.items()}, args.repeats, STATS[args.stat])


def sizes(text):
    """``56,96`` or ``56`` -> a list of map sizes."""
    return [int(x) for x in text.split(",") if x]


def chosen(args):
    """The patterns named by ``--patterns`` and ``--only`` (comma-separated first words: ``NA,DiNAT``)."""
    names = args.patterns
    if args.only:
        wanted = {w.strip().lower() for w in args.only.split(",")}
        unknown = wanted - {n.split()[0].lower() for n in PATTERNS}
        if unknown:
            raise SystemExit(f"--only takes the first words of {list(PATTERNS)}; got {sorted(unknown)}")
        names = [n for n in names if n.split()[0].lower() in wanted]
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=sizes, nargs="+", default=[[28, 56, 96, 128]],
                        help="map sizes, e.g. --sizes 56 96 or --sizes 56,96")
    parser.add_argument("--patterns", nargs="+", default=list(PATTERNS), choices=list(PATTERNS))
    parser.add_argument("--only", help="comma-separated first words of the patterns, e.g. --only NA,DiNAT")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each contender, interleaved")
    parser.add_argument("--stat", choices=list(STATS), default="best", help="summary of the repeats (best: minimum)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--backend", default="auto", choices=[b for b in functional.BACKENDS if b != "flex"],
                        help="attend's backend for 'ours' (default auto: what attend picks)")
    parser.add_argument("--peer-sizes", type=sizes, nargs="*", default=[[28, 56, 96]],
                        help="map sizes of the forward-only peer table (NATTEN's CPU path is slow); none to skip it")
    parser.add_argument("--memory", nargs=3, metavar=("PATTERN", "SIZE", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sizes, args.peer_sizes = (sum(x, []) for x in (args.sizes, args.peer_sizes))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory:  # child process: print the peak of one forward + backward
        name, size, method = args.memory
        fn = steps(name, int(size), args.batch, args.heads, args.head_dim, args.backend)[method]
        print(peak_rss_bytes(lambda: fn().sum().backward(), tuned=not args.plain))
        return 0
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, backend {args.backend}, B={args.batch}, "
          f"heads={args.heads}, "
          f"head_dim={args.head_dim}, float32; times in ms ({args.stat} of {args.repeats}, interleaved), "
          f"memory in MiB; load average {load} (1, 5, 15 min) on {os.cpu_count()} CPUs\n")
    ms = lambda s: f"{s * 1e3:.1f}"  # noqa: E731
    mib = lambda b: "n/a" if b is None else f"{b / 2**20:.0f}"  # noqa: E731
    ratio = lambda a, b: "n/a" if a is None or b is None or b <= 0 else f"{a / b:.2f}"  # noqa: E731
    header = ("| pattern | map | ours fwd | dense fwd | t/dense | ours f+b | dense f+b | t/dense "
              "| ours mem | dense mem "
              "| mem/dense | plain: ours | dense | mem/dense |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name in chosen(args):
        for size in args.sizes:
            r = measure(name, size, args)
            cells = [name, f"{size}x{size}"]
            for step in ("fwd", "f+b"):
                cells += [ms(r[f"ours {step}"]), ms(r[f"dense {step}"]), ratio(r[f"ours {step}"], r[f"dense {step}"])]
            for kind in ("mem", "mem plain"):
                cells += [mib(r[f"ours {kind}"]), mib(r[f"dense {kind}"]), ratio(r[f"ours {kind}"], r[f"dense {kind}"])]
            print("| " + " | ".join(cells) + " |", flush=True)
    if not args.peer_sizes:
        return 0
    print("\nForward only, peers without a CPU backward (n/a: the peer does not cover the pattern):\n")
    names = ("ours", "natten", "flex", "dense")
    header = "| pattern | map | " + " | ".join(f"{n} fwd" for n in names) + " | " + " | ".join(
        f"{n}/dense" for n in names[:3]) + " |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name in chosen(args):
        if not isinstance(PATTERNS[name], Neighborhood):  # the only patterns with a peer here
            continue
        for size in args.peer_sizes:
            r = measure_peers(name, size, args)
            cells = [name, f"{size}x{size}"] + [ms(r[n]) if n in r else "n/a" for n in names]
            cells += [ratio(r.get(n), r["dense"]) for n in names[:3]]
            print("| " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
