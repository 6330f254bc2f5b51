"""Receptive fields (``vizattn.receptive``) as figures: theoretical fields by depth, effective fields
with the squares that hold a share of the gradient, both side by side.

>>> field_z(np.eye(2, dtype=bool))
[[1.0, None], [None, 1.0]]
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import OUTSIDE_COLOUR, PAGE_PX, gaps, player, rect

__all__ = ["field_z", "receptive_figure", "effective_parts", "effective_figure", "receptive_depths_figure"]


def field_z(mask):
    """A boolean field ``[H, W]`` as heatmap data: 1 where it is set, a gap (None) elsewhere.

    >>> field_z(np.eye(2, dtype=bool))
    [[1.0, None], [None, 1.0]]
    """
    m = np.asarray(mask, dtype=float)
    m[m == 0] = np.nan
    return gaps(m)


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
    >>> from vizattn.plots import cells
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
        **player(frames, "field ", labels=[_extent(m) for m in masks]),
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
        shapes.append(dict(rect(r0, r1, c0, c1, name=f"{f:.0%}", color="#D55E00", width=2,
                                 dash=_SQUARE_DASHES[k % len(_SQUARE_DASHES)]), xref=f"x{axis}", yref=f"y{axis}"))
    caption = ", ".join(f"{f:.0%}{' of the gradient' if k == 0 else ''} within {s}x{s}"
                        for k, (f, s) in enumerate(sorted(erf.sides.items())))
    note = dict(text=caption, showarrow=False, xref="paper", yref="paper", x=0.5, y=0, yanchor="top", yshift=-30,
                font=dict(size=12))
    return dict(z=gaps(z), zmin=zmax - 4, zmax=zmax, shapes=shapes, caption=caption, annotations=[note])


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
                      width=PAGE_PX if both else 520, height=640, showlegend=False,
                      **player(frames, "field ", labels=[_extent(f.input.numpy()) for f in fields]))
    return fig
