"""The notebooks and the explorers in a real browser: JupyterLab + headless Chromium (Debian's)
driven by Playwright, at 1400x1000 with JupyterLab's defaults (file browser open beside the notebook).

``test_the_readme_command_lands_on_the_tour_and_every_notebook_fits``: JupyterLab started with
``dev.py lab``'s own command line (on a copy of notebooks/): "/" and the bare "/lab" address both
show the tour; then every notebook opens unmodified, runs without an error and passes the layout
rules of ``browser.LAYOUT_JS`` (slider tracks >= 100 px, no clipped label, no figure past its output
area, no widget scrolling sideways, titles clear of the figure's edge and of plotly's toolbar,
labelled Play buttons, every figure's drawing area >= 300 px wide, tick labels apart). The tour's
explorers follow the keyboard.

``test_every_control_of_every_explorer``: ``notebooks/_widget_smoke.ipynb`` (one explorer per cell)
is run, checked against the same rules, and every control of every explorer is moved through every
position it reaches (``browser.sweep``): each move must change the picture, show no error and keep
the layout. The latency of each move (input event -> first change of a plot -> its last change,
measured in the page, kernel round trip included) is printed per control against the issue's targets
(median <= 100 ms to the first change, <= 250 ms to the finished plot; model, photo and task switches
<= 400 ms), with the controls that miss; asserted only with ``VIZATTN_LATENCY=1`` (a quiet machine: on
a shared CPU the medians move by tens of ms from run to run). Beside them, the floor measured in the same
run: the notebook's last cell, one point of a bare figure following a slider, in plotly's own
``FigureWidget`` and in the explorers' one (a kernel round trip and one redraw, the least a move can
cost on the machine at hand). Screenshots go to ``screenshots/`` (gitignored).

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; ``.ci/run`` installs it) and the
``playwright`` Python package; without them the test is skipped, except under CI (``CI`` set),
where it fails.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import statistics
import sys
import time

import pytest
from browser import (
    PANEL,
    ROOT,
    SHOTS,
    WAIT_MS,
    in_browser,
    jupyterlab,
    latency_misses,
    latency_report,
    layout_problems,
    need,
    open_notebook,
    open_tabs,
    run_all,
    sweep,
    tooling,
    wait_kernel_idle,
)

pytestmark = pytest.mark.browser

NOTEBOOK = ROOT / "notebooks" / "_widget_smoke.ipynb"
EXPLORERS = {"partition": ".vizattn-partition", "attention": ".vizattn-attention", "lavit": ".vizattn-lavit",
             "receptive": ".vizattn-receptive", "cost": ".vizattn-cost", "flow": ".vizattn-flow-rollout",
             "flow relevance": ".vizattn-flow-relevance"}
TARGETS_MS = {"first": 100, "finished": 250, "switch": 400}  # the targets (model/photo switches: "switch")
SWITCHES = ("model", "photo", "task")  # each loads other trained weights or runs the models on another photo
# the targets are asserted only when asked (VIZATTN_LATENCY=1, a quiet machine): on a shared CPU a sweep's
# medians move by tens of ms from run to run, so by default they are printed, with the controls that miss
ASSERT_LATENCY = os.environ.get("VIZATTN_LATENCY") == "1"


def _plot_digest(page, scope: str, index: int = 0) -> str:
    """A hash of a rendered plot (its SVG, heatmap images included): plot ``index`` inside ``scope``."""
    html = page.locator(f"{scope} .js-plotly-plot").nth(index).inner_html(timeout=WAIT_MS)
    return hashlib.sha256(html.encode()).hexdigest()


def _wait_title(page, scope: str, index: int, text: str) -> None:
    """Wait until the title of plot ``index`` inside ``scope`` contains ``text``."""
    page.wait_for_function(
        "([scope, index, text]) => { const p = document.querySelectorAll(scope + ' .js-plotly-plot')[index];"
        " const t = p && p.querySelector('.gtitle'); return t && t.textContent.includes(text); }",
        arg=[f"{PANEL} {scope}", index, text], timeout=WAIT_MS)


def _press_right(page, scope: str, slider: str, readout: str, titles: list[tuple[int, str]], shot: str) -> None:
    """Press the right arrow key on ``slider`` (a class) of the explorer ``scope``; wait for the
    readout and the plot titles (``(plot index, text)``) to follow; the first plot must change."""
    bare, scope = scope, f"{PANEL} {scope}"
    page.locator(scope).scroll_into_view_if_needed()
    before = _plot_digest(page, scope)
    page.locator(f"{scope} .{slider} .noUi-handle").first.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "([sel, want]) => { const r = document.querySelector(sel); return r && r.textContent.trim() === want; }",
        arg=[f"{scope} .{slider} .widget-readout", readout], timeout=WAIT_MS)
    for title in titles:
        _wait_title(page, bare, *title)
    deadline = time.monotonic() + 30
    while _plot_digest(page, scope) == before and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    page.locator(scope).screenshot(path=str(SHOTS / shot))
    assert _plot_digest(page, scope) != before, f"{scope}: the plot did not change after the {slider} move"


def _dev():
    spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    return dev


def test_the_readme_command_lands_on_the_tour_and_every_notebook_fits(tmp_path):
    tooling()
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns("_*", ".*"))
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")  # 07 quotes the README's benchmark table
    names = sorted(p.name for p in (tmp_path / "notebooks").glob("*.ipynb"))
    # dev.py's own command line, with the root and its workspace folder moved to temporary copies
    command = _dev().lab_command([f"--ServerApp.root_dir={tmp_path / 'notebooks'}",
                                  f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"])
    assert "--LabApp.default_url=/lab/tree/00_tour.ipynb" in command
    timings = {}
    with jupyterlab(command, tmp_path / "notebooks") as url:
        def drive(page):
            for address in (url, f"{url}lab"):  # "/", as `dev.py lab` opens it, and the bare /lab address
                page.goto(address, timeout=WAIT_MS)
                page.locator(f"{PANEL} .jp-Cell").first.wait_for(state="visible")
                wait_kernel_idle(page)
                tabs = open_tabs(page)
                assert tabs["current"] == "00_tour.ipynb" and "Launcher" not in tabs["all"], (address, tabs)
            problems = {}
            for name in names:
                start = time.monotonic()
                open_notebook(page, url, name)
                run_all(page)
                problems[name] = layout_problems(page)
                page.screenshot(path=str(SHOTS / f"notebook_{name[:-6]}.png"), full_page=True)
                if name == "00_tour.ipynb":
                    _press_right(page, ".vizattn-attention", "vizattn-query-j", "8",
                                 [(0, "query (4, 8)"), (1, "query (4, 8)")], "tour_attention.png")
                    _press_right(page, ".vizattn-partition", "vizattn-kernel", "6", [], "tour_partition.png")
                timings[name] = time.monotonic() - start
            problems = {k: v for k, v in problems.items() if v}
            assert not problems, "layout problems:\n" + "\n".join(f"{k}: {p}" for k, v in problems.items() for p in v)

        in_browser(drive, "notebooks_failure.png")
    print("seconds per notebook (open, run all, check):", {k: round(v) for k, v in timings.items()})


def test_every_control_of_every_explorer(tmp_path, capsys):
    tooling()
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)  # a copy: autosave never touches the repository
    latencies, moves, failures, floor, clicks = {}, {}, {}, {}, {}
    start = time.monotonic()
    with jupyterlab([sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={tmp_path}"], tmp_path) as url:
        def drive(page):
            open_notebook(page, url, NOTEBOOK.name)
            run_all(page)
            _wait_title(page, ".vizattn-partition", 0, "Neighborhood(3)")
            for problem in layout_problems(page):
                failures.setdefault(problem, f"{problem}   (after Run All)")
            page.screenshot(path=str(SHOTS / "explorers_before.png"), full_page=True)
            _click_the_photo(page)
            for explorer, scope in EXPLORERS.items():
                page.locator(f"{PANEL} {scope}").scroll_into_view_if_needed()
                moves[explorer] = sweep(page, f"{PANEL} {scope}", explorer, latencies, failures)
                page.locator(f"{PANEL} {scope}").screenshot(path=str(SHOTS / f"explorer_{explorer}.png"))
            page.screenshot(path=str(SHOTS / "explorers_after.png"), full_page=True)
            clicks["flow"] = _click_the_flow_map(page)
            page.locator(f"{PANEL} .vizattn-floor").scroll_into_view_if_needed()
            moves["floor"] = sweep(page, f"{PANEL} .vizattn-floor", "floor", floor, failures)
            _shoot_groups(page)

        in_browser(drive, "explorers_failure.png")
    misses = latency_misses(latencies, TARGETS_MS, SWITCHES)
    with capsys.disabled():
        print(f"\nbrowser sweep: {sum(moves.values())} moves {moves} in {time.monotonic() - start:.0f} s; "
              "latency (ms), "
              f"targets: median first change <= {TARGETS_MS['first']}, finished <= {TARGETS_MS['finished']} "
              f"(switches: {', '.join(SWITCHES)} <= {TARGETS_MS['switch']})\n" + latency_report(latencies, misses))
        first = [v[0] for (_, c), vs in latencies.items() if c not in SWITCHES for v in vs]
        finished = [v[1] for (_, c), vs in latencies.items() if c not in SWITCHES for v in vs]
        print(f"all controls but switches: median first {statistics.median(first):.0f} ms, "
              f"finished {statistics.median(finished):.0f} ms; {len(misses)} of {len(latencies)} controls miss "
              f"a target{'' if ASSERT_LATENCY else ' (not asserted: set VIZATTN_LATENCY=1 on a quiet machine)'}")
        print(f"a click on the flow explorer's map, to its token's three fields drawn: {clicks['flow']:.0f} ms")
        for (_, kind), values in floor.items():
            ends = [statistics.median(v[n] for v in values) for n in (0, 1)]
            print(f"the floor on this machine, {kind}'s FigureWidget (one point of a bare figure following a slider: "
                  f"a kernel round trip and one redraw): median first {ends[0]:.0f} ms, finished {ends[1]:.0f} ms")
    assert all(moves.values()), f"an explorer had no control to move: {moves}"
    assert not failures, "\n".join(failures.values())
    assert not (ASSERT_LATENCY and misses), f"latency targets missed: {misses}"


def _shoot_groups(page) -> None:
    """Screenshots of the partition explorer's group colours: MaxViT block beside grid, then Swin's
    shifted windows on the original and the rolled map (``explorer_groups_*.png``)."""
    scope = f"{PANEL} .vizattn-partition"
    menus = page.locator(f"{scope} select")
    for slider, value in [("query-i", "4"), ("query-j", "6")]:  # a query away from the corner
        readout = page.locator(f"{scope} .vizattn-{slider} .widget-readout")
        readout.fill(value)
        readout.press("Enter")
    for shot, mechanism, compare, title in [("block_grid", "MaxViT block", "MaxViT grid", "Grid("),
                                            ("swin", "Swin SW", "(none)", "Block(")]:
        menus.nth(0).select_option(mechanism)
        menus.nth(1).select_option(compare)
        _wait_title(page, ".vizattn-partition", 1 if compare != "(none)" else 0, title)
        page.wait_for_timeout(500)
        page.locator(scope).screenshot(path=str(SHOTS / f"explorer_groups_{shot}.png"))
    page.locator(f"{scope} .vizattn-rolled button").nth(1).click()
    _wait_title(page, ".vizattn-partition", 0, "rolled map")
    page.wait_for_timeout(500)
    page.locator(scope).screenshot(path=str(SHOTS / "explorer_groups_swin_rolled.png"))


def _image_point(page, scope: str, row: float, col: float) -> list[float]:
    """The page coordinates of image pixel ``(row, col)`` in the first plot of ``scope``."""
    return page.evaluate("""([scope, row, col]) => { const gd = document.querySelector(scope + ' .js-plotly-plot');
        const box = gd.getBoundingClientRect(), fl = gd._fullLayout;
        return [box.left + fl.xaxis._offset + fl.xaxis.d2p(col), box.top + fl.yaxis._offset + fl.yaxis.d2p(row)]; }""",
                         [scope, row, col])


def _click_the_flow_map(page) -> float:
    """A click on the flow explorer's map at image pixel (row 10, col 50) shows the fields of the token
    under it: (0, 3) of NAT's last 4x4 map. Returns the milliseconds from the click to the fields' title."""
    scope = f"{PANEL} .vizattn-flow-rollout"
    page.locator(scope).scroll_into_view_if_needed()
    point = _image_point(page, scope, 10, 50)
    start = time.monotonic()
    page.mouse.click(*point)
    page.wait_for_function(
        "(scope) => { const p = document.querySelectorAll(scope + ' .js-plotly-plot')[1];"
        " return p && [...p.querySelectorAll('.annotation-text')].some(a => a.textContent.includes('token (0, 3)')); }",
        arg=scope, timeout=WAIT_MS)
    elapsed = (time.monotonic() - start) * 1000
    page.mouse.move(0, 0)
    page.locator(scope).screenshot(path=str(SHOTS / "explorer_flow_click.png"))
    return elapsed


def _click_the_photo(page) -> None:
    """A click on the attention explorer's photo picks the query under the mouse: image pixel
    (row 10, col 50) is cell (2, 12) of NAT's 4-pixel cells."""
    scope = f"{PANEL} .vizattn-attention"
    page.locator(scope).scroll_into_view_if_needed()
    point = _image_point(page, scope, 10, 50)
    page.mouse.move(*point)
    page.mouse.click(*point)
    _wait_title(page, ".vizattn-attention", 0, "query (2, 12), head 0")
    page.wait_for_function(
        "(scope) => { const r = document.querySelector(scope + ' .vizattn-query-i .widget-readout');"
        " return r && r.textContent.trim() === '2'; }", arg=scope, timeout=WAIT_MS)
    page.mouse.move(0, 0)  # away from the plot: no hover label over later pictures


@pytest.mark.parametrize("ci, outcome", [("true", pytest.fail.Exception), (None, pytest.skip.Exception)])
def test_missing_tooling_fails_under_ci_and_skips_elsewhere(monkeypatch, ci, outcome):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="chromium"):
        need("/usr/bin/chromium is missing")


def test_latency_misses_names_the_controls_over_their_targets():
    latencies = {("cost", "channels C"): [(90, 120), (110, 300), (95, 260)],  # medians 95 / 260
                 ("lavit", "task"): [(300, 390)], ("lavit", "head"): [(99, 250)]}
    misses = latency_misses(latencies, TARGETS_MS, SWITCHES)
    assert misses == {("cost", "channels C"): "finished 260 > 250 ms"}
    assert "ok" in latency_report(latencies, misses).splitlines()[2]
