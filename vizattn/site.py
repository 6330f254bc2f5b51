"""The notebook suite as a static site: ``python3 dev.py site`` (``python -m vizattn.site [out]``).

Every ``notebooks/*.ipynb`` (but ``_*.ipynb``, the tests' fixtures) is executed by nbclient in a kernel with
``VIZATTN_STATIC=1``, so that its explorers display their kernel-free form (``vizattn.widgets.static``)
and its plotly figures HTML that uses the page's plotly.js, then converted by nbconvert's ``lab`` HTML
template (``site_template``: plotly.js loaded once from ``plotly.min.js`` next to the pages, no widget
manager, a bar of links). Links to ``.ipynb`` files become ``.html``; ``index.html`` is the tour's table of
contents. ``VIZATTN_FAST`` is ``1`` unless set, as in the test suite. Not imported by ``import vizattn``.

>>> _links('<a href="01_sasa.ipynb#idea">next</a> <a href="https://x.org/a.ipynb">there</a>')
'<a href="01_sasa.html#idea">next</a> <a href="https://x.org/a.ipynb">there</a>'
"""

from __future__ import annotations

import concurrent.futures
import html
import os
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
TEMPLATE = Path(__file__).with_name("site_template")
TOUR = "00_tour"
CELL_TIMEOUT = 600  # seconds a cell may run (nbclient's timeout)
IOPUB_TIMEOUT = 120  # seconds a cell's outputs may arrive after its reply
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
LIVE = ("Run it live: <code>python3 dev.py lab</code> in a clone of the repository, or on Binder or Colab "
        "(see the README).")

__all__ = ["notebooks", "execute", "page", "index", "build", "main"]


def notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The notebooks of the site: every ``*.ipynb`` of ``folder`` but the ``_*`` fixtures, by name."""
    return sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("_"))


def execute(path: Path):
    """``path`` executed top to bottom in a kernel of this Python started here (environment: this process's), as a
    notebook node; raises nbclient's ``CellExecutionError`` (which names the cell) if a cell fails."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    class Here(KernelManager):  # this environment's Python, whatever kernels are installed (nbval: current env)
        @property
        def kernel_spec(self):
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                              display_name="Python 3", language="python", name="python3")

    nb = nbformat.read(path, as_version=4)
    # an explorer's output (a kernel-free explorer: about 1 MB) can reach the client after the cell's reply by
    # more than nbclient's default 4 s on a busy machine, which then dropped it without a word: wait, else fail
    NotebookClient(nb, km=Here(), timeout=CELL_TIMEOUT, iopub_timeout=IOPUB_TIMEOUT, raise_on_iopub_timeout=True,
                   store_widget_state=False, resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def _without_widgets(nb) -> None:
    """Widget views cannot show without a kernel: an output that has them keeps its other forms (the
    explorers' and ``ipywidgets.HTML``'s HTML in a ``VIZATTN_STATIC`` kernel, else their text)."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for out in cell.get("outputs", ()):
            out.get("data", {}).pop(WIDGET_VIEW, None)


def _links(text: str) -> str:
    """Relative links to notebooks (``x.ipynb``, ``x.ipynb#part``) as links to their pages."""
    return re.sub(r'href="(?![a-z]+:)([^"#]*?)\.ipynb(#[^"]*)?"', r'href="\1.html\2"', text)


def _nav(names: list[str], k: int) -> str:
    """The bar above a page: the index, the previous and next pages."""
    parts = ["<a href='index.html'>vizattn: all notebooks</a>"]
    if k > 0:
        parts.append(f"<a href='{names[k - 1]}.html'>&larr; {html.escape(names[k - 1])}</a>")
    if k + 1 < len(names):
        parts.append(f"<a href='{names[k + 1]}.html'>{html.escape(names[k + 1])} &rarr;</a>")
    fast = os.environ.get("VIZATTN_FAST", "1") == "1"
    return (" &middot; ".join(parts) + "<p class='vizattn-site-note'>A static copy of "
            f"<code>notebooks/{html.escape(names[k])}.ipynb</code>, executed when the site was built"
            f"{' with VIZATTN_FAST=1 (shorter training and timing loops, as in the tests)' if fast else ''}. "
            f"Its explorers are kernel-free: their controls move through states computed ahead by the explorers "
            f"themselves; each one says what it keeps. {LIVE}</p>")


def page(nb, names: list[str], k: int) -> str:
    """Notebook ``names[k]`` (executed) as one HTML page of the site."""
    from nbconvert import HTMLExporter

    _without_widgets(nb)
    exporter = HTMLExporter(template_name="vizattn_site", extra_template_basedirs=[str(TEMPLATE)])
    body, _ = exporter.from_notebook_node(nb, resources={"vizattn_nav": _nav(names, k)})
    return _links(body)


def index(tour, names: list[str]) -> str:
    """``index.html``: the tour first, then its table of contents (the markdown cell with the most
    notebook links), then any notebook the table leaves out."""
    import mistune

    cells = [c.source for c in tour.cells if c.cell_type == "markdown"] if tour is not None else []
    table = max(cells, key=lambda s: s.count(".ipynb)"), default="")
    listed = set(re.findall(r"\(([^)#]+)\.ipynb", table))
    rest = [n for n in names if n not in listed and n != TOUR]
    more = "".join(f"<li><a href='{n}.html'>{html.escape(n)}</a></li>" for n in rest)
    start = f"<p><b>Start with <a href='{TOUR}.html'>the tour</a></b>: one photo, one query, every mechanism.</p>"
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>vizattn: the notebooks</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:960px;margin:24px auto;padding:0 16px;"
            "line-height:1.5}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
            "vertical-align:top;text-align:left}</style></head><body>"
            "<h1>vizattn: structured vision attention you can see</h1>"
            "<p>The notebook suite as static pages, every output included. The explorers play without a kernel: "
            f"their controls move through states the explorers computed ahead. {LIVE}</p>"
            + (start if TOUR in names else "") + _links(mistune.html(table))
            + (f"<h2>More notebooks</h2><ul>{more}</ul>" if more else "") + "</body></html>")


def _build_one(path: str) -> tuple[str, object, float]:
    start = time.monotonic()
    return path, execute(Path(path)), time.monotonic() - start


def build(out: Path, folder: Path = NOTEBOOKS, workers: int = 2) -> dict[str, float]:
    """Build the site into ``out`` (emptied first); returns seconds per notebook executed.

    Notebooks run ``workers`` at a time, each kernel on one thread (the notebooks set it).
    """
    import plotly

    os.environ.setdefault("VIZATTN_FAST", "1")
    os.environ["VIZATTN_STATIC"] = "1"  # read by the kernels (vizattn.widgets.static)
    paths = notebooks(folder)
    if not paths:
        raise SystemExit(f"no notebooks in {folder}")
    names = [p.stem for p in paths]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", out / "plotly.min.js")
    seconds, executed = {}, {}
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        for path, nb, took in pool.map(_build_one, [str(p) for p in paths]):
            name = Path(path).stem
            seconds[name], executed[name] = took, nb
            (out / f"{name}.html").write_text(page(nb, names, names.index(name)), encoding="utf-8")
            print(f"site: {name}.html ({took:.0f} s)", flush=True)
    (out / "index.html").write_text(index(executed.get(TOUR), names), encoding="utf-8")
    return seconds


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "site"
    start = time.monotonic()
    build(out)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"site: {out} built in {time.monotonic() - start:.0f} s, {size / 1e6:.1f} MB; open {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
