"""LaViT as figures: the reuse chain of a stage, per-layer diagonality and symmetry, saturation.

>>> [t.name for t in saturation_figure({"ViT": [0.9, 0.95]}).data]
['ViT']
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import DASHES, OKABE_ITO, PAGE_PX, gaps, player

__all__ = ["reuse_chain_maps", "chain_axes", "reuse_chain_figure", "stage_shade", "layer_measures_figure",
           "saturation_figure"]


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
            zs.append(gaps(z))
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
                      width=min(PAGE_PX, 250 * n + 160), height=620, plot_bgcolor="white",
                      margin=dict(l=60, r=20, t=80, b=50))
    if frames:
        frames_ = []
        for h in range(min(heads)):
            zs, peak, titles = reuse_chain_maps(columns, h)
            frames_.append(go.Frame(data=[go.Heatmap(z=z) for z in zs], traces=list(range(2 * n)), name=str(h),
                                    layout=dict(coloraxis=dict(cmax=peak), annotations=[
                                        dict(a.to_plotly_json(), text=t)
                                        for a, t in zip(fig.layout.annotations, titles)])))
        fig.frames = frames_
        fig.update_layout(**player(frames_, "head "), height=fig.layout.height + 110)
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
                                           dash=DASHES[n % len(DASHES)]),
                                 hovertemplate=label + ": layer %{x} vs the one before: %{y:.3f}<extra></extra>"))
    fig.update_layout(title=dict(text="Saturation: similarity of consecutive layers", x=0.5),
                      xaxis=dict(title="layer l compared with layer l - 1", dtick=1),
                      yaxis=dict(title="cosine similarity", range=[0, 1.05]), width=440, height=440,
                      plot_bgcolor="white", margin=dict(l=60, r=20, t=60, b=60))
    return fig
