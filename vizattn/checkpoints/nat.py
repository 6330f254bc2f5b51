"""NAT and DiNAT (SHI-Labs, ``classification/nat.py`` and ``dinat.py``) in vizattn's layers.

Channels-last throughout, like the reference: a convolutional tokenizer (two 3x3 stride-2
convolutions, no activation between them, then LayerNorm), four levels of NAT layers (the pre-norm
``TransformerBlock`` on ``NeighborhoodAttention`` with NAT's relative position bias), a 3x3 stride-2
convolution without bias + LayerNorm at the end of every level but the last, LayerNorm, mean
over tokens, linear head. The module names are the reference's, so its state dicts load after
one rename: NATTEN's ``attn.rpb`` table is vizattn's ``attn.rpb.table``, with the same layout
``[heads, 2k-1, 2k-1]`` indexed by key - query in dilation units (semantics.md §1, §8).
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.common import TransformerBlock
from ..layers.neighborhood import NeighborhoodAttention

__all__ = ["NAT", "nat", "from_reference", "DINAT_MINI_DILATIONS"]

DINAT_MINI_DILATIONS = ((1, 8, 1), (1, 4, 1, 4), (1, 2, 1, 2, 1, 2), (1, 1, 1, 1, 1))


class ConvTokenizer(nn.Module):
    """``images [B, 3, S, S] -> [B, S/4, S/4, dim]``: two 3x3 stride-2 convolutions, then LayerNorm."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(3, dim // 2, 3, 2, 1), nn.Conv2d(dim // 2, dim, 3, 2, 1))
        self.norm = nn.LayerNorm(dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(images).permute(0, 2, 3, 1))


class ConvDownsampler(nn.Module):
    """``[B, H, W, dim] -> [B, H/2, W/2, 2*dim]``: 3x3 stride-2 convolution without bias, then LayerNorm."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, 3, 2, 1, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class NATLevel(nn.Module):
    """The layers of one level, then (all levels but the last) the downsampler."""

    def __init__(self, dim, depth, heads, kernel_size, dilations, mlp_ratio, downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(dim, NeighborhoodAttention(dim, heads, kernel_size, d), mlp_ratio)
                                    for d in dilations[:depth])
        self.downsample = ConvDownsampler(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class NAT(nn.Module):
    """NAT / DiNAT: ``images [B, 3, S, S]`` (ImageNet-normalised) -> ``logits [B, classes]``.

    ``dilations``: per level, one dilation per layer (None: NAT, all 1).

    >>> import torch; _ = torch.manual_seed(0)
    >>> model = NAT(dim=8, depths=(1, 1), heads=(2, 2), kernel_size=3, classes=4).eval()
    >>> model(torch.randn(1, 3, 32, 32)).shape
    torch.Size([1, 4])
    """

    def __init__(self, dim=64, depths=(3, 4, 6, 5), heads=(2, 4, 8, 16), kernel_size=7, dilations=None,
                 mlp_ratio=3.0, classes=1000):
        super().__init__()
        dilations = dilations or tuple((1,) * depth for depth in depths)
        self.patch_embed = ConvTokenizer(dim)
        self.levels = nn.ModuleList(
            NATLevel(dim * 2**i, depth, h, kernel_size, dilations[i], mlp_ratio, downsample=i < len(depths) - 1)
            for i, (depth, h) in enumerate(zip(depths, heads)))
        features = dim * 2 ** (len(depths) - 1)
        self.norm, self.head = nn.LayerNorm(features), nn.Linear(features, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)  # [B, S/4, S/4, dim]
        for level in self.levels:
            x = level(x)
        return self.head(self.norm(x).mean((1, 2)))  # [B, H, W, C] -> [B, C] -> [B, classes]


def nat(dilations=None):
    """NAT-Mini (``dilations=None``) or DiNAT-Mini (``DINAT_MINI_DILATIONS``): dim 64, depths 3/4/6/5, k = 7."""
    return lambda: NAT(dilations=dilations)


def from_reference(state: dict) -> dict:
    """The reference's ``...attn.rpb`` -> vizattn's ``...attn.rpb.table``; every other key unchanged."""
    return {(k + ".table" if k.endswith("attn.rpb") else k): v for k, v in state.items()}
