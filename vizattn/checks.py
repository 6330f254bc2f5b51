"""Argument checks at vizattn's public boundaries, in one place: every failure is a ``ValueError``
that states the rule, then the offending values (``"heads must divide dim; got dim=10, heads=3"``).

Code inside a boundary trusts what the boundary checked. This module imports nothing from the
rest of vizattn at run time (``patterns`` uses ``as_pair``), so any module may use it.

>>> as_pair("kernel_size", 3), check_heads(dim=8, heads=2)
((3, 3), 4)
>>> check_choice("kind", "far", ("sda", "lda"))
Traceback (most recent call last):
...
ValueError: kind must be one of sda, lda; got kind='far'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # annotations only: patterns imports this module
    from .patterns import Pair

__all__ = [
    "as_pair",
    "check_positive",
    "check_heads",
    "check_input",
    "check_choice",
    "check_bool",
    "check_instance",
    "check_scores",
    "check_attention",
    "check_table",
    "indices",
    "name_patterns",
    "query_list",
    "check_query",
    "stage_lists",
]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shape(x) -> tuple | str:
    """A tensor's shape, or the type name of anything else (for messages)."""
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


# ---------------------------------------------------------------------------------------------
# numbers and choices
# ---------------------------------------------------------------------------------------------
def as_pair(name: str, value, minimum: int = 1) -> Pair:
    """Normalise an int or an ``(h, w)`` pair of ints, each at least ``minimum``.

    >>> as_pair("size", (2, 3)), as_pair("padding", 0, minimum=0)
    ((2, 3), (0, 0))
    """
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2 or not all(_is_int(x) for x in pair):
        raise ValueError(f"{name} must be an int or a pair of ints; got {name}={value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be at least {minimum} on each axis; got {name}={value!r}")
    return pair


def check_positive(**values) -> None:
    """Raise ValueError unless every named value is a positive int.

    >>> check_positive(stride=0)
    Traceback (most recent call last):
    ...
    ValueError: stride must be a positive int; got stride=0
    """
    for name, value in values.items():
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {name}={value!r}")


def check_heads(dim: int, heads: int) -> int:
    """Validate ``dim`` and ``heads`` and return ``head_dim = dim // heads``."""
    check_positive(dim=dim, heads=heads)
    if dim % heads:
        raise ValueError(f"heads must divide dim; got dim={dim}, heads={heads}")
    return dim // heads


def check_choice(name: str, value, options) -> None:
    """Raise ValueError unless ``value`` is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(str, options))}; got {name}={value!r}")


def check_bool(name: str, value) -> None:
    """Raise ValueError unless ``value`` is True or False (not merely truthy)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False; got {name}={value!r}")


def check_instance(name: str, value, cls, what: str) -> None:
    """Raise ValueError unless ``value`` is a ``cls``; ``what`` names it in the message."""
    if not isinstance(value, cls):
        raise ValueError(f"{name} must be {what}; got {type(value).__name__}")


def indices(name: str, value) -> tuple[int, ...] | None:
    """None, or an int or a non-empty list of non-negative ints, as a tuple.

    >>> indices("heads", 1), indices("heads", [0, 2]), indices("heads", None)
    ((1,), (0, 2), None)
    """
    if value is None:
        return None
    values = [value] if isinstance(value, int) else list(value) if isinstance(value, (list, tuple, range)) else None
    if not values or not all(_is_int(v) and v >= 0 for v in values):
        raise ValueError(f"{name} must be None or a non-empty list of non-negative ints; got {name}={value!r}")
    return tuple(values)


def name_patterns(names) -> list[str]:
    """A shell-style pattern or a non-empty list of them (``probe``'s ``names``), as a list."""
    patterns = [names] if isinstance(names, str) else list(names) if isinstance(names, (list, tuple)) else None
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"names must be a shell-style pattern or a non-empty list of them; got names={names!r}")
    return patterns


def query_list(value) -> tuple[tuple[int, int], ...] | None:
    """None, or a non-empty list of ``(i, j)`` pairs of ints, as a tuple of pairs."""
    if value is None:
        return None
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(q, (list, tuple)) and len(q) == 2 and all(_is_int(c) for c in q) for q in value)
    if not ok:
        raise ValueError(f"queries must be None or a non-empty list of (i, j) pairs of ints; got queries={value!r}")
    return tuple((int(i), int(j)) for i, j in value)


