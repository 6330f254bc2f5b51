"""The building blocks the small models of ``vizattn.models`` are made of, channels-last
(``[B, H, W, C]``) unless a docstring says otherwise: convolutions and stems, a learned position
embedding, SASA's bottleneck and LaViT's stage (the pre-norm transformer block is
``vizattn.layers.TransformerBlock``).

>>> import torch
>>> Conv(3, 8, kernel=2, stride=2)(torch.randn(1, 4, 6, 3)).shape
torch.Size([1, 2, 3, 8])
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import LessAttention, Mlp, StandAloneAttention, VanillaAttention

__all__ = ["Conv", "ImageToMap", "ConvStem", "PositionEmbedding", "SASABottleneck", "LaViTStage"]


class Conv(nn.Module):
    """A convolution on channels-last maps, optionally followed by LayerNorm: ``[B, H, W, C] -> [B, H', W', C']``."""

    def __init__(self, dim_in: int, dim_out: int, kernel: int, stride: int, padding: int = 0, norm: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, kernel, stride, padding)
        self.norm = nn.LayerNorm(dim_out) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class ImageToMap(nn.Module):
    """Channels-first image ``[B, 3, S, S]`` -> channels-last ``[B, S, S, 3]``, then ``body``."""

    def __init__(self, *body: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*body)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images.permute(0, 2, 3, 1))


class ConvStem(nn.Module):
    """Convolutions on the channels-first image, channels-last out: ``[B, 3, S, S] -> [B, H, W, C]``."""

    def __init__(self, *body: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*body)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images).permute(0, 2, 3, 1)


class PositionEmbedding(nn.Module):
    """Adds a learned absolute position embedding ``[H, W, C]`` to a channels-last map."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.table = nn.Parameter(nn.init.trunc_normal_(torch.empty(size, size, dim), std=0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table


class SASABottleneck(nn.Module):
    """ResNet bottleneck with SASA as the spatial layer: ``[B, H, W, dim_in] -> [B, H/s, W/s, dim_out]``.

    1x1 conv + BN + ReLU -> SASA (``width`` channels) + BN + ReLU -> 2x2 average pooling if
    ``stride == 2`` -> 1x1 conv + BN (scale initialised to 0) -> + shortcut -> ReLU. The shortcut
    is the identity, or average pooling and a 1x1 conv + BN when the shape changes.
    """

    def __init__(self, dim_in: int, width: int, dim_out: int, heads: int, kernel_size: int, stride: int):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(dim_in, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.attn = StandAloneAttention(width, heads, kernel_size)
        pool = [nn.AvgPool2d(2)] if stride == 2 else []
        self.post = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), *pool)
        self.expand = nn.Sequential(nn.Conv2d(width, dim_out, 1, bias=False), nn.BatchNorm2d(dim_out))
        nn.init.zeros_(self.expand[1].weight)
        self.shortcut = nn.Identity() if dim_in == dim_out and stride == 1 else nn.Sequential(
            *pool, nn.Conv2d(dim_in, dim_out, 1, bias=False), nn.BatchNorm2d(dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)  # [B, dim_in, H, W]
        y = self.reduce(x).permute(0, 2, 3, 1)  # [B, H, W, width]
        y = self.post(self.attn(y).permute(0, 3, 1, 2))  # [B, width, H/s, W/s]
        return (self.expand(y) + self.shortcut(x)).relu().permute(0, 2, 3, 1)  # [B, H/s, W/s, dim_out]


class LaViTStage(nn.Module):
    """A LaViT stage: ``(x [B, H, W, C], scores of the previous stage or None) -> (x', last scores)``.

    ``down`` (patch merging), then VA blocks and LA blocks, all pre-norm:
    ``y, scores = attn(LN(x), ...); x += y; x += mlp(LN(x))``. The first VA layer adds
    ``residual(previous scores)`` (the attention residual) to its own scores; an LA layer
    transforms the scores of the layer before it. The post-softmax maps of the LA layers of the
    last forward pass are kept in ``la_maps`` (for the diagonality-preserving loss).
    """

    def __init__(self, down: nn.Module, dim: int, heads: int, size: int, depth: int, vanilla: int,
                 mlp_ratio: float, residual: nn.Module | None):
        super().__init__()
        self.down, self.residual = down, residual
        self.attns = nn.ModuleList(
            VanillaAttention(dim, heads) if j < vanilla else LessAttention(dim, heads, size * size)
            for j in range(depth))
        self.norms1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(depth))
        self.norms2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(depth))
        self.mlps = nn.ModuleList(Mlp(dim, mlp_ratio) for _ in range(depth))
        self.la_maps: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None):
        x = self.down(x)  # [B, H, W, C]
        residual = None if self.residual is None else self.residual(prev)  # [B, heads, N, N]
        scores, self.la_maps = None, []
        for j, (attn, norm1, norm2, mlp) in enumerate(zip(self.attns, self.norms1, self.norms2, self.mlps)):
            if isinstance(attn, LessAttention):
                y, scores = attn(norm1(x), scores)
                self.la_maps.append(scores.softmax(-1))
            else:
                y, scores = attn(norm1(x), residual if j == 0 else None)
            x = x + y
            x = x + mlp(norm2(x))
        return x, scores
