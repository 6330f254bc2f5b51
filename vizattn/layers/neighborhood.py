"""Neighborhood attention (NAT) and dilated neighborhood attention (DiNAT), docs/semantics.md §1."""

from __future__ import annotations

from ..bias import RelativePositionBias
from ..patterns import Neighborhood
from .common import PatternAttention

__all__ = ["NeighborhoodAttention"]


class NeighborhoodAttention(PatternAttention):
    """NAT / DiNAT: each query attends to its ``k x k`` neighbourhood (dilation ``d``), NATTEN's rule.

    The window is shifted inward at borders (every query sees ``k*k`` keys); ``kernel_size`` and
    ``dilation`` are ints or ``(h, w)`` pairs. ``rel_pos_bias``: NAT's learned table
    ``[heads, 2k-1, 2k-1]`` indexed by key - query in dilation units. A map smaller than
    ``kernel_size * dilation`` raises ``ValueError`` at forward.

    >>> import torch
    >>> layer = NeighborhoodAttention(dim=16, heads=2, kernel_size=3, dilation=2)
    >>> layer(torch.randn(1, 7, 9, 16)).shape
    torch.Size([1, 7, 9, 16])
    """

    def __init__(self, dim: int, heads: int, kernel_size, dilation=1, rel_pos_bias: bool = True,
                 qkv_bias: bool = True):
        pattern = Neighborhood(kernel_size, dilation)
        rpb = RelativePositionBias(heads, pattern.kernel_size) if rel_pos_bias else None
        super().__init__(dim, heads, pattern, bias=rpb, qkv_bias=qkv_bias)
