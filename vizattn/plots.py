"""Pure figure builders: patterns, costs, attention maps and receptive fields as plotly figures.

Every builder takes plain values and returns a ``plotly.graph_objects.Figure``; nothing here
holds state or touches widgets (``vizattn.widgets`` does that). The partition picture is drawn
from the pattern's own axis rules, the rules ``pattern.keys`` is assembled from, so a picture can
never show keys a kernel does not use.

Coordinates: x is the column ``w``, y the row ``h`` (row 0 on top); a cell is one token.
Colours are colour-blind safe: Okabe-Ito for categories, Cividis for quantities.

>>> fig = partition_figure(Neighborhood(3), 6, 6, query=(0, 0))
>>> [t.name for t in fig.data]
['outside', 'groups', 'keys', 'slots', 'query']
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .patterns import Grid, LocalWindow, LongDistance, Neighborhood, Pattern

__all__ = ["OKABE_ITO", "TRACES", "COST_MECHANISMS", "query_slots", "cells", "partition_figure", "query_overlay",
           "animate_queries", "cost", "cost_figure", "SCALES", "ATTENTION_TRACES", "HEADS_TRACES", "grey",
           "query_map_traces", "query_map_title", "query_map_figure", "query_maps_figure", "animate_query_maps", "heads_traces",
           "head_of_cell", "head_shapes", "heads_figure", "field_z", "receptive_figure", "effective_parts",
           "effective_figure", "receptive_depths_figure", "reuse_chain_maps",
           "chain_axes", "reuse_chain_figure", "stage_shade", "layer_measures_figure", "saturation_figure"]

# Okabe & Ito (2008), black left out: neighbouring groups get different colours (see _group_colour)
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")
KEY_COLOUR = "#000000"
OUTSIDE_COLOUR = "#E8E8E8"
# plotly's Cividis, each colour 55 % mixed with white (_pale), so that black keys stay readable on it
PALE_CIVIDIS = [[k / 9, c] for k, c in enumerate(("#73859E", "#7D90B0", "#939BAE", "#A3A6AF", "#B0B1B2", "#BFBCB5",
                                                 "#CEC9B3", "#DED5AC", "#EEE3A2", "#FEF292"))]
TRACES = ("outside", "groups", "keys", "slots", "query")  # trace order of partition_figure


# ---------------------------------------------------------------------------------------------
# geometry helpers (pure; read the pattern's axis rules)
# ---------------------------------------------------------------------------------------------
def _unit(pattern: Pattern, L: int, axis: int) -> int:
    """Pixels per offset unit on an axis: key = query + offset * unit for every slot."""
    if isinstance(pattern, Neighborhood):
        return pattern.dilation[axis]
    if isinstance(pattern, Grid):
        return math.ceil(L / pattern.size[axis])
    if isinstance(pattern, LongDistance):
        return pattern.interval[axis]
    return 1


def query_slots(pattern: Pattern, H: int, W: int, i: int, j: int):
    """Key slots of query ``(i, j)``: ``(keys, rows, cols)``, numpy ``[K]`` each.

    ``keys`` equals ``pattern.keys(H, W)[i * W + j]`` (assembled the same way, from the row and
    column rules, without building the ``[N, K]`` table); ``rows``/``cols`` place every slot,
    also the ``-1`` ones, at ``query + offset * unit``: off the map for SASA's zero padding and
    for ``pad=True`` positions.

    >>> keys, rows, cols = query_slots(LocalWindow(3), 3, 3, 0, 0)
    >>> keys.tolist(), rows.tolist(), cols.tolist()
    ([-1, -1, -1, -1, 0, 1, -1, 3, 4], [-1, -1, -1, 0, 0, 0, 1, 1, 1], [-1, 0, 1, -1, 0, 1, -1, 0, 1])
    """
    rule_r, rule_c = pattern.axes(H, W)
    kr, kc = rule_r.keys[i].numpy(), rule_c.keys[j].numpy()
    pr = i + rule_r.offsets[i].numpy() * _unit(pattern, H, 0)
    pc = j + rule_c.offsets[j].numpy() * _unit(pattern, W, 1)
    keys = np.where((kr[:, None] >= 0) & (kc[None, :] >= 0), kr[:, None] * W + kc[None, :], -1)
    rows = np.broadcast_to(pr[:, None], keys.shape)
    cols = np.broadcast_to(pc[None, :], keys.shape)
    return keys.reshape(-1), rows.reshape(-1).copy(), cols.reshape(-1).copy()


def _axis_area(pattern: Pattern, rule, L: int, axis: int) -> tuple[int, int]:
    """Rows (or columns) drawn, ``(lo, hi)``: the map plus every slot of every query."""
    pos = rule.offsets.numpy() * _unit(pattern, L, axis) + np.arange(L)[:, None]
    lo, hi = min(0, int(pos.min())), max(L - 1, int(pos.max()))
    if isinstance(pattern, Neighborhood):  # room for the centred window NA would need
        k, d = pattern.kernel_size[axis], pattern.dilation[axis]
        lo, hi = min(lo, -(k // 2) * d), max(hi, L - 1 + (k - 1 - k // 2) * d)
    return lo, hi


def _group_colour(rule_r, rule_c) -> np.ndarray:
    """``[H, W]`` colour index of each token's group: (3 g_row + g_col) mod 7.

    Groups that touch (row, column or diagonal neighbours, ids differing by 1, 2, 3 or 4) never
    share a colour.
    """
    return (3 * rule_r.group.numpy()[:, None] + rule_c.group.numpy()[None, :]) % len(OKABE_ITO)


def _box(rows: np.ndarray, cols: np.ndarray):
    """``(x, y, z)`` of a heatmap over the bounding box of some cells: z is 1 on them, NaN elsewhere.

    Keeps the per-query traces small (a 7 x 7 window on a 64 x 64 map sends 49 numbers).
    """
    if len(rows) == 0:
        return [0], [0], np.full((1, 1), np.nan)
    r0, c0 = int(rows.min()), int(cols.min())
    z = np.full((int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1), np.nan)
    z[rows - r0, cols - c0] = 1
    return np.arange(c0, c0 + z.shape[1]), np.arange(r0, r0 + z.shape[0]), z


def _gaps(z: np.ndarray):
    """z with None where it is NaN (nested lists): a gap in a heatmap, and valid JSON for a widget.

    Without NaN, z itself: a numeric array is sent to a widget as a binary buffer, much faster.
    """
    z = np.asarray(z, dtype=float)
    return np.where(np.isnan(z), None, z).tolist() if np.isnan(z).any() else z


def cells(trace) -> set:
    """The ``(row, col)`` cells a heatmap trace of ``partition_figure`` marks (z == 1).

    >>> from vizattn.patterns import Block
    >>> sorted(cells(partition_figure(Block(2), 4, 4, query=(3, 0)).data[2]))
    [(2, 0), (2, 1), (3, 0), (3, 1)]
    """
    z = np.asarray(trace.z, dtype=float)
    return {(int(trace.y[a]), int(trace.x[b])) for a, b in zip(*np.nonzero(z == 1))}


def _pale(colour: str, amount: float = 0.55) -> str:
    """``colour`` (``#rrggbb``) mixed with white: ``amount`` of the colour."""
    rgb = (int(colour[k:k + 2], 16) for k in (1, 3, 5))
    return "#" + "".join(f"{round(c * amount + 255 * (1 - amount)):02X}" for c in rgb)


def _stepped(colours) -> list:
    n = len(colours)
    scale = []
    for k, c in enumerate(colours):
        scale += [[k / n, c], [(k + 1) / n, c]]
    return scale


def _rect(r0, r1, c0, c1, name="map", **line) -> dict:
    return dict(type="rect", x0=c0 - 0.5, x1=c1 + 0.5, y0=r0 - 0.5, y1=r1 + 0.5, line=line, name=name,
                fillcolor="rgba(0,0,0,0)", layer="above")


def _centred(i: int, k: int, d: int) -> tuple[int, int]:
    """First and last pixel of the window centred on i (dilation d), as if the map had no border."""
    g, ig = i % d, i // d
    return (ig - k // 2) * d + g, (ig - k // 2 + k - 1) * d + g


# ---------------------------------------------------------------------------------------------
# partition picture
# ---------------------------------------------------------------------------------------------
def partition_figure(pattern: Pattern, H: int, W: int | None = None, query=(0, 0), *,
                     title: str | None = None, cell_px: int | None = None) -> go.Figure:
    """Where one query looks under ``pattern`` on an ``H x W`` map, and how the map is grouped.

    Traces, in order (``TRACES``): ``outside`` (the drawn area beyond the map, as far as any
    query's slots reach), ``groups`` (each token coloured by its group from the axis rules:
    blocks, grid lines, dilation groups; SASA: colour = number of real keys), ``keys`` (1 on the query's real keys,
    NaN elsewhere, over their bounding box; ``cells(trace)`` lists them), ``slots`` (the query's
    ``-1`` slots, off the map: ``0`` = SASA zero padding, still in the softmax; ``x`` = padded
    position, excluded) and ``query`` (a marker). For
    ``Neighborhood`` a solid outline marks the actual window and, when it differs, a dashed one
    the centred window that the border forces it to shift away from.
    Raises ``ValueError`` (the pattern's) if the pattern does not fit the map.

    >>> fig = partition_figure(LocalWindow(3), 4, 4, query=(0, 0))
    >>> len(cells(fig.data[2])), len(cells(fig.data[3])), fig.data[3].text[0]   # 4 keys, 5 zero slots
    (4, 5, ['0', '0', '0'])
    """
    W = H if W is None else W
    rule_r, rule_c = pattern.axes(H, W)  # validates the pattern on this map
    r_lo, r_hi = _axis_area(pattern, rule_r, H, 0)
    c_lo, c_hi = _axis_area(pattern, rule_c, W, 1)
    rows, cols = np.arange(r_lo, r_hi + 1), np.arange(c_lo, c_hi + 1)
    shape = (len(rows), len(cols))
    overlay = query_overlay(pattern, H, W, query)  # validates the query

    # opaque pale colours and no gaps: the full-size traces stay plain numeric arrays (fast to send)
    if isinstance(pattern, LocalWindow):  # no groups: colour by how many real keys each query has
        real = ((rule_r.keys >= 0).sum(1)[:, None] * (rule_c.keys >= 0).sum(1)[None, :]).numpy()
        group_trace = go.Heatmap(z=real.astype(float), x=np.arange(W), y=np.arange(H), colorscale=PALE_CIVIDIS,
                                 zmin=0, zmax=max(1, int(real.max())), name="groups", showscale=True,
                                 colorbar=dict(title="real keys", len=0.6, thickness=12),
                                 hovertemplate="row %{y}, col %{x}<br>%{z} real keys<extra></extra>")
    else:
        group_trace = go.Heatmap(z=_group_colour(rule_r, rule_c) + 0.5, x=np.arange(W), y=np.arange(H),
                                 colorscale=_stepped([_pale(c) for c in OKABE_ITO]), zmin=0,
                                 zmax=len(OKABE_ITO), showscale=False, name="groups",
                                 hovertemplate="row %{y}, col %{x}<extra></extra>")
    outside_trace = go.Heatmap(z=np.ones(shape), x=cols, y=rows, showscale=False, name="outside",
                               colorscale=[[0, OUTSIDE_COLOUR], [1, OUTSIDE_COLOUR]], hoverinfo="skip")

    fig = go.Figure([outside_trace, group_trace, *overlay.data])
    side = cell_px or max(8, min(32, 448 // max(len(rows), len(cols))))
    fig.update_layout(
        title=dict(text=title or f"{pattern!r} on {H}x{W}", x=0.5),
        shapes=overlay.layout.shapes, annotations=overlay.layout.annotations,
        showlegend=False, plot_bgcolor="white", margin=dict(l=40, r=20, t=50, b=80),
        width=max(420, side * len(cols) + 140), height=side * len(rows) + 150,
        xaxis=dict(range=[c_lo - 0.5, c_hi + 0.5], constrain="domain", showgrid=False, zeroline=False,
                   title="column", dtick=max(1, len(cols) // 8)),
        yaxis=dict(range=[r_hi + 0.5, r_lo - 0.5], scaleanchor="x", constrain="domain", showgrid=False,
                   zeroline=False, title="row", dtick=max(1, len(rows) // 8)),
    )
    return fig


def query_overlay(pattern: Pattern, H: int, W: int | None = None, query=(0, 0)) -> go.Figure:
    """The part of ``partition_figure`` that follows the query: traces ``keys``, ``slots``,
    ``query``, and the layout's ``shapes`` (map border, NA windows) and caption ``annotations``.

    A widget moving only the query sends just this (the map's geometry stays).

    >>> [t.name for t in query_overlay(Neighborhood(3), 5, 5, query=(0, 0)).data]
    ['keys', 'slots', 'query']
    """
    W = H if W is None else W
    i, j = query
    if not (0 <= i < H and 0 <= j < W):
        raise ValueError(f"the query must lie on the {H}x{W} map; got query={tuple(query)!r}")
    rule_r, rule_c = pattern.axes(H, W)
    keys, krow, kcol = query_slots(pattern, H, W, i, j)
    real = keys >= 0
    key_x, key_y, key_z = _box(krow[real], kcol[real])
    key_trace = go.Heatmap(z=_gaps(key_z), x=key_x, y=key_y, colorscale=[[0, KEY_COLOUR], [1, KEY_COLOUR]],
                           opacity=0.5, showscale=False, name="keys", zmin=0, zmax=1,
                           hovertemplate="key: row %{y}, col %{x}<extra></extra>")

    mark = "0" if pattern.zero_slots else "x"
    slot_x, slot_y, slot_z = _box(krow[~real], kcol[~real])
    slot_text = np.where(slot_z == 1, mark, "")
    what = "zero padding: a zero key and value, in the softmax" if pattern.zero_slots else "padded slot, excluded"
    slot_trace = go.Heatmap(z=_gaps(slot_z), x=slot_x, y=slot_y, text=slot_text.tolist(), zmin=0, zmax=1,
                            texttemplate="%{text}", colorscale=[[0, "#7F7F7F"], [1, "#7F7F7F"]],
                            showscale=False, name="slots", textfont=dict(color="white"),
                            hovertemplate=f"row %{{y}}, col %{{x}}<br>{what}<extra></extra>")

    query_trace = go.Scatter(x=[j], y=[i], mode="markers", name="query", hoverinfo="skip",
                             marker=dict(symbol="x-thin", size=12, line=dict(width=3, color="white")))

    shapes = [_rect(0, H - 1, 0, W - 1, color="black", width=2)]
    if isinstance(pattern, Neighborhood):
        (kh, kw), (dh, dw) = pattern.kernel_size, pattern.dilation
        actual = (int(rule_r.keys[i].min()), int(rule_r.keys[i].max()),
                  int(rule_c.keys[j].min()), int(rule_c.keys[j].max()))
        centred = (*_centred(i, kh, dh), *_centred(j, kw, dw))
        if centred != actual:
            shapes.append(_rect(*centred, color="#D55E00", width=2, dash="dash", name="centred window"))
        shapes.append(_rect(*actual, color="#0072B2", width=3, name="window"))

    n_real, n_slots = int(real.sum()), len(keys)
    caption = f"query ({i}, {j}): {n_real} keys"
    if n_real < n_slots:
        caption += f", {n_slots - n_real} slots off the map<br>({what})"
    if isinstance(pattern, Neighborhood) and len(shapes) == 3:
        caption += "<br>dashed: the centred window; solid: the window, shifted inward"
    fig = go.Figure([key_trace, slot_trace, query_trace])
    fig.update_layout(shapes=shapes, annotations=[
        dict(text=caption, showarrow=False, xref="paper", yref="paper", x=0.5, y=0, yanchor="top",
             yshift=-42, font=dict(size=12))])
    return fig


# ---------------------------------------------------------------------------------------------
# costs (semantics.md section 6)
# ---------------------------------------------------------------------------------------------
COST_MECHANISMS = ("global", "NA / DiNAT", "SASA", "MaxViT block", "MaxViT grid", "CrossFormer SDA",
                   "CrossFormer LDA", "LaViT LA")


def cost(mechanism: str, side: int, channels: int = 64, heads: int = 4, kernel: int = 7, block: int = 7,
         grid: int = 7, group: int = 7, interval: int = 8) -> tuple[float, float]:
    """``(MACs, attention memory)`` of one attention layer on a ``side x side`` map (semantics.md §6).

    MACs = projections + attention, with ``N = side**2`` tokens and ``C = channels``: global
    ``4NC^2 + 2N^2C``; NA/DiNAT and SASA (k) ``4NC^2 + 2NCk^2`` (SASA's grouped projections: the
    4NC^2 divided by ``heads``); MaxViT block (P) / grid (G) ``4NC^2 + 2NCP^2`` / ``2NCG^2``;
    CrossFormer SDA (G) ``4NC^2 + 2NCG^2``, LDA (I) ``4NC^2 + 2NC N/I^2``; LaViT LA layer
    ``2NC^2 + 2hN^3 + N^2C``. Memory: attention-matrix entries per head (``N^2``, ``N k^2``, ...).

    >>> cost("global", 8, channels=16)          # N = 64: 4*64*256 + 2*64*64*16
    (196608.0, 4096.0)
    """
    N, C = float(side * side), float(channels)
    proj = 4 * N * C * C
    if mechanism == "global":
        return proj + 2 * N * N * C, N * N
    if mechanism in ("NA / DiNAT", "NA", "DiNAT"):
        return proj + 2 * N * C * kernel ** 2, N * kernel ** 2
    if mechanism == "SASA":
        return proj / heads + 2 * N * C * kernel ** 2, N * kernel ** 2
    if mechanism == "MaxViT block":
        return proj + 2 * N * C * block ** 2, N * block ** 2
    if mechanism == "MaxViT grid":
        return proj + 2 * N * C * grid ** 2, N * grid ** 2
    if mechanism == "CrossFormer SDA":
        return proj + 2 * N * C * group ** 2, N * group ** 2
    if mechanism == "CrossFormer LDA":
        return proj + 2 * N * C * N / interval ** 2, N * N / interval ** 2
    if mechanism == "LaViT LA":
        return 2 * N * C * C + 2 * heads * N ** 3 + N * N * C, N * N
    raise ValueError(f"mechanism must be one of {COST_MECHANISMS}; got mechanism={mechanism!r}")


_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot", "solid", "dash")


def cost_figure(sides=None, mechanisms=COST_MECHANISMS, *, mark: int | None = None, **params) -> go.Figure:
    """MACs and attention memory per layer against map side, log-log, one line per mechanism.

    ``sides``: map sides (default 8 ... 256); ``params`` go to ``cost`` (channels, heads, kernel,
    block, grid, group, interval); ``mark``: a side to mark with a vertical line.

    >>> fig = cost_figure([8, 16, 32], mechanisms=("global", "NA / DiNAT"))
    >>> len(fig.data), fig.layout.xaxis.type, fig.layout.yaxis.type
    (4, 'log', 'log')
    """
    sides = list(range(8, 257, 8)) if sides is None else list(sides)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("MACs per layer", "attention entries per head"))
    for n, name in enumerate(mechanisms):
        macs, mem = zip(*(cost(name, s, **params) for s in sides))
        style = dict(color=(OKABE_ITO + ("#000000",))[n % 8], dash=_DASHES[n % len(_DASHES)], width=2)
        fig.add_trace(go.Scatter(x=sides, y=macs, name=name, legendgroup=name, line=style,
                                 hovertemplate=name + ": side %{x}, %{y:.3s} MACs<extra></extra>"), 1, 1)
        fig.add_trace(go.Scatter(x=sides, y=mem, name=name, legendgroup=name, line=style, showlegend=False,
                                 hovertemplate=name + ": side %{x}, %{y:.3s} entries<extra></extra>"), 1, 2)
    fig.update_xaxes(type="log", title="map side (H = W)")
    fig.update_yaxes(type="log")
    if mark is not None:
        for col in (1, 2):
            fig.add_vline(x=mark, line=dict(color="#7F7F7F", dash="dot"), row=1, col=col)
    p = {"channels": 64, "heads": 4, **params}
    fig.update_layout(title=dict(text=f"Cost per attention layer (C={p['channels']}, heads={p['heads']})", x=0.5),
                      height=420, width=900, plot_bgcolor="white", margin=dict(l=50, r=20, t=70, b=50))
    return fig


# ---------------------------------------------------------------------------------------------
# captured attention and receptive fields
# ---------------------------------------------------------------------------------------------
SCALES = ("local", "shared")  # colour scale of attention weights: each head its own, or one for all heads
ATTENTION_TRACES = ("photo", "weights", "query")  # trace order of query_map_figure with an image
HEADS_TRACES = ("heads", "query")  # trace order of heads_figure
_QUERY_MARKER = dict(symbol="x-thin", size=12, line=dict(width=3, color="white"))


def grey(image) -> np.ndarray:
    """An image ``[3, S, S]`` in ``[0, 1]`` (tensor or array) as grey ``uint8 [S, S, 3]`` for ``go.Image``.

    Luma ``0.299 R + 0.587 G + 0.114 B``: under a heatmap only the weights carry colour.

    >>> grey(np.ones((3, 2, 2))).shape, int(grey(np.ones((3, 2, 2))).max())
    ((2, 2, 3), 255)
    """
    x = np.asarray(image, dtype=float)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"image must be [3, H, W] with values in [0, 1]; got shape {x.shape}")
    luma = np.clip(np.round((0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]) * 255), 0, 255).astype(np.uint8)
    return np.repeat(luma[:, :, None], 3, axis=2)


def _check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}; got scale={scale!r}")


def _head_maps(record, i: int, j: int, batch: int = 0) -> np.ndarray:
    """``[heads, H, W]``: ``record.query_map(i, j, head=h)`` of every captured head (NaN: no key there)."""
    return np.stack([record.query_map(i, j, head=h, batch=batch).float().numpy() for h in record.heads])


def _peak(m: np.ndarray) -> float:
    """The largest weight of a map (1 if it has none), for the top of a colour scale."""
    finite = m[np.isfinite(m)]
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def query_map_traces(record, i: int, j: int, head: int | None = None, batch: int = 0, *,
                     image_size: int | None = None, scale: str = "local"):
    """The part of ``query_map_figure`` that follows the query: ``(weights heatmap, query marker)``.

    ``image_size``: draw on an ``image_size x image_size`` picture (cells stretched over the
    pixels they cover: a cell of an ``H x W`` map is ``image_size / H`` pixels high), else on the
    map's own grid. ``scale="local"``: the colour runs from 0 to this map's largest weight;
    ``"shared"``: to the largest weight of any captured head for this query.

    >>> import torch; from vizattn import probe; from vizattn.layers import BlockAttention
    >>> layer = BlockAttention(dim=8, heads=2, size=2)
    >>> with probe(layer) as rec:
    ...     _ = layer(torch.randn(1, 4, 4, 8))
    >>> weights, query = query_map_traces(rec[0], 1, 2, head=0, image_size=64)
    >>> weights.dx, weights.x0, list(query.x), list(query.y)       # a cell is 16 pixels wide
    (16.0, 7.5, [39.5], [23.5])
    """
    _check_scale(scale)
    m = record.query_map(i, j, head=head, batch=batch).float().numpy()
    H, W = m.shape
    sh, sw = (1.0, 1.0) if image_size is None else (image_size / H, image_size / W)
    zmax = _peak(m) if scale == "local" else _peak(_head_maps(record, i, j, batch))
    weights = go.Heatmap(z=_gaps(m), x0=(sw - 1) / 2, dx=sw, y0=(sh - 1) / 2, dy=sh, colorscale="Viridis", zmin=0,
                         zmax=zmax, name="weights", opacity=0.8 if image_size else 1,
                         colorbar=dict(title="weight", len=0.8, thickness=14),
                         hovertemplate="weight %{z:.3f}<extra></extra>")
    query = go.Scatter(x=[(j + 0.5) * sw - 0.5], y=[(i + 0.5) * sh - 0.5], mode="markers", name="query",
                       hoverinfo="skip", marker=_QUERY_MARKER)
    return weights, query


def query_map_title(record, i: int, j: int, head: int | None = None) -> str:
    """The title of ``query_map_figure``: layer, query, head, and the weight on zero padding if any."""
    heads = "mean of heads" if head is None else f"head {head}"
    outside = record.outside_mass(i, j, head=head)
    note = f"; {outside:.3f} on zero padding" if outside > 0 else ""
    return f"{record.name or record.kind}: query ({i}, {j}), {heads}{note}"


def query_map_figure(record, i: int, j: int, head: int | None = None, batch: int = 0, *, image=None,
                     scale: str = "local", title: str | None = None) -> go.Figure:
    """Heatmap of where query ``(i, j)`` of an ``AttentionRecord`` looks; transparent where it cannot.

    Without ``image``: traces ``weights`` and ``query`` on the layer's own ``H x W`` grid. With
    ``image`` (``[3, S, S]`` in [0, 1], the picture the model saw): traces ``ATTENTION_TRACES``,
    the picture in grey underneath and every cell stretched over the ``S / H`` pixels it covers,
    axes in image pixels. ``scale``: see ``query_map_traces``.

    >>> import torch; from vizattn import probe; from vizattn.layers import NeighborhoodAttention
    >>> layer = NeighborhoodAttention(dim=8, heads=2, kernel_size=3)
    >>> with probe(layer) as rec:
    ...     _ = layer(torch.randn(1, 5, 5, 8))
    >>> int(np.isfinite(np.asarray(query_map_figure(rec[0], 0, 0).data[0].z, dtype=float)).sum())
    9
    >>> [t.name for t in query_map_figure(rec[0], 0, 0, image=torch.rand(3, 10, 10)).data]
    ['photo', 'weights', 'query']
    """
    H, W = record.size
    S = None if image is None else grey(image).shape[0]
    traces = list(query_map_traces(record, i, j, head=head, batch=batch, image_size=S, scale=scale))
    if image is not None:
        traces.insert(0, go.Image(z=grey(image), name="photo", hoverinfo="skip"))
    side_h, side_w = (H, W) if S is None else (S, S)
    fig = go.Figure(traces)
    unit = "cell" if S is None else "image pixel"
    fig.update_layout(
        title=dict(text=title or query_map_title(record, i, j, head), x=0.5, font=dict(size=13)),
        plot_bgcolor=OUTSIDE_COLOUR, width=470, height=470, showlegend=False, margin=dict(l=50, r=20, t=50, b=50),
        xaxis=dict(range=[-0.5, side_w - 0.5], constrain="domain", showgrid=False, zeroline=False,
                   title=f"column ({unit})"),
        yaxis=dict(range=[side_h - 0.5, -0.5], scaleanchor="x", constrain="domain", showgrid=False,
                   zeroline=False, title=f"row ({unit})", autorange=False),
    )
    return fig


def query_maps_figure(panels: dict, image, *, columns: int | None = None, title: str | None = None) -> go.Figure:
    """Several query maps over a photo, side by side (mean of heads, each panel coloured from 0 to
    its own largest weight, transparent where the query cannot look).

    ``panels``: title -> ``(record, (i, j))``, a query on that record's own map, or
    ``(record, (i, j), image)`` for a panel on another picture; ``image``: ``[3, S, S]`` in
    [0, 1], the picture the models saw. ``columns`` per row (default: all panels in one row).

    >>> import torch; from vizattn import probe; from vizattn.layers import BlockAttention, GridAttention
    >>> x, layers = torch.randn(1, 4, 4, 8), {"block": BlockAttention(8, 2, size=2), "grid": GridAttention(8, 2, size=2)}
    >>> with probe(torch.nn.ModuleDict(layers)) as rec:
    ...     _ = [layer(x) for layer in layers.values()]
    >>> fig = query_maps_figure({"block": (rec["block"], (0, 0)), "grid": (rec["grid"], (0, 0))}, torch.rand(3, 8, 8))
    >>> [t.name for t in fig.data]
    ['photo', 'weights', 'query', 'photo', 'weights', 'query']
    """
    columns = columns or len(panels)
    rows = math.ceil(len(panels) / columns)
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=list(panels), horizontal_spacing=0.015,
                        vertical_spacing=0.07)
    for n, (record, (i, j), *own) in enumerate(panels.values()):
        picture = grey(own[0] if own else image)
        weights, query = query_map_traces(record, i, j, image_size=picture.shape[0])
        weights.update(showscale=False)
        for trace in (go.Image(z=picture, name="photo", hoverinfo="skip"), weights, query):
            fig.add_trace(trace, n // columns + 1, n % columns + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, width=min(220 * columns, 1100) + 20, height=220 * rows + 90, showlegend=False,
                      margin=dict(l=10, r=10, t=70, b=10))
    return fig


def animate_query_maps(record, head: int | None = None, *, image=None, scale: str = "local", queries=None,
                       duration: int = 300) -> go.Figure:
    """``query_map_figure`` with one animation frame per query (default: every token row by row,
    thinned to at most 256 frames); renders without a kernel.

    >>> import torch; from vizattn import probe; from vizattn.layers import BlockAttention
    >>> layer = BlockAttention(dim=8, heads=2, size=2)
    >>> with probe(layer) as rec:
    ...     _ = layer(torch.randn(1, 4, 4, 8))
    >>> fig = animate_query_maps(rec[0], head=1)
    >>> len(fig.frames), fig.frames[5].name
    (16, '(1, 1)')
    """
    H, W = record.size
    if queries is None:
        step = max(1, math.ceil(math.sqrt(H * W / 256)))
        queries = [(i, j) for i in range(0, H, step) for j in range(0, W, step)]
    S = None if image is None else grey(image).shape[0]
    moving = [1, 2] if image is not None else [0, 1]
    frames = [go.Frame(data=list(query_map_traces(record, i, j, head=head, image_size=S, scale=scale)),
                       traces=moving, name=str((i, j)),
                       layout=dict(title=dict(text=query_map_title(record, i, j, head))))
              for i, j in queries]
    fig = query_map_figure(record, *queries[0], head=head, image=image, scale=scale)
    fig.frames = frames
    fig.update_layout(**_player(frames, "query ", duration), height=fig.layout.height + 110)
    return fig


def _tile(index: int, count: int, H: int, W: int) -> tuple[int, int]:
    """Top-left ``(row, col)`` of tile ``index`` in a mosaic of ``count`` ``H x W`` maps, 4 per row, 1-cell gaps."""
    per_row = min(count, 4)
    return (index // per_row) * (H + 1), (index % per_row) * (W + 1)


def heads_traces(record, i: int, j: int, batch: int = 0, *, scale: str = "local"):
    """The part of ``heads_figure`` that follows the query: ``(mosaic heatmap, query markers)``.

    ``scale="local"``: each head's map divided by its own largest weight (colour 0 ... 1);
    ``"shared"``: the weights themselves, one colour scale for all heads. Hover shows the weight.
    """
    _check_scale(scale)
    maps = _head_maps(record, i, j, batch)  # [heads, H, W]
    n, H, W = maps.shape
    rows, cols = _tile(n - 1, n, H, W)[0] + H, min(n, 4) * (W + 1) - 1
    z, raw = np.full((rows, cols), np.nan), np.full((rows, cols), np.nan)
    qx, qy = [], []
    for h, m in enumerate(maps):
        r0, c0 = _tile(h, n, H, W)
        raw[r0:r0 + H, c0:c0 + W] = m
        z[r0:r0 + H, c0:c0 + W] = m / _peak(m) if scale == "local" else m
        qx.append(c0 + j)
        qy.append(r0 + i)
    zmax = 1.0 if scale == "local" else _peak(maps)
    label = "weight ÷ head's largest" if scale == "local" else "weight"
    mosaic = go.Heatmap(z=_gaps(z), customdata=_gaps(raw), x=np.arange(cols), y=np.arange(rows), zmin=0, zmax=zmax,
                        colorscale="Viridis", name="heads",
                        colorbar=dict(title=dict(text=label, side="right"), len=0.8, thickness=12),
                        hovertemplate="weight %{customdata:.3f}<extra></extra>")
    query = go.Scatter(x=qx, y=qy, mode="markers", name="query", hoverinfo="skip",
                       marker=dict(_QUERY_MARKER, size=8, line=dict(width=2, color="white")))
    return mosaic, query


def head_of_cell(record, row: int, col: int) -> int | None:
    """The head whose tile of ``heads_figure`` holds mosaic cell ``(row, col)``; None in a gap.

    >>> class R: heads, size = (0, 1, 2, 3, 4), (2, 2)
    >>> head_of_cell(R, 0, 4), head_of_cell(R, 3, 1), head_of_cell(R, 2, 0)
    (1, 4, None)
    """
    n, (H, W) = len(record.heads), record.size
    r, c = divmod(row, H + 1), divmod(col, W + 1)
    index = r[0] * min(n, 4) + c[0]
    if row < 0 or col < 0 or r[1] >= H or c[1] >= W or c[0] >= min(n, 4) or index >= n:
        return None
    return record.heads[index]


def head_shapes(record, head: int) -> list:
    """The layout shapes of ``heads_figure``: a pale backdrop under every tile (the map a head could
    look at) and an outline around the tile of ``head``."""
    H, W = record.size
    n = len(record.heads)
    tiles = [_tile(k, n, H, W) for k in range(n)]
    shapes = [dict(_rect(r0, r0 + H - 1, c0, c0 + W - 1, name="tile", width=0), fillcolor=OUTSIDE_COLOUR,
                   layer="below") for r0, c0 in tiles]
    r0, c0 = tiles[record.heads.index(head)]
    return shapes + [_rect(r0, r0 + H - 1, c0, c0 + W - 1, name="selected head", color="#D55E00", width=3)]


def heads_figure(record, i: int, j: int, selected: int = 0, batch: int = 0, *, scale: str = "local") -> go.Figure:
    """Thumbnails of every captured head's map for query ``(i, j)``: one mosaic heatmap, 4 heads per row.

    Traces ``HEADS_TRACES``: the mosaic (NaN gaps between tiles and where a head cannot look)
    and the query marked in every tile; an outline marks head ``selected``.

    >>> import torch; from vizattn import probe; from vizattn.layers import BlockAttention
    >>> layer = BlockAttention(dim=8, heads=2, size=2)
    >>> with probe(layer) as rec:
    ...     _ = layer(torch.randn(1, 4, 4, 8))
    >>> fig = heads_figure(rec[0], 0, 0, selected=1)
    >>> np.asarray(fig.data[0].z, dtype=float).shape, [a.text for a in fig.layout.annotations]
    ((4, 9), ['head 0', 'head 1'])
    """
    H, W = record.size
    mosaic, query = heads_traces(record, i, j, batch, scale=scale)
    n = len(record.heads)
    labels = []
    for k, h in enumerate(record.heads):
        r0, c0 = _tile(k, n, H, W)
        labels.append(dict(text=f"head {h}", x=c0 + (W - 1) / 2, y=r0 - 0.5, yanchor="bottom", showarrow=False,
                           font=dict(size=11)))
    rows, cols = np.asarray(mosaic.z, dtype=float).shape
    cell = max(4, min(20, 300 // cols))
    fig = go.Figure([mosaic, query])
    fig.update_layout(
        title=dict(text=f"{record.name or record.kind}: every head, query ({i}, {j})", x=0.5, font=dict(size=13)),
        shapes=head_shapes(record, selected), annotations=labels, plot_bgcolor="white", showlegend=False,
        width=cell * cols + 170, height=cell * rows + 40 * (rows // (H + 1) + 1) + 80,
        margin=dict(l=20, r=20, t=60, b=20),
        xaxis=dict(range=[-0.5, cols - 0.5], visible=False, constrain="domain"),
        yaxis=dict(range=[rows - 0.5, -0.5], visible=False, scaleanchor="x", constrain="domain"),
    )
    return fig


def field_z(mask):
    """A boolean field ``[H, W]`` as heatmap data: 1 where it is set, a gap (None) elsewhere.

    >>> field_z(np.eye(2, dtype=bool))
    [[1.0, None], [None, 1.0]]
    """
    m = np.asarray(mask, dtype=float)
    m[m == 0] = np.nan
    return _gaps(m)


def _field_trace(mask) -> go.Heatmap:
    """A boolean field ``[H, W]`` as a heatmap: blue where it is set, a gap elsewhere."""
    H, W = mask.shape
    return go.Heatmap(z=field_z(mask), x=np.arange(W), y=np.arange(H), colorscale=[[0, "#0072B2"], [1, "#0072B2"]],
                      showscale=False, zmin=0, zmax=1, name="field", hovertemplate="row %{y}, col %{x}<extra></extra>")


def _extent(mask) -> str:
    """``"hxw"``: the bounding box of a boolean field (``"0x0"`` when empty)."""
    rows, cols = np.nonzero(np.asarray(mask))
    if rows.size == 0:
        return "0x0"
    return f"{rows.max() - rows.min() + 1}x{cols.max() - cols.min() + 1}"


def receptive_figure(field, title: str | None = None) -> go.Figure:
    """A ``TheoreticalField`` (``vizattn.receptive``) on the input map, one animation frame per depth.

    Frame ``s`` shows the positions that reach the output position through the last ``s`` steps
    (frame 0: the position itself, on the input map's grid only when no step changes the size;
    otherwise the field of each depth is drawn on its own map). Frames are labelled with the
    field's extent: the height x width of the box it covers at that depth.

    >>> from vizattn.receptive import theoretical; from vizattn.patterns import Neighborhood
    >>> fig = receptive_figure(theoretical([Neighborhood(3)] * 3, size=9, position=(4, 4)))
    >>> len(fig.frames), len(cells(fig.frames[-1].data[0])), [s.label for s in fig.layout.sliders[0].steps]
    (3, 49, ['3x3', '5x5', '7x7'])
    """
    masks = [m.numpy() for m in reversed(field.masks)]  # the last step first: the field grows with depth
    names = list(reversed(field.names))
    frames = [go.Frame(data=[_field_trace(m)], name=str(s + 1),
                       layout=dict(title=dict(text=f"depth {s + 1} ({names[s]}): a {_extent(m)} field, "
                                                   f"{int(m.sum())} positions")))
              for s, m in enumerate(masks)]
    H, W = masks[-1].shape
    fig = go.Figure(data=frames[0].data, frames=frames)
    fig.update_layout(
        title=dict(text=title or frames[0].layout.title.text, x=0.5), plot_bgcolor=OUTSIDE_COLOUR,
        width=520, height=670, showlegend=False,
        xaxis=dict(range=[-0.5, W - 0.5], constrain="domain", showgrid=False, zeroline=False),
        yaxis=dict(range=[H - 0.5, -0.5], scaleanchor="x", constrain="domain", showgrid=False, zeroline=False),
        **_player(frames, "field ", labels=[_extent(m) for m in masks]),
    )
    return fig


_SQUARE_DASHES = ("solid", "dash", "dot", "dashdot")


def effective_parts(erf, axis: str = "") -> dict:
    """What ``effective_figure`` draws for an ``EffectiveField``: heatmap ``z`` (log10 of each input
    position's share of the gradient, a gap where it is 0), ``zmin``/``zmax`` (four decades below
    the peak), ``shapes`` (the squares of ``erf.sides`` on axes ``x{axis}``/``y{axis}``, centred
    as ``vizattn.receptive.effective`` measures them) and a one-line ``caption``.

    >>> import torch; from vizattn.receptive import EffectiveField
    >>> m = torch.zeros(5, 5); m[2, 2], m[2, 3] = 0.9, 0.1
    >>> parts = effective_parts(EffectiveField(m, {0.5: 1, 0.99: 3}, "attn", (2, 2), (2, 2)))
    >>> parts["caption"], [(s["x0"], s["x1"]) for s in parts["shapes"]]
    ('50% of the gradient within 1x1, 99% within 3x3', [(1.5, 2.5), (0.5, 3.5)])
    """
    m = np.asarray(erf.map, dtype=float)
    H, W = m.shape
    with np.errstate(divide="ignore"):
        z = np.where(m > 0, np.log10(np.where(m > 0, m, 1)), np.nan)
    zmax = float(np.nanmax(z)) if np.isfinite(z).any() else 0.0
    ci, cj = erf.centre
    shapes = []
    for k, (f, s) in enumerate(sorted(erf.sides.items())):
        r0, r1 = max(ci - (s - 1) // 2, 0), min(ci + s // 2, H - 1)
        c0, c1 = max(cj - (s - 1) // 2, 0), min(cj + s // 2, W - 1)
        shapes.append(dict(_rect(r0, r1, c0, c1, name=f"{f:.0%}", color="#D55E00", width=2,
                                 dash=_SQUARE_DASHES[k % len(_SQUARE_DASHES)]), xref=f"x{axis}", yref=f"y{axis}"))
    caption = ", ".join(f"{f:.0%}{' of the gradient' if k == 0 else ''} within {s}x{s}"
                        for k, (f, s) in enumerate(sorted(erf.sides.items())))
    note = dict(text=caption, showarrow=False, xref="paper", yref="paper", x=0.5, y=0, yanchor="top", yshift=-30,
                font=dict(size=12))
    return dict(z=_gaps(z), zmin=zmax - 4, zmax=zmax, shapes=shapes, caption=caption, annotations=[note])


def _effective_trace(parts: dict) -> go.Heatmap:
    z = parts["z"]
    H, W = np.asarray(z, dtype=float).shape
    return go.Heatmap(z=z, x=np.arange(W), y=np.arange(H), zmin=parts["zmin"], zmax=parts["zmax"],
                      colorscale="Viridis", name="effective", colorbar=dict(title="log10 share", len=0.8, thickness=12),
                      hovertemplate="row %{y}, col %{x}<br>log10 share %{z:.2f}<extra></extra>")


def effective_figure(erf, title: str | None = None) -> go.Figure:
    """An ``EffectiveField`` (``vizattn.receptive.effective``): log10 of each input position's share of
    the gradient (gaps: no gradient at all) and the squares holding 20/50/99% of it (dashed outlines).

    >>> import torch; from vizattn.receptive import EffectiveField
    >>> m = torch.zeros(5, 5); m[2, 2], m[2, 3] = 0.9, 0.1
    >>> fig = effective_figure(EffectiveField(m, {0.5: 1, 0.99: 3}, "attn", (2, 2), (2, 2)))
    >>> int(np.isfinite(np.asarray(fig.data[0].z, dtype=float)).sum()), len(fig.layout.shapes)
    (2, 2)
    """
    parts = effective_parts(erf)
    H, W = np.asarray(erf.map).shape
    fig = go.Figure([_effective_trace(parts)])
    fig.update_layout(
        title=dict(text=title or f"effective field of {erf.layer} at {erf.position}", x=0.5, font=dict(size=13)),
        shapes=parts["shapes"], annotations=parts["annotations"], plot_bgcolor=OUTSIDE_COLOUR, width=500,
        height=520, showlegend=False,
        margin=dict(l=40, r=20, t=50, b=70),
        xaxis=dict(range=[-0.5, W - 0.5], constrain="domain", showgrid=False, zeroline=False),
        yaxis=dict(range=[H - 0.5, -0.5], scaleanchor="x", constrain="domain", showgrid=False, zeroline=False),
    )
    return fig


def receptive_depths_figure(fields, effective=None, *, title: str | None = None) -> go.Figure:
    """Stacks of growing depth side by side: the theoretical field (left) and, with ``effective``,
    the effective one (right), one animation frame per depth.

    ``fields[d]``: the ``TheoreticalField`` of a stack of ``d + 1`` layers (its input map is
    drawn); ``effective[d]``: the ``EffectiveField`` of the same stack. Frames are labelled with
    the theoretical field's extent.

    >>> from vizattn.receptive import theoretical; from vizattn.patterns import Neighborhood
    >>> fields = [theoretical([Neighborhood(3)] * d, size=9, position=(4, 4)) for d in (1, 2)]
    >>> fig = receptive_depths_figure(fields)
    >>> [f.name for f in fig.frames], [s.label for s in fig.layout.sliders[0].steps]
    (['1', '2'], ['3x3', '5x5'])
    """
    both = effective is not None
    frames = []
    for d, field in enumerate(fields):
        mask = field.input.numpy()
        data, shapes = [_field_trace(mask)], []
        texts = [f"theoretical: a {_extent(mask)} field, {int(mask.sum())} positions"]
        if both:
            parts = effective_parts(effective[d], axis="2")
            data.append(_effective_trace(parts))
            shapes, texts = parts["shapes"], texts + [f"effective: {parts['caption']}"]
        frames.append(go.Frame(data=data, name=str(d + 1), layout=dict(shapes=shapes, annotations=[
            dict(text=t, x=(0.22 if both else 0.5) + 0.56 * k, y=1.0, xref="paper", yref="paper", yanchor="bottom",
                 showarrow=False, font=dict(size=12)) for k, t in enumerate(texts)])))
    H, W = fields[-1].input.shape
    fig = make_subplots(rows=1, cols=2 if both else 1, horizontal_spacing=0.12)
    for k, trace in enumerate(frames[0].data):
        fig.add_trace(trace, row=1, col=k + 1)
    fig.frames = frames
    fig.update_xaxes(range=[-0.5, W - 0.5], constrain="domain", showgrid=False, zeroline=False)
    fig.update_yaxes(range=[H - 0.5, -0.5], constrain="domain", showgrid=False, zeroline=False)
    for k in range(2 if both else 1):
        fig.layout[f"yaxis{k + 1 if k else ''}"].scaleanchor = f"x{k + 1 if k else ''}"
    fig.update_layout(title=dict(text=title or "Receptive field by depth", x=0.5), plot_bgcolor=OUTSIDE_COLOUR,
                      shapes=frames[0].layout.shapes, annotations=frames[0].layout.annotations,
                      width=1000 if both else 520, height=640, showlegend=False,
                      **_player(frames, "field ", labels=[_extent(f.input.numpy()) for f in fields]))
    return fig


# ---------------------------------------------------------------------------------------------
# LaViT: reuse chains, per-layer measures, saturation
# ---------------------------------------------------------------------------------------------
def reuse_chain_maps(columns, head: int) -> tuple[list, float, list[str]]:
    """What ``reuse_chain_figure`` draws for one head: ``(z, colour top, subplot titles)``.

    ``z``: two maps per column (used, then vanilla; a single gap where there is no vanilla map) as
    nested lists with None for gaps; the colour top is the 99th percentile of the weights shown (a
    few large weights would leave every other one dark).
    """
    zs, shown = [], []
    for c in columns:
        for key in ("used", "vanilla"):
            m = c.get(key)
            z = np.full((1, 1), np.nan) if m is None else np.asarray(m[head], dtype=float)
            if m is not None:
                shown.append(z.ravel())
            zs.append(_gaps(z))
    peak = float(np.percentile(np.concatenate(shown), 99)) if shown else 0.0
    top = [c["label"] for c in columns]
    bottom = [" " if c.get("vanilla") is None else
              f"a vanilla layer here (TV {float(np.asarray(c['distance'])[head]):.2f})" for c in columns]
    return zs, peak or 1.0, top + bottom


def chain_axes(N: int, columns: int) -> dict:
    """Layout axes of ``reuse_chain_figure`` for ``N`` tokens: every subplot shows the whole ``N x N`` map."""
    axes = {}
    for k in range(1, 2 * columns + 1):
        suffix = str(k) if k > 1 else ""
        axes[f"xaxis{suffix}"] = dict(range=[-0.5, N - 0.5])
        axes[f"yaxis{suffix}"] = dict(range=[N - 0.5, -0.5])
    return axes


def reuse_chain_figure(columns, head: int = 0, *, title: str | None = None, frames: bool = False) -> go.Figure:
    """LaViT's reuse chain of one stage: the attention each layer uses (top row) and, under each
    less-attention layer, what a vanilla layer would compute there (bottom row), for one head.

    ``columns``: one dict per layer, in call order, with ``label`` (a title), ``used``
    (probabilities ``[heads, N, N]``, query rows, key columns) and optionally ``vanilla`` (same
    shape) and ``distance`` (``[heads]``, e.g. ``metrics.reuse_distance``, shown as TV). Traces:
    two heatmaps per column (used, vanilla), one shared colour scale (0 to the 99th percentile of
    the weights shown). ``frames=True`` adds one animation frame per head.

    >>> import torch
    >>> eye = torch.eye(4).expand(2, 4, 4)
    >>> cols = [dict(label="VA", used=eye), dict(label="LA", used=eye, vanilla=eye.flip(-1), distance=[0.0, 0.5])]
    >>> fig = reuse_chain_figure(cols, head=1, frames=True)
    >>> len(fig.data), len(fig.frames), fig.layout.annotations[3].text
    (4, 2, 'a vanilla layer here (TV 0.50)')
    """
    n = len(columns)
    heads = {int(np.asarray(c["used"]).shape[0]) for c in columns}
    if len(heads) != 1 or not 0 <= head < min(heads):
        raise ValueError(f"every column needs the same heads and head must index them; got heads {sorted(heads)}, "
                         f"head={head}")
    zs, peak, titles = reuse_chain_maps(columns, head)
    fig = make_subplots(rows=2, cols=n, subplot_titles=titles, horizontal_spacing=0.04, vertical_spacing=0.12)
    for k, z in enumerate(zs):
        name = f"{columns[k // 2]['label']} {('used', 'vanilla')[k % 2]}"
        fig.add_trace(go.Heatmap(z=z, coloraxis="coloraxis", name=name,
                                 hovertemplate="query %{y}, key %{x}<br>weight %{z:.3f}<extra></extra>"),
                      row=k % 2 + 1, col=k // 2 + 1)
    for a in fig.layout.annotations:
        a.font = dict(size=11)
    N = int(np.asarray(columns[0]["used"]).shape[-1])
    fig.update_xaxes(constrain="domain", showgrid=False, zeroline=False)
    fig.update_yaxes(constrain="domain", showgrid=False, zeroline=False)
    fig.update_layout(chain_axes(N, n))
    for k in range(2 * n):
        fig.layout[f"yaxis{k + 1 if k else ''}"].scaleanchor = f"x{k + 1 if k else ''}"
    for c, column in enumerate(columns):
        if column.get("vanilla") is None:  # a VA layer computes its own QK^T: nothing to compare with
            fig.update_xaxes(visible=False, row=2, col=c + 1)
            fig.update_yaxes(visible=False, row=2, col=c + 1)
    fig.update_xaxes(title="key token", row=1, col=1)
    fig.update_yaxes(title="query token", row=1, col=1)
    fig.update_layout(title=dict(text=title or f"LaViT reuse chain, head {head}", x=0.5),
                      coloraxis=dict(colorscale="Viridis", cmin=0, cmax=peak,
                                     colorbar=dict(title=dict(text="weight (top: 99th percentile)", side="right"))),
                      width=250 * n + 160, height=620, plot_bgcolor="white", margin=dict(l=60, r=20, t=80, b=50))
    if frames:
        frames_ = []
        for h in range(min(heads)):
            zs, peak, titles = reuse_chain_maps(columns, h)
            frames_.append(go.Frame(data=[go.Heatmap(z=z) for z in zs], traces=list(range(2 * n)), name=str(h),
                                    layout=dict(coloraxis=dict(cmax=peak), annotations=[
                                        dict(a.to_plotly_json(), text=t) for a, t in zip(fig.layout.annotations, titles)])))
        fig.frames = frames_
        fig.update_layout(**_player(frames_, "head "), height=fig.layout.height + 110)
    return fig


def stage_shade(layers, stage) -> list:
    """The layout shapes ``layer_measures_figure`` shades ``stage`` with (none for None)."""
    idx = [k for k, r in enumerate(layers) if r["stage"] == stage]
    if stage is None or not idx:
        return []
    return [dict(type="rect", xref="x", yref="paper", x0=min(idx) - 0.5, x1=max(idx) + 0.5, y0=0, y1=1,
                 fillcolor="rgba(0,0,0,0.07)", line=dict(width=0), layer="below", name="stage")]


def layer_measures_figure(layers, highlight=None) -> go.Figure:
    """Diagonality and symmetry error per attention layer (``vizattn.metrics``), with the vanilla counterpart.

    ``layers``: one dict per layer in call order with ``name``, ``kind``, ``stage``,
    ``diagonality``, ``symmetry`` and, for less-attention layers, ``vanilla_diagonality`` and
    ``vanilla_symmetry`` (numbers; None where there is none). ``highlight``: a stage to shade.
    Traces: diagonality, symmetry error (filled markers), the same for the vanilla counterpart
    (open markers).

    >>> rows = [dict(name="a", kind="vanilla", stage=0, diagonality=0.2, symmetry=0.5),
    ...         dict(name="b", kind="less", stage=0, diagonality=0.4, symmetry=0.3,
    ...              vanilla_diagonality=0.1, vanilla_symmetry=0.6)]
    >>> [t.name for t in layer_measures_figure(rows, highlight=0).data]
    ['diagonality', 'symmetry error', 'diagonality (vanilla here)', 'symmetry error (vanilla here)']
    """
    x = [f"{r['name']} ({'VA' if r['kind'] == 'vanilla' else 'LA' if r['kind'] == 'less' else r['kind']})"
         for r in layers]
    fig = go.Figure()
    for key, colour, dash in [("diagonality", "#0072B2", "solid"), ("symmetry", "#D55E00", "dash")]:
        label = "diagonality" if key == "diagonality" else "symmetry error"
        fig.add_trace(go.Scatter(x=x, y=[r[key] for r in layers], name=label, mode="lines+markers",
                                 line=dict(color=colour, dash=dash), marker=dict(size=9)))
    for key, colour in [("vanilla_diagonality", "#0072B2"), ("vanilla_symmetry", "#D55E00")]:
        label = ("diagonality" if key == "vanilla_diagonality" else "symmetry error") + " (vanilla here)"
        fig.add_trace(go.Scatter(x=x, y=[r.get(key) for r in layers], name=label, mode="markers",
                                 marker=dict(size=11, symbol="circle-open", color=colour, line=dict(width=2))))
    shapes = stage_shade(layers, highlight)
    fig.update_layout(title=dict(text="Diagonality, symmetry error (mean of heads)", x=0.5), shapes=shapes,
                      yaxis=dict(title="share of mass / error", range=[0, 1.05]), width=500, height=440,
                      plot_bgcolor="white", legend=dict(orientation="h", y=-0.35), margin=dict(l=60, r=20, t=60, b=140))
    return fig


def saturation_figure(curves) -> go.Figure:
    """Attention saturation: similarity of consecutive layers (``metrics.saturation``), one line per model.

    ``curves``: ``{label: values}``, value ``l`` compares layer ``l + 1`` with layer ``l`` (NaN:
    the maps differ in size, a gap in the line).

    >>> [t.name for t in saturation_figure({"ViT": [0.9, 0.95], "LaViT": [0.99, float("nan")]}).data]
    ['ViT', 'LaViT']
    """
    fig = go.Figure()
    for n, (label, values) in enumerate(curves.items()):
        values = [None if v is None or v != v else float(v) for v in values]
        fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=values, name=label, mode="lines+markers",
                                 line=dict(color=(OKABE_ITO[4], OKABE_ITO[5], OKABE_ITO[2])[n % 3],
                                           dash=_DASHES[n % len(_DASHES)]),
                                 hovertemplate=label + ": layer %{x} vs the one before: %{y:.3f}<extra></extra>"))
    fig.update_layout(title=dict(text="Saturation: similarity of consecutive layers", x=0.5),
                      xaxis=dict(title="layer l compared with layer l - 1", dtick=1),
                      yaxis=dict(title="cosine similarity", range=[0, 1.05]), width=440, height=440,
                      plot_bgcolor="white", margin=dict(l=60, r=20, t=60, b=60))
    return fig


def _player(frames, prefix: str, duration: int = 400, labels=None) -> dict:
    """Layout for an animation below the plot: a play/pause pair left of a frame slider.

    Both hang ``below`` pixels under the plot area, clear of the axis title and the caption.
    ``labels``: the slider's label of each frame (default: the frame's name).
    """
    below = 90
    menu = dict(type="buttons", direction="left", showactive=False, x=0, y=0, xanchor="left", yanchor="top",
                pad=dict(t=below + 10, r=10), buttons=[
                    dict(label="play", method="animate",
                         args=[None, dict(frame=dict(duration=duration, redraw=True), fromcurrent=True,
                                          mode="immediate")]),
                    dict(label="pause", method="animate",
                         args=[[None], dict(frame=dict(duration=0, redraw=False), mode="immediate")])])
    labels = [f.name for f in frames] if labels is None else labels
    steps = [dict(method="animate", label=label,
                  args=[[f.name], dict(mode="immediate", frame=dict(duration=0, redraw=True))])
             for f, label in zip(frames, labels)]
    slider = dict(steps=steps, currentvalue=dict(prefix=prefix), x=0.3, len=0.7, y=0, yanchor="top",
                  pad=dict(t=below), font=dict(size=9), ticklen=0 if len(frames) > 12 else 4)
    return dict(updatemenus=[menu], sliders=[slider], margin=dict(b=below + 110))


def animate_queries(pattern: Pattern, H: int, W: int | None = None, queries=None, duration: int = 300) -> go.Figure:
    """``partition_figure`` with one animation frame per query (default: every token row by row,
    thinned to at most 256 frames); renders without a kernel.

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
    moving = [TRACES.index(n) for n in ("keys", "slots", "query")]
    frames = [go.Frame(data=[f.data[k] for k in moving], traces=moving, name=str(q),
                       layout=dict(shapes=f.layout.shapes, annotations=f.layout.annotations))
              for q, f in zip(queries, figs)]
    fig = go.Figure(figs[0].data, figs[0].layout, frames=frames)
    fig.update_layout(**_player(frames, "query ", duration), height=fig.layout.height + 110)
    return fig
