"""CrossFormer: cross-scale embedding and short/long distance attention with dynamic position bias.

docs/semantics.md §4.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..bias import DynamicPositionBias
from ..checks import as_pair, check_choice, check_input, check_positive
from ..patterns import Block, Global, LongDistance, Pattern
from .common import PatternAttention

__all__ = ["CrossScaleEmbedding", "LongShortDistanceAttention", "DynamicPositionBias"]


def split_channels(dim: int, parts: int) -> list[int]:
    """Channels per kernel, smallest kernel first: halve for each larger kernel, the last gets the rest.

    >>> split_channels(64, 4), split_channels(64, 2), split_channels(10, 3)
    ([32, 16, 8, 8], [32, 32], [5, 2, 3])
    """
    sizes = [dim // 2 ** (i + 1) for i in range(parts - 1)]
    return sizes + [dim - sum(sizes)]


class CrossScaleEmbedding(nn.Module):
    """CrossFormer's cross-scale embedding layer (CEL): ``[B, H, W, dim_in] -> [B, H/s, W/s, dim_out]``.

    Convolutions with kernels ``k`` (increasing), the same stride ``s`` and padding ``(k - s) / 2``
    all centre their windows on the same points; their outputs are concatenated on channels,
    smaller kernels getting more (``dim_out/2, /4, /8, /8`` for four kernels, half and half for two:
    see ``split_channels``). Channels-last in and out [vizattn choice, like every vizattn module]:
    the stem takes an image as ``image.permute(0, 2, 3, 1)``. Stage 1: ``kernels=(4, 8, 16, 32),
    stride=4``; between stages ``kernels=(2, 4), stride=2``. No normalisation (the model adds it).

    >>> import torch
    >>> cel = CrossScaleEmbedding(3, 32)
    >>> [conv.out_channels for conv in cel.convs], cel(torch.randn(1, 32, 32, 3)).shape
    ([16, 8, 4, 4], torch.Size([1, 8, 8, 32]))
    """

    def __init__(self, dim_in: int, dim_out: int, kernels=(4, 8, 16, 32), stride: int = 4):
        super().__init__()
        check_positive(dim_in=dim_in, dim_out=dim_out, stride=stride)
        kernels = tuple(kernels)
        if (not kernels or any(not isinstance(k, int) or k < stride or (k - stride) % 2 for k in kernels)
                or list(kernels) != sorted(set(kernels))):
            raise ValueError("kernels must be increasing ints, each at least stride and differing from it by an even "
                             "number (padding (k - stride) / 2 centres them); "
                             f"got kernels={kernels}, stride={stride}")
        channels = split_channels(dim_out, len(kernels))
        if min(channels) < 1:
            raise ValueError(f"dim_out is too small to split over the kernels ({channels}); got dim_out={dim_out}, "
                             f"kernels={kernels}")
        self.dim_in, self.dim_out, self.kernels, self.stride = dim_in, dim_out, kernels, stride
        self.convs = nn.ModuleList(
            nn.Conv2d(dim_in, c, k, stride=stride, padding=(k - stride) // 2)
            for k, c in zip(kernels, channels, strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = check_input(x, self.dim_in, "CrossScaleEmbedding")
        if H < self.stride or W < self.stride:
            raise ValueError(f"the map must be at least stride on each axis; got stride={self.stride}, map={(H, W)}")
        x = x.permute(0, 3, 1, 2)  # [B, dim_in, H, W]
        y = torch.cat([conv(x) for conv in self.convs], dim=1)  # [B, dim_out, H // s, W // s]
        return y.permute(0, 2, 3, 1)  # [B, H // s, W // s, dim_out]


@dataclasses.dataclass(frozen=True)
class GlobalUpTo:
    """A pattern rule: ``local`` on a map, ``Global()`` on a map no larger than ``group`` (both axes).

    >>> rule = GlobalUpTo(Block(4), (4, 4))
    >>> rule(4, 4), rule(8, 4), rule
    (Global(), Block(4), Block(4), Global() up to (4, 4))
    """

    local: Pattern
    group: tuple[int, int]

    def __call__(self, H: int, W: int) -> Pattern:
        return Global() if H <= self.group[0] and W <= self.group[1] else self.local

    def __repr__(self) -> str:
        return f"{self.local}, Global() up to {self.group}"


class LongShortDistanceAttention(PatternAttention):
    """CrossFormer's LSDA: short distance (``kind="sda"``) or long distance (``kind="lda"``) attention.

    SDA = ``Block(group)`` (MaxViT's block attention), LDA = ``LongDistance(interval)`` (tokens
    ``interval`` apart on each axis; equals MaxViT's grid attention with ``G = H / interval``). If
    the map is no larger than the group (``H <= group`` and ``W <= group``) the attention is
    ``Global`` (``GlobalUpTo``). The bias comes from a ``DynamicPositionBias`` evaluated on the
    pattern's extent, so one set of weights serves every group size; its hidden width
    ``dpb_hidden`` defaults to ``max(dim // 16, 4)``: the reference code's ``dim // 16``, at least
    4 [vizattn choice]. ``pad=True``: pad to a multiple of group/interval.

    >>> import torch
    >>> lda = LongShortDistanceAttention(dim=16, heads=2, kind="lda", interval=4)
    >>> lda(torch.randn(1, 8, 12, 16)).shape, lda.pattern(8, 12)
    (torch.Size([1, 8, 12, 16]), LongDistance(4))
    """

    kind: str = "sda"  # set per layer: named by the layer, not by its pattern (global on a small map)

    def __init__(self, dim: int, heads: int, kind: str = "sda", group=7, interval=8, dpb_hidden: int | None = None,
                 pad: bool = False, qkv_bias: bool = True):
        check_choice("kind", kind, ("sda", "lda"))
        group = as_pair("group", group)
        local = Block(group, pad=pad) if kind == "sda" else LongDistance(interval, pad=pad)
        dpb = DynamicPositionBias(heads, hidden=dpb_hidden or max(dim // 16, 4))
        super().__init__(dim, heads, GlobalUpTo(local, group), bias=dpb, qkv_bias=qkv_bias)
        self.kind, self.group = kind, group
