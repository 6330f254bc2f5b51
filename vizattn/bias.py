"""Position terms that ``attend`` adds to the logits, as modules that own their parameters.

All three produce tables indexed the same way: a table ``[heads, 2*kh-1, 2*kw-1]`` (or with a
trailing channel axis) holds the entry for offset ``(dh, dw)`` at ``[dh + kh - 1, dw + kw - 1]``,
with ``(kh, kw) = pattern.extent(H, W)`` and offsets = key - query in the pattern's own units.

- ``RelativePositionBias``: a learned table (NAT's RPB, MaxViT's block/grid bias).
- ``DynamicPositionBias``: CrossFormer's MLP from an offset to one bias per head; it builds the
  table for any extent, so the same weights serve every group size.
- ``RelativeEmbedding``: SASA's learned row/column embeddings ``r``, giving the logit term
  ``q . concat(r_row[dh], r_col[dw])``, split per head (each head has its own row half and
  column half of its head dimension).

Each is called with the pattern's extent (``term(extent)``), which is how
``vizattn.layers.PatternAttention`` uses them (the learned ones were built for one extent; a
smaller one gets the central part of the table, a larger one a ``ValueError``), and names the
attribute a layer keeps it under (``key``: ``rpb``, ``dpb``, ``rel``, the state-dict prefix).
"""

from __future__ import annotations

import torch
from torch import nn

from .checks import as_pair, check_positive
from .patterns import LocalWindow

__all__ = ["RelativePositionBias", "DynamicPositionBias", "RelativeEmbedding"]


class RelativePositionBias(nn.Module):
    """A learned relative position bias table ``[heads, 2*kh-1, 2*kw-1]``.

    >>> import torch; from vizattn import attend; from vizattn.patterns import Neighborhood
    >>> pattern, q = Neighborhood(5), torch.randn(1, 2, 9, 9, 8)
    >>> rpb = RelativePositionBias(heads=2, extent=pattern.extent(9, 9))
    >>> attend(q, q, q, pattern, bias=rpb(pattern.extent(9, 9))).shape
    torch.Size([1, 2, 9, 9, 8])
    """

    key = "rpb"

    def __init__(self, heads: int, extent):
        super().__init__()
        check_positive(heads=heads)
        self.extent = as_pair("extent", extent)
        kh, kw = self.extent
        self.table = nn.Parameter(torch.empty(heads, 2 * kh - 1, 2 * kw - 1))
        nn.init.trunc_normal_(self.table, std=0.02)

    def forward(self, extent=None) -> torch.Tensor:
        """The table, or for a smaller ``extent`` (a window shrunk to a small map) its central
        ``[heads, 2*kh-1, 2*kw-1]`` part: the same offsets keep the same bias.

        >>> rpb = RelativePositionBias(heads=1, extent=3)
        >>> torch.equal(rpb((2, 3)), rpb.table[:, 1:4, :])
        True
        """
        if extent is None or tuple(extent) == self.extent:
            return self.table
        (kh, kw), (Kh, Kw) = as_pair("extent", extent), self.extent
        if kh > Kh or kw > Kw:
            raise ValueError(f"RelativePositionBias holds offsets up to extent={self.extent}, so a pattern's extent "
                             f"cannot exceed it; got extent={(kh, kw)}")
        rows = torch.arange(Kh - kh, Kh + kh - 1, device=self.table.device)
        cols = torch.arange(Kw - kw, Kw + kw - 1, device=self.table.device)
        # a gathered copy, not a view: a view of the parameter made under no_grad trips module hooks
        return self.table[:, rows[:, None], cols[None, :]]


class DynamicPositionBias(nn.Module):
    """CrossFormer's dynamic position bias: an MLP from an offset ``(dh, dw)`` to one bias per head.

    ``Linear(2, p) -> [LayerNorm, ReLU, Linear(p, p)] x 2 -> LayerNorm, ReLU, Linear(p, heads)``.
    The offsets enter as floats in group-local units (for LDA one unit is ``interval`` pixels).
    The reference code uses ``p = dim // 16`` (the paper's text says ``dim // 4``).

    >>> dpb = DynamicPositionBias(heads=4, hidden=8)
    >>> dpb((7, 7)).shape, dpb((3, 5)).shape          # any extent, the same weights
    (torch.Size([4, 13, 13]), torch.Size([4, 5, 9]))
    """

    key = "dpb"

    def __init__(self, heads: int, hidden: int):
        super().__init__()
        check_positive(heads=heads, hidden=hidden)
        layers = [nn.Linear(2, hidden)]
        for width in (hidden, hidden, heads):
            layers += [nn.LayerNorm(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, width)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, extent) -> torch.Tensor:
        """The bias table ``[heads, 2*kh-1, 2*kw-1]`` for a pattern of this extent."""
        kh, kw = as_pair("extent", extent)
        param = self.mlp[0].weight
        dh = torch.arange(1 - kh, kh, device=param.device, dtype=param.dtype)
        dw = torch.arange(1 - kw, kw, device=param.device, dtype=param.dtype)
        offsets = torch.stack(torch.meshgrid(dh, dw, indexing="ij"), dim=-1)  # [2kh-1, 2kw-1, 2]
        return self.mlp(offsets).permute(2, 0, 1)


class RelativeEmbedding(nn.Module):
    """SASA's relative embeddings for a centred ``k x k`` window, as ``attend``'s ``rel_emb``.

    Parameters ``row [heads, kh, head_dim // 2]`` and ``col [heads, kw, head_dim - head_dim // 2]``
    hold the paper's ``2*(k//2)+1`` vectors per axis. ``forward()`` pads them to the table layout of
    ``LocalWindow(k)`` (extent k, length ``2k-1``, unused ends zero).

    >>> import torch; from vizattn import attend; from vizattn.patterns import LocalWindow
    >>> q, rel = torch.randn(1, 2, 6, 6, 8), RelativeEmbedding(heads=2, head_dim=8, kernel_size=3)
    >>> attend(q, q, q, LocalWindow(3), rel_emb=rel((3, 3))).shape
    torch.Size([1, 2, 6, 6, 8])
    """

    key = "rel"

    def __init__(self, heads: int, head_dim: int, kernel_size):
        super().__init__()
        kh, kw = LocalWindow(kernel_size).kernel_size  # its rule: an odd kernel (the window is centred)
        if head_dim < 2:
            raise ValueError("head_dim must be at least 2 to split into row and column halves; "
                             f"got head_dim={head_dim}")
        half = head_dim // 2
        self.kernel_size = self.extent = (kh, kw)
        self.row = nn.Parameter(torch.randn(heads, kh, half) * head_dim**-0.5)
        self.col = nn.Parameter(torch.randn(heads, kw, head_dim - half) * head_dim**-0.5)

    def forward(self, extent=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(row [heads, 2*kh-1, head_dim//2], col [heads, 2*kw-1, head_dim - head_dim//2])``;
        ``extent``, if given, must be the kernel size."""
        if extent is not None and tuple(extent) != self.extent:
            raise ValueError(f"RelativeEmbedding was built for extent={self.extent}; got extent={tuple(extent)}")
        kh, kw = self.kernel_size
        row = nn.functional.pad(self.row, (0, 0, kh // 2, kh // 2))
        return row, nn.functional.pad(self.col, (0, 0, kw // 2, kw // 2))

