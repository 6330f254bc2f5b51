"""The explorers' figure (``vizattn.widgets.figure.FigureWidget``) in a real browser: its own front
end must keep every view of a figure equal to what Python holds, and report the user's edits back.

One notebook (written here) shows a figure edited before it is shown, shows it a second time, edits
it with both views on the page, and sends it whole again (as plotly does before a display: every
drawn view is drawn again from it). Then, in the page: both views show the last edit; a zoom in
one view (a ``plotly_relayout`` not sent by Python) reaches Python (a layout ``on_change`` callback)
and, through it, the other view; so does a click on a legend entry (a ``plotly_restyle``); a click on
a point reaches the trace's ``on_click``; after a save and
a reload (the kernel still running) both views come back with the figure as Python holds it, not as
it was first sent. Same tooling and skip rule as ``test_browser.py``.
"""

from __future__ import annotations

import sys

import nbformat
import pytest
from browser import (
    PANEL,
    ROOT,
    SHOTS,
    WAIT_MS,
    in_browser,
    jupyterlab,
    open_notebook,
    run_all,
    tooling,
    wait_kernel_idle,
)

pytestmark = pytest.mark.browser

CELLS = [
    """import ipywidgets as widgets
import plotly.graph_objects as go

from vizattn.widgets.figure import FigureWidget

fig = FigureWidget([go.Scatter(x=[0, 1, 2], y=[0, 1, 0], mode="markers", marker=dict(size=30), name="points"),
                    go.Scatter(x=[0, 2], y=[1.5, 1.5], mode="lines", name="line")],
                   layout=dict(width=460, height=280, title=dict(text="as created"), margin=dict(t=50)))
fig.data[0].y = [2, 1, 2]
fig.layout.title.text = "edited before display"
seen = widgets.HTML("nothing yet")
seen.add_class("seen")
fig.data[0].on_click(lambda trace, points, state: setattr(seen, "value", f"clicked {points.point_inds}"))
fig.layout.on_change(lambda layout, x: setattr(seen, "value", f"x range {list(x)}"), "xaxis.range")
fig.data[1].on_change(lambda trace, visible: setattr(seen, "value", f"line {visible}"), "visible")
widgets.VBox([seen, fig])""",
    "fig",
    "fig.update_layout(title_text=\"edited with two views\")\nfig.data[0].marker.color = \"#D55E00\"",
    # the whole figure sent again with both views drawn, as plotly's Python side sends it just before a
    # display (a message the page can apply after it drew a view from the figure first sent): a new title
    # in Python's own copy only (no edit message), then that copy sent whole
    "fig._layout[\"title\"][\"text\"] = \"sent whole\"\n_ = fig._repr_mimebundle_()",
]

PLOTS = f"{PANEL} .js-plotly-plot"
# what view ``i`` shows: its title, the trace's y and colour, the x range (plotly.js's own objects)
SHOWN_JS = """([sel, i]) => { const gd = document.querySelectorAll(sel)[i]; if (!gd || !gd.data) return null;
    const t = gd.querySelector('.gtitle'); const r = gd.layout.xaxis && gd.layout.xaxis.range;
    return {title: t ? t.textContent : null, y: Array.from(gd.data[0].y), colour: gd.data[0].marker.color,
            range: r ? Array.from(r) : null, line: gd.data[1].visible === undefined ? true : gd.data[1].visible}; }"""


def _wait_shown(page, index: int, **want) -> None:
    """Wait until view ``index`` shows ``want`` (keys of SHOWN_JS)."""
    page.wait_for_function(f"([sel, i, want]) => {{ const s = ({SHOWN_JS})([sel, i]);"
                           " return !!s && Object.entries(want).every(([k, v]) => JSON.stringify(s[k]) === JSON.stringify(v)); }",
                           arg=[PLOTS, index, want], timeout=WAIT_MS)


def _wait_seen(page, text: str) -> None:
    page.wait_for_function("([sel, text]) => { const s = document.querySelector(sel); return s && s.textContent.trim() === text; }",
                           arg=[f"{PANEL} .seen", text], timeout=WAIT_MS)


def test_every_view_of_a_figure_follows_python_and_reports_the_user(tmp_path):
    tooling()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata = nbformat.read(ROOT / "notebooks" / "_widget_smoke.ipynb", 4).metadata  # opens unmodified
    nbformat.write(nb, tmp_path / "figure.ipynb")
    with jupyterlab([sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={tmp_path}"], tmp_path) as url:
        def drive(page):
            open_notebook(page, url, "figure.ipynb")
            run_all(page)
            last = dict(title="sent whole", y=[2, 1, 2], colour="#D55E00")
            for view in (0, 1):
                _wait_shown(page, view, **last)
            # a zoom in the first view (plotly.js's own relayout, as its toolbar does; the page holds the
            # promise of plotly.js the figures share) reaches Python,
            # which sends it on to the second view
            page.evaluate("async (sel) => (await globalThis[Symbol.for('vizattn.plotly')]).relayout("
                          "document.querySelectorAll(sel)[0], {'xaxis.range': [-1, 5]})", PLOTS)
            _wait_seen(page, "x range [-1, 5]")
            _wait_shown(page, 1, range=[-1, 5])
            # a click on the middle point (x 1, y 1) of the second view
            point = page.evaluate("""(sel) => { const gd = document.querySelectorAll(sel)[1], fl = gd._fullLayout;
                const box = gd.getBoundingClientRect();
                return [box.left + fl.xaxis._offset + fl.xaxis.d2p(1), box.top + fl.yaxis._offset + fl.yaxis.d2p(1)]; }""",
                                  PLOTS)
            page.mouse.move(*point)
            page.mouse.click(*point)
            _wait_seen(page, "clicked [1]")
            # a click on the line's legend entry in the first view hides it (plotly.js's own restyle)
            page.locator(PLOTS).nth(0).locator(".legend .traces").nth(1).click()
            _wait_seen(page, "line legendonly")
            _wait_shown(page, 1, line="legendonly")
            page.screenshot(path=str(SHOTS / "figure_views.png"), full_page=True)
            # saved, reloaded: the views are drawn again from the kernel's state
            page.keyboard.press("Control+s")
            page.wait_for_function("() => !document.querySelector('#jp-main-dock-panel .lm-TabBar-tab.jp-mod-current.jp-mod-dirty')",
                                   timeout=WAIT_MS)
            page.reload(timeout=WAIT_MS)
            page.locator(f"{PANEL} .jp-Cell").first.wait_for(state="visible")
            wait_kernel_idle(page)
            for view in (0, 1):
                _wait_shown(page, view, **last, range=[-1, 5], line="legendonly")
            page.screenshot(path=str(SHOTS / "figure_views_reloaded.png"), full_page=True)

        in_browser(drive, "figure_failure.png")
