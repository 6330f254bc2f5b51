"""Checkpoint files: where ``weights="imagenet"`` looks, how a file is read, how a state dict is checked.

The cache is the folder ``$VIZATTN_CHECKPOINTS`` if that is set, else torch.hub's
``<torch.hub.get_dir()>/checkpoints`` (where ``torch.hub.load_state_dict_from_url`` keeps its
downloads, usually ``~/.cache/torch/hub/checkpoints``). A file found there is used as it is;
otherwise it is downloaded from the official URL into it. Files in the official formats load:
a bare state dict, or one wrapped as ``{"model": ...}`` / ``{"state_dict": ...}`` (how the
official training scripts save them), as ``.pth``/``.pt``/``.bin`` or ``.safetensors``.

Every file, local, cached or downloaded, is unpickled with ``torch.load(weights_only=True)``: tensors,
plain containers and numbers only, plus the configuration classes of ``TRAINING_SCRIPT_CLASSES``, the
ones the official training scripts pickle beside the weights. Nothing in the file runs. A file that
holds any other object raises ``ValueError`` naming the file and the object; ``trust_pickle=True``
reads it with full unpickling, which runs whatever code the file contains.
"""

from __future__ import annotations

import argparse
import os
import re
import urllib.error
from collections import OrderedDict
from pathlib import Path

import torch

__all__ = ["cache_dir", "read", "imagenet", "check", "TRAINING_SCRIPT_CLASSES", "TRUST_RISK"]

WRAPPERS = ("model", "state_dict", "model_state")  # keys under which training scripts save the weights

# The classes besides tensors, containers and numbers that the official training scripts pickle into
# their checkpoints, each allowed by its exact name in the file (``module.Class``):
# - ``argparse.Namespace``: the command-line arguments, saved as ``"args"`` by DeiT's ``main.py`` and by
#   timm's ``CheckpointSaver`` (NAT/DiNAT's ``classification/train.py`` is timm's script). Built as itself:
#   an object that only holds attributes.
# - ``yacs.config.CfgNode``: the configuration, saved as ``"config"`` by Swin's and CrossFormer's
#   ``utils.save_checkpoint``. Built as an ``OrderedDict`` of its keys and values (yacs' bookkeeping
#   attributes land in its ``__dict__``): no yacs code runs, and yacs need not be installed.
# Their other entries (optimizer, lr-scheduler and amp/GradScaler state dicts, epoch, accuracy, timm's
# "metric" and "saver") hold only tensors, containers, strings and numbers.
TRAINING_SCRIPT_CLASSES = (argparse.Namespace, (OrderedDict, "yacs.config.CfgNode"))
TRUST_RISK = ("pass trust_pickle=True to unpickle it in full, only for a file you trust: "
              "full unpickling runs any code the file contains")


def cache_dir() -> Path:
    """The folder ``weights="imagenet"`` looks in and downloads to.

    >>> cache_dir().name in ("checkpoints", os.environ.get("VIZATTN_CHECKPOINTS", "checkpoints"))
    True
    """
    chosen = os.environ.get("VIZATTN_CHECKPOINTS", "").strip()
    return Path(chosen) if chosen else Path(torch.hub.get_dir()) / "checkpoints"


def read(source, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from a file path or a (possibly wrapped) dict, on the CPU.

    A pickled file (``.pth``/``.pt``/``.bin``) is read safely (see the module's docstring); one that needs
    full unpickling raises ``ValueError`` unless ``trust_pickle=True``.

    >>> import torch
    >>> read({"model": {"w": torch.ones(2)}})
    {'w': tensor([1., 1.])}
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"weights must be 'imagenet', a state dict or an existing checkpoint file; "
                             f"got the path {str(path)!r}, which is not a file")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # only needed for that format

            source = load_file(str(path), device="cpu")
        elif trust_pickle:
            source = torch.load(path, map_location="cpu", weights_only=False)
        else:
            source = _unpickle_safely(path)
    if not isinstance(source, dict):
        raise ValueError(f"a checkpoint must hold a state dict (a dict of tensors); got {type(source).__name__}")
    for key in WRAPPERS:
        if isinstance(source.get(key), dict):
            return source[key]
    return source


def _unpickle_safely(path: Path):
    """``torch.load(path, weights_only=True)`` with ``TRAINING_SCRIPT_CLASSES`` allowed; ValueError naming the
    objects it refused (or why the file is unreadable)."""
    with torch.serialization.safe_globals(list(TRAINING_SCRIPT_CLASSES)):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # whatever a user's file makes torch raise becomes a ValueError naming it
            refused = _refused(path, err)
            if refused:
                raise ValueError(f"{path}: refused to unpickle {', '.join(refused)} (the safe reader builds only "
                                 f"tensors, containers, numbers and the training scripts' configuration "
                                 f"classes); {TRUST_RISK}") from None  # torch's message advises weights_only=False
            reason = (str(err).strip().splitlines() or [""])[-1]
            raise ValueError(f"{path}: not a readable PyTorch checkpoint file "
                             f"({type(err).__name__}: {reason})") from err


def _refused(path: Path, err: Exception) -> list[str]:
    """The ``module.name`` of each pickled class or function in ``path`` that the safe reader refuses.

    Reads the pickle's opcodes (nothing is built); a file in torch's legacy (non-zip) format is not
    scanned, so the names come from torch's error message.
    """
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (ValueError, RuntimeError):
        return list(dict.fromkeys(re.findall(r"GLOBAL ([\w.]+)", str(err))))


def imagenet(file: str, url: str | None, where: str, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The published weights ``file``: from the cache if there, else downloaded from ``url`` into it, and
    ``read`` from there.

    ``where`` says where the file comes from (for the error when it is missing and cannot be
    downloaded; ``url=None``: no direct download exists).
    """
    folder = cache_dir()
    path = folder / file
    if path.is_file():
        return read(path, trust_pickle)
    how = (f"Download it yourself and put it at {path} (or set VIZATTN_CHECKPOINTS to its folder), "
           f"or pass a local file: checkpoints.load(name, weights='/path/to/{file}')")
    if url is None:
        raise RuntimeError(f"the checkpoint file {file} is not in the cache {folder} and has no direct download URL; "
                           f"it comes from {where}. {how}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=False)  # to a temporary file, then renamed
    except (urllib.error.URLError, OSError) as err:
        raise RuntimeError(f"could not download the checkpoint file {file} from {url} ({where}): {err}. {how}") from err
    return read(path, trust_pickle)


def check(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], name: str, shown: int = 5) -> None:
    """Raise ValueError naming the first ``shown`` missing, unexpected and mis-shaped keys, if any.

    >>> import torch
    >>> check({"a": torch.zeros(2), "b": torch.zeros(1)}, {"a": torch.zeros(3), "c": torch.zeros(1)}, "demo")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: demo: ...; missing keys (1): b; unexpected keys (1): c; wrong shapes (1): a: model (2,), checkpoint (3,)
    """
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k}: model {tuple(v.shape)}, checkpoint {tuple(given[k].shape)}"
              for k, v in expected.items() if k in given and tuple(given[k].shape) != tuple(v.shape)]
    problems = [f"{what} ({len(items)}): {', '.join(items[:shown])}{', ...' if len(items) > shown else ''}"
                for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                    ("wrong shapes", shapes)) if items]
    if problems:
        raise ValueError(f"{name}: the checkpoint does not fit the model; "
                         + "; ".join(problems))
