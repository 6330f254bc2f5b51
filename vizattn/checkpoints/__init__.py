"""The papers' published ImageNet-1k models in vizattn's layers, equal to the reference code.

Every published size of DeiT, NAT, DiNAT, CrossFormer, MaxViT and Swin. ``load(name, weights="imagenet")``
builds the model, loads a checkpoint in the reference's own key layout (converting where
vizattn's conventions differ, e.g. key - query position terms) and returns it in eval mode:
``images [B, 3, S, S]`` (``S = CHECKPOINTS[name].size``, 224 or 384; ImageNet-normalised, see
``vizattn.data.imagenet_photo``) -> ``logits [B, 1000]``. ``weights`` is ``"imagenet"`` (the
published file: from the cache if there, else downloaded; see ``files.cache_dir``), a path to a
checkpoint file, or a state dict. ``list()`` gives the names; ``CHECKPOINTS[name]`` says where
each comes from, its licence and its published top-1. Every attention layer is a vizattn layer,
so ``vizattn.probe``, ``vizattn.receptive`` and ``vizattn.metrics`` work on these models.
``from_timm(model)`` converts a timm model object of these families (any size; see ``convert``).

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

    ``build(**changes)`` builds it (``changes`` override the paper's numbers: the tests' reduced
    depths). ``convert`` maps a state dict in the reference's key layout to the vizattn model's
    (the identity where they agree). ``url`` is the official download (None: none exists, only a
    manual download from ``source``); ``file`` the name it has in the cache. ``params`` (millions)
    and ``gflops`` (multiply-adds, as the papers count them) are the published table's, at ``size``.
    """

    name: str
    build: Callable[..., nn.Module]
    convert: Callable[[dict], dict]
    file: str
    url: str | None
    source: str
    licence: str
    top1: float
    paper: str
    label: str  # the paper's short name (DeiT-Ti, Swin-T, ...), for titles
    params: float
    gflops: float
    size: int = 224  # the input resolution, images [B, 3, size, size]


def _same(state: dict) -> dict:
    return dict(state)


DEIT = "Touvron et al., Training data-efficient image transformers & distillation through attention, ICML 2021"
NAT = "Hassani et al., Neighborhood Attention Transformer, CVPR 2023"
DINAT = "Hassani and Shi, Dilated Neighborhood Attention Transformer, arXiv 2209.15001"
CROSSFORMER = "Wang et al., CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention, ICLR 2022"
MAXVIT = "Tu et al., MaxViT: Multi-Axis Vision Transformer, ECCV 2022"
SWIN = "Liu et al., Swin Transformer: Hierarchical Vision Transformer using Shifted Windows, ICCV 2021"
_NAT_URL, _DINAT_URL = "https://shi-labs.com/projects/nat/checkpoints/CLS/", "https://shi-labs.com/projects/dinat/checkpoints/"
_SHI = "SHI-Labs/Neighborhood-Attention-Transformer"
_SWIN_URL = "https://github.com/SwinTransformer/storage/releases/download/v1.0.0/"
_DRIVE = {"T": "1YSkU9enn-ITyrbxLH13zNcBYvWSEidfq", "S": "1RAkigsgr33va0RZ85S2Shs2BhXYcS6U8",
          "B": "1bK8biVCi17nz_nkt7rBfio_kywUpllSU", "L": "1zRWByVW_KIZ87NgaBkDIm60DAsGJErdG"}
_SIZE = {"Ti": "tiny", "T": "tiny", "S": "small", "B": "base", "L": "large"}


def _deit(size, dim, heads, file, top1, params, gflops):
    name = f"deit_{_SIZE[size]}_patch16_224"
    return Checkpoint(name, vit.deit(dim, heads), _same, file, f"https://dl.fbaipublicfiles.com/deit/{file}",
                      f"facebookresearch/deit (timm: {name})", "Apache-2.0", top1, DEIT, f"DeiT-{size}",
                      params, gflops)


def _nat(size, top1, params, gflops, layer_scale=None):
    return Checkpoint(f"nat_{size}", nat.nat(size, layer_scale=layer_scale), nat.from_reference, f"nat_{size}.pth",
                      f"{_NAT_URL}nat_{size}.pth", f"{_SHI} (classification/nat.py)", "MIT", top1, NAT,
                      f"NAT-{size.capitalize()}", params, gflops)


def _dinat(name, size, file, top1, params, gflops, dilations=(8, 4, 2, 1), kernel=7, layer_scale=None, image=224):
    label = f"DiNAT-{size.capitalize()}" + ("" if image == 224 else f" {image}") + ("" if kernel == 7 else " 11x11")
    return Checkpoint(name, nat.nat(size, dilations, layer_scale, kernel_size=kernel), nat.from_reference, file,
                      f"{_DINAT_URL}imagenet1k/{file}", f"{_SHI} (classification/dinat.py: {name})", "MIT", top1,
                      DINAT, label, params, gflops, image)