def check_query(query, H: int, W: int, where: str = "map", first: int = 0) -> Pair:
    """``query = (i, j)`` as a tuple of ints if it lies on the ``H x W`` map (``first <= i < H``, ``0 <= j < W``).

    The one check of a query position: probe records, the partition figures and explorers, the
    attention explorer and ViT's patch grid (``first=-1``: the class token's row) use it. ``where``
    finishes the sentence (``"map of 'stages.0.attn'"``).

    >>> check_query((2, 3), 4, 5)
    (2, 3)
    >>> check_query((4, 0), 4, 5)
    Traceback (most recent call last):
    ...
    ValueError: query must lie on the 4x5 map; got query=(4, 0)
    """
    ok = (isinstance(query, (tuple, list)) and len(query) == 2 and all(_is_int(c) for c in query)
          and first <= query[0] < H and 0 <= query[1] < W)
    if not ok:
        shown = tuple(query) if isinstance(query, list) else query
        raise ValueError(f"query must lie on the {H}x{W} {where}; got query={shown!r}")
    return int(query[0]), int(query[1])


def stage_lists(model: str, **lists) -> int:
    """Check that a model's per-stage lists have one positive int per stage; return the number of stages.

    >>> stage_lists("nat", dims=(32, 64), depths=(2, 2))
    2
    """
    lengths = {key: len(value) if isinstance(value, (tuple, list)) else None for key, value in lists.items()}
    if None in lengths.values() or len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise ValueError(f"{model}: per-stage settings must be non-empty tuples of one length; got {lists}")
    for key, value in lists.items():
        if not all(_is_int(v) and v >= 1 for v in value):
            raise ValueError(f"{model}: {key} must hold positive ints; got {key}={tuple(value)}")
    return next(iter(lengths.values()))


# ---------------------------------------------------------------------------------------------
# tensors
# ---------------------------------------------------------------------------------------------
def check_input(x, dim: int, layer: str) -> tuple[int, int, int, int]:
    """Raise ValueError unless ``x`` is a channels-last map ``[B, H, W, dim]``; return its shape."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[-1] != dim:
        raise ValueError(f"{layer} expects a channels-last map [B, H, W, C] with C={dim}; got shape {_shape(x)}")
    return tuple(x.shape)


def check_scores(name: str, scores, shape: tuple) -> None:
    """Raise ValueError unless ``scores`` is a tensor of ``shape`` (LaViT's ``[B, heads, N, N]``)."""
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != shape:
        raise ValueError(f"{name} must be scores [B, heads, N, N] = {shape} for this input; got {_shape(scores)}")


def check_attention(q, k, v, pattern, bias, rel_emb) -> None:
    """The inputs of ``vizattn.attend``: ``q, k [B, heads, H, W, head_dim]``, ``v [B, heads, H, W, head_dim_v]``
    of one floating dtype on one device, a pattern that fits the map, and position tables that
    match the pattern's extent (see ``check_table``). ``pattern`` is already known to be a pattern.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 5:
            raise ValueError(f"{name} must be a tensor [B, heads, H, W, head_dim]; got {name} of shape {_shape(t)}")
    if q.shape != k.shape or v.shape[:4] != q.shape[:4]:
        raise ValueError(
            "q and k must have the same shape and v the same [B, heads, H, W]; "
            f"got q={tuple(q.shape)}, k={tuple(k.shape)}, v={tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise ValueError(f"q, k, v must share one floating dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device; got {q.device}, {k.device}, {v.device}")
    if min(q.shape) == 0:
        raise ValueError(f"q must not have an empty dimension; got q={tuple(q.shape)}")
    heads, H, W, head_dim = q.shape[1:]
    pattern.check(H, W)
    kh, kw = pattern.extent(H, W)
    if bias is not None:
        check_table("bias", bias, (heads, 2 * kh - 1, 2 * kw - 1), q, pattern, (H, W))
    if rel_emb is not None:
        if not isinstance(rel_emb, (tuple, list)) or len(rel_emb) != 2:
            raise ValueError(f"rel_emb must be a pair (row, col) of tensors; got {type(rel_emb).__name__}")
        if head_dim < 2:
            raise ValueError(f"rel_emb splits head_dim into a row and a column half; got head_dim={head_dim}")
        half = head_dim // 2
        check_table("rel_emb[0] (row)", rel_emb[0], (heads, 2 * kh - 1, half), q, pattern, (H, W))
        check_table("rel_emb[1] (col)", rel_emb[1], (heads, 2 * kw - 1, head_dim - half), q, pattern, (H, W))


def check_table(name: str, table, shape: tuple, q, pattern, size: Pair) -> None:
    """Raise ValueError unless a position table has ``shape`` and ``q``'s dtype and device."""
    if not isinstance(table, torch.Tensor) or tuple(table.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} for {pattern} on a {size} map; got {_shape(table)}")
    if table.dtype != q.dtype or table.device != q.device:
        raise ValueError(
            f"{name} must match q's dtype and device; got {table.dtype} on {table.device}, q {q.dtype} on {q.device}"
        )
