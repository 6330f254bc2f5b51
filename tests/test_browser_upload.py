"""Your photo and your model in a real browser: a file chosen in the attention explorer's upload control.

A two-cell notebook (written into a temporary folder): ``AttentionExplorer("nat")`` and an explorer of a
stack of vizattn layers of the test's own (``model=``). Real files (a JPEG photo, a text file named .jpg,
the first half of the JPEG) are set on the upload button's file input (a click opens the file chooser;
Playwright's ``FileChooser.set_files``, ``set_input_files`` on that input, is what choosing them in the
dialog does): the photo must join the photo menu and redraw the map (its picture changes); each bad file
must leave the upload's message, no error output and the map as it was.
Screenshots (1400 x 1000): ``upload_before.png``, ``upload_photo.png``, ``upload_not_an_image.png``,
``upload_truncated.png``, ``upload_your_model.png``. Like the other browser tests, it skips without
Chromium and Playwright, except under CI, where it fails.
"""

from __future__ import annotations

import io
import json
import sys
import time

import numpy as np
import pytest
from browser import PANEL, SHOTS, WAIT_MS, error_texts, in_browser, jupyterlab, layout_problems, run_all, tooling
from test_browser import _plot_digest, _wait_title

pytestmark = pytest.mark.browser

SOURCES = ["""from vizattn.widgets import AttentionExplorer

explorer = AttentionExplorer("nat", photo="astronaut")
explorer""", """import torch
from torch import nn
from vizattn.layers import NeighborhoodAttention


class Patches(nn.Module):  # images [B, 3, 64, 64] -> a channels-last map [B, 8, 8, 16]
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 16, 8, 8)

    def forward(self, x):
        return self.proj(x).permute(0, 2, 3, 1)


torch.manual_seed(0)
yours = nn.Sequential(Patches(), NeighborhoodAttention(16, 2, 3), NeighborhoodAttention(16, 2, 3, dilation=2))
mine = AttentionExplorer(model=yours, size=64)
mine.add_class("vizattn-yours")
mine"""]
SCOPE = ".vizattn-attention:not(.vizattn-yours)"  # the explorer of the bundled photos (browser helpers add PANEL)
HERE = f"{PANEL} {SCOPE}"


def photo_jpeg() -> bytes:
    """scikit-image's coffee photograph as a JPEG file (not one of the explorer's own pictures at this crop)."""
    import skimage.data
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.asarray(skimage.data.coffee())[:, 100:500]).save(out, "JPEG", quality=90)
    return out.getvalue()


def message(page) -> str:
    return page.locator(f"{HERE} .vizattn-upload .widget-html-content").inner_text()


def choose(page, path, expect: str) -> None:
    """Choose ``path`` in the explorer's file input; wait for the upload's message to contain ``expect``."""
    with page.expect_file_chooser() as chooser:  # the button clicks its file input (which is not in the page)
        page.locator(f"{HERE} .vizattn-upload .widget-upload").click()
    chooser.value.set_files(str(path))  # set_input_files on that input
    page.wait_for_function("([sel, want]) => { const e = document.querySelector(sel);"
                           " return e && e.innerText.includes(want); }",
                           arg=[f"{HERE} .vizattn-upload .widget-html-content", expect], timeout=WAIT_MS)


def settled_digest(page) -> str:
    """The main plot's digest once it has kept still for a second (the kernel's redraw has landed)."""
    last, since = None, time.monotonic()
    while time.monotonic() - since < 1.0:
        now = _plot_digest(page, HERE)
        if now != last:
            last, since = now, time.monotonic()
        page.wait_for_timeout(150)
    return last


def test_a_chosen_file_redraws_the_map_and_bad_files_leave_a_message(tmp_path):
    tooling()
    SHOTS.mkdir(exist_ok=True)
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{k}", "metadata": {}, "outputs": [],
              "source": source} for k, source in enumerate(SOURCES)]
    nb = {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                      "name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "upload.ipynb").write_text(json.dumps(nb))
    files = tmp_path / "files"
    files.mkdir()
    good = photo_jpeg()
    (files / "my coffee.jpg").write_bytes(good)
    (files / "notes.jpg").write_bytes(b"a shopping list, not a picture\n" * 20)
    (files / "half.jpg").write_bytes(good[: len(good) // 2])
    command = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={tmp_path}"]
    with jupyterlab(command, tmp_path) as url:
        def drive(page):
            page.goto(f"{url}lab/tree/upload.ipynb", timeout=WAIT_MS)
            page.locator(f"{PANEL} .jp-CodeCell").first.wait_for(state="visible", timeout=WAIT_MS)
            run_all(page)
            _wait_title(page, SCOPE, 0, "nat on astronaut")
            page.locator(HERE).scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / "upload_before.png"))
            before = settled_digest(page)

            choose(page, files / "my coffee.jpg", "showing my coffee.jpg")
            _wait_title(page, SCOPE, 0, "nat on my coffee.jpg")
            photo = settled_digest(page)
            assert photo != before, "the map did not change after the upload"
            chosen = page.locator(f"{HERE} select").nth(2).evaluate("s => s.options[s.selectedIndex].text")
            assert chosen.replace("\xa0", " ") == "my coffee.jpg", chosen  # (ipywidgets draws spaces as nbsp)
            page.screenshot(path=str(SHOTS / "upload_photo.png"))

            for name, shot, reason in [("notes.jpg", "upload_not_an_image.png", "not an image"),
                                       ("half.jpg", "upload_truncated.png", "broken image data")]:
                choose(page, files / name, f"{name} was not used")
                assert reason in message(page) and "The photo on show is unchanged" in message(page), message(page)
                assert settled_digest(page) == photo, f"{name} changed the map"
                assert not error_texts(page), error_texts(page)
                page.screenshot(path=str(SHOTS / shot))

            mine = f"{PANEL} .vizattn-yours"
            page.locator(mine).scroll_into_view_if_needed()
            assert "Your model (Sequential): pictures 64x64, ImageNet-normalised; 2 attention layers" in (
                page.locator(f"{mine} .widget-html-content").first.inner_text())
            page.screenshot(path=str(SHOTS / "upload_your_model.png"))
            problems = layout_problems(page)
            assert not problems, "layout problems:\n" + "\n".join(problems)

        in_browser(drive, "upload_failure.png")
