"""Notebook start-up: how long the first explorer of a fresh kernel takes to draw, and the notebook suite.

    python benchmarks/startup.py              # fresh processes, each building one explorer
    python benchmarks/startup.py --suite      # also the whole notebook suite under nbval (minutes)

Each row is a fresh Python process that imports torch and vizattn (the notebook's first cell),
then, timed as "cell", imports ``vizattn.widgets``, builds the notebook's first explorer and asks
it for the display bundle a kernel sends (``_repr_mimebundle_``): the kernel's share of the first
draw. ``deferred`` is what an explorer does: ``vizattn.widgets.setup()`` runs before plotly's
widget code is imported and keeps it from importing nbformat (and jsonschema); "plotly default"
imports plotly's widget code first (``plotly.basewidget``), as plotly itself does, so nbformat comes
with it. Target: cell <= 1.5 s; the suite <= 120 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CELLS = {  # the first explorer of the notebooks
    "PartitionExplorer": 'PartitionExplorer("NA", compare="DiNAT", size=14, kernel=5, dilation=2, query=(0, 0))',
    "AttentionExplorer": 'AttentionExplorer("dinat", layer="stages.0.1.attn", query=(4, 7))',
}
CHILD = """
import time, sys
start = time.perf_counter()
import torch, vizattn
imported = time.perf_counter()
if not {deferred}:
    import plotly.basewidget  # plotly's widget code as plotly imports it: nbformat at once
from vizattn.widgets import *
explorer = {cell}
explorer._repr_mimebundle_()
print(imported - start, time.perf_counter() - imported, "nbformat" in sys.modules)
"""


def first_draw(cell: str, deferred: bool) -> tuple[float, float, bool]:
    """Seconds to import torch + vizattn, seconds of the cell, and whether nbformat got imported."""
    code = CHILD.format(cell=cell, deferred=deferred)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.split()
    return float(out[0]), float(out[1]), out[2] == "True"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--suite", action="store_true", help="also time the notebook suite under nbval")
    args = parser.parse_args(argv)
    print(f"median of {args.repeats} fresh processes, seconds\n")
    print("| first explorer | nbformat | import torch + vizattn | cell (import widgets, build, display) |")
    print("|---|---|---|---|")
    for name, cell in CELLS.items():
        for deferred in (False, True):
            runs = [first_draw(cell, deferred) for _ in range(args.repeats)]
            print(f"| {name} | {'deferred' if deferred else 'plotly default'} "
                  f"{'(imported)' if runs[0][2] else '(not imported)'} | "
                  f"{statistics.median(r[0] for r in runs):.2f} | {statistics.median(r[1] for r in runs):.2f} |",
                  flush=True)
    if args.suite:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "notebooks"], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "VIZATTN_FAST": "1"},  # as dev.py test
                              check=False)
        print(f"\nnotebook suite under nbval: {time.perf_counter() - start:.0f} s (exit {done.returncode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
