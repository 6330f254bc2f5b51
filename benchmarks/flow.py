"""CPU time of ``flow.rollout`` and ``flow.relevance`` against one forward pass of the same model, in one run.

    python benchmarks/flow.py                          # the 8 small models (64 x 64) and every checkpoint (224 x 224)
    python benchmarks/flow.py --runs 3 nat swin_tiny_patch4_window7_224

Each row: the least CPU time (``time.process_time``, one thread by default: on a shared machine wall
time mostly measures the other jobs) of ``--runs`` calls of one forward pass under
``torch.no_grad()`` on the fused path, on the explicit path (``layers.explicit``), with
``vizattn.probe`` recording every layer (``probed``), of ``rollout`` (a probed forward, then the
operators carried back) and of ``relevance`` (a probed forward with gradients, one backward, the
operators carried back), after one warm-up call each (which also traces the model's structure,
cached per model and image size). Ratios are against the explicit forward; ``(roll-probed)/fwd`` is
what rollout adds to the probed forward it needs. Targets (issue 26): relevance <= 3x, rollout <= 1x.
Random weights, batch 1.
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from vizattn import checkpoints, flow, models, probe
from vizattn.layers import explicit


def best_seconds(call, runs: int) -> float:
    """The least CPU time (this process, ``time.process_time``) of ``runs`` calls after a warm-up."""
    call()
    times = []
    for _ in range(runs):
        start = time.process_time()
        call()
        times.append(time.process_time() - start)
    return min(times)


def forward(model, x) -> None:
    with torch.no_grad():
        model(x)


def probed_forward(model, x) -> None:
    with torch.no_grad(), probe(model):
        model(x)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=[*models.list_models(), *checkpoints.list()])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"batch 1, {args.threads} CPU threads, CPU ms, least of {args.runs} runs, torch {torch.__version__}")
    print(f"{'model':<30}{'size':>5}{'fused ms':>10}{'explicit':>10}{'probed':>10}{'rollout':>10}{'relevance':>11}"
          f"{'roll/fwd':>10}{'(roll-probed)/fwd':>19}{'rel/fwd':>9}")
    for name in args.names:
        torch.manual_seed(0)
        small = name in models.list_models()
        model = models.create(name).eval() if small else checkpoints.build(name)
        size = 64 if small else 224
        x = torch.rand(1, 3, size, size)

        fused = best_seconds(functools.partial(forward, model, x), args.runs)
        with explicit(model):
            slow = best_seconds(functools.partial(forward, model, x), args.runs)
        probed = best_seconds(functools.partial(probed_forward, model, x), args.runs)
        roll = best_seconds(functools.partial(flow.rollout, model, x), args.runs)
        rel = best_seconds(functools.partial(flow.relevance, model, x), args.runs)
        print(f"{name:<30}{size:>5}{fused * 1e3:>10.1f}{slow * 1e3:>10.1f}{probed * 1e3:>10.1f}{roll * 1e3:>10.1f}"
              f"{rel * 1e3:>11.1f}{roll / slow:>10.2f}{(roll - probed) / slow:>19.2f}{rel / slow:>9.2f}", flush=True)

if __name__ == "__main__":
    main()
