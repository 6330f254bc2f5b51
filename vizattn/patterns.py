"""Attention patterns: *who attends to whom*, as pure index arithmetic.

A pattern knows nothing about tensors of features, only about positions. Every other part of
vizattn (the kernels, the reference, the probes, the pictures) derives from these rules, so a
picture can never disagree with what a kernel computes.

Glossary: a feature map has ``H x W`` tokens, ``N = H * W``; token ``(h, w)`` has flat index
``t = h * W + w``. Each query sees ``K`` key *slots*; a slot holding ``-1`` is not a real token
(SASA's zero padding, or a position added by ``pad=True``).

Every pattern is separable: the 2-D key set of query ``(h, w)`` is the Cartesian product of a
row rule applied to ``h`` and a column rule applied to ``w``. So each pattern only states its
1-D rule (``_axis``) and the 2-D geometry is assembled once, here.

>>> from vizattn.patterns import Neighborhood
>>> Neighborhood(3).keys(4, 4)[0].tolist()        # the corner query's window is shifted inward
[0, 1, 2, 4, 5, 6, 8, 9, 10]
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .checks import as_pair  # also importable as patterns.as_pair
from .geometry import AxisRule, axis_mask, geometry

Pair = tuple[int, int]

__all__ = ["Pattern", "Global", "Neighborhood", "LocalWindow", "Block", "Grid", "LongDistance"]


def _short(pair: Pair) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"({pair[0]}, {pair[1]})"


class Pattern:
    """Base class: subclasses define ``_axis(L, axis)`` and ``_check(H, W)``.

    Attributes a kernel may rely on:
    ``zero_slots``: ``-1`` slots still take part in the softmax as zero keys/values (SASA).
    ``partition``: every query of a group has the same key set (block, grid, global).
    ``grouped``: the axis rules' groups mean something worth drawing (False for SASA's window).
    """

    zero_slots = False
    partition = True
    grouped = True

    # -- to be defined by each pattern -------------------------------------------------------
    def _axis(self, L: int, axis: int) -> AxisRule:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self, H: int, W: int) -> None:
        """Raise ValueError if the pattern cannot be laid on an H x W map."""

    # -- public geometry ---------------------------------------------------------------------
    def check(self, H: int, W: int) -> None:
        """Raise ``ValueError`` stating the rule if this pattern does not fit an ``H x W`` map."""
        H, W = as_pair("map size", (H, W))
        self._check(H, W)

    def keys(self, H: int, W: int) -> torch.Tensor:
        """``LongTensor [H*W, K]``: flat key index of every slot of every query; ``-1`` = no token."""
        return geometry(self, *as_pair("map size", (H, W))).keys.clone()

    def offsets(self, H: int, W: int) -> torch.Tensor:
        """``LongTensor [H*W, K, 2]``: (dh, dw) = key - query in the pattern's own units."""
        return geometry(self, *as_pair("map size", (H, W))).offsets.clone()

    def extent(self, H: int, W: int) -> Pair:
        """Slots per axis ``(kh, kw)``; a bias table is ``[heads, 2*kh-1, 2*kw-1]``."""
        return geometry(self, *as_pair("map size", (H, W))).extent

    def mask(self, H: int, W: int) -> torch.Tensor:
        """``BoolTensor [H*W, H*W]``: ``mask[q, k]`` is True iff real token k is among q's keys."""
        rows, cols = (axis_mask(rule) for rule in self.axes(H, W))  # [H, H], [W, W]
        return (rows[:, None, :, None] & cols[None, :, None, :]).reshape(H * W, H * W)

    def axes(self, H: int, W: int) -> tuple[AxisRule, AxisRule]:
        """The row rule and the column rule on an ``H x W`` map (cached: treat as read-only)."""
        g = geometry(self, *as_pair("map size", (H, W)))
        return g.rows, g.cols

    def unit(self, L: int, axis: int) -> int:
        """Positions per offset unit on an axis of length ``L``: key = query + offset * unit, every slot."""
        return 1

    def centred(self, i: int, axis: int) -> tuple[int, int] | None:
        """First and last position of the window centred on ``i`` as if the axis had no border, for a
        pattern whose window shifts inward at borders (NA); None for the others."""
        return None


