"""The geometry of a pattern on a map: parsed once per (pattern, H, W, device), cached, and read by everything.

A pattern (``vizattn.patterns``) states a 1-D rule per axis (``AxisRule``); ``geometry`` assembles the
2-D key table from the two rules once and keeps it with the facts every backend reads (which slots
are SASA's zero keys, which are excluded, where each slot's offset lands in a bias table). A backend
derives its own tables from a geometry with ``Geometry.derived`` (the tiled backend's tile plan, the
native kernel's visiting order, FlexAttention's block mask), cached on the geometry: there is one
cache, ``geometry``'s.

Glossary: an ``H x W`` map, ``N = H * W`` tokens, token ``(h, w)`` has flat index ``h * W + w``; each
query has ``K = kh * kw`` key slots, ``-1`` where a slot holds no token.

>>> from vizattn.patterns import Neighborhood
>>> g = geometry(Neighborhood(3), 4, 5)
>>> g.keys.shape, g.offsets.shape, g.extent, g.bias_index[0].tolist()
(torch.Size([20, 9]), torch.Size([20, 9, 2]), (3, 3), [12, 13, 14, 17, 18, 19, 22, 23, 24])
"""

from __future__ import annotations

import dataclasses
import functools

import torch

CPU = torch.device("cpu")


@dataclasses.dataclass(frozen=True)
class AxisRule:
    """The 1-D rule of a pattern on an axis of length ``L``.

    keys, offsets: ``LongTensor [L, k]``: key index (``-1`` if not a real token) and key minus
    query in the pattern's own units. group, position: ``LongTensor [L]``: which group of the
    axis a query belongs to (dilation group, block, grid line, stride tile) and its index inside
    that group; kernels tile queries that are neighbours inside a group.
    """

    keys: torch.Tensor
    offsets: torch.Tensor
    group: torch.Tensor
    position: torch.Tensor


def axis_mask(rule: AxisRule) -> torch.Tensor:
    """``BoolTensor [L, L]``: is position j among query i's keys on this axis."""
    L = rule.keys.shape[0]
    return torch.zeros(L, L + 1, dtype=torch.bool).scatter_(1, rule.keys.where(rule.keys >= 0, L), True)[:, :L]


def assemble(row_keys: torch.Tensor, col_keys: torch.Tensor, W: int) -> torch.Tensor:
    """Flat key index ``row * W + col`` of the slots whose row key and column key (broadcast against
    each other) are both real; ``-1`` otherwise."""
    return torch.where((row_keys >= 0) & (col_keys >= 0), row_keys * W + col_keys, -1)


def table_index(dh, dw, extent):
    """Flat index into a ``[2*kh-1, 2*kw-1]`` table of the offsets ``(dh, dw)`` (tensors of one shape)."""
    kh, kw = extent
    return (dh + kh - 1) * (2 * kw - 1) + dw + kw - 1


@dataclasses.dataclass(frozen=True, eq=False)
class Geometry:
    """A pattern on an ``H x W`` map, on one device (read-only: shared by every caller).

    rows, cols: the two ``AxisRule`` (on the CPU); extent ``(kh, kw)``. Made when first read (a
    ``Global`` table on a large map is ``N x N``): keys ``[N, K]``, offsets ``[N, K, 2]`` (dh, dw);
    zero ``[N, K]``: SASA's zero slots (a zero key and value that stay in the softmax); excluded
    ``[N, K]``: slots that drop out of it; bias_index ``[N, K]``: each slot's flat index into a
    ``[heads, 2*kh-1, 2*kw-1]`` table.
    """

    pattern: object
    H: int
    W: int
    device: torch.device
    rows: AxisRule
    cols: AxisRule
    _derived: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def extent(self) -> tuple[int, int]:
        return self.rows.keys.shape[1], self.cols.keys.shape[1]

    def derived(self, key, make):
        """``make(self)``, made once per geometry and key (a backend's own tables)."""
        if key not in self._derived:
            self._derived[key] = make(self)
        return self._derived[key]

    def _table(self, name, make):
        """A 2-D table, made on the CPU once and copied to this geometry's device once."""
        if self.device != CPU:
            return self.derived(name, lambda g: getattr(geometry(g.pattern, g.H, g.W), name).to(g.device))
        return self.derived(name, make)

    @property
    def keys(self) -> torch.Tensor:
        def make(g):
            # [H, 1, kh, 1] and [1, W, 1, kw] broadcast to [H, W, kh, kw]: slot (a, b) of query (h, w)
            return assemble(g.rows.keys[:, None, :, None], g.cols.keys[None, :, None, :], g.W).reshape(g.H * g.W, -1)

        return self._table("keys", make)

    def query_keys(self, i: int, j: int) -> torch.Tensor:
        """``keys[i * W + j]``, ``LongTensor [K]``, without building the ``[N, K]`` table (one query of a
        large ``Global`` map)."""
        return assemble(self.rows.keys[i][:, None], self.cols.keys[j][None, :], self.W).reshape(-1)

    @property
    def offsets(self) -> torch.Tensor:
        def make(g):
            dh, dw = torch.broadcast_tensors(g.rows.offsets[:, None, :, None], g.cols.offsets[None, :, None, :])
            return torch.stack([dh, dw], dim=-1).reshape(g.H * g.W, -1, 2)

        return self._table("offsets", make)

    @property
    def zero(self) -> torch.Tensor:
        return self._table("zero", lambda g: (g.keys < 0) & g.pattern.zero_slots)

    @property
    def excluded(self) -> torch.Tensor:
        return self._table("excluded", lambda g: (g.keys < 0) & (not g.pattern.zero_slots))

    @property
    def bias_index(self) -> torch.Tensor:
        return self._table("bias_index", lambda g: table_index(g.offsets[..., 0], g.offsets[..., 1], g.extent))


def geometry(pattern, H: int, W: int, device=CPU) -> Geometry:
    """The cached ``Geometry`` of ``pattern`` on an ``H x W`` map (``ValueError`` if it does not fit)."""
    return _geometry(pattern, int(H), int(W), torch.device(device))


@functools.lru_cache(maxsize=256)
def _geometry(pattern, H: int, W: int, device: torch.device) -> Geometry:
    if device != CPU:
        g = _geometry(pattern, H, W, CPU)
        return Geometry(pattern, H, W, device, g.rows, g.cols)
    pattern.check(H, W)
    return Geometry(pattern, H, W, device, pattern._axis(H, 0), pattern._axis(W, 1))
