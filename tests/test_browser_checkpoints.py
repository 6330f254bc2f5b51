"""Notebook 08 in a real browser: it runs end to end in JupyterLab, its layout keeps the rules, and the
NAT-Mini explorer's query slider redraws both plots.

The notebook (a copy in a temporary folder) is opened and Run All; ``tests/browser.py``'s layout
rules are checked on every output; the banner says RANDOM WEIGHTS unless the NAT-Mini file is in the
cache (then it shows the top-5 labels); the right arrow key on the query-column slider of the
NAT-Mini explorer must move the query in both plot titles and change the picture. Screenshots:
``screenshots/notebook_08_checkpoints.png`` (the window after Run All), ``checkpoint_<name>.png`` (each
explorer after Run All; NAT-Mini's again after the move).
Like the other browser tests, it skips without Chromium and Playwright, except under CI, where it fails.
"""

from __future__ import annotations

import shutil
import sys

import pytest
from browser import PANEL, ROOT, SHOTS, in_browser, jupyterlab, layout_problems, open_notebook, run_all, tooling
from test_browser import _press_right

from vizattn import checkpoints

pytestmark = pytest.mark.browser

NOTEBOOK = "08_the_papers_models.ipynb"
SCOPE = ".vizattn-checkpoint-nat-mini"


def test_notebook_08_runs_and_its_nat_mini_explorer_follows_the_query_slider(tmp_path):
    tooling()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, tmp_path / NOTEBOOK)  # a copy: autosave never touches the repository
    command = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={tmp_path}"]
    with jupyterlab(command, tmp_path) as url:
        def drive(page):
            open_notebook(page, url, NOTEBOOK)
            run_all(page)
            problems = layout_problems(page)
            page.screenshot(path=str(SHOTS / "notebook_08_checkpoints.png"), full_page=True)
            for name in checkpoints.list():  # each explorer of the notebook, as Run All left it
                scope = f"{PANEL} .vizattn-checkpoint-{name.replace('_', '-')}"
                if page.locator(scope).count():
                    page.locator(scope).scroll_into_view_if_needed()
                    page.locator(scope).screenshot(path=str(SHOTS / f"checkpoint_{name}.png"))
            banner = page.locator(f"{PANEL} {SCOPE} .widget-html").first.inner_text()
            expected = "RANDOM WEIGHTS" if checkpoints.cached("nat_mini") is None else "Top-5"
            assert expected in banner, banner
            _press_right(page, SCOPE, "vizattn-query-j", "1", [(0, "query (0, 1)"), (1, "query (0, 1)")],
                         "checkpoint_nat_mini.png")
            assert not problems, "layout problems:\n" + "\n".join(problems)

        in_browser(drive, "checkpoints_failure.png")
