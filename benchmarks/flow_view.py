"""Server-side time of the FlowExplorer's moves (targets: a view move 50 ms; a method or class switch
400 ms to the finished plot in the browser, of which this is the kernel's part).

    python benchmarks/flow_view.py                 # the small models and DeiT-Ti (random weights)
    python benchmarks/flow_view.py --only nat --moves 6

One move = a state change -> the flow, map, column and receptive fields (cached per key) -> the
messages to the FigureWidgets (the browser's drawing is not timed). ``warm``: every value visited once
before (the caches hit); ``cold``: each value reached for the first time (a fusion, residual, method or
class runs the model: ``vizattn.flow.rollout`` / ``relevance``; a depth or click computes the token's
column, theoretical field and, unless off, its effective field: one forward and backward pass). The
median of the moves, with one forward pass of the model (one thread) printed beside as the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vizattn.widgets import FlowExplorer

TARGET_MS = 50.0


def timed(explorer, moves) -> float:
    """Median ms of ``moves``: ``(trait, value)`` pairs set on ``explorer.state``, or ``("pixel", (i, j))``."""
    times = []
    for name, value in moves:
        start = time.perf_counter()
        if name == "pixel":
            explorer.set_pixel(*value)
        else:
            setattr(explorer.state, name, value)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def forward_ms(explorer, repeats: int = 5) -> float:
    run = explorer._run()
    torch.set_num_threads(1)
    with torch.no_grad():
        run["model"](run["x"])
        start = time.perf_counter()
        for _ in range(repeats):
            run["model"](run["x"])
    return (time.perf_counter() - start) * 1000 / repeats


def rows(model: str, n: int):
    """``(label, explorer factory, moves, warm up first)`` per timed control."""
    S = 224 if "_" in model else 64
    pixels = [((7 * k) % S, (13 * k + 5) % S) for k in range(n)]

    def build(**kw):
        return FlowExplorer(model, weights="random", models=(model,), **kw)

    depths = lambda L: [("depth", 1 + k % L) for k in range(n)]  # noqa: E731
    yield "depth cold (effective off)", lambda: build(effective=False), depths, False
    yield "depth cold", build, depths, False
    yield "depth warm", build, depths, True
    yield "click cold (effective off)", lambda: build(effective=False), lambda L: [("pixel", p) for p in pixels], False
    yield "click cold", build, lambda L: [("pixel", p) for p in pixels], False
    yield "click warm", build, lambda L: [("pixel", p) for p in pixels], True
    yield "fusion cold", build, lambda L: [("fusion", f) for f in ("max", "min")], False
    yield "fusion warm", build, lambda L: [("fusion", ("mean", "max", "min")[k % 3]) for k in range(n)], True
    yield "method cold", build, lambda L: [("method", "relevance")], False
    yield "method warm", build, lambda L: [("method", ("rollout", "relevance")[k % 2]) for k in range(n)], True
    yield ("class cold", lambda: build(method="relevance"), lambda L: [("target", t) for t in (0, 1)], False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--moves", type=int, default=12, help="moves per row (default 12)")
    parser.add_argument("--only", default="", help="only the models whose name contains this text")
    parser.add_argument("--models", default="nat,dinat,maxvit,swin,vit,deit_tiny_patch16_224")
    args = parser.parse_args(argv)
    print(f"{'model':<24} {'move':<28} {'median ms':>10}  {'forward ms':>10}  target")
    for model in [m for m in args.models.split(",") if args.only in m]:
        base = None
        for label, build, moves, warm in rows(model, args.moves):
            explorer = build()
            base = base or forward_ms(explorer)
            L = len(explorer.flow.names)
            plan = moves(L)
            if warm:
                timed(explorer, plan)
            ms = timed(explorer, plan)
            view = label.split()[0] in ("depth", "click", "fusion") and ("warm" in label or "off" in label)
            verdict = ("ok" if ms <= TARGET_MS else "MISS") if view else "-"
            print(f"{model:<24} {label:<28} {ms:>10.1f}  {base:>10.1f}  {verdict}", flush=True)


if __name__ == "__main__":
    main()
