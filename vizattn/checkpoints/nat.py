"""NAT and DiNAT (SHI-Labs, ``classification/nat.py`` and ``dinat.py``) in vizattn's layers.

Channels-last throughout, like the reference: a convolutional tokenizer (two 3x3 stride-2
convolutions, no activation between them, then LayerNorm), four levels of NAT layers (the pre-norm
``TransformerBlock`` on ``NeighborhoodAttention`` with NAT's relative position bias), a 3x3 stride-2
convolution without bias + LayerNorm at the end of every level but the last, LayerNorm, mean
over tokens, linear head; NAT-S/B and DiNAT-B scale both residual branches (LayerScale). The
module names are the reference's, so its state dicts load after two renames: NATTEN's
``attn.rpb`` table is vizattn's ``attn.rpb.table``, with the same layout ``[heads, 2k-1, 2k-1]``
indexed by key - query in dilation units (semantics.md §1, §8), and the layer scales ``gamma1``,
``gamma2`` are ``ls1.gamma``, ``ls2.gamma``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.common import TransformerBlock
from ..layers.neighborhood import NeighborhoodAttention

__all__ = ["NAT", "SIZES", "nat", "alternate", "from_reference"]

SIZES = {  # classification/nat.py and dinat.py: embed_dim, depths, num_heads, mlp_ratio, layer_scale
    "mini": dict(dim=64, depths=(3, 4, 6, 5), heads=(2, 4, 8, 16), mlp_ratio=3.0),
    "tiny": dict(dim=64, depths=(3, 4, 18, 5), heads=(2, 4, 8, 16), mlp_ratio=3.0),
    "small": dict(dim=96, depths=(3, 4, 18, 5), heads=(3, 6, 12, 24), mlp_ratio=2.0),
    "base": dict(dim=128, depths=(3, 4, 18, 5), heads=(4, 8, 16, 32), mlp_ratio=2.0),
    "large": dict(dim=192, depths=(3, 4, 18, 5), heads=(6, 12, 24, 48), mlp_ratio=2.0),
}


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

    def __init__(self, dim, depth, heads, kernel_size, dilations, mlp_ratio, downsample: bool, layer_scale=None):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(dim, NeighborhoodAttention(dim, heads, kernel_size, d), mlp_ratio,
                                                     layer_scale=layer_scale)
                                    for d in dilations[:depth])
        self.downsample = ConvDownsampler(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class NAT(nn.Module):
    """NAT / DiNAT: ``images [B, 3, S, S]`` (ImageNet-normalised) -> ``logits [B, classes]``.

    ``dilations``: per level, one dilation per layer (None: NAT, all 1); ``layer_scale``: LayerScale's
    initial value (None: none).

    >>> import torch; _ = torch.manual_seed(0)
    >>> model = NAT(dim=8, depths=(1, 1), heads=(2, 2), kernel_size=3, classes=4).eval()
    >>> model(torch.randn(1, 3, 32, 32)).shape
    torch.Size([1, 4])
    """

    def __init__(self, dim=64, depths=(3, 4, 6, 5), heads=(2, 4, 8, 16), kernel_size=7, dilations=None,
                 mlp_ratio=3.0, classes=1000, layer_scale=None):
        super().__init__()
        dilations = dilations or tuple((1,) * depth for depth in depths)
        self.patch_embed = ConvTokenizer(dim)
        self.levels = nn.ModuleList(
            NATLevel(dim * 2**i, depth, h, kernel_size, dilations[i], mlp_ratio, downsample=i < len(depths) - 1,
                     layer_scale=layer_scale) for i, (depth, h) in enumerate(zip(depths, heads)))
        features = dim * 2 ** (len(depths) - 1)
        self.norm, self.head = nn.LayerNorm(features), nn.Linear(features, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)  # [B, S/4, S/4, dim]
        for level in self.levels:
            x = level(x)
        return self.head(self.norm(x).mean((1, 2)))  # [B, H, W, C] -> [B, C] -> [B, classes]


def alternate(dilations, depths) -> tuple[tuple[int, ...], ...]:
    """DiNAT's schedule: per level, NA (dilation 1) and DiNA (that level's dilation) in turn, NA first.

    >>> alternate((8, 4, 2, 1), (3, 4, 6, 5))
    ((1, 8, 1), (1, 4, 1, 4), (1, 2, 1, 2, 1, 2), (1, 1, 1, 1, 1))
    """
    return tuple(tuple(1 if j % 2 == 0 else d for j in range(depth)) for d, depth in zip(dilations, depths))


def nat(size: str, dilations=None, layer_scale=None, **changes):
    """A builder ``(**more) -> NAT`` of NAT-``size`` (mini ... large; ``dilations`` per level: DiNAT, e.g.
    ``(8, 4, 2, 1)`` at 224 x 224); ``changes`` and ``more`` override the paper's numbers (the tests'
    reduced depths)."""
    def build(**more) -> NAT:
        config = {**SIZES[size], "layer_scale": layer_scale, **changes, **more}
        if dilations is not None:
            config["dilations"] = alternate(dilations, config["depths"])
        return NAT(**config)

    return build


def from_reference(state: dict) -> dict:
    """The reference's ``...attn.rpb`` -> ``...attn.rpb.table``, ``gamma1``/``gamma2`` -> ``ls1``/``ls2.gamma``."""
    out = {}
    for key, value in state.items():
        if key.endswith("attn.rpb"):
            key += ".table"
        elif key.endswith((".gamma1", ".gamma2")):
            key = f"{key[:-7]}.ls{key[-1]}.gamma"
        out[key] = value
    return out