def _crossformer(size, top1, params, gflops):
    drive = f"https://drive.google.com/file/d/{_DRIVE[size]}/view?usp=sharing"
    return Checkpoint(f"crossformer_{_SIZE[size]}", crossformer.crossformer(size), crossformer.from_reference,
                      f"crossformer-{size.lower()}.pth", None,
                      f"cheerss/CrossFormer v1 (README: CrossFormer-{size}, Google Drive {drive})", "MIT", top1,
                      CROSSFORMER, f"CrossFormer-{size}", params, gflops)


def _maxvit(size, top1, params, gflops):
    name = f"maxvit_{_SIZE[size]}_tf_224"
    return Checkpoint(name, maxvit.maxvit(size), maxvit.from_reference, f"{name}.in1k.bin",
                      f"https://huggingface.co/timm/{name}.in1k/resolve/main/pytorch_model.bin",
                      f"google-research/maxvit, ported by timm ({name}.in1k)", "Apache-2.0", top1, MAXVIT,
                      f"MaxViT-{size}", params, gflops)


def _swin(size, window, image, top1, params, gflops):
    name = f"swin_{_SIZE[size]}_patch4_window{window}_{image}"
    return Checkpoint(name, swin.swin(size, window), swin.from_reference, f"{name}.pth", f"{_SWIN_URL}{name}.pth",
                      f"microsoft/Swin-Transformer (timm: {name})", "MIT", top1, SWIN,
                      f"Swin-{size}" + ("" if image == 224 else f" {image}"), params, gflops, image)


# top-1, params (M) and GFLOPs from each repository's README table (DeiT's README gives no FLOPs: the
# Swin paper's Table 1 does for DeiT-S/B; DeiT-Ti's 1.3 G is timm's). DiNAT-Large is ImageNet-22k
# pre-trained, fine-tuned on ImageNet-1k; every other model is trained on ImageNet-1k only.
CHECKPOINTS = {c.name: c for c in (
    _deit("Ti", 192, 3, "deit_tiny_patch16_224-a1311bcf.pth", 72.2, 5, 1.3),
    _deit("S", 384, 6, "deit_small_patch16_224-cd65a155.pth", 79.8, 22, 4.6),
    _deit("B", 768, 12, "deit_base_patch16_224-b5f2ef4d.pth", 81.8, 86, 17.5),
    _nat("mini", 81.8, 20, 2.7),
    _nat("tiny", 83.2, 28, 4.3),
    _nat("small", 83.7, 51, 7.8, layer_scale=1e-5),
    _nat("base", 84.3, 90, 13.7, layer_scale=1e-5),
    _dinat("dinat_mini", "mini", "dinat_mini_in1k_224.pth", 81.8, 20, 2.7),
    _dinat("dinat_tiny", "tiny", "dinat_tiny_in1k_224.pth", 82.7, 28, 4.3),
    _dinat("dinat_small", "small", "dinat_small_in1k_224.pth", 83.8, 51, 7.8),
    _dinat("dinat_base", "base", "dinat_base_in1k_224.pth", 84.4, 90, 13.7, layer_scale=1e-5),
    _dinat("dinat_large", "large", "dinat_large_in22k_in1k_224.pth", 86.6, 200, 30.6),
    _dinat("dinat_large_384", "large", "dinat_large_in22k_in1k_384.pth", 87.4, 200, 89.7,
           dilations=(13, 6, 3, 1), image=384),
    _dinat("dinat_large_384_11x11", "large", "dinat_large_in22k_in1k_384_11x11.pth", 87.5, 200, 92.4,
           kernel=11, image=384),
    _crossformer("T", 81.5, 27.8, 2.9),
    _crossformer("S", 82.5, 30.7, 4.9),
    _crossformer("B", 83.4, 52.0, 9.2),
    _crossformer("L", 84.0, 92.0, 16.1),
    _maxvit("T", 83.62, 31, 5.6),
    _maxvit("S", 84.45, 69, 11.7),
    _maxvit("B", 84.95, 119, 24.2),
    _maxvit("L", 85.17, 212, 43.9),
    _swin("T", 7, 224, 81.2, 28, 4.5),
    _swin("S", 7, 224, 83.2, 50, 8.7),
    _swin("B", 7, 224, 83.5, 88, 15.4),
    _swin("B", 12, 384, 84.5, 88, 47.1),
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


def load(name: str, weights="imagenet", trust_pickle: bool = False) -> nn.Module:
    """Model ``name`` with ``weights`` (``"imagenet"``, a checkpoint path or a state dict), in eval mode.

    A checkpoint file is read safely: only tensors, containers, numbers and the official training scripts'
    configuration objects are unpickled (``files.read``); a file that holds anything else raises
    ``ValueError`` naming it and the refused object, unless ``trust_pickle=True`` (full unpickling, which
    runs any code the file contains: only for files you trust). A checkpoint whose keys or shapes do not
    fit raises ``ValueError`` naming the first few mismatches; a missing file that cannot be downloaded
    raises ``RuntimeError`` naming the file, where it comes from and how to pass a local path.

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
        state = files.imagenet(spec.file, spec.url, spec.source, trust_pickle)
    else:
        state = files.read(weights, trust_pickle)
    model = spec.build()
    state = spec.convert(state)
    files.check(model.state_dict(), state, name)
    model.load_state_dict(state)
    return model.eval()
