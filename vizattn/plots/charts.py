"""Plain charts the notebooks draw from numbers they compute: curves, heatmaps side by side, a photo
with marks. Nothing mechanism-specific; the mechanism pictures are in the other modules.

>>> fig = curves_figure({"NA": ([1, 2, 3], [3, 5, 7])}, title="field width", x_title="layers", y_title="tokens")
>>> [t.name for t in fig.data], fig.layout.xaxis.title.text
(['NA'], 'layers')
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .attention import grey, photo_trace
from .style import DASHES, OKABE_ITO, OUTSIDE_COLOUR, PAGE_PX, QUERY_MARKER, gaps, rect

__all__ = ["curves_figure", "maps_figure", "photo_figure"]


def curves_figure(curves, *, title: str, x_title: str, y_title: str, x_log: bool = False, y_log: bool = False,
                  y_range=None, x_dtick=None, hline: float | None = None, hover: str = "%{y:.3g}",
                  width: int = 640, height: int = 380) -> go.Figure:
    """Lines with markers, one per curve: ``curves`` is ``{name: (x, y)}``.

    ``x_log``/``y_log``: log axes (labels at 1, 2 and 5 of each decade: plotly's default labels every
    digit, which run into the next power of ten); ``y_range``: ``(lo, hi)``; ``x_dtick``: tick spacing; ``hline``: a
    dotted horizontal reference line at that value; ``hover``: the value's hover format.
    """
    fig = go.Figure()
    for n, (name, (x, y)) in enumerate(curves.items()):
        colour = (OKABE_ITO + ("#000000",))[n % 8]
        fig.add_trace(go.Scatter(x=list(x), y=list(y), name=name, mode="lines+markers",
                                 line=dict(color=colour, dash=DASHES[(n + n // 8) % len(DASHES)]),
                                 hovertemplate=f"{name}: %{{x}}, {hover}<extra></extra>"))
    if hline is not None:
        fig.add_hline(y=hline, line=dict(color="#7F7F7F", dash="dot"))
    fig.update_layout(title=dict(text=title, x=0.5), width=width, height=height, plot_bgcolor="white",
                      showlegend=len(curves) > 1, legend=dict(x=0.02, y=0.98), margin=dict(t=50),
                      xaxis=dict(title=x_title, type="log" if x_log else None, showgrid=True, gridcolor="#EEEEEE",
                                 dtick=x_dtick if x_dtick is not None or not x_log else "D2"),
                      yaxis=dict(title=y_title, type="log" if y_log else None, range=y_range, showgrid=True,
                                 gridcolor="#EEEEEE", dtick="D2" if y_log else None))
    return fig


def maps_figure(maps, *, title: str, colorscale: str = "Viridis", cmin: float | None = None,
                colour_title: str | None = None, x_title: str | None = None, y_title: str | None = None,
                marks=None, axes: bool = True, shared: bool = True, hover: str = "row %{y}, col %{x}: %{z:.3f}",
                width: int | None = None, height: int = 420) -> go.Figure:
    """Heatmaps side by side on one colour scale, row 0 on top, grey where a value is NaN.

    ``maps``: ``{subplot title: z}`` with ``z [H, W]`` (tensor or array), or ``(z, x, y)`` with the
    coordinates of the columns and rows (e.g. offsets ``-2 .. 2``). ``cmin``: bottom of the colour
    scale (default: the smallest value); ``colour_title`` None hides the colour bar; ``marks``:
    ``{subplot title: (row, col)}`` a query marker; ``axes=False`` hides the axes; ``shared=False``:
    each map coloured from ``cmin`` to its own largest value (no colour bar).

    >>> fig = maps_figure({"a": np.eye(2), "b": (np.ones((2, 3)), [-1, 0, 1], [0, 1])}, title="t", marks={"a": (0, 1)})
    >>> [t.type for t in fig.data], list(fig.data[2].x)
    (['heatmap', 'scatter', 'heatmap'], [-1, 0, 1])
    """
    fig = make_subplots(rows=1, cols=len(maps), subplot_titles=list(maps),
                        horizontal_spacing=0.02 if not axes else 0.08)
    for col, (name, value) in enumerate(maps.items(), start=1):
        z, x, y = value if isinstance(value, tuple) else (value, None, None)
        z = np.asarray(z.detach() if hasattr(z, "detach") else z, dtype=float)
        xs = np.arange(z.shape[1]) if x is None else np.asarray(x)
        ys = np.arange(z.shape[0]) if y is None else np.asarray(y)
        fig.update_xaxes(range=[xs.min() - 0.5, xs.max() + 0.5], row=1, col=col)
        fig.update_yaxes(range=[ys.max() + 0.5, ys.min() - 0.5], row=1, col=col)  # row 0 on top
        colour = dict(coloraxis="coloraxis") if shared else dict(colorscale=colorscale, zmin=cmin, showscale=False)
        fig.add_trace(go.Heatmap(z=gaps(z), x=x, y=y, hovertemplate=hover + "<extra></extra>", name=name, **colour),
                      1, col)
        if marks and name in marks:
            i, j = marks[name]
            fig.add_trace(go.Scatter(x=[j], y=[i], mode="markers", marker=QUERY_MARKER, hoverinfo="skip",
                                     name="query"), 1, col)
    fig.update_xaxes(visible=axes, showgrid=False, zeroline=False, title=x_title, constrain="domain")
    fig.update_yaxes(visible=axes, showgrid=False, zeroline=False, title=y_title, constrain="domain")
    for k in range(len(maps)):
        fig.layout[f"yaxis{k + 1 if k else ''}"].scaleanchor = f"x{k + 1 if k else ''}"
    fig.update_layout(title=dict(text=title, x=0.5), width=min(PAGE_PX, width or 60 + 380 * len(maps)), height=height,
                      plot_bgcolor=OUTSIDE_COLOUR, showlegend=False, margin=dict(l=40, r=20, t=80, b=40),
                      coloraxis=dict(colorscale=colorscale, cmin=cmin, showscale=shared and colour_title is not None,
                                     colorbar=dict(title=colour_title)))
    return fig


def photo_figure(image, *, title: str, query=None, boxes=None, grey_out: bool = False) -> go.Figure:
    """A photograph ``[3, S, S]`` in [0, 1] (in colour, or in grey with ``grey_out``), with marks.

    ``query``: a pixel ``(row, col)`` marked with a cross; ``boxes``: ``{label: (r0, r1, c0, c1)}``
    pixel rectangles (inclusive), outlined in Okabe-Ito colours and labelled at their top right.

    >>> fig = photo_figure(np.ones((3, 8, 8)), title="x", query=(2, 3), boxes={"4x4": (0, 3, 0, 3)})
    >>> [t.type for t in fig.data], fig.layout.shapes[0].x1, fig.layout.annotations[0].text
    (['image', 'scatter'], 3.5, '4x4')
    """
    x = np.asarray(image.detach() if hasattr(image, "detach") else image, dtype=float)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"image must be [3, H, W] with values in [0, 1]; got shape {x.shape}")
    rgb = grey(x) if grey_out else np.clip(np.round(x.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
    traces = [photo_trace(rgb)]
    if query is not None:
        traces.append(go.Scatter(x=[query[1]], y=[query[0]], mode="markers", hoverinfo="skip", name="query",
                                 marker=dict(QUERY_MARKER, size=14)))
    fig = go.Figure(traces)
    for (label, (r0, r1, c0, c1)), colour in zip((boxes or {}).items(), OKABE_ITO * 4):
        fig.add_shape(rect(r0, r1, c0, c1, name=label, color=colour, width=3))
        fig.add_annotation(x=c1 + 0.5, y=r0 - 0.5, text=label, showarrow=False, xanchor="right", yanchor="bottom",
                           font=dict(color=colour, size=13))
    fig.update_layout(title=dict(text=title, x=0.5), width=440, height=440, margin=dict(l=10, r=10, t=50, b=10),
                      xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig
