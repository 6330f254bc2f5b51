"""Train a model of ``vizattn.models`` on the procedural ``Shapes`` dataset, on a CPU.

``python -m vizattn.train MODEL --task shape --seed 0 [--epochs N --batch-size B --lr LR --init TASK] [--save]``

- Deterministic from the seed: ``torch.manual_seed(seed)`` before the model is built, and the
  training split is shuffled by a generator seeded with ``seed`` (``vizattn.data.make_loader``).
- AdamW with a linear warm-up and a cosine decay to 0, per step; the loss is ``objective``:
  cross-entropy plus the model's ``aux_loss()`` (LaViT's weighted diagonality-preserving loss).
- ``same`` is learnt in two steps (a curriculum): it starts from the shipped ``shape`` weights
  (``init="shape"``: every weight but the linear head), so the model already tells the four
  shapes apart and learns only to compare them. From scratch, no model beat chance on ``same``
  within the CPU budget (0.47-0.49 after 12,800 and 51,200 items).
- A progress line on stderr (epoch, step, loss, it/s), then the accuracy on the first
  ``EVAL_ITEMS`` items of the test split, measured after rounding the weights to float16, so it
  is the accuracy of the weights ``--save`` ships. The last line reads
  ``final: model=nat task=shape test_acc=0.953 params=123456 train_time=142.1s``.
- ``--save`` writes the float16 state dict to ``vizattn/weights/{model}-{task}.pt`` and records
  params, FLOPs, train time, accuracy and the settings in ``vizattn/weights/metrics.json``;
  ``python -m vizattn.train --table`` prints the Markdown table of that file (the README's).

``settings(model, task)`` gives the defaults, the settings of the shipped weights.

>>> _ = torch.manual_seed(0)
>>> model, result = train("nat", epochs=1, train_items=64, batch_size=32, eval_items=32, progress=None)
>>> sorted(result)[:4], 0 <= result["test_acc"] <= 1
(['attention_flops', 'batch_size', 'epochs', 'eval_items'], True)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

from .data import TASKS, make_loader
from .models import WEIGHTS, create, list_models

__all__ = ["objective", "evaluate", "train", "save", "table", "main", "settings", "EVAL_ITEMS", "METRICS"]

EVAL_ITEMS = 1000  # the fixed evaluation set: the first items of the test split
METRICS = WEIGHTS / "metrics.json"
DEFAULTS = dict(epochs=1, batch_size=64, lr=2e-3, weight_decay=0.05, warmup=100, train_items=25_600, init=None)
TASK_DEFAULTS = {"shape": {}, "same": dict(lr=1e-3, init="shape")}  # 400 steps of 64: a few CPU minutes
MODEL_DEFAULTS = {(name, "shape"): dict(train_items=51_200) for name in ("crossformer", "dinat", "lavit", "swin")}


def settings(name: str, task: str) -> dict:
    """The default training settings of ``name`` on ``task`` (those of the shipped weights).

    >>> settings("nat", "same")["init"]
    'shape'
    """
    if name not in list_models() or task not in TASKS:
        raise ValueError(f"name must be one of {', '.join(list_models())} and task one of {', '.join(TASKS)}; "
                         f"got name={name!r}, task={task!r}")
    return {**DEFAULTS, **TASK_DEFAULTS[task], **MODEL_DEFAULTS.get((name, task), {})}


def objective(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, logits)`` with ``loss = cross_entropy(logits, labels) + model.aux_loss()``.

    >>> from vizattn.models import create
    >>> model, images = create("lavit"), torch.rand(2, 3, 64, 64)
    >>> loss, logits = objective(model, images, torch.tensor([0, 1]))
    >>> torch.allclose(loss, F.cross_entropy(logits, torch.tensor([0, 1])) + model.aux_loss())
    True
    """
    logits = model(images)
    return F.cross_entropy(logits, labels) + model.aux_loss(), logits


@torch.no_grad()
def evaluate(model: torch.nn.Module, task: str, items: int = EVAL_ITEMS, batch_size: int = 250) -> float:
    """Accuracy on the first ``items`` items of the test split (eval mode; the mode is restored).

    >>> from vizattn.models import create
    >>> 0 <= evaluate(create("vit"), "shape", items=8) <= 1
    True
    """
    training = model.training
    model.eval()
    correct = 0
    for images, labels in make_loader(task, "test", batch_size=batch_size, length=items):
        correct += (model(images).argmax(-1) == labels).sum().item()
    model.train(training)
    return correct / items


def _round_to_half(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Round the floating tensors of the state dict to float16 in place; return the float16 state."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return state


def train(name: str, task: str = "shape", seed: int = 0, epochs: int | None = None, batch_size: int | None = None,
          lr: float | None = None, weight_decay: float | None = None, warmup: int | None = None,
          train_items: int | None = None, init: str | None = None, eval_items: int = EVAL_ITEMS,
          progress=sys.stderr):
    """Train ``name`` on ``task``; return ``(model, result)``, the weights rounded to float16.

    Flushes subnormal floats to zero for the process (``torch.set_flush_denormal(True)``):
    with them, training on Shapes images ran ~15x slower on CPU. Settings left None come from
    ``settings(name, task)``; ``train_items``: the first items of
    the training split (a procedural split: any number); ``init``: a task whose shipped weights
    start the model (all but the head; ``"none"``: from scratch). ``result`` holds ``test_acc`` (on
    ``eval_items``), ``params``, ``flops``, ``attention_flops``, ``train_time_s`` and the settings.
    ``progress``: a text stream for the progress line, or None.
    """
    given = dict(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup=warmup,
                 train_items=train_items, init=init)
    run = {**settings(name, task), **{k: v for k, v in given.items() if v is not None}}
    run["init"] = None if run["init"] == "none" else run["init"]
    if run["init"] not in (None, *TASKS) or run["init"] == task:
        raise ValueError(f"init must be 'none' or a task other than {task!r} ({', '.join(TASKS)}); "
                         f"got init={run['init']!r}")
    torch.set_flush_denormal(True)  # subnormal floats made these small models ~15x slower on CPU
    torch.manual_seed(seed)
    model = create(name, task=task)
    if run["init"] is not None:
        start = create(name, pretrained=True, task=run["init"]).state_dict()
        model.load_state_dict({k: v for k, v in start.items() if not k.startswith("head.")}, strict=False)
    loader = make_loader(task, "train", batch_size=run["batch_size"], seed=seed, length=run["train_items"])
    total = run["epochs"] * len(loader)
    optimizer = torch.optim.AdamW(model.parameters(), lr=run["lr"], weight_decay=run["weight_decay"])
    warm = min(run["warmup"], total // 2)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (step + 1) / warm if step < warm else
                                                 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1))))
    model.train()
    start, step = time.perf_counter(), 0
    for epoch in range(run["epochs"]):
        for images, labels in loader:
            loss, _ = objective(model, images, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if progress is not None and (step % 10 == 0 or step == total):
                rate = step / (time.perf_counter() - start)
                print(f"\repoch {epoch + 1}/{run['epochs']} step {step}/{total} loss {loss.item():.3f} "
                      f"{rate:.1f} it/s", end="", file=progress, flush=True)
    train_time = time.perf_counter() - start
    if progress is not None:
        print(file=progress)
    _round_to_half(model)
    summary = model.summary()
    result = dict(test_acc=evaluate(model, task, eval_items), eval_items=eval_items, params=summary.params,
                  flops=summary.flops, attention_flops=summary.attention_flops, train_time_s=round(train_time, 1),
                  seed=seed, torch=torch.__version__, **run)
    return model, result


def save(model: torch.nn.Module, name: str, task: str, result: dict) -> None:
    """Write the float16 weights to ``WEIGHTS / f"{name}-{task}.pt"`` and ``result`` into ``METRICS``."""
    WEIGHTS.mkdir(exist_ok=True)
    torch.save(_round_to_half(model), WEIGHTS / f"{name}-{task}.pt")
    metrics = json.loads(METRICS.read_text()) if METRICS.exists() else {}
    metrics.setdefault(name, {})[task] = result
    METRICS.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")


def _per_task(runs: dict, fmt: str, key: str) -> list[str]:
    """``fmt`` applied to ``runs[task][key]`` for the tasks shape and same ("–" where a run is missing)."""
    return [fmt.format(runs[t][key]) if t in runs else "–" for t in ("shape", "same")]


def table(metrics: dict | None = None) -> str:
    """The Markdown table of ``metrics`` (default: ``METRICS``), one row per model.

    Params and FLOPs are those of the ``shape`` model (4 classes) where there is one.

    >>> row = dict(params=1000, flops=2_000_000, attention_flops=500_000, test_acc=0.5, train_time_s=60.0,
    ...            train_items=12_800)
    >>> print(table({"nat": {"shape": row}}).splitlines()[2])
    | nat | 1,000 | 2.0 | 0.5 | 0.500 | – | 12,800 / – | 60 s / – |
    """
    metrics = json.loads(METRICS.read_text()) if metrics is None else metrics
    lines = ["| model | params | MFLOPs | attention MFLOPs | shape acc | same acc | train items (shape / same) "
             "| train time (shape / same) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in [n for n in list_models() if n in metrics]:
        runs = metrics[name]
        first = runs.get("shape") or next(iter(runs.values()))

        acc = _per_task(runs, "{:.3f}", "test_acc")
        items, times = _per_task(runs, "{:,}", "train_items"), _per_task(runs, "{:.0f} s", "train_time_s")
        lines.append(f"| {name} | {first['params']:,} | {first['flops'] / 1e6:.1f} | "
                     f"{first['attention_flops'] / 1e6:.1f} | {acc[0]} | {acc[1]} | "
                     f"{' / '.join(items)} | {' / '.join(times)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m vizattn.train", description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", choices=list_models())
    parser.add_argument("--task", default="shape", choices=TASKS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--warmup", type=int, help="warm-up steps")
    parser.add_argument("--train-items", type=int, help="use the first N items of the training split")
    parser.add_argument("--init", choices=(*TASKS, "none"), help="start from the shipped weights of this task")
    parser.add_argument("--eval-items", type=int, default=EVAL_ITEMS, help="evaluate on the first N test items")
    parser.add_argument("--save", action="store_true", help="ship the weights and record the metrics")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of the recorded metrics")
    args = parser.parse_args(argv)
    if args.table:
        print(table())
        return
    if args.model is None:
        parser.error("a model is required (or --table)")
    model, result = train(args.model, args.task, args.seed, args.epochs, args.batch_size, args.lr, args.weight_decay,
                          args.warmup, args.train_items, args.init, args.eval_items)
    if args.save:
        save(model, args.model, args.task, result)
    print(f"final: model={args.model} task={args.task} test_acc={result['test_acc']:.3f} params={result['params']} "
          f"train_time={result['train_time_s']:.1f}s")


if __name__ == "__main__":
    main()
