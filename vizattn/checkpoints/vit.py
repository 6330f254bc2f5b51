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

from ..checks import as_pair, check_query
from ..layers.common import GlobalAttention, TransformerBlock

__all__ = ["VisionTransformer", "deit", "patch_query", "patch_records", "class_records"]


class PatchEmbed(nn.Module):
    """``images [B, 3, H, W] -> [B, H/p, W/p, dim]`` with one ``p x p`` stride-``p`` convolution."""

    def __init__(self, dim: int, patch):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).permute(0, 2, 3, 1)


def resample(pos: torch.Tensor, old, new) -> torch.Tensor:
    """Position embeddings ``[1, h*w, C]`` of an ``old = (h, w)`` grid on a ``new`` grid: bicubic with
    antialiasing (timm's ``resample_abs_pos_embed``); unchanged if ``new == old``."""
    if tuple(new) == tuple(old):
        return pos
    grid = pos.reshape(1, *old, -1).permute(0, 3, 1, 2)  # [1, C, h, w]
    grid = nn.functional.interpolate(grid.float(), size=tuple(new), mode="bicubic", antialias=True)
    return grid.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1]).to(pos.dtype)


class VisionTransformer(nn.Module):
    """ViT / DeiT: ``images [B, 3, H, W]`` (ImageNet-normalised) -> ``logits [B, classes]`` (``classes=0``: the
    pooled features ``[B, dim]``).

    Tokens: the prefix (class token ``cls_token``, DeiT's distillation token ``dist_token``, the
    ``reg_tokens`` registers ``reg_token``; in that order), then the patches row-major.
    ``pos_prefix``: the position embedding covers the prefix too (ViT, DeiT) or only the patches
    (DeiT III, DINOv2: added before the prefix is put in front). ``dynamic``: another image size
    resamples the patches' embedding to its grid (timm's ``dynamic_img_size``). ``pool``:
    ``"token"`` (the class token; with a distillation token the mean of the two heads' outputs)
    or ``"avg"`` (the mean of the patch tokens); ``fc_norm`` moves the final LayerNorm after the pool,
    ``final_norm=False`` leaves it out.
    Parameter names are timm's, so its state dicts load unchanged.

    >>> import torch; _ = torch.manual_seed(0)
    >>> model = VisionTransformer(dim=16, depth=2, heads=2, img_size=32, classes=5).eval()
    >>> model(torch.randn(1, 3, 32, 32)).shape, model.grid, model.prefix_tokens
    (torch.Size([1, 5]), (2, 2), 1)
    """

    def __init__(self, dim: int, depth: int, heads: int, patch=16, img_size=224, classes: int = 1000,
                 mlp_ratio: float = 4.0, eps: float = 1e-6, *, class_token: bool = True, dist_token: bool = False,
                 reg_tokens: int = 0, pos_prefix: bool = True, dynamic: bool = False, pool: str = "token",
                 fc_norm: bool = False, final_norm: bool = True, qkv_bias: bool = True,
                 init_values: float | None = None, gelu: str = "none"):
        super().__init__()
        patch, img_size = as_pair("patch", patch), as_pair("img_size", img_size)
        if pool not in ("token", "avg") or (pool == "token" and not class_token) or (dist_token and pool != "token"):
            raise ValueError(f"pool must be 'token' (with a class token) or 'avg' (no distillation token); got "
                             f"pool={pool!r}, class_token={class_token}, dist_token={dist_token}")
        self.grid = (img_size[0] // patch[0], img_size[1] // patch[1])
        self.prefix_tokens = int(class_token) + int(dist_token) + reg_tokens
        self.pool, self.pos_prefix, self.dynamic = pool, pos_prefix, dynamic
        self.patch_embed = PatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if dist_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, dim)) if reg_tokens else None
        length = self.grid[0] * self.grid[1] + (self.prefix_tokens if pos_prefix else 0)
        self.pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, length, dim), std=0.02))
        self.blocks = nn.Sequential(*(
            TransformerBlock(dim, GlobalAttention(dim, heads, qkv_bias=qkv_bias), mlp_ratio, eps,
                             layer_scale=init_values, gelu=gelu)
            for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=eps) if final_norm and not fc_norm else nn.Identity()
        self.fc_norm = nn.LayerNorm(dim, eps=eps) if final_norm and fc_norm else nn.Identity()
        self.head = nn.Linear(dim, classes) if classes else nn.Identity()
        self.head_dist = (nn.Linear(dim, classes) if classes else nn.Identity()) if dist_token else None

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``images [B, 3, H, W] -> tokens [B, prefix + N, C]``, position embeddings added."""
        x = self.patch_embed(images)  # [B, h, w, C]
        B, h, w, C = x.shape
        prefix = [t.expand(B, -1, -1) for t in (self.cls_token, self.dist_token, self.reg_token) if t is not None]
        pos = self.pos_embed
        if self.dynamic:  # the patches' part on this grid
            n = self.prefix_tokens if self.pos_prefix else 0
            pos = torch.cat([pos[:, :n], resample(pos[:, n:], self.grid, (h, w))], dim=1)
        x = x.reshape(B, h * w, C)
        if self.pos_prefix:
            return torch.cat(prefix + [x], dim=1) + pos
        return torch.cat(prefix + [x + pos], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images)
        x = self.norm(self.blocks(x[:, None])[:, 0])  # through the blocks as a 1 x (prefix + N) map
        if self.head_dist is not None:  # DeiT distilled: the mean of the class and distillation heads
            return (self.head(x[:, 0]) + self.head_dist(x[:, 1])) / 2
        x = x[:, 0] if self.pool == "token" else x[:, self.prefix_tokens:].mean(1)
        return self.head(self.fc_norm(x))


def deit(dim: int, heads: int):
    """A builder ``(**changes) -> VisionTransformer`` of a 12-layer DeiT at 224 x 224 with patches of 16 (DeiT-Ti:
    dim 192, 3 heads; DeiT-S: 384, 6; DeiT-B: 768, 12); ``changes`` override (the tests' reduced depth)."""
    return lambda **changes: VisionTransformer(**{"dim": dim, "depth": 12, "heads": heads, **changes})


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
    check_query((i, j), h, w, where="grid (i = -1: the class token)", first=-1)
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
