"""CPU time of ``checkpoints.from_timm`` on timm models (random weights, ``pretrained=False``), self-check included.

    python benchmarks/from_timm.py                               # Swin-B (issue 27: <= 10 s on 2 cores)
    python benchmarks/from_timm.py --threads 2 --runs 3 vit_small_patch16_224 maxvit_small_tf_224

Each row: parameters, the median wall time of one ``from_timm`` call (reading the architecture,
building, loading the state dict, one forward pass of a random image through both models), and,
as the baseline of the same run, the median time of one forward pass of the timm model alone
(the self-check's share is about two of those). timm is imported as the tests import it
(``tests/reference/timm_models.py``: no torchvision needed).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import torch

from vizattn.checkpoints import from_timm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference.timm_models import timm  # noqa: E402


def median_seconds(call, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=["swin_base_patch4_window7_224"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{args.threads} CPU threads, median of {args.runs} runs, torch {torch.__version__}")
    print(f"{'model':<34}{'params':>10}{'from_timm s':>13}{'timm forward s':>16}")
    for name in args.names:
        torch.manual_seed(0)
        model = timm().create_model(name, pretrained=False).eval()
        size = model.pretrained_cfg["input_size"][1:]
        x = torch.randn(1, 3, *size)
        from_timm(model)  # warm-up: loads attend's native kernel once
        with torch.no_grad():
            forward = median_seconds(functools.partial(model, x), args.runs)
        convert = median_seconds(functools.partial(from_timm, model), args.runs)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:<34}{params / 1e6:>9.1f}M{convert:>13.2f}{forward:>16.2f}", flush=True)


if __name__ == "__main__":
    main()
