"""The papers' published models as the explorers show them: the cached ImageNet weights, else seeded
random weights under a red banner (nothing is downloaded by an explorer)."""

from __future__ import annotations

import functools

import ipywidgets as widgets
import torch

from .. import checkpoints
from ..checkpoints import files
from ..checks import check_choice
from .base import note_html

__all__ = ["WEIGHTS", "RANDOM_HTML", "RANDOM_NOTE", "published", "weights_banner"]

WEIGHTS = ("imagenet", "random")
RANDOM_HTML = "<b style='color:#b00'>RANDOM WEIGHTS</b> "  # the warning every random-weights banner starts with
RANDOM_NOTE = "the maps show the architecture, not what the trained model learned."


def published(name: str, weights: str = "imagenet"):
    """``(model, real)``: checkpoint ``name`` with its ImageNet weights if the file is in the local cache
    (``checkpoints.files.cache_dir()``; nothing is downloaded here), else seeded random weights (``real``
    False; ``weights="random"`` always). Each model is built once per process and file.

    >>> model, real = published("deit_tiny_patch16_224", "random")
    >>> real, published("deit_tiny_patch16_224", "random")[0] is model
    (False, True)
    """
    check_choice("checkpoint", name, checkpoints.list())
    check_choice("weights", weights, WEIGHTS)
    path = checkpoints.cached(name) if weights == "imagenet" else None
    return _published(name, None if path is None else str(path)), path is not None


@functools.lru_cache(maxsize=None)
def _published(name: str, path: str | None):
    if path is not None:
        return checkpoints.load(name, weights=path)
    with torch.random.fork_rng(devices=[]):  # the same random model in every run; the caller's RNG untouched
        torch.manual_seed(0)
        return checkpoints.build(name)


def weights_banner(names, weights: str = "imagenet") -> widgets.HTML:
    """A banner saying which of the published models ``names`` the explorers show with their ImageNet weights
    (the file is in the cache) and which with RANDOM WEIGHTS (in red), and where the files go.

    >>> "RANDOM WEIGHTS" in weights_banner(["nat_mini"], weights="random").value
    True
    """
    check_choice("weights", weights, WEIGHTS)
    for name in names:
        check_choice("checkpoint", name, checkpoints.list())
    real = [n for n in names if weights == "imagenet" and checkpoints.cached(n) is not None]
    random = [n for n in names if n not in real]
    parts = []
    if random:
        parts.append(RANDOM_HTML + note_html(
            f"for {', '.join(random)}: {RANDOM_NOTE} To see the trained models, put their files into "
            f"{files.cache_dir()} (or set VIZATTN_CHECKPOINTS to their folder; see README's published models)."))
    if real:
        parts.append("<b>ImageNet weights</b> " + note_html(f"for {', '.join(real)} (from {files.cache_dir()})."))
    return widgets.HTML("<br>".join(parts), layout=widgets.Layout(max_width="960px"))
