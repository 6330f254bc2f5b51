"""Captured attention (``vizattn.probe`` records) as figures: where a query looks, over the photo the
model saw, and every head of a layer at once.

>>> SCALES, ATTENTION_TRACES
(('local', 'shared'), ('photo', 'weights', 'query'))
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import OUTSIDE_COLOUR, PAGE_PX, QUERY_MARKER, gaps, player, rect, title_font

__all__ = ["SCALES", "ATTENTION_TRACES", "HEADS_TRACES", "grey", "photo_trace", "query_map_traces", "query_map_title",
           "query_map_figure", "query_maps_figure", "animate_query_maps", "heads_traces", "head_of_cell",
           "head_shapes", "heads_figure"]

SCALES = ("local", "shared")  # colour scale of attention weights: each head its own, or one for all heads
ATTENTION_TRACES = ("photo", "weights", "query")  # trace order of query_map_figure with an image
HEADS_TRACES = ("heads", "query")  # trace order of heads_figure


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


def photo_trace(rgb: np.ndarray) -> go.Image:
    """A picture ``uint8 [S, S, 3]`` as a ``go.Image`` named "photo", drawn from an embedded PNG
    (``source``, pixels at ``x, y = 0 .. S - 1`` as with ``z``). The browser decodes a PNG once; an
    image given as ``z`` is repainted pixel by pixel whenever any trace of its figure changes, about
    half the time of every heatmap update drawn over a photo.

    >>> photo_trace(np.zeros((2, 2, 3), np.uint8)).source[:22]
    'data:image/png;base64,'
    """
    import PIL.Image  # pillow, a dependency of the notebooks extra

    png = io.BytesIO()
    PIL.Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(png, format="PNG")
    source = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode("ascii")
    return go.Image(source=source, name="photo", hoverinfo="skip")


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
    weights = go.Heatmap(z=gaps(m, array=True), x0=(sw - 1) / 2, dx=sw, y0=(sh - 1) / 2, dy=sh, colorscale="Viridis",
                         zmin=0, zmax=zmax, name="weights", opacity=0.8 if image_size else 1,
                         colorbar=dict(title="weight", len=0.8, thickness=14, exponentformat="power"),
                         hovertemplate="weight %{z:.3f}<extra></extra>")
    query = go.Scatter(x=[(j + 0.5) * sw - 0.5], y=[(i + 0.5) * sh - 0.5], mode="markers", name="query",
                       hoverinfo="skip", marker=QUERY_MARKER)
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
        traces.insert(0, photo_trace(grey(image)))
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
    >>> x = torch.randn(1, 4, 4, 8)
    >>> layers = {"block": BlockAttention(8, 2, size=2), "grid": GridAttention(8, 2, size=2)}
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
        for trace in (photo_trace(picture), weights, query):
            fig.add_trace(trace, n // columns + 1, n % columns + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    panel = min(220, (PAGE_PX - 20) // columns)  # every column inside the page
    fig.update_layout(title=dict(text=title, font=title_font(title or "", panel * columns + 20)),
                      width=panel * columns + 20, height=panel * rows + 90, showlegend=False,
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
    fig.update_layout(**player(frames, "query ", duration), height=fig.layout.height + 110)
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
    mosaic = go.Heatmap(z=gaps(z, array=True), customdata=gaps(raw, array=True), x=np.arange(cols), y=np.arange(rows),
                        zmin=0, zmax=zmax, colorscale="Viridis", name="heads",
                        colorbar=dict(title=dict(text=label, side="right"), len=0.8, thickness=12),
                        hovertemplate="weight %{customdata:.3f}<extra></extra>")
    query = go.Scatter(x=qx, y=qy, mode="markers", name="query", hoverinfo="skip",
                       marker=dict(QUERY_MARKER, size=8, line=dict(width=2, color="white")))
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
    shapes = [dict(rect(r0, r0 + H - 1, c0, c0 + W - 1, name="tile", width=0), fillcolor=OUTSIDE_COLOUR,
                   layer="below") for r0, c0 in tiles]
    r0, c0 = tiles[record.heads.index(head)]
    return shapes + [rect(r0, r0 + H - 1, c0, c0 + W - 1, name="selected head", color="#D55E00", width=3)]


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
