"""Are the whole-model maps faithful? Measured on the shipped trained small models, where the answer is
known: every Shapes test item says where its objects are (``Shapes.masks``).

``python -m vizattn.flow.faithfulness [--items 50] [--steps 8]`` writes ``vizattn/weights/faithfulness.json``
and prints the README's table. Per model, task (``shape``, ``same``) and map (``rollout``, ``relevance``,
``gradient``: plain input-gradient saliency ``|dy_t/dx|`` summed over colours), over the first ``items``
test items, ``t`` their true label:

- ``pointing``: does the map's maximum lie on an object? With ties (a patch-wise constant map), the
  share of the maximal pixels that do: the chance that a pick among them hits.
- ``mass``: the share of the map on the objects; ``area``: the objects' share of the image (what a
  uniform map gets).
- ``deletion`` / ``insertion``: pixels removed from the image (set to 0, about the dark background)
  or added to a blank one in the map's order (ties in a random order), ``steps`` equal parts; the
  area under the curve of the probability of ``t`` (trapezoids over the removed share; deletion:
  lower is better, insertion: higher). ``random``: a random order, the baseline.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .. import models
from ..data import Shapes
from .maps import relevance, rollout

__all__ = ["evaluate", "table", "main", "RESULTS"]

RESULTS = Path(__file__).resolve().parent.parent / "weights" / "faithfulness.json"
MAPS = ("rollout", "relevance", "gradient")


def gradient_map(model, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[B, H, W]``: ``|d logit_t / d image|`` summed over colours, each item summing to 1."""
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(model(x).gather(1, target[:, None]).sum(), x)
    g = grad.abs().sum(1)
    return g / g.sum((1, 2), keepdim=True)


def _order(maps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``[B, H*W]`` pixel indices, highest value first, ties in a random order."""
    B, n = maps.shape[0], maps[0].numel()
    perm = torch.stack([torch.randperm(n, generator=generator) for _ in range(B)])  # [B, n]
    flat = maps.reshape(B, n).gather(1, perm)
    return perm.gather(1, flat.sort(dim=1, descending=True, stable=True).indices)


@torch.no_grad()
def _curves(model, images: torch.Tensor, target: torch.Tensor, order: torch.Tensor, steps: int):
    """Deletion and insertion AUCs ``[B]`` each, for pixel ``order [B, H*W]``."""
    B, C, H, W = images.shape
    n = H * W
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n).expand(B, n))  # [B, n]: place of each pixel
    cut = torch.linspace(0, n, steps + 1).round().long()  # pixels taken at each point
    taken = (rank[:, None, :] < cut[None, :, None]).reshape(B, steps + 1, 1, H, W)  # [B, P, 1, H, W]
    x = images[:, None]
    out = []
    for mask in (taken, ~taken):  # deletion: taken pixels -> 0; insertion: only taken pixels kept
        batch = (x * ~mask).reshape(-1, C, H, W)
        probs = torch.cat([model(chunk).softmax(-1) for chunk in batch.split(256)])
        p = probs.reshape(B, steps + 1, -1).gather(2, target[:, None, None].expand(B, steps + 1, 1))[..., 0]
        out.append(((p[:, 1:] + p[:, :-1]) / 2).mean(1))  # trapezoids over [0, 1]
    return out


def _pointing(maps: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    top = maps >= maps.amax((1, 2), keepdim=True) * (1 - 1e-6)
    return (top & objects).sum((1, 2)) / top.sum((1, 2))


def evaluate(name: str, task: str, items: int = 100, steps: int = 8, seed: int = 0) -> dict:
    """The measures of model ``name`` (shipped weights) on the first ``items`` test items of ``task``.

    >>> r = evaluate("nat", "shape", items=2, steps=2)
    >>> sorted(r), sorted(r["rollout"])
    (['accuracy', 'area', 'gradient', 'items', 'random', 'relevance', 'rollout'], \
['deletion', 'insertion', 'mass', 'pointing'])
    """
    model = models.create(name, pretrained=True, task=task)
    data = Shapes(task, split="test")
    images = torch.stack([data[i][0] for i in range(items)])
    labels = torch.tensor([data[i][1] for i in range(items)])
    objects = torch.stack([data.masks(i).any(0) for i in range(items)])  # [B, H, W]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        accuracy = float((model(images).argmax(-1) == labels).double().mean())
    maps = {"rollout": rollout(model, images).pixels.float(),
            "relevance": relevance(model, images, target=labels).pixels.float(),
            "gradient": gradient_map(model, images, labels)}
    out = {"items": items, "accuracy": accuracy, "area": float(objects.double().mean((1, 2)).mean())}
    for method, m in maps.items():
        deletion, insertion = _curves(model, images, labels, _order(m, generator), steps)
        out[method] = {"pointing": float(_pointing(m, objects).mean()), "mass": float((m * objects).sum((1, 2)).mean()),
                       "deletion": float(deletion.mean()), "insertion": float(insertion.mean())}
    deletion, insertion = _curves(model, images, labels, _order(torch.zeros_like(maps["gradient"]), generator), steps)
    out["random"] = {"deletion": float(deletion.mean()), "insertion": float(insertion.mean())}
    return out


def table(results: dict) -> str:
    """The markdown table of ``results`` (model -> task -> ``evaluate``'s dict)."""
    lines = ["| model | task | acc | pointing: roll / rel / grad | mass: roll / rel / grad (area) "
             "| deletion ↓: roll / rel / grad / random | insertion ↑: roll / rel / grad / random |",
             "|---|---|---|---|---|---|---|"]
    def cells(r, measure, extra=()):
        return " / ".join(f"{r[m][measure]:.2f}" for m in (*MAPS, *extra))

    for name, tasks in results.items():
        for task, r in tasks.items():
            lines.append(f"| {name} | {task} | {r['accuracy']:.2f} | {cells(r, 'pointing')} | {cells(r, 'mass')} "
                         f"({r['area']:.2f}) | {cells(r, 'deletion', ('random',))} "
                         f"| {cells(r, 'insertion', ('random',))} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m vizattn.flow.faithfulness", description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=50, help="test items per task (default 50)")
    parser.add_argument("--steps", type=int, default=8, help="points of the deletion/insertion curves - 1")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON file (default {RESULTS})")
    parser.add_argument("--models", nargs="*", default=list(models.list_models()))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    results, start = {}, time.perf_counter()
    for name in args.models:
        for task in ("shape", "same"):
            results.setdefault(name, {})[task] = evaluate(name, task, args.items, args.steps)
            print(f"{name} {task}: {time.perf_counter() - start:.0f} s", flush=True)
    meta = {"items": args.items, "steps": args.steps, "seconds": round(time.perf_counter() - start, 1),
            "torch": torch.__version__}
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print(table(results))
    return results


if __name__ == "__main__":
    main()
