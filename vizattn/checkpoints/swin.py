"""Swin-T/S/B (timm ``swin_*_patch4_window*``, microsoft/Swin-Transformer's weights) in vizattn's layers.

4x4 stride-4 patch embedding + LayerNorm; four stages (patch merging at the start of stages
2-4, as timm lays them out), each of Swin blocks alternating W-MSA (``Block(P)``) and SW-MSA
(``Block(P, shift=P // 2)``; P = 7 at 224 x 224, 12 at 384 x 384; on a last-stage map no larger
than the window a single window without shift); then
LayerNorm, mean over tokens and ``head.fc``. ``from_reference`` takes timm's state dicts and the
official repository's (downsampling at the end of a stage, head ``head.weight``), drops the
buffers ``relative_position_index`` and ``attn_mask``, and turns each
``relative_position_bias_table [(2P-1)^2, heads]`` (indexed by query - key) into vizattn's
``rpb.table [heads, 2P-1, 2P-1]`` (key - query): a reshape and a flip of both offset axes
(semantics.md §7).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..checks import as_pair
from ..layers.swin import PatchMerging, SwinBlock

__all__ = ["Swin", "SIZES", "swin", "from_reference"]


class PatchEmbed(nn.Module):
    """``images [B, 3, S, S] -> [B, S/p, S/p, dim]``: a ``p x p`` stride-``p`` convolution, then LayerNorm."""

    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.proj, self.norm = nn.Conv2d(3, dim, patch, patch), nn.LayerNorm(dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(images).permute(0, 2, 3, 1))


class Stage(nn.Module):
    """Patch merging (all stages but the first), then Swin blocks alternating shift 0 and ``window // 2``."""

    def __init__(self, dim_in: int, dim: int, depth: int, heads: int, window, mlp_ratio: float):
        super().__init__()
        window = as_pair("window", window)
        shift = tuple(p // 2 for p in window)
        self.downsample = PatchMerging(dim_in, dim) if dim_in != dim else nn.Identity()
        self.blocks = nn.Sequential(*(SwinBlock(dim, heads, window, 0 if j % 2 == 0 else shift, mlp_ratio)
                                      for j in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class Head(nn.Module):
    """``[B, H, W, C] -> logits``: mean over tokens, then ``fc``."""

    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, classes) if classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((1, 2)))


class Swin(nn.Module):
    """Swin Transformer: ``images [B, 3, S, S]`` (ImageNet-normalised) -> ``logits [B, classes]`` (``classes=0``:
    the pooled features). ``window``: one size for every stage, or ``stage_windows`` one per stage (timm
    shrinks a window larger than its stage's map to the map, with a bias table of that size).

    >>> import torch; _ = torch.manual_seed(0)
    >>> model = Swin(dim=16, depths=(2, 2), heads=(2, 4), window=4, classes=3).eval()
    >>> model(torch.randn(1, 3, 64, 64)).shape, model.layers[0].blocks[1].attn.pattern(16, 16)
    (torch.Size([1, 3]), Block(4, shift=2))
    """

    def __init__(self, dim=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), window=7, patch=4, mlp_ratio=4.0,
                 classes=1000, stage_windows=None):
        super().__init__()
        self.patch_embed = PatchEmbed(dim, patch)
        dims = [dim * 2**i for i in range(len(depths))]
        windows = stage_windows or [window] * len(depths)
        self.layers = nn.Sequential(*(Stage(dims[max(i - 1, 0)], dims[i], depth, h, windows[i], mlp_ratio)
                                      for i, (depth, h) in enumerate(zip(depths, heads))))
        self.norm, self.head = nn.LayerNorm(dims[-1]), Head(dims[-1], classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.layers(self.patch_embed(images))))


SIZES = {  # the paper's Table 1: C, depths, heads
    "T": dict(dim=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24)),
    "S": dict(dim=96, depths=(2, 2, 18, 2), heads=(3, 6, 12, 24)),
    "B": dict(dim=128, depths=(2, 2, 18, 2), heads=(4, 8, 16, 32)),
}


def swin(size: str, window: int = 7):
    """A builder ``(**changes) -> Swin`` of Swin-``size`` (T, S, B) with ``window`` (7 at 224 x 224, 12 at
    384 x 384); ``changes`` override the paper's numbers (the tests' reduced depths)."""
    return lambda **changes: Swin(**{**SIZES[size], "window": window, **changes})


def from_reference(state: dict) -> dict:
    """timm's (or the official repository's) Swin state dict -> vizattn's."""
    official = "layers.0.downsample.reduction.weight" in state  # downsampling at the end of a stage
    out = {}
    for key, value in state.items():
        if key.endswith(("relative_position_index", "attn_mask")):
            continue
        if official:
            key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", key)
            key = re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)
        if key.endswith("attn.relative_position_bias_table"):
            side = round(value.shape[0] ** 0.5)  # 2P - 1
            value = value.T.reshape(-1, side, side).flip(1, 2)  # [heads, q-k, q-k] -> [heads, k-q, k-q]
            key = key.replace("relative_position_bias_table", "rpb.table")
        out[key] = value
    return out
