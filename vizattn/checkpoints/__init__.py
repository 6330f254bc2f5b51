"""The papers' published ImageNet-1k models in vizattn's layers, equal to the reference code.

``load(name, weights="imagenet")`` builds the model, loads a checkpoint in the reference's own
key layout (converting where vizattn's conventions differ, e.g. key - query position terms) and
returns it in eval mode: ``images [B, 3, 224, 224]`` (ImageNet-normalised, see
``vizattn.data.imagenet_photo``) -> ``logits [B, 1000]``. ``weights`` is ``"imagenet"`` (the
published file: from the cache if there, else downloaded; see ``files.cache_dir``), a path to a
checkpoint file, or a state dict. ``list()`` gives the names; ``CHECKPOINTS[name]`` says where
each comes from, its licence and its published top-1. Every attention layer is a vizattn layer,
so ``vizattn.probe``, ``vizattn.receptive`` and ``vizattn.metrics`` work on these models.

>>> import torch; _ = torch.manual_seed(0)
>>> "deit_tiny_patch16_224" in list()
True
>>> model = build("deit_tiny_patch16_224")                  # random weights, no file needed
>>> model(torch.randn(1, 3, 224, 224)).shape
torch.Size([1, 1000])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from torch import nn

from . import crossformer, files, maxvit, nat, swin, vit
from .convert import from_timm

__all__ = ["Checkpoint", "CHECKPOINTS", "list", "build", "load", "cached", "from_timm"]


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One published model: how to build it, how to read its state dict, and where it comes from.

    ``convert`` maps a state dict in the reference's key layout to the vizattn model's (the
    identity where they agree). ``url`` is the official download (None: none exists, only a
    manual download from ``source``); ``file`` the name it has in the cache.
    """

    name: str
    build: Callable[[], nn.Module]
    convert: Callable[[dict], dict]
    file: str
    url: str | None
    source: str
    licence: str
    top1: float
    paper: str
    label: str  # the paper's short name (DeiT-Ti, Swin-T, ...), for titles


def _same(state: dict) -> dict:
    return dict(state)


DEIT = "Touvron et al., Training data-efficient image transformers & distillation through attention, ICML 2021"
CHECKPOINTS = {c.name: c for c in (
    Checkpoint("deit_tiny_patch16_224", vit.deit(192, 3), _same, "deit_tiny_patch16_224-a1311bcf.pth",
               "https://dl.fbaipublicfiles.com/deit/deit_tiny_patch16_224-a1311bcf.pth",
               "facebookresearch/deit (timm: deit_tiny_patch16_224)", "Apache-2.0", 72.2, DEIT, "DeiT-Ti"),
    Checkpoint("deit_small_patch16_224", vit.deit(384, 6), _same, "deit_small_patch16_224-cd65a155.pth",
               "https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth",
               "facebookresearch/deit (timm: deit_small_patch16_224)", "Apache-2.0", 79.8, DEIT, "DeiT-S"),
    Checkpoint("nat_mini", nat.nat(), nat.from_reference, "nat_mini.pth",
               "https://shi-labs.com/projects/nat/checkpoints/CLS/nat_mini.pth",
               "SHI-Labs/Neighborhood-Attention-Transformer (classification/nat.py)", "MIT", 81.8,
               "Hassani et al., Neighborhood Attention Transformer, CVPR 2023", "NAT-Mini"),
    Checkpoint("dinat_mini", nat.nat(nat.DINAT_MINI_DILATIONS), nat.from_reference, "dinat_mini_in1k_224.pth",
               "https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_mini_in1k_224.pth",
               "SHI-Labs/Neighborhood-Attention-Transformer (classification/dinat.py)", "MIT", 81.8,
               "Hassani and Shi, Dilated Neighborhood Attention Transformer, arXiv 2209.15001", "DiNAT-Mini"),
    Checkpoint("crossformer_tiny", crossformer.crossformer_tiny, crossformer.from_reference, "crossformer-t.pth", None,
               "cheerss/CrossFormer v1 (README: CrossFormer-T, Google Drive "
               "https://drive.google.com/file/d/1YSkU9enn-ITyrbxLH13zNcBYvWSEidfq/view?usp=sharing)", "MIT", 81.5,
               "Wang et al., CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention, ICLR 2022",
               "CrossFormer-T"),
    Checkpoint("maxvit_tiny_tf_224", maxvit.maxvit_tiny_tf, maxvit.from_reference, "maxvit_tiny_tf_224.in1k.bin",
               "https://huggingface.co/timm/maxvit_tiny_tf_224.in1k/resolve/main/pytorch_model.bin",
               "google-research/maxvit, ported by timm (maxvit_tiny_tf_224.in1k)", "Apache-2.0", 83.62,
               "Tu et al., MaxViT: Multi-Axis Vision Transformer, ECCV 2022", "MaxViT-T"),
    Checkpoint("swin_tiny_patch4_window7_224", swin.swin_tiny, swin.from_reference, "swin_tiny_patch4_window7_224.pth",
               "https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth",
               "microsoft/Swin-Transformer (timm: swin_tiny_patch4_window7_224)", "MIT", 81.2,
               "Liu et al., Swin Transformer: Hierarchical Vision Transformer using Shifted Windows, ICCV 2021",
               "Swin-T"),
)}


def list() -> tuple[str, ...]:  # noqa: A001 - the public name the design fixes
    """The checkpoint names."""
    return tuple(CHECKPOINTS)


def _spec(name: str) -> Checkpoint:
    if name not in CHECKPOINTS:
        raise ValueError(f"name must be one of {', '.join(CHECKPOINTS)}; got name={name!r}")
    return CHECKPOINTS[name]


def build(name: str) -> nn.Module:
    """The architecture ``name`` with random weights, in eval mode (no checkpoint needed)."""
    return _spec(name).build().eval()


def cached(name: str) -> Path | None:
    """The published weights of ``name`` in the local cache (``files.cache_dir()``), or None if they are
    not there; nothing is downloaded.

    >>> cached("nat_mini") in (None, files.cache_dir() / "nat_mini.pth")
    True
    """
    path = files.cache_dir() / _spec(name).file
    return path if path.is_file() else None


def load(name: str, weights="imagenet") -> nn.Module:
    """Model ``name`` with ``weights`` (``"imagenet"``, a checkpoint path or a state dict), in eval mode.

    A checkpoint whose keys or shapes do not fit raises ``ValueError`` naming the first few
    mismatches; a missing file that cannot be downloaded raises ``RuntimeError`` naming the
    file, where it comes from and how to pass a local path.

    >>> import torch; _ = torch.manual_seed(0)
    >>> state = build("deit_tiny_patch16_224").state_dict()
    >>> load("deit_tiny_patch16_224", weights=state).training
    False
    >>> load("deit_tiny_patch16_224", weights={"head.weight": torch.zeros(3)})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: deit_tiny_patch16_224: ...; missing keys (151): cls_token, pos_embed, ...; wrong shapes (1): ...
    """
    spec = _spec(name)
    if isinstance(weights, str) and weights == "imagenet":
        state = files.imagenet(spec.file, spec.url, spec.source)
    else:
        state = files.read(weights)
    model = spec.build()
    state = spec.convert(state)
    files.check(model.state_dict(), state, name)
    model.load_state_dict(state)
    return model.eval()
