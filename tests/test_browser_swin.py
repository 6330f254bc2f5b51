"""Swin in a real browser: the partition explorer's menu offers Swin, and its rolled-map toggle redraws.

A one-cell notebook (written into a temporary folder) with ``PartitionExplorer("NA", compare="NA")``;
the test picks *Swin SW* in the mechanism menu, then presses *Swin's rolled map*, and waits for the
plot titles to follow. The JupyterLab and Chromium plumbing is ``tests/browser.py``'s; like it, this test
skips without Chromium and Playwright, except under CI, where it fails.
"""

from __future__ import annotations

import json
import sys

import pytest
from browser import PANEL, SHOTS, WAIT_MS, in_browser, jupyterlab, run_all, tooling, wait_kernel_idle
from test_browser import _plot_digest, _wait_title

pytestmark = pytest.mark.browser

SOURCE = """from vizattn.widgets import PartitionExplorer

explorer = PartitionExplorer("NA", compare="NA", size=12, kernel=5, block=4, query=(0, 0))
explorer"""


def test_swin_in_the_partition_explorer_menu_and_its_rolled_map_toggle(tmp_path):
    tooling()
    SHOTS.mkdir(exist_ok=True)
    cell = {"cell_type": "code", "execution_count": None, "id": "swin", "metadata": {}, "outputs": [],
            "source": SOURCE}
    nb = {"cells": [cell], "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                       "name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "swin.ipynb").write_text(json.dumps(nb))
    command = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={tmp_path}"]
    with jupyterlab(command, tmp_path) as url:
        def drive(page):
            page.goto(f"{url}lab/tree/swin.ipynb", timeout=WAIT_MS)
            page.locator(f"{PANEL} .jp-CodeCell").first.wait_for(state="visible", timeout=WAIT_MS)
            wait_kernel_idle(page)
            run_all(page)
            scope = ".vizattn-partition"
            _wait_title(page, scope, 0, "NA: Neighborhood(5)")
            assert not page.locator(f"{scope} .vizattn-rolled").is_visible()  # no Swin on screen: no toggle
            page.locator(f"{scope} select").first.select_option("Swin SW")
            _wait_title(page, scope, 0, "Swin SW: Block(4, shift=2) on 12x12")
            before = _plot_digest(page, scope)
            page.locator(f"{scope} .vizattn-rolled button", has_text="rolled map").click()
            _wait_title(page, scope, 0, "Swin's rolled map")
            _wait_title(page, scope, 1, "NA: Neighborhood(5)")  # the compare panel stays in original coordinates
            assert _plot_digest(page, scope) != before
            page.locator(scope).screenshot(path=str(SHOTS / "browser_swin_rolled.png"))

        in_browser(drive, "browser_swin_failure.png")
