"""Server-side time of an upload in ``AttentionExplorer``: a chosen file -> the redrawn map (targets: 1 s for the
small models at 64 x 64, 3 s for a published checkpoint at 224 x 224).

    python benchmarks/upload.py                 # every case, median of 3 uploads each
    python benchmarks/upload.py --runs 5 --only nat_mini

One upload = the ``FileUpload`` widget's value set to one file, as the browser sets it, until the explorer's
figures are updated: the checks and decoding of ``vizattn.data.image``, one forward pass under the probe,
the records, both figures and the controls (the browser's own drawing is not timed). Files: JPEGs of
scikit-image's coffee photograph resized to 1 MP (a picture from the web) and 12 MP (a phone camera's
4000 x 3000). Baseline in the same run: choosing a bundled photo in the photo menu (the same forward and
redraw, no file), so ``upload / photo`` is what the file itself costs. Checkpoints run with random weights
(the time does not depend on them; nothing is downloaded).
"""

from __future__ import annotations

import argparse
import datetime
import io
import statistics
import time

import numpy as np

from vizattn.data import PHOTOS
from vizattn.widgets import AttentionExplorer

TARGETS_S = {"small": 1.0, "checkpoint": 3.0}
CASES = [("nat", "small"), ("maxvit", "small"), ("nat_mini", "checkpoint"),
         ("swin_tiny_patch4_window7_224", "checkpoint"), ("deit_tiny_patch16_224", "checkpoint")]


def jpeg(width: int, height: int) -> bytes:
    """scikit-image's coffee photograph resized to ``width x height`` as a JPEG file (quality 90)."""
    import skimage.data
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.asarray(skimage.data.coffee())).resize((width, height)).save(out, "JPEG", quality=90)
    return out.getvalue()


def upload(ex, data: bytes, name: str) -> float:
    """Seconds from the widget's value set to the explorer's redrawn figures."""
    value = ({"name": name, "type": "image/jpeg", "size": len(data), "content": memoryview(data),
              "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    start = time.perf_counter()
    ex.upload.button.value = value
    seconds = time.perf_counter() - start
    if ex.state.photo != ex.state.photos[-1]:
        raise AssertionError(f"the upload was not used: {ex.upload.message.value}")
    return seconds


def switch(ex, photo: str) -> float:
    start = time.perf_counter()
    ex.menus["photo"].value = photo
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="uploads per file and model (default 3)")
    parser.add_argument("--only", default="", help="only models whose name contains this text")
    args = parser.parse_args(argv)
    files = {"1 MP": jpeg(1200, 800), "12 MP": jpeg(4000, 3000)}
    print(f"upload -> redrawn map, server side, median of {args.runs}; baseline: a bundled photo chosen in the menu")
    print(f"{'model':<30} {'file':>6} {'kB':>6} {'upload s':>9} {'photo s':>8} {'upload/photo':>13} "
          f"{'target s':>9} {'upload/target':>14}  ok")
    for name, kind in CASES:
        if args.only not in name:
            continue
        ex = (AttentionExplorer(name, photo=PHOTOS[0]) if kind == "small"
              else AttentionExplorer(checkpoint=name, weights="random", photo=PHOTOS[0]))
        photo = statistics.median(switch(ex, PHOTOS[1 + k % 2]) for k in range(args.runs))
        for label, data in files.items():
            seconds = statistics.median(upload(ex, data, f"{label}.jpg") for _ in range(args.runs))
            target = TARGETS_S[kind]
            print(f"{name:<30} {label:>6} {len(data) // 1024:>6} {seconds:>9.2f} {photo:>8.2f} "
                  f"{seconds / photo:>13.1f} {target:>9.1f} {seconds / target:>14.2f}  "
                  f"{'yes' if seconds <= target else 'NO'}")


if __name__ == "__main__":
    main()
