"""Training-step time of the small models (``vizattn.models``), the way ``vizattn.train`` steps them.

    python benchmarks/training.py                  # nat and sasa, batch 64
    python benchmarks/training.py --models nat dinat sasa --steps 8

One step = forward, cross-entropy + aux loss, backward, AdamW step, on a batch of random 64x64
images; subnormals flushed as in training. Prints the median and the best of ``--steps`` timed
steps after two warm-up steps (the CPU may be shared: compare runs made side by side).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from vizattn.models import create
from vizattn.train import objective


def step_times(name, batch, steps):
    """Seconds of each of ``steps`` training steps of model ``name`` (after two warm-up steps)."""
    torch.manual_seed(0)
    model = create(name).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, labels = torch.rand(batch, 3, 64, 64), torch.randint(0, 2, (batch,))
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        loss, _ = objective(model, images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["nat", "sasa"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}; ms per step\n")
    print("| model | median | best |\n|---|---|---|")
    for name in args.models:
        times = step_times(name, args.batch, args.steps)
        print(f"| {name} | {statistics.median(times) * 1e3:.0f} | {min(times) * 1e3:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