# --------------------------------------------------------------------------------------------
# 1-D rules shared by several patterns (one implementation per idea)
# --------------------------------------------------------------------------------------------
def _blocked(L: int, size: int, shift: int = 0) -> AxisRule:
    """Consecutive blocks of ``size`` with boundaries at ``shift, shift + size, ...``.

    With ``c = (size - shift) % size``, key j of query i iff ``(j + c) // size == (i + c) // size``;
    slot t of a query is the token ``(i + c) // size * size - c + t`` and its position in the block
    is ``(i + c) % size``. Slots off the map (before 0: the first block has ``shift`` tokens; past
    ``L``: the last block is short when the map is not a multiple of the boundaries) hold -1.
    """
    c = (size - shift) % size
    u = torch.arange(L) + c  # the position counted from the first (possibly cut) block's start
    keys = (u // size * size - c)[:, None] + torch.arange(size)
    offsets = torch.arange(size) - (u % size)[:, None]
    return AxisRule(keys.where((keys >= 0) & (keys < L), -1), offsets, u // size, u % size)


def _strided(L: int, spacing: int, count: int) -> AxisRule:
    """Interleaved groups: key j of query i iff j = i mod spacing + t * spacing, t < count.

    Position inside the group is i // spacing; slots past the map hold -1.
    """
    i = torch.arange(L)
    t = torch.arange(count)
    keys = (i % spacing)[:, None] + t * spacing
    return AxisRule(keys.where(keys < L, -1), t - (i // spacing)[:, None], i % spacing, i // spacing)


def _everything(L: int) -> AxisRule:
    i = torch.arange(L)
    return AxisRule(i.expand(L, L).clone(), i[None, :] - i[:, None], torch.zeros_like(i), i)


# --------------------------------------------------------------------------------------------
# The patterns
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, repr=False)
class Global(Pattern):
    """Every query attends to every token (ViT). Offsets are in pixels, extent = (H, W).

    >>> Global().keys(2, 3).shape
    torch.Size([6, 6])
    """

    def _axis(self, L, axis):
        return _everything(L)

    def __repr__(self):
        return "Global()"


@dataclasses.dataclass(frozen=True, repr=False)
class Neighborhood(Pattern):
    """Neighborhood attention: NAT, DiNAT (``dilation``) and generalized NA (``stride``, ``causal``),
    NATTEN's ``na2d`` rule per axis (docs/semantics.md §1).

    Axis length L, kernel k >= 2, dilation d, stride ``1 <= s <= k``, ``k * d <= L``. Query i is in
    dilation group ``g = i mod d`` at group coordinate ``i' = i // d``; the group has
    ``Lg = ceil((L - g) / d)`` positions, cut into stride tiles of s, whose queries share one
    *leader*. Not causal: the leader is ``min(i' // s * s + s // 2, Lg - 1)``, the window starts at
    ``clamp(leader - k // 2, 0, Lg - k)`` and holds k keys ``(start + t) * d + g``: shifted inward at
    borders, never clipped, one window per tile. Causal: the leader is ``min(i' // s * s + s - 1,
    Lg - 1)`` and the keys are ``leader - k + 1 + t`` (in group coordinates) that lie in ``[0, i']``;
    the other slots are -1. Offsets are in dilation units (NAT's bias table ``[heads, 2k-1, 2k-1]``).
    ``stride == kernel`` on a map the kernel divides is ``Block(kernel)``.

    >>> Neighborhood(3, dilation=2).keys(7, 7)[5].tolist()  # query (0, 5): rows 0 2 4, cols 1 3 5
    [1, 3, 5, 15, 17, 19, 29, 31, 33]
    >>> Neighborhood((2, 3), stride=(1, 3)).keys(2, 6)[:6, :3].tolist()  # row 0: two tiles of 3 columns
    [[0, 1, 2], [0, 1, 2], [0, 1, 2], [3, 4, 5], [3, 4, 5], [3, 4, 5]]
    """

    kernel_size: Pair | int
    dilation: Pair | int = 1
    stride: Pair | int = 1
    causal: tuple[bool, bool] | bool = False

    def __post_init__(self):
        k = as_pair("kernel_size", self.kernel_size, minimum=2)
        object.__setattr__(self, "kernel_size", k)
        object.__setattr__(self, "dilation", as_pair("dilation", self.dilation))
        stride = as_pair("stride", self.stride)
        if stride[0] > k[0] or stride[1] > k[1]:
            raise ValueError(f"stride must not exceed kernel_size on each axis; got kernel_size={k}, stride={stride}")
        object.__setattr__(self, "stride", stride)
        causal = self.causal if isinstance(self.causal, (tuple, list)) else (self.causal, self.causal)
        if len(causal) != 2 or not all(isinstance(c, bool) for c in causal):  # a bool, not just truthy
            raise ValueError(f"causal must be True, False or a pair of them; got causal={self.causal!r}")
        object.__setattr__(self, "causal", causal)

    @property
    def partition(self):
        """Every query of a stride tile shares its window when no axis is causal or unstrided."""
        return all(s > 1 and not c for s, c in zip(self.stride, self.causal))

    def _check(self, H, W):
        k, d = self.kernel_size, self.dilation
        if k[0] * d[0] > H or k[1] * d[1] > W:
            raise ValueError(
                "kernel_size * dilation must not exceed the map size on each axis; "
                f"got kernel_size={k}, dilation={d}, map={(H, W)}"
            )

    def _leader(self, i_group, group_len, axis):
        """The query of each stride tile whose window (not causal) or window end (causal) the tile shares."""
        s = self.stride[axis]
        return torch.minimum(i_group // s * s + (s - 1 if self.causal[axis] else s // 2), group_len - 1)

    def _axis(self, L, axis):
        k, d, s = self.kernel_size[axis], self.dilation[axis], self.stride[axis]
        i = torch.arange(L)
        g, i_group = i % d, i // d
        group_len = (L - g + d - 1) // d
        leader = self._leader(i_group, group_len, axis)
        t = torch.arange(k)
        if self.causal[axis]:
            key = (leader - k + 1)[:, None] + t  # group coordinates; only those in [0, i'] are keys
            real = (key >= 0) & (key <= i_group[:, None])
        else:
            key = torch.minimum((leader - k // 2).clamp(min=0), group_len - k)[:, None] + t
            real = torch.ones_like(key, dtype=torch.bool)
        # groups: the dilation groups (stride 1), or the stride tiles inside them
        group = g if s == 1 else i_group // s * d + g
        position = i_group if s == 1 else i_group % s
        return AxisRule((key * d + g[:, None]).where(real, -1), key - i_group[:, None], group, position)

    def unit(self, L, axis):
        return self.dilation[axis]

    def centred(self, i, axis):
        k, d, s = self.kernel_size[axis], self.dilation[axis], self.stride[axis]
        g, ig = i % d, i // d
        if self.causal[axis]:  # the k positions up to the tile's last query
            first = ig // s * s + s - 1 - k + 1
        else:  # centred on the tile's middle query
            first = ig // s * s + s // 2 - k // 2
        return first * d + g, (first + k - 1) * d + g

    def __repr__(self):
        d = "" if self.dilation == (1, 1) else f", dilation={_short(self.dilation)}"
        s = "" if self.stride == (1, 1) else f", stride={_short(self.stride)}"
        causal = self.causal[0] if self.causal[0] == self.causal[1] else self.causal
        c = "" if self.causal == (False, False) else f", causal={causal}"
        return f"Neighborhood({_short(self.kernel_size)}{d}{s}{c})"


@dataclasses.dataclass(frozen=True, repr=False)
class LocalWindow(Pattern):
    """SASA's centred k x k window, stride 1: keys ``{(a, b): |a-h| <= k//2, |b-w| <= k//2}``.

    ``padding="zeros"`` (the paper): positions outside the map are zero vectors that still take
    part in the softmax (slots with -1 whose key and value are 0). ``padding="mask"``
    [vizattn choice]: those slots are excluded. The kernel must be odd (the window is centred).

    >>> LocalWindow(3).keys(3, 3)[0].tolist()
    [-1, -1, -1, -1, 0, 1, -1, 3, 4]
    """

    kernel_size: Pair | int
    padding: str = "zeros"
    partition = False
    grouped = False

    def __post_init__(self):
        k = as_pair("kernel_size", self.kernel_size)
        if k[0] % 2 == 0 or k[1] % 2 == 0:
            raise ValueError(f"LocalWindow (SASA) needs an odd kernel_size, its window is centred; got kernel_size={k}")
        if self.padding not in ("zeros", "mask"):
            raise ValueError(f"padding must be 'zeros' or 'mask'; got padding={self.padding!r}")
        object.__setattr__(self, "kernel_size", k)

    @property
    def zero_slots(self):
        return self.padding == "zeros"

    def _axis(self, L, axis):
        k = self.kernel_size[axis]
        i = torch.arange(L)
        offsets = torch.arange(k) - k // 2
        keys = i[:, None] + offsets
        keys = keys.where((keys >= 0) & (keys < L), -1)
        return AxisRule(keys, offsets.expand(L, k).clone(), torch.zeros_like(i), i)

    def __repr__(self):
        p = "" if self.padding == "zeros" else ", padding='mask'"
        return f"LocalWindow({_short(self.kernel_size)}{p})"


class _Partition(Pattern):
    """Block, Grid and LongDistance: one size-like field (an int or a pair) and ``pad``."""

    def _size(self) -> tuple[str, Pair]:
        name = dataclasses.fields(self)[0].name
        return name, getattr(self, name)

    @property
    def group_size(self) -> Pair:
        """The size-like field (block size, grid size, interval) as an ``(h, w)`` pair."""
        return self._size()[1]

    def __post_init__(self):
        name, value = self._size()
        object.__setattr__(self, name, as_pair(name, value))

    def _check(self, H, W):
        name, value = self._size()
        if not self.pad and (H % value[0] or W % value[1]):
            raise ValueError(
                f"the map size must be a multiple of {name} on each axis (or pass pad=True); "
                f"got {name}={value}, map={(H, W)}"
            )

    def __repr__(self):
        return f"{type(self).__name__}({_short(self._size()[1])}{', pad=True' if self.pad else ''})"


@dataclasses.dataclass(frozen=True, repr=False)
class Block(_Partition):
    """MaxViT block attention = CrossFormer SDA = Swin's W-MSA, and with ``shift`` Swin's SW-MSA.

    ``shift=0``: non-overlapping P x P windows; tokens share a group iff ``h // P == h' // P`` and
    ``w // P == w' // P``, the position inside the group is ``(h mod P, w mod P)``.

    ``shift=s`` (``0 <= s < P`` per axis; Swin uses ``P // 2``): Swin's cyclic shift with its
    mask, in original coordinates (docs/semantics.md §7). Per axis the boundaries sit at
    ``s, s + P, s + 2P, ...``: the first group holds s tokens, the last ``P - s``, the others P;
    no pair that Swin's roll brings together across the border ever attends. A query's slot t
    is the token at position t of its window in Swin's rolled map (``-1`` where that token
    belongs to another region), so offsets (key - query, in pixels) index the same
    ``[heads, 2P-1, 2P-1]`` table as for W-MSA. A shifted axis needs a map larger than the
    window: Swin itself then uses one window of the map's size and no shift, a change of
    window that a fixed pattern cannot make, so here that is a ``ValueError``
    (``vizattn.layers.SwinBlock`` applies Swin's rule).

    ``pad=True`` [vizattn choice]: a map that P does not divide is padded bottom/right to a
    multiple of P (shifted: the boundaries stay at ``s + kP``, the padded map is what Swin rolls);
    padded keys are excluded (slots -1), padded queries cropped.

    >>> Block(2).keys(4, 4)[5].tolist()      # query (1, 1) shares the top-left 2 x 2 block
    [0, 1, 4, 5]
    >>> Block(4, shift=2).keys(8, 8)[0].tolist()   # (0, 0): a corner group of 2 x 2 tokens
    [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, -1, -1, 8, 9]
    """

    size: Pair | int
    shift: Pair | int = 0
    pad: bool = False

    def __post_init__(self):
        super().__post_init__()
        shift = as_pair("shift", self.shift, minimum=0)
        if shift[0] >= self.size[0] or shift[1] >= self.size[1]:
            raise ValueError(f"shift must be smaller than size on each axis (0 <= shift < size); "
                             f"got size={self.size}, shift={shift}")
        object.__setattr__(self, "shift", shift)

    def _check(self, H, W):
        super()._check(H, W)
        if any(s and L <= P for L, P, s in zip((H, W), self.size, self.shift)):
            raise ValueError(
                "a shifted axis needs a map larger than the window (Swin uses one window of the map's size and "
                f"no shift there, see SwinBlock); got size={self.size}, shift={self.shift}, map={(H, W)}"
            )

    def _axis(self, L, axis):
        return _blocked(L, self.size[axis], self.shift[axis])

    def __repr__(self):
        shift = "" if self.shift == (0, 0) else f", shift={_short(self.shift)}"
        return f"Block({_short(self.size)}{shift}{', pad=True' if self.pad else ''})"


@dataclasses.dataclass(frozen=True, repr=False)
class Grid(_Partition):
    """MaxViT grid attention: a G x G lattice with spacing ``s = H / G`` spanning the map.

    Tokens share a group iff ``h = h' (mod s_h)`` and ``w = w' (mod s_w)``; the position inside
    the group is ``(h // s_h, w // s_w)``, so one offset unit is s pixels. ``pad=True``: the map
    is padded bottom/right to a multiple of G (``s = ceil(H / G)``), padded keys excluded.

    >>> Grid(2).keys(4, 4)[0].tolist()       # spacing 2: query (0, 0) sees (0,0) (0,2) (2,0) (2,2)
    [0, 2, 8, 10]
    """

    size: Pair | int
    pad: bool = False


    def unit(self, L, axis):
        return math.ceil(L / self.size[axis])

    def _axis(self, L, axis):
        G = self.size[axis]
        return _strided(L, spacing=math.ceil(L / G), count=G)


@dataclasses.dataclass(frozen=True, repr=False)
class LongDistance(_Partition):
    """CrossFormer long distance attention (LDA) with interval I.

    Tokens share a group iff ``h = h' (mod I)`` and ``w = w' (mod I)``; a group has
    ``(H / I) x (W / I)`` tokens, so this equals ``Grid(H // I)`` on divisible maps. ``pad=True``
    pads to a multiple of I (the group grows to ``ceil(H / I)``), padded keys excluded.

    >>> LongDistance(2).keys(4, 4)[0].tolist()
    [0, 2, 8, 10]
    """

    interval: Pair | int
    pad: bool = False


    def unit(self, L, axis):
        return self.interval[axis]

    def _axis(self, L, axis):
        I = self.interval[axis]
        return _strided(L, spacing=I, count=math.ceil(L / I))
