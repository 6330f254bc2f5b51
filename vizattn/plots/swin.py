"""Swin's own view of a (shifted) ``Block``: the map rolled by ``-s``, cut into ``P x P`` windows.

``partition_figure`` draws ``Block(P, shift=s)`` in original coordinates: groups of ``s``, ``P``
and ``P - s`` tokens per axis. Swin computes the same groups differently: it rolls the map by
``-s`` (token ``r`` moves to ``(r - s) mod L``), cuts ``P x P`` windows, and masks the pairs that
the roll brought together from opposite borders. ``rolled_figure`` draws that: every cell, key
and slot comes from the pattern's axis rules (``query_slots``, the group colours of
``partition_figure``), only moved by the roll, so both views show one set of groups. A
``pad=True`` map is rolled as Swin rolls it, padded (``L`` a multiple of ``P``).

>>> from vizattn.patterns import Block
>>> from vizattn.plots import cells
>>> fig = rolled_figure(Block(4, shift=2), 8, 8, query=(0, 0))
>>> sorted(cells(fig.data[1]))          # the corner group, 2 x 2, sits in the last window
[(6, 6), (6, 7), (7, 6), (7, 7)]
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from ..checks import check_query
from ..patterns import Block
from .partition import (
    GROUP_SCALE,
    caption_note,
    group_z,
    map_spec,
    query_slots,
    query_trace,
    slot_traces,
)
from .style import GROUP_PALETTE, rect

__all__ = ["rolled_size", "roll", "rolled_groups", "rolled_figure", "rolled_spec", "rolled_overlay",
           "rolled_overlay_spec"]


def rolled_size(pattern: Block, H: int, W: int) -> tuple[int, int]:
    """The map Swin rolls: ``(H, W)``, padded up to multiples of the window under ``pad=True``.

    >>> rolled_size(Block(4, shift=2, pad=True), 10, 8)
    (12, 8)
    """
    if not isinstance(pattern, Block):
        raise ValueError(f"the rolled view is Swin's view of a Block pattern; got pattern={pattern!r}")
    pattern.check(H, W)
    P = pattern.size
    return (math.ceil(H / P[0]) * P[0], math.ceil(W / P[1]) * P[1]) if pattern.pad else (H, W)


def roll(pattern: Block, H: int, W: int, rows, cols):
    """Positions ``(rows, cols)`` of the original map (off-map ones too) in Swin's rolled map.

    >>> roll(Block(4, shift=2), 8, 8, np.array([0, -2]), np.array([1, 9]))
    (array([6, 4]), array([7, 7]))
    """
    Hp, Wp = rolled_size(pattern, H, W)
    (sh, sw) = pattern.shift
    return (np.asarray(rows) - sh) % Hp, (np.asarray(cols) - sw) % Wp


def rolled_overlay(pattern: Block, H: int, W: int | None = None, query=(0, 0)) -> go.Figure:
    """The part of ``rolled_figure`` that follows the query: traces ``keys``, ``slots`` (``x``: masked,
    another region or padding), ``query``; shapes (the rolled map, its windows, the query's window)
    and a caption. The query's slots are its ``P x P`` window in the rolled map. As plain data:
    ``rolled_overlay_spec``.

    >>> [t.name for t in rolled_overlay(Block(4, shift=2), 8, 8).data]
    ['keys', 'slots', 'query']
    """
    return go.Figure(rolled_overlay_spec(pattern, H, W, query))


def rolled_overlay_spec(pattern: Block, H: int, W: int | None = None, query=(0, 0)) -> dict:
    """``rolled_overlay`` as plain data (see ``partition.partition_spec``)."""
    W = H if W is None else W
    i, j = check_query(query, H, W)
    Hp, Wp = rolled_size(pattern, H, W)
    keys, rows, cols = query_slots(pattern, H, W, i, j)  # slot positions in original coordinates
    rows, cols = roll(pattern, H, W, rows, cols)
    real = keys >= 0
    traces = slot_traces(rows, cols, real, "x", key_hover="key (rolled map): row %{y}, col %{x}",
                         slot_hover="row %{y}, col %{x}<br>masked: another region")
    qi, qj = roll(pattern, H, W, [i], [j])
    traces.append(query_trace(int(qi[0]), int(qj[0])))
    (P, Q) = pattern.size
    shapes = [rect(0, Hp - 1, 0, Wp - 1, color="black", width=2)]
    shapes += [rect(a, a + P - 1, b, b + Q - 1, color="#555555", width=1, name="window")
               for a in range(0, Hp, P) for b in range(0, Wp, Q)]
    shapes.append(rect(int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max()),
                       color="#0072B2", width=3, name="query window"))
    n_real = int(real.sum())
    caption = (f"query ({i}, {j}) at ({int(qi[0])}, {int(qj[0])}) after the roll by -{pattern.shift}: "
               f"{n_real} keys of its {len(keys)}-token window")
    if n_real < len(keys):
        caption += f"<br>{len(keys) - n_real} masked (x): tokens the roll brought from another region"
    return dict(data=traces, layout=dict(shapes=shapes, annotations=[caption_note(caption)]))


def rolled_groups(pattern: Block, H: int, W: int, query) -> np.ndarray:
    """``[Hp, Wp]`` values of ``rolled_figure``'s ``groups`` trace: ``partition.group_z`` (the query's own
    group strong, the others muted) at every token's rolled position; NaN on padded positions.

    >>> rolled_groups(Block(2, shift=1), 4, 4, query=(0, 0))[3].tolist()     # the corner group, rolled
    [1.5, 1.5, 2.5, 9.5]
    """
    Hp, Wp = rolled_size(pattern, H, W)
    colour = np.full((Hp, Wp), np.nan)
    colour[:H, :W] = group_z(pattern, H, W, query)
    return np.roll(colour, (-pattern.shift[0], -pattern.shift[1]), axis=(0, 1))  # token r -> (r - s) mod L


def rolled_figure(pattern: Block, H: int, W: int | None = None, query=(0, 0), *, title: str | None = None,
                  cell_px: int | None = None, area_px: int = 448) -> go.Figure:
    """Swin's rolled map: the traces of ``partition_figure`` (``TRACES``), every one moved by the roll.

    ``groups``: each token's group colour (as in ``partition_figure``) at its rolled position, so a
    window holding parts of several groups shows Swin's masked sub-regions; padded positions
    (``pad=True``) show the background, as beyond the map in ``partition_figure``. Then
    ``rolled_overlay``'s keys, slots and query. ``cell_px``, ``area_px``: cell size as in
    ``partition_figure``.

    >>> from vizattn.plots import cells
    >>> fig = rolled_figure(Block(4, shift=2), 8, 8, query=(0, 0))
    >>> [t.name for t in fig.data], len(cells(fig.data[2]))      # 12 of the 16 slots are masked
    (['groups', 'keys', 'slots', 'query'], 12)
    """
    return go.Figure(rolled_spec(pattern, H, W, query, title=title, cell_px=cell_px, area_px=area_px))


def rolled_spec(pattern: Block, H: int, W: int | None = None, query=(0, 0), *, title: str | None = None,
                cell_px: int | None = None, area_px: int = 448) -> dict:
    """``rolled_figure`` as plain data (see ``partition.partition_spec``)."""
    W = H if W is None else W
    Hp, Wp = rolled_size(pattern, H, W)
    overlay = rolled_overlay_spec(pattern, H, W, query)
    groups = dict(type="heatmap", z=rolled_groups(pattern, H, W, query), x=np.arange(Wp), y=np.arange(Hp),
                  colorscale=GROUP_SCALE, zmin=0, zmax=2 * len(GROUP_PALETTE), showscale=False, name="groups",
                  hovertemplate="rolled map: row %{y}, col %{x}<extra></extra>")
    return map_spec([groups, *overlay["data"]], overlay["layout"],
                    (0, Hp - 1), (0, Wp - 1), title=title or f"{pattern!r} on {H}x{W}, rolled by -{pattern.shift}",
                    cell_px=cell_px, area_px=area_px, axis_note=" (rolled map)")
