"""The partition picture: where one query looks under a pattern, and how the map is grouped.

Drawn from the pattern's own axis rules, the rules ``pattern.keys`` is assembled from, so a
picture can never show keys a kernel does not use. Coordinates: x is the column ``w``, y the
row ``h`` (row 0 on top); a cell is one token.

>>> from vizattn.patterns import Neighborhood
>>> [t.name for t in partition_figure(Neighborhood(3), 6, 6, query=(0, 0)).data]
['groups', 'keys', 'slots', 'query']
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from ..checks import check_query
from ..geometry import geometry
from ..patterns import Pattern
from .style import (
    GROUP_PALETTE,
    KEY_COLOUR,
    OUTSIDE_COLOUR,
    PALE_CIVIDIS,
    QUERY_MARKER,
    gaps,
    pale,
    player,
    rect,
    stepped,
)

__all__ = ["TRACES", "GROUP_SCALE", "group_colours", "group_z", "query_slots", "cell_boxes", "cells",
           "partition_figure", "partition_spec", "query_overlay", "overlay_spec", "animate_queries"]

TRACES = ("groups", "keys", "slots", "query")  # trace order of partition_figure


def query_slots(pattern: Pattern, H: int, W: int, i: int, j: int):
    """Key slots of query ``(i, j)``: ``(keys, rows, cols)``, numpy ``[K]`` each.

    ``keys`` is ``pattern.keys(H, W)[i * W + j]``, read from the pattern's geometry without building
    the ``[N, K]`` table (``Geometry.query_keys``); ``rows``/``cols`` place every slot,
    also the ``-1`` ones, at ``query + offset * unit``: off the map for SASA's zero padding and
    for ``pad=True`` positions.

    >>> from vizattn.patterns import LocalWindow
    >>> keys, rows, cols = query_slots(LocalWindow(3), 3, 3, 0, 0)
    >>> keys.tolist(), rows.tolist(), cols.tolist()
    ([-1, -1, -1, -1, 0, 1, -1, 3, 4], [-1, -1, -1, 0, 0, 0, 1, 1, 1], [-1, 0, 1, -1, 0, 1, -1, 0, 1])
    """
    g = geometry(pattern, H, W)
    keys = g.query_keys(i, j).numpy()
    pr = i + g.rows.offsets[i].numpy() * pattern.unit(H, 0)  # [kh]
    pc = j + g.cols.offsets[j].numpy() * pattern.unit(W, 1)  # [kw]
    rows = np.broadcast_to(pr[:, None], (len(pr), len(pc)))
    cols = np.broadcast_to(pc[None, :], (len(pr), len(pc)))
    return keys, rows.reshape(-1).copy(), cols.reshape(-1).copy()


def _axis_area(pattern: Pattern, rule, L: int, axis: int) -> tuple[int, int]:
    """Rows (or columns) drawn, ``(lo, hi)``: the map plus every slot of every query."""
    pos = rule.offsets.numpy() * pattern.unit(L, axis) + np.arange(L)[:, None]
    lo, hi = min(0, int(pos.min())), max(L - 1, int(pos.max()))
    if pattern.centred(0, axis) is not None:  # room for the centred window NA would need
        lo, hi = min(lo, pattern.centred(0, axis)[0]), max(hi, pattern.centred(L - 1, axis)[1])
    return lo, hi


def _axis_classes(group: np.ndarray, wrap: bool = False) -> tuple[np.ndarray, int]:
    """``(class of each position, number of classes)`` for one axis: groups on neighbouring rows (or
    columns) get different classes, greedily in order of first appearance. ``wrap``: the first and
    last groups touch too (Swin's roll brings them together). At most 3 classes: 2 for blocks, 3
    for an odd number of groups that wrap round (grid lines, dilation groups, Swin's regions)."""
    group = group.tolist()
    pairs = list(zip(group[:-1], group[1:])) + ([(group[-1], group[0])] if wrap else [])
    touching: dict[int, set] = {}
    for a, b in pairs:
        if a != b:
            touching.setdefault(a, set()).add(b)
            touching.setdefault(b, set()).add(a)
    classes: dict[int, int] = {}
    for g in dict.fromkeys(group):
        taken = {classes[n] for n in touching.get(g, ()) if n in classes}
        classes[g] = min(set(range(len(taken) + 1)) - taken)
    return np.array([classes[g] for g in group]), max(classes.values()) + 1


def group_colours(rule_r, rule_c, wrap=(False, False)) -> np.ndarray:
    """``[H, W]`` colour index (into ``GROUP_PALETTE``) of each token's group: row class * (column
    classes) + column class (``_axis_classes``; ``wrap``: per axis). Nine colours for at most 3 x 3
    classes, so groups that touch (row, column or diagonal neighbours; also across the roll of a
    shifted window) never share a colour.

    >>> from vizattn.patterns import Block
    >>> group_colours(*Block(2).axes(4, 6)).tolist()
    [[0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0], [2, 2, 3, 3, 2, 2], [2, 2, 3, 3, 2, 2]]
    """
    (row, _), (col, n_col) = _axis_classes(rule_r.group.numpy(), wrap[0]), _axis_classes(rule_c.group.numpy(),
                                                                                          wrap[1])
    return row[:, None] * n_col + col[None, :]


# the groups trace's colours: every group muted, the query's own group in its strong shade (no other group has it)
GROUP_SCALE = stepped([pale(c, 0.3) for c in GROUP_PALETTE] + [pale(c) for c in GROUP_PALETTE])


def group_z(pattern: Pattern, H: int, W: int, query) -> np.ndarray:
    """``[H, W]`` values of the ``groups`` trace on ``GROUP_SCALE`` (0 to 18): the group's colour index
    (``group_colours``, across the roll for a shifted window) + 0.5, plus 9 for the tokens of the
    query's own group.

    >>> from vizattn.patterns import Block
    >>> group_z(Block(2), 4, 4, query=(0, 3)).tolist()[0]
    [0.5, 0.5, 10.5, 10.5]
    """
    rule_r, rule_c = pattern.axes(H, W)
    i, j = query
    own = (rule_r.group.numpy() == int(rule_r.group[i]))[:, None] & (rule_c.group.numpy() == int(rule_c.group[j]))
    wrap = tuple(bool(s) for s in getattr(pattern, "shift", (0, 0)))  # Swin's shifted windows: rolled_figure
    return group_colours(rule_r, rule_c, wrap) + 0.5 + len(GROUP_PALETTE) * own


def cell_boxes(rows: np.ndarray, cols: np.ndarray):
    """``(x, y, z)`` of a heatmap over the bounding box of some cells: z is 1 on them, NaN elsewhere.

    Keeps the per-query traces small (a 7 x 7 window on a 64 x 64 map sends 49 numbers).
    """
    if len(rows) == 0:
        return [0], [0], np.full((1, 1), np.nan)
    r0, c0 = int(rows.min()), int(cols.min())
    z = np.full((int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1), np.nan)
    z[rows - r0, cols - c0] = 1
    return np.arange(c0, c0 + z.shape[1]), np.arange(r0, r0 + z.shape[0]), z


def _outline(rows: np.ndarray, cols: np.ndarray) -> dict:
    """A layout path along the border of the cells ``(rows[k], cols[k])``: the query's keys, outlined."""
    inside = set(zip(rows.tolist(), cols.tolist()))
    edges = []
    for r, c in inside:
        for dr, dc, (x0, y0, x1, y1) in [(-1, 0, (-1, -1, 1, -1)), (1, 0, (-1, 1, 1, 1)),
                                         (0, -1, (-1, -1, -1, 1)), (0, 1, (1, -1, 1, 1))]:
            if (r + dr, c + dc) not in inside:
                edges.append(f"M{c + x0 / 2},{r + y0 / 2}L{c + x1 / 2},{r + y1 / 2}")
    return dict(type="path", path="".join(sorted(edges)) or "M0,0", line=dict(color=KEY_COLOUR, width=2),
                name="keys", layer="above")


def cells(trace) -> set:
    """The ``(row, col)`` cells a heatmap trace of ``partition_figure`` marks (z == 1).

    >>> from vizattn.patterns import Block
    >>> sorted(cells(partition_figure(Block(2), 4, 4, query=(3, 0)).data[1]))
    [(2, 0), (2, 1), (3, 0), (3, 1)]
    """
    z = np.asarray(trace.z, dtype=float)
    return {(int(trace.y[a]), int(trace.x[b])) for a, b in zip(*np.nonzero(z == 1))}


def partition_figure(pattern: Pattern, H: int, W: int | None = None, query=(0, 0), *,
                     title: str | None = None, cell_px: int | None = None, area_px: int = 448) -> go.Figure:
    """Where one query looks under ``pattern`` on an ``H x W`` map, and how the map is grouped.

    The drawn area reaches as far as any query's slots do; beyond the map it shows the
    background (``OUTSIDE_COLOUR``). Traces, in order (``TRACES``): ``groups`` (each token
    coloured by its group from the axis rules: blocks, grid lines, dilation groups, touching
    groups in different colours, every group muted but the query's own, which has a strong shade
    of its own: ``group_z``; SASA: colour = number of real keys), ``keys`` (1 on the query's real
    keys, NaN elsewhere, over their bounding box; ``cells(trace)`` lists them), ``slots`` (the
    query's ``-1`` slots, off the map: ``0`` = SASA zero padding, still in the softmax; ``x`` =
    padded position, excluded) and ``query`` (a marker). For a window that shifts inward at
    borders (``pattern.centred``: NA) a solid outline marks the actual window and, when it
    differs, a dashed one the centred window that the border forces it to shift away from.
    Raises ``ValueError`` (the pattern's) if the pattern does not fit the map. Cells are
    ``cell_px`` pixels, or as many as fit the drawn area's longer side into ``area_px`` (4 to 32).
    ``partition_spec`` gives the same figure as plain data.

    >>> from vizattn.patterns import LocalWindow
    >>> fig = partition_figure(LocalWindow(3), 4, 4, query=(0, 0))
    >>> len(cells(fig.data[1])), len(cells(fig.data[2])), fig.data[2].text[0]   # 4 keys, 5 zero slots
    (4, 5, ['0', '0', '0'])
    """
    return go.Figure(partition_spec(pattern, H, W, query, title=title, cell_px=cell_px, area_px=area_px))


def partition_spec(pattern: Pattern, H: int, W: int | None = None, query=(0, 0), *,
                   title: str | None = None, cell_px: int | None = None, area_px: int = 448) -> dict:
    """``partition_figure`` as plain data, ``{"data": [trace dicts], "layout": {...}}``, in the
    form plotly's checks give it (tested): what an explorer sends on a move, without building
    and checking plotly objects again (most of a move's time).

    >>> from vizattn.patterns import Block
    >>> [t["name"] for t in partition_spec(Block(2), 4, 4)["data"]] == list(TRACES)
    True
    """
    W = H if W is None else W
    rule_r, rule_c = pattern.axes(H, W)  # validates the pattern on this map
    r_lo, r_hi = _axis_area(pattern, rule_r, H, 0)
    c_lo, c_hi = _axis_area(pattern, rule_c, W, 1)
    overlay = overlay_spec(pattern, H, W, query)  # validates the query

    # opaque pale colours and no gaps: the full-size traces stay plain numeric arrays (fast to send)
    if not pattern.grouped:  # no groups (SASA): colour by how many real keys each query has
        real = ((rule_r.keys >= 0).sum(1)[:, None] * (rule_c.keys >= 0).sum(1)[None, :]).numpy()
        groups = dict(type="heatmap", z=real.astype(float), x=np.arange(W), y=np.arange(H), colorscale=PALE_CIVIDIS,
                      zmin=0, zmax=max(1, int(real.max())), name="groups", showscale=True,
                      colorbar=dict(title=dict(text="real keys"), len=0.6, thickness=12),
                      hovertemplate="row %{y}, col %{x}<br>%{z} real keys<extra></extra>")
    else:
        groups = dict(type="heatmap", z=group_z(pattern, H, W, query), x=np.arange(W), y=np.arange(H),
                      colorscale=GROUP_SCALE, zmin=0, zmax=2 * len(GROUP_PALETTE), showscale=False, name="groups",
                      hovertemplate="row %{y}, col %{x}<extra></extra>")
    return map_spec([groups, *overlay["data"]], overlay["layout"], (r_lo, r_hi), (c_lo, c_hi),
                    title=title or f"{pattern!r} on {H}x{W}",
                    cell_px=cell_px, area_px=area_px)


def map_spec(traces: list, overlay_layout: dict, rows: tuple, cols: tuple, *, title: str, cell_px=None,
             area_px: int = 448, axis_note: str = "") -> dict:
    """The layout shared by the map figures (``partition_spec``, ``swin.rolled_spec``) around
    ``traces``: rows ``rows[0]..rows[1]`` top down, columns ``cols[0]..cols[1]``, square cells of
    ``cell_px`` pixels (or what fits the longer side into ``area_px``), the overlay's shapes and caption.
    The background is ``OUTSIDE_COLOUR``: the axes span the drawn area exactly, so it shows where no
    token is (cheaper for the browser to redraw than a heatmap of its own)."""
    (r_lo, r_hi), (c_lo, c_hi) = rows, cols
    n_rows, n_cols = r_hi - r_lo + 1, c_hi - c_lo + 1
    side = cell_px or max(4, min(32, area_px // max(n_rows, n_cols)))  # cell pixels: the map in area_px
    layout = dict(
        title=dict(text=title, x=0.5), **overlay_layout,
        showlegend=False, plot_bgcolor=OUTSIDE_COLOUR, margin=dict(l=40, r=20, t=50, b=80),
        width=max(450, side * n_cols + 150), height=side * n_rows + 150,  # a drawing area >= 300 px
        xaxis=dict(range=[c_lo - 0.5, c_hi + 0.5], constrain="domain", showgrid=False, zeroline=False,
                   title=dict(text=f"column{axis_note}"), dtick=max(1, n_cols // 8)),
        yaxis=dict(range=[r_hi + 0.5, r_lo - 0.5], scaleanchor="x", constrain="domain", showgrid=False,
                   zeroline=False, title=dict(text=f"row{axis_note}"), dtick=max(1, n_rows // 8)),
    )
    return dict(data=traces, layout=layout)


def query_overlay(pattern: Pattern, H: int, W: int | None = None, query=(0, 0)) -> go.Figure:
    """The part of ``partition_figure`` that follows the query: traces ``keys``, ``slots``,
    ``query``, and the layout's ``shapes`` (map border, NA windows) and caption ``annotations``.

    A widget moving only the query sends just this (the map's geometry stays); ``overlay_spec``
    gives it as plain data.

    >>> from vizattn.patterns import Neighborhood
    >>> [t.name for t in query_overlay(Neighborhood(3), 5, 5, query=(0, 0)).data]
    ['keys', 'slots', 'query']
    """
    return go.Figure(overlay_spec(pattern, H, W, query))


def overlay_spec(pattern: Pattern, H: int, W: int | None = None, query=(0, 0)) -> dict:
    """``query_overlay`` as plain data (see ``partition_spec``)."""
    W = H if W is None else W
    i, j = check_query(query, H, W)
    rule_r, rule_c = pattern.axes(H, W)
    keys, krow, kcol = query_slots(pattern, H, W, i, j)
    real = keys >= 0
    mark = "0" if pattern.zero_slots else "x"
    what = "zero padding: a zero key and value, in the softmax" if pattern.zero_slots else "padded slot, excluded"
    traces = slot_traces(krow, kcol, real, mark, key_hover="key: row %{y}, col %{x}",
                         slot_hover=f"row %{{y}}, col %{{x}}<br>{what}")
    traces.append(query_trace(i, j))

    shapes = [rect(0, H - 1, 0, W - 1, color="black", width=2)]
    shifting = pattern.centred(i, 0) is not None  # a window that shifts inward at borders (NA)
    if shifting:
        actual = (int(rule_r.keys[i].min()), int(rule_r.keys[i].max()),
                  int(rule_c.keys[j].min()), int(rule_c.keys[j].max()))
        centred = (*pattern.centred(i, 0), *pattern.centred(j, 1))
        if centred != actual:
            shapes.append(rect(*centred, color="#D55E00", width=2, dash="dash", name="centred window"))
        shapes.append(rect(*actual, color="#0072B2", width=3, name="window"))

    n_real, n_slots = int(real.sum()), len(keys)
    caption = f"query ({i}, {j}): {n_real} keys"
    if n_real < n_slots:
        caption += f", {n_slots - n_real} slots off the map<br>({what})"
    if shifting and len(shapes) == 3:
        caption += "<br>dashed: the centred window; solid: the window, shifted inward"
    shapes.append(_outline(krow[real], kcol[real]))  # the query's keys stand out whatever their colours
    return dict(data=traces, layout=dict(shapes=shapes, annotations=[caption_note(caption)]))


def slot_traces(rows: np.ndarray, cols: np.ndarray, real: np.ndarray, mark: str, *, key_hover: str,
                slot_hover: str) -> list:
    """The ``keys`` and ``slots`` traces of a query's slots at cells ``(rows, cols)``: ``real`` ones
    shaded, the others marked ``mark`` on grey."""
    key_x, key_y, key_z = cell_boxes(rows[real], cols[real])
    keys = dict(type="heatmap", z=gaps(key_z), x=key_x, y=key_y, colorscale=[[0, KEY_COLOUR], [1, KEY_COLOUR]],
                opacity=0.5, showscale=False, name="keys", zmin=0, zmax=1,
                hovertemplate=f"{key_hover}<extra></extra>")
    slot_x, slot_y, slot_z = cell_boxes(rows[~real], cols[~real])
    slots = dict(type="heatmap", z=gaps(slot_z), x=slot_x, y=slot_y, text=np.where(slot_z == 1, mark, "").tolist(),
                 zmin=0, zmax=1, texttemplate="%{text}", colorscale=[[0, "#7F7F7F"], [1, "#7F7F7F"]],
                 showscale=False, name="slots", textfont=dict(color="white"),
                 hovertemplate=f"{slot_hover}<extra></extra>")
    return [keys, slots]


def query_trace(i: int, j: int) -> dict:
    """The ``query`` marker at row ``i``, column ``j``."""
    return dict(type="scatter", x=[j], y=[i], mode="markers", name="query", hoverinfo="skip", marker=QUERY_MARKER)


def caption_note(text: str) -> dict:
    """A map figure's caption: an annotation under the plot."""
    return dict(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0, yanchor="top", yshift=-42,
                font=dict(size=12))


def animate_queries(pattern: Pattern, H: int, W: int | None = None, queries=None, duration: int = 300) -> go.Figure:
    """``partition_figure`` with one animation frame per query (default: every token row by row,
    thinned to at most 256 frames); renders without a kernel.

    >>> from vizattn.patterns import Neighborhood
    >>> fig = animate_queries(Neighborhood(3), 4, 4)
    >>> len(fig.frames), fig.frames[5].name
    (16, '(1, 1)')
    """
    W = H if W is None else W
    if queries is None:
        step = max(1, math.ceil(math.sqrt(H * W / 256)))
        queries = [(i, j) for i in range(0, H, step) for j in range(0, W, step)]
    queries = [tuple(q) for q in queries]
    figs = [partition_figure(pattern, H, W, query=q) for q in queries]
    moving = [TRACES.index(n) for n in ("groups", "keys", "slots", "query")]  # the query's group too
    frames = [go.Frame(data=[f.data[k] for k in moving], traces=moving, name=str(q),
                       layout=dict(shapes=f.layout.shapes, annotations=f.layout.annotations))
              for q, f in zip(queries, figs)]
    fig = go.Figure(figs[0].data, figs[0].layout, frames=frames)
    fig.update_layout(**player(frames, "query ", duration), height=fig.layout.height + 110)
    return fig
