"""Server-side time of one slider move in each explorer (target: 50 ms).

    python benchmarks/widgets.py                  # 64 x 64 maps, 30 moves per slider
    python benchmarks/widgets.py --size 32 --moves 10

One move = a state change -> model records / pattern -> figure data -> ``fig.batch_update()`` on
the FigureWidgets (what the kernel does before anything is sent to the browser; the browser's
own drawing is not timed here). Each row is the median over ``--moves`` moves of one control,
after one warm-up move.

- ``PartitionExplorer`` and ``ReceptiveFieldExplorer`` run on a ``--size`` map.
- ``AttentionExplorer`` runs the trained models on a 64 x 64 photo; its largest attention maps
  are 16 x 16 tokens (a stage-1 layer), drawn over the 64 x 64 photo with every head's thumbnail.
  A move never runs the model (``forwards`` stays 1: checked here).
- ``AttentionExplorer(checkpoint=...)`` runs a published model (random weights: the time does not
  depend on them) on a 224 x 224 photo: 56 x 56 maps (NAT-Mini, Swin-T and MaxViT-T stage 0, every
  head's thumbnail beside) and DeiT-Ti's 14 x 14 patch grid.
- ``LaViTExplorer``: the head moves redraw the stage-0 chain (five 64 x 64 attention matrices); a task
  or photo reached for the first time runs LaViT and ViT once (one thread), a revisited one is kept.
- ``CostExplorer`` (channels, window, side) and the partition explorer's menus (mechanism, compare
  with): the controls the browser sweep (tests/test_browser.py) measured slowest.
- ``ReceptiveFieldExplorer``: ``cold`` moves reach a depth for the first time (the theoretical
  field, and one forward and backward pass of the random stack for the effective field),
  ``theory cold`` the same with the effective field off, ``warm`` moves revisit cached depths.
"""

from __future__ import annotations

import argparse
import statistics
import time

from vizattn.data import PHOTOS, TASKS
from vizattn.widgets import AttentionExplorer, CostExplorer, LaViTExplorer, PartitionExplorer, ReceptiveFieldExplorer
from vizattn.widgets.partition import MECHANISMS, NO_COMPARE

TARGET_MS = 50.0


def time_moves(widget, name: str, values, warm_up: bool = True) -> float:
    """Median milliseconds per move of control ``name`` (a widget attribute path such as
    ``sliders.query_j`` or ``depth``) of ``widget`` through ``values`` (the first move not counted
    when ``warm_up``)."""
    control = widget
    for part in name.split("."):
        control = control[part] if isinstance(control, dict) else getattr(control, part)
    times = []
    for value in values:
        start = time.perf_counter()
        control.value = value
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[1:] if warm_up else times)


