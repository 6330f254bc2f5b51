"""Server-side time of one slider move in ``PartitionExplorer`` (target: 50 ms).

    python benchmarks/widgets.py                  # 64 x 64 map, 30 moves per slider
    python benchmarks/widgets.py --size 32 --moves 10

One move = a state change -> pattern -> figure data -> ``fig.batch_update()`` on the
FigureWidget (what the kernel does before anything is sent to the browser; the browser's own
drawing is not timed here). Each row is the median over ``--moves`` moves of one slider, one
panel, after one warm-up move.
"""

from __future__ import annotations

import argparse
import statistics
import time

from vizattn.widgets import PartitionExplorer

TARGET_MS = 50.0


def time_moves(explorer: PartitionExplorer, name: str, values) -> float:
    """Median milliseconds per move of ``explorer.sliders[name]`` through ``values``."""
    slider = explorer.sliders[name]
    times = []
    for value in values:
        start = time.perf_counter()
        slider.value = value
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[1:])  # the first move is a warm-up


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="map side (default 64)")
    parser.add_argument("--moves", type=int, default=30, help="moves per slider (default 30)")
    args = parser.parse_args(argv)
    n, L = args.moves + 1, args.size
    cases = [
        ("NA", "query_j", [k % L for k in range(n)], dict(kernel=7)),
        ("SASA", "query_i", [k % L for k in range(n)], dict(kernel=7)),
        ("MaxViT grid", "query_j", [k % L for k in range(n)], dict(grid=8)),
        ("NA", "kernel", [3 + k % 10 for k in range(n)], dict(kernel=3)),
        ("DiNAT", "dilation", [1 + k % 4 for k in range(n)], dict(kernel=7)),
        ("MaxViT block", "block", [4 + k % 8 for k in range(n)], dict(block=4)),
    ]
    print(f"one slider move on a {L}x{L} map, median of {args.moves} moves (target {TARGET_MS:.0f} ms)")
    print(f"{'mechanism':<14} {'slider':<10} {'ms':>7}  ok")
    worst = 0.0
    for mechanism, slider, values, params in cases:
        explorer = PartitionExplorer(mechanism, size=L, query=(L // 2, L // 2), **params)
        ms = time_moves(explorer, slider, values)
        worst = max(worst, ms)
        print(f"{mechanism:<14} {slider:<10} {ms:7.1f}  {'yes' if ms <= TARGET_MS else 'NO'}")
    print(f"worst median: {worst:.1f} ms (target {TARGET_MS:.0f} ms)")


if __name__ == "__main__":
    main()
