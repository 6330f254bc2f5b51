"""Whole-model maps (``vizattn.flow``) as figures: the map over the photo, and one token's rollout
column beside its theoretical and effective receptive fields.

Maps on a large image are drawn summed over square blocks of pixels (``pooled``: 224 x 224 -> 56 x 56
blocks of 4), so a move sends a few thousand values, not fifty thousand; axes stay in image pixels.

>>> FLOW_TRACES, FIELDS_TRACES
(('photo', 'map', 'pixel'), ('column', 'theoretical', 'effective', 'pixel', 'pixel', 'pixel'))
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .attention import grey, photo_trace
from .receptive import effective_parts
from .style import OUTSIDE_COLOUR, QUERY_MARKER, gaps

__all__ = ["FLOW_TRACES", "FIELDS_TRACES", "MAX_CELLS", "pooled", "map_parts", "fields_parts", "flow_figure",
           "fields_figure", "depth_figure"]

FLOW_TRACES = ("photo", "map", "pixel")  # trace order of flow_figure
FIELDS_TRACES = ("column", "theoretical", "effective", "pixel", "pixel", "pixel")  # trace order of fields_figure
MAX_CELLS = 64  # the most blocks a drawn map has per side


def _block(side: int) -> int:
    """The smallest block that divides ``side`` and leaves at most ``MAX_CELLS`` blocks (``side`` itself if none)."""
    return next((b for b in range(1, side + 1) if side % b == 0 and side // b <= MAX_CELLS), side)


def pooled(m, how: str = "sum") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``m [H, W]`` over pixels -> ``(z [H/b, W/b], x, y)``: summed (``how="sum"``) or any-ed (``"any"``)
    over ``b x b`` blocks (``_block``), ``x``/``y`` the blocks' centres in pixels.

    >>> z, x, y = pooled(np.ones((224, 224)))
    >>> z.shape, float(z[0, 0]), x[:2].tolist()
    ((56, 56), 16.0, [1.5, 5.5])
    """
    m = np.asarray(m, dtype=float)
    H, W = m.shape
    bh, bw = _block(H), _block(W)
    blocks = m.reshape(H // bh, bh, W // bw, bw)
    z = blocks.sum((1, 3)) if how == "sum" else blocks.max((1, 3))
    return z, np.arange(W // bw) * bw + (bw - 1) / 2, np.arange(H // bh) * bh + (bh - 1) / 2


def map_parts(pixels) -> dict:
    """What ``flow_figure``'s map trace shows for a map ``[H, W]`` (summing to 1): ``z`` (block shares),
    ``x``, ``y`` and ``zmax`` (the largest share).

    >>> parts = map_parts(np.full((8, 8), 1 / 64))
    >>> parts["zmax"] == 1 / 64, len(parts["x"])
    (True, 8)
    """
    z, x, y = pooled(pixels)
    return dict(z=z, x=x, y=y, zmax=float(z.max()) if z.size and z.max() > 0 else 1.0)


def _marker(pixel, axis: str = "") -> dict:
    i, j = pixel
    return dict(type="scatter", x=[j], y=[i], mode="markers", marker=QUERY_MARKER, name="pixel", showlegend=False,
                hoverinfo="skip", xaxis=f"x{axis}", yaxis=f"y{axis}")


def flow_figure(image, pixels, *, title: str, pixel=(0, 0)) -> go.Figure:
    """A whole-model map ``pixels [H, W]`` (``Flow.pixels`` or ``Flow.depth(d)`` of one item) over
    ``image [3, H, W]`` in grey; ``pixel`` marks the clicked input pixel ``(row, col)``.

    >>> import torch
    >>> fig = flow_figure(torch.rand(3, 16, 16), np.full((16, 16), 1 / 256), title="t", pixel=(3, 4))
    >>> [t.name for t in fig.data], fig.data[2].x
    (['photo', 'map', 'pixel'], (4,))
    """
    parts = map_parts(pixels)
    H, W = np.asarray(pixels).shape
    heat = go.Heatmap(z=parts["z"], x=parts["x"], y=parts["y"], zmin=0, zmax=parts["zmax"], colorscale="Inferno",
                      opacity=0.7, name="map", colorbar=dict(title="share", len=0.8, thickness=12),
                      hovertemplate="x %{x}, y %{y}<br>share %{z:.2%}<extra></extra>")
    fig = go.Figure([photo_trace(grey(image)), heat, go.Scatter(_marker(pixel))])
    fig.update_layout(
        title=dict(text=title, x=0.5, font=dict(size=13)), width=440, height=430, showlegend=False,
        margin=dict(l=40, r=20, t=50, b=40), plot_bgcolor=OUTSIDE_COLOUR,
        xaxis=dict(range=[-0.5, W - 0.5], constrain="domain", showgrid=False, zeroline=False),
        yaxis=dict(range=[H - 0.5, -0.5], scaleanchor="x", constrain="domain", showgrid=False, zeroline=False))
    return fig


def fields_parts(column, theoretical, effective, *, squares: bool = True) -> dict:
    """What ``fields_figure`` draws: per panel the trace data (``{index: properties}``), the
    effective field's ``shapes`` (its 20/50/99% squares, in pixels; none with ``squares=False``) and a ``caption``.

    ``column [H, W]``: a token's rollout column (``Flow.column``); ``theoretical [H, W]`` bool
    (``TheoreticalField.input``); ``effective``: a ``receptive.EffectiveField`` on the input, or None.
    """
    col, x, y = pooled(column)
    field, _, _ = pooled(theoretical, "any")
    traces = {0: dict(z=col, x=x, y=y, zmin=0, zmax=float(col.max()) if col.max() > 0 else 1.0),
              1: dict(z=gaps(np.where(field > 0, 1.0, np.nan)), x=x, y=y)}
    caption = f"theoretical field: {int(np.asarray(theoretical).sum())} pixels"
    shapes = []
    if effective is not None:
        mass, _, _ = pooled(effective.map)
        with np.errstate(divide="ignore"):
            z = np.where(mass > 0, np.log10(np.where(mass > 0, mass, 1)), np.nan)
        top = float(np.nanmax(z)) if np.isfinite(z).any() else 0.0
        traces[2] = dict(z=gaps(z), x=x, y=y, zmin=top - 4, zmax=top, visible=True)
        if squares:
            parts = effective_parts(effective, axis="3")
            shapes, caption = parts["shapes"], f"{caption}; effective: {parts['caption']}"
    else:
        traces[2] = dict(visible=False)
    return dict(traces=traces, shapes=shapes, caption=caption)


def fields_figure(column, theoretical, effective, *, pixel=(0, 0), titles=("column", "theoretical", "effective"),
                  squares: bool = True) -> go.Figure:
    """Three panels over the input pixels: which pixels a token draws on (its rollout column), the
    pixels that can reach it (theoretical field) and its gradient's share (effective field, log10;
    its squares hold 20/50/99%), with the clicked ``pixel`` marked on each. See ``fields_parts``.

    >>> import torch; from vizattn.receptive import EffectiveField
    >>> col = np.zeros((8, 8)); col[2, 3] = 1; mask = col > 0
    >>> erf = EffectiveField(torch.tensor(col), {0.5: 1}, "attn", (2, 3), (2, 3))
    >>> fig = fields_figure(col, mask, erf, pixel=(2, 3))
    >>> [t.name for t in fig.data][:3], len(fig.layout.shapes)
    (['column', 'theoretical', 'effective'], 1)
    """
    parts = fields_parts(column, theoretical, effective, squares=squares)
    H, W = np.asarray(column).shape
    fig = make_subplots(1, 3, horizontal_spacing=0.06, subplot_titles=titles)
    t = parts["traces"]
    fig.add_trace(go.Heatmap(t[0], colorscale="Viridis", showscale=False, name="column",
                             hovertemplate="x %{x}, y %{y}<br>share %{z:.2%}<extra></extra>"), 1, 1)
    fig.add_trace(go.Heatmap(t[1], zmin=0, zmax=1, colorscale=[[0, "#0072B2"], [1, "#0072B2"]], showscale=False,
                             name="theoretical", hovertemplate="x %{x}, y %{y}<extra></extra>"), 1, 2)
    effective_trace = t[2] if effective is not None else dict(z=[[0.0]], x=[0], y=[0], visible=False)
    fig.add_trace(go.Heatmap(effective_trace, colorscale="Viridis", showscale=False, name="effective",
                             hovertemplate="x %{x}, y %{y}<br>log10 share %{z:.2f}<extra></extra>"), 1, 3)
    for k in range(3):
        fig.add_trace(go.Scatter(_marker(pixel, "" if k == 0 else str(k + 1))))
    fig.update_layout(width=820, height=340, showlegend=False, margin=dict(l=40, r=20, t=60, b=60),
                      plot_bgcolor=OUTSIDE_COLOUR, shapes=parts["shapes"])
    fig.add_annotation(text=parts["caption"], showarrow=False, xref="paper", yref="paper", x=0.5, y=0,
                       yanchor="top", yshift=-24, font=dict(size=12), name="caption")
    fig.update_annotations(font_size=12)
    fig.update_xaxes(range=[-0.5, W - 0.5], constrain="domain", showgrid=False, zeroline=False)
    for k in ("", "2", "3"):
        fig.update_layout({f"yaxis{k}": dict(range=[H - 0.5, -0.5], scaleanchor=f"x{k}", constrain="domain",
                                             showgrid=False, zeroline=False)})
    return fig


def depth_figure(flow, image, *, item: int = 0, title: str | None = None) -> go.Figure:
    """``flow_figure`` with one animation frame per depth: the map of the first ``d`` layers (``Flow.depth``).

    >>> import torch; from vizattn import flow, models
    >>> _ = torch.manual_seed(0)
    >>> f = flow.rollout(models.create("nat"), torch.rand(1, 3, 64, 64))
    >>> len(depth_figure(f, torch.rand(3, 64, 64)).frames)
    6
    """
    from .style import player

    L = len(flow.names)
    maps = [flow.depth(d)[item].numpy() for d in range(1, L + 1)]
    labels = [f"{d}" for d in range(1, L + 1)]
    frames = [go.Frame(data=[go.Heatmap(z=map_parts(m)["z"], zmax=map_parts(m)["zmax"])], traces=[1], name=label,
                       layout=dict(title=dict(text=f"{title or flow.method}: layers 1-{d} ({flow.names[d - 1]})")))
              for d, (m, label) in enumerate(zip(maps, labels), 1)]
    fig = flow_figure(image, maps[0], title=frames[0].layout.title.text)
    fig.frames = frames
    fig.update_layout(height=560, **player(frames, "depth ", labels=labels))
    return fig