def cases(L: int, n: int):
    """``(label, build, control, values)`` for every timed slider."""
    sweep = [k % L for k in range(n)]
    yield from [
        (f"Partition NA k=7 {L}x{L}", lambda: PartitionExplorer("NA", size=L, kernel=7, query=(L // 2, L // 2)),
         "sliders.query_j", sweep),
        (f"Partition SASA k=7 {L}x{L}", lambda: PartitionExplorer("SASA", size=L, kernel=7, query=(L // 2, L // 2)),
         "sliders.query_i", sweep),
        (f"Partition grid G=8 {L}x{L}",
         lambda: PartitionExplorer("MaxViT grid", size=L, grid=8, query=(L // 2, L // 2)),
         "sliders.query_j", sweep),
        (f"Partition NA {L}x{L}", lambda: PartitionExplorer("NA", size=L, kernel=3, query=(L // 2, L // 2)),
         "sliders.kernel", [3 + k % 10 for k in range(n)]),
        (f"Partition DiNAT {L}x{L}", lambda: PartitionExplorer("DiNAT", size=L, kernel=7, query=(L // 2, L // 2)),
         "sliders.dilation", [1 + k % 4 for k in range(n)]),
        (f"Partition block {L}x{L}", lambda: PartitionExplorer("MaxViT block", size=L, block=4, query=(L // 2, L // 2)),
         "sliders.block", [4 + k % 8 for k in range(n)]),
    ]
    for model, layer in [("nat", "stages.0.0.attn"), ("sasa", "stages.1.0.attn"), ("vit", "stages.0.3.attn")]:
        yield (f"Attention {model} {layer}", lambda model=model, layer=layer: AttentionExplorer(model, layer=layer),
               "sliders.query_j", [k % 8 for k in range(n)])
        yield (f"Attention {model} {layer}", lambda model=model, layer=layer: AttentionExplorer(model, layer=layer),
               "sliders.head", [k % 2 for k in range(n)])
    yield ("Attention nat stages.0.0.attn", lambda: AttentionExplorer("nat"), "scale_buttons",
           [("local", "shared")[k % 2] for k in range(n)])
    for name, layer, side in [("nat_mini", "levels.0.blocks.0.attn", 56),
                              ("swin_tiny_patch4_window7_224", "layers.0.blocks.1.attn", 56),
                              ("maxvit_tiny_tf_224", "stages.0.0.grid_attn", 56),
                              ("deit_tiny_patch16_224", "blocks.11.attn", 14)]:
        def published(name=name, layer=layer):
            return AttentionExplorer(checkpoint=name, weights="random", layer=layer)

        label = f"Attention {name.split('_')[0]} {layer} {side}x{side}"
        yield label, published, "sliders.query_j", [k % side for k in range(n)]
        yield label, published, "sliders.head", [k % 2 for k in range(n)]
    yield "LaViT stage 0 (N = 64)", lambda: LaViTExplorer(stage=0), "sliders.head", [k % 4 for k in range(n)]
    yield "LaViT", lambda: LaViTExplorer(), "sliders.stage", [k % 2 for k in range(n)]
    # the controls the browser sweep found slow (tests/test_browser.py): menus and cost sliders
    yield "LaViT task, first visit (2 forwards)", lambda: LaViTExplorer(), "menus.task", ["same"]
    yield "LaViT task, revisited", lambda: LaViTExplorer(), "menus.task", [TASKS[k % 2] for k in range(n)]
    yield "LaViT photo, first visit (2 forwards)", lambda: LaViTExplorer(), "menus.photo", list(PHOTOS[1:])
    yield "LaViT photo, revisited", lambda: LaViTExplorer(), "menus.photo", [PHOTOS[k % 5] for k in range(n + 5)]
    yield "Cost", lambda: CostExplorer(side=56), "sliders.channels", [16 * (1 + k % 32) for k in range(n)]
    yield "Cost", lambda: CostExplorer(side=56), "sliders.window", [2 + k % 15 for k in range(n)]
    yield "Cost", lambda: CostExplorer(side=56), "sliders.side", [8 * (1 + k % 32) for k in range(n)]
    yield (f"Partition NA {L}x{L}", lambda: PartitionExplorer("NA", size=L, kernel=3, query=(0, 0)), "compare_menu",
           [((NO_COMPARE,) + MECHANISMS)[k % (len(MECHANISMS) + 1)] for k in range(n)])
    yield (f"Partition NA {L}x{L}", lambda: PartitionExplorer("NA", size=L, kernel=3, query=(0, 0)),
           "mechanism_menu", [MECHANISMS[k % len(MECHANISMS)] for k in range(n)])
    for stack in ("NA + DiNAT", "MaxViT block + grid", "global"):
        yield (f"Receptive {stack} {L}x{L} theory cold",
               lambda stack=stack: ReceptiveFieldExplorer(stack, size=L, depth=1, effective=False),
               "depth", list(range(1, 9)))

        def build(stack=stack):
            return ReceptiveFieldExplorer(stack, size=L, depth=1)

        yield f"Receptive {stack} {L}x{L} cold", build, "depth", list(range(1, 9))
        yield f"Receptive {stack} {L}x{L} warm", build, "depth", [1 + k % 8 for k in range(n)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="map side of the partition and receptive explorers")
    parser.add_argument("--moves", type=int, default=30, help="moves per slider (default 30)")
    parser.add_argument("--only", default="", help="only rows whose label contains this text")
    args = parser.parse_args(argv)
    print(f"one slider move, median of {args.moves} moves (cold receptive rows: 7 new depths; first visits: "
          "each option once), "
          f"target {TARGET_MS:.0f} ms")
    print(f"{'explorer':<48} {'control':<16} {'ms':>8}  ok")
    worst, slow = 0.0, []
    for label, build, control, values in cases(args.size, args.moves + 1):
        if args.only not in label:
            continue
        widget = build()
        if label.endswith("warm"):
            time_moves(widget, control, range(1, 9))  # visit every depth once: what is timed is cached
        first = "first visit" in label  # every move reaches a new state: none is a warm-up
        ms = time_moves(widget, control, values, warm_up=not first)
        if isinstance(widget, AttentionExplorer) and widget.forwards != 1:
            raise AssertionError(f"{label}: a slider move ran the model ({widget.forwards} forwards)")
        if "cold" not in label and not first:
            worst = max(worst, ms)
        if ms > TARGET_MS:
            slow.append(label)
        print(f"{label:<48} {control:<16} {ms:8.1f}  {'yes' if ms <= TARGET_MS else 'NO'}")
    print(f"worst median of the cached/interactive moves: {worst:.1f} ms (target {TARGET_MS:.0f} ms)")
    if slow:
        print("over the target: " + "; ".join(slow))


if __name__ == "__main__":
    main()
