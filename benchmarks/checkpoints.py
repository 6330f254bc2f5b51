"""CPU forward time of each published model of ``vizattn.checkpoints`` (random weights, at its input size).

    python benchmarks/checkpoints.py                        # every model, batch 1, 5 runs each
    python benchmarks/checkpoints.py --batch 8 --runs 3 --threads 4 nat_mini dinat_mini

Each row: parameters, the median wall time of one forward pass in eval mode under
``torch.no_grad()`` on the fused path (what ``checkpoints.load`` returns) after one warm-up pass,
and the same with every attention layer on its explicit path (``layers.explicit``: what
``vizattn.probe`` runs to capture the probabilities). Weights are random: the time does not
depend on them, and nothing is downloaded.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vizattn import checkpoints
from vizattn.layers import explicit


def median_seconds(model, x, runs: int) -> float:
    with torch.no_grad():
        model(x)  # warm-up
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(checkpoints.list()))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"batch {args.batch}, {args.threads} CPU threads, median of {args.runs} runs, torch {torch.__version__}")
    print(f"{'model':<32}{'params':>10}{'fused ms':>12}{'explicit ms':>14}")
    for name in args.names:
        model = checkpoints.build(name)
        size = checkpoints.CHECKPOINTS[name].size
        x = torch.randn(args.batch, 3, size, size)
        params = sum(p.numel() for p in model.parameters())
        fused = median_seconds(model, x, args.runs)
        with explicit(model):
            slow = median_seconds(model, x, args.runs)
        print(f"{name:<32}{params / 1e6:>9.1f}M{fused * 1e3:>12.0f}{slow * 1e3:>14.0f}", flush=True)


if __name__ == "__main__":
    main()
