"""Swin: (shifted) window attention, the Swin block and patch merging (docs/semantics.md §7)."""

from __future__ import annotations

import torch
from torch import nn

from ..bias import RelativePositionBias
from ..checks import as_pair, check_input, check_positive
from ..patterns import Block, Pair
from .common import PatternAttention, TransformerBlock

__all__ = ["ShiftedWindowAttention", "SwinBlock", "PatchMerging"]


class ShiftedWindowAttention(PatternAttention):
    """Swin's W-MSA (``shift=0``) and SW-MSA (``shift=s``, Swin uses ``window // 2``): ``Block(window, shift=s)``.

    Swin's small-map rule, per axis as timm applies it: on an axis no longer than the window
    (``L <= P``) the window is the whole axis and there is no shift; the official code applies
    it to both axes when ``min(H, W) <= P`` (the same on square maps). ``rel_pos_bias``: one table
    ``[heads, 2P-1, 2P-1]`` indexed by key - query (Swin's own table is indexed by query - key);
    a window shrunk to ``L`` uses the table's central ``2L-1`` entries [vizattn choice: the same
    offsets keep the same bias]. ``pad=True`` pads a map that the window does not divide
    (padded keys excluded, padded queries cropped) [vizattn choice]; otherwise that is a ``ValueError``.

    >>> import torch
    >>> layer = ShiftedWindowAttention(dim=16, heads=2, window=4, shift=2)
    >>> layer(torch.randn(1, 8, 12, 16)).shape, layer.pattern(8, 12), layer.pattern(4, 12)
    (torch.Size([1, 8, 12, 16]), Block(4, shift=2), Block(4, shift=(0, 2)))
    """

    kind = "swin"  # named by the layer: its pattern is a Block, as MaxViT's is

    def __init__(self, dim: int, heads: int, window, shift=0, pad: bool = False, rel_pos_bias: bool = True,
                 qkv_bias: bool = True):
        windows = Block(window, shift=shift, pad=pad)  # validates window and 0 <= shift < window
        rpb = RelativePositionBias(heads, windows.size) if rel_pos_bias else None
        super().__init__(dim, heads, bias=rpb, qkv_bias=qkv_bias)  # the pattern: ``pattern`` below
        self._pattern, self.window, self.shift, self.pad = windows, windows.size, windows.shift, pad

    def window_on(self, H: int, W: int) -> tuple[Pair, Pair]:
        """Swin's window and shift on an ``H x W`` map: per axis ``(L, 0)`` if ``L <= P``, else ``(P, s)``."""
        H, W = as_pair("map size", (H, W))
        window = tuple(min(L, P) for L, P in zip((H, W), self.window))
        shift = tuple(0 if L <= P else s for L, P, s in zip((H, W), self.window, self.shift))
        return window, shift

    def pattern(self, H: int, W: int) -> Block:
        window, shift = self.window_on(H, W)
        same = window == self.window and shift == self.shift
        return self._pattern if same else Block(window, shift=shift, pad=self.pad)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pattern={self._pattern}"


class SwinBlock(TransformerBlock):
    """One Swin block: the pre-norm ``TransformerBlock`` on W-MSA (``shift=0``) or SW-MSA (``shift=s``).

    ``x += attn(LN(x))``; ``x += MLP(LN(x))``. A Swin stage alternates ``shift=0`` and ``shift=window // 2``.

    >>> import torch
    >>> SwinBlock(dim=16, heads=2, window=4, shift=2)(torch.randn(1, 8, 8, 16)).shape
    torch.Size([1, 8, 8, 16])
    """

    def __init__(self, dim: int, heads: int, window, shift=0, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 pad: bool = False, rel_pos_bias: bool = True):
        attn = ShiftedWindowAttention(dim, heads, window, shift, pad=pad, rel_pos_bias=rel_pos_bias, qkv_bias=qkv_bias)
        super().__init__(dim, attn, mlp_ratio)


class PatchMerging(nn.Module):
    """Swin's patch merging: ``[B, H, W, dim] -> [B, H/2, W/2, dim_out]`` (``dim_out`` default ``2 * dim``).

    Each 2x2 neighbourhood is concatenated in Swin's order, ``(0, 0), (1, 0), (0, 1), (1, 1)`` (row
    offset first), then ``LayerNorm(4 * dim)`` and ``Linear(4 * dim, dim_out, bias=False)``. The map
    must be even on each axis.

    >>> import torch
    >>> PatchMerging(8)(torch.randn(2, 6, 4, 8)).shape
    torch.Size([2, 3, 2, 16])
    """

    def __init__(self, dim: int, dim_out: int | None = None):
        super().__init__()
        dim_out = 2 * dim if dim_out is None else dim_out
        check_positive(dim=dim, dim_out=dim_out)
        self.dim = dim
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, dim_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = check_input(x, self.dim, "PatchMerging")
        if H % 2 or W % 2:
            raise ValueError(f"PatchMerging needs a map even on each axis; got map={(H, W)}")
        # [B, H/2, 2 (row offset), W/2, 2 (col offset), C] -> [B, H/2, W/2, col offset, row offset, C]
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, H // 2, W // 2, 4 * C)
        return self.reduction(self.norm(x))
