"""Checkpoint files: where ``weights="imagenet"`` looks, how a file is read, how a state dict is checked.

The cache is the folder ``$VIZATTN_CHECKPOINTS`` if that is set, else torch.hub's
``<torch.hub.get_dir()>/checkpoints`` (where ``torch.hub.load_state_dict_from_url`` keeps its
downloads, usually ``~/.cache/torch/hub/checkpoints``). A file found there is used as it is;
otherwise it is downloaded from the official URL into it. Files in the official formats load:
a bare state dict, or one wrapped as ``{"model": ...}`` / ``{"state_dict": ...}`` (how the
official training scripts save them), as ``.pth``/``.pt``/``.bin`` or ``.safetensors``. A local
file is read with ``torch.load(weights_only=True)``; one that also holds other objects (CrossFormer's
training script saves its config next to the weights) is then read in full, which runs its
pickled code: pass only files you trust. Downloads are always read with ``weights_only=True``.
"""

from __future__ import annotations

import os
import pickle
import urllib.error
from pathlib import Path

import torch

__all__ = ["cache_dir", "read", "imagenet", "check"]

WRAPPERS = ("model", "state_dict", "model_state")  # keys under which training scripts save the weights


def cache_dir() -> Path:
    """The folder ``weights="imagenet"`` looks in and downloads to.

    >>> cache_dir().name in ("checkpoints", os.environ.get("VIZATTN_CHECKPOINTS", "checkpoints"))
    True
    """
    chosen = os.environ.get("VIZATTN_CHECKPOINTS", "").strip()
    return Path(chosen) if chosen else Path(torch.hub.get_dir()) / "checkpoints"


def read(source) -> dict[str, torch.Tensor]:
    """A state dict from a file path or a (possibly wrapped) dict, on the CPU.

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
        else:
            try:
                source = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:  # a training script's file: its config objects beside the weights
                source = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(source, dict):
        raise ValueError(f"a checkpoint must hold a state dict (a dict of tensors); got {type(source).__name__}")
    for key in WRAPPERS:
        if isinstance(source.get(key), dict):
            return source[key]
    return source


def imagenet(file: str, url: str | None, where: str) -> dict[str, torch.Tensor]:
    """The published weights ``file``: from the cache if there, else downloaded from ``url`` into it.

    ``where`` says where the file comes from (for the error when it is missing and cannot be
    downloaded; ``url=None``: no direct download exists).
    """
    folder = cache_dir()
    path = folder / file
    if path.is_file():
        return read(path)
    how = (f"Download it yourself and put it at {path} (or set VIZATTN_CHECKPOINTS to its folder), "
           f"or pass a local file: checkpoints.load(name, weights='/path/to/{file}')")
    if url is None:
        raise RuntimeError(f"the checkpoint file {file} is not in the cache {folder} and has no direct download URL; "
                           f"it comes from {where}. {how}")
    try:
        state = torch.hub.load_state_dict_from_url(url, model_dir=str(folder), file_name=file, map_location="cpu",
                                                   progress=False, weights_only=True)
    except (urllib.error.URLError, OSError) as err:
        raise RuntimeError(f"could not download the checkpoint file {file} from {url} ({where}): {err}. {how}") from err
    return read(state)


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
