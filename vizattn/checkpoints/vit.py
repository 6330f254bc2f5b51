"""DeiT (timm's ``VisionTransformer`` with a class token) in vizattn's layers.

The 1 + 14 x 14 tokens run through ``GlobalAttention`` as a ``1 x 197`` map (class token first,
then the patches row-major), so a probe record of a layer has ``size == (1, 197)``; the model's
``prefix_tokens`` (1) and ``grid`` ((14, 14)) say how to split a row of weights into the class
token's share and a 14 x 14 picture. State dicts are timm's (= the official DeiT repository's).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..layers.common import GlobalAttention, Mlp

__all__ = ["VisionTransformer", "deit", "patch_query", "patch_records", "class_records"]


class PatchEmbed(nn.Module):
    """``images [B, 3, S, S] -> tokens [B, (S/p)^2, dim]`` with one ``p x p`` stride-``p`` convolution."""

    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)  # [B, dim, h, w] -> [B, h*w, dim]


class Block(nn.Module):
    """Pre-norm transformer block on a ``[B, 1, N, C]`` token map: ``x += attn(LN(x)); x += mlp(LN(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=eps), GlobalAttention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=eps), Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT / DeiT: ``images [B, 3, S, S]`` (ImageNet-normalised) -> ``logits [B, classes]`` from the class token.

    >>> import torch; _ = torch.manual_seed(0)
    >>> model = VisionTransformer(dim=16, depth=2, heads=2, img_size=32, classes=5).eval()
    >>> model(torch.randn(1, 3, 32, 32)).shape, model.grid, model.prefix_tokens
    (torch.Size([1, 5]), (2, 2), 1)
    """

    prefix_tokens = 1

    def __init__(self, dim: int, depth: int, heads: int, patch: int = 16, img_size: int = 224, classes: int = 1000,
                 mlp_ratio: float = 4.0, eps: float = 1e-6):
        super().__init__()
        side = img_size // patch
        self.grid = (side, side)
        self.patch_embed = PatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, 1 + side * side, dim), std=0.02))
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio, eps) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.head = nn.Linear(dim, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)  # [B, N, C]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed  # [B, 1+N, C]
        x = self.blocks(x[:, None])[:, 0]  # through the blocks as a 1 x (1+N) map
        return self.head(self.norm(x)[:, 0])  # the class token -> [B, classes]


def deit(dim: int, heads: int):
    """A 12-layer DeiT at 224 x 224 with patches of 16 (DeiT-T: dim 192, 3 heads; DeiT-S: 384, 6)."""
    return lambda: VisionTransformer(dim=dim, depth=12, heads=heads)


def patch_query(record, grid, i: int, j: int, head: int | None = None, batch: int = 0, prefix: int = 1):
    """Where patch ``(i, j)`` of a ``grid`` looks in a probe record of a ViT layer (tokens as a 1 x N map).

    Returns ``(prefix_share, picture)``: the weight the query gives the ``prefix`` class token(s)
    (a float) and ``[h, w]`` over the patches; together they sum to 1. ``head=None``: the mean of
    the captured heads. ``i = -1`` (with any ``j``) asks for the class token's own row instead.

    >>> import torch, vizattn; _ = torch.manual_seed(0)
    >>> model = VisionTransformer(dim=16, depth=1, heads=2, img_size=32).eval()
    >>> with vizattn.probe(model) as rec:
    ...     _ = model(torch.randn(1, 3, 32, 32))
    >>> share, picture = patch_query(rec[0], model.grid, 1, 0)
    >>> picture.shape, round(share + float(picture.sum()), 5)
    (torch.Size([2, 2]), 1.0)
    """
    h, w = grid
    if record.size != (1, prefix + h * w):
        raise ValueError(f"the record must be of a layer on 1 x (prefix + h*w) tokens; got size={record.size}, "
                         f"grid={grid}, prefix={prefix}")
    if not (-1 <= i < h and 0 <= j < w):
        raise ValueError(f"(i, j) must lie on the {h}x{w} grid (i = -1: the class token); got ({i}, {j})")
    row = record.query_map(0, prefix - 1 if i < 0 else prefix + i * w + j, head=head, batch=batch)[0]  # [N]
    return float(row[:prefix].sum()), row[prefix:].reshape(h, w)


def patch_records(records, grid, prefix: int) -> tuple[dict, dict]:
    """A ViT's records on ``1 x (prefix + h*w)`` tokens as records on the ``h x w`` patch map, and the
    class tokens' share ``[heads, h, w]`` of each patch query (batch item 0). A patch row of the
    new record sums to 1 minus that share; other records pass unchanged.

    >>> import torch, vizattn
    >>> model = VisionTransformer(dim=16, depth=1, heads=2, img_size=32).eval()
    >>> with vizattn.probe(model) as rec:
    ...     _ = model(torch.randn(1, 3, 32, 32))
    >>> patches, share = patch_records(rec, model.grid, 1)
    >>> r = patches["blocks.0.attn"]
    >>> r.size, round(float(r.query_map(1, 0, head=0).sum() + share["blocks.0.attn"][0, 1, 0]), 5)
    ((2, 2), 1.0)
    """
    h, w = grid
    out, share = {}, {}
    for r in records:
        if r.size != (1, prefix + h * w) or r.queries is not None:
            out[r.name] = r
            continue
        weights = r.weights[:, :, 0]  # [B, heads, prefix + N, prefix + N]
        B, heads = weights.shape[:2]
        patch = weights[:, :, prefix:, prefix:].reshape(B, heads, h, w, h * w)
        out[r.name] = dataclasses.replace(r, size=(h, w), weights=patch, scores=None)
        share[r.name] = weights[0, :, prefix:, :prefix].sum(-1).reshape(heads, h, w)
    return out, share


def class_records(records, grid, prefix: int) -> tuple[dict, dict]:
    """A ViT's records on ``1 x (prefix + h*w)`` tokens as records on the ``h x w`` patch map whose every
    query holds the first class token's row over the patches (the map DINO and vit-explain draw), and
    that token's share ``[heads]`` on the class tokens themselves (batch item 0). A row of the new record
    sums to 1 minus that share; records of other layers are left out.

    >>> import torch, vizattn
    >>> model = VisionTransformer(dim=16, depth=1, heads=2, img_size=32).eval()
    >>> with vizattn.probe(model) as rec:
    ...     _ = model(torch.randn(1, 3, 32, 32))
    >>> cls, share = class_records(rec, model.grid, 1)
    >>> share_, picture = patch_query(rec[0], model.grid, -1, 0, head=1)
    >>> torch.equal(cls["blocks.0.attn"].query_map(1, 0, head=1), picture), float(share["blocks.0.attn"][1]) == share_
    (True, True)
    """
    h, w = grid
    out, share = {}, {}
    for r in records:
        if r.size != (1, prefix + h * w) or r.queries is not None:
            continue
        row = r.weights[:, :, 0, 0]  # [B, heads, prefix + N]: the first class token's row
        B, heads = row.shape[:2]
        patch = row[:, :, None, None, prefix:].expand(B, heads, h, w, h * w)
        out[r.name] = dataclasses.replace(r, size=(h, w), weights=patch, scores=None)
        share[r.name] = row[0, :, :prefix].sum(-1)
    return out, share
