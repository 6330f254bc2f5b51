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


def _chain_geometry(columns) -> tuple[int, int, int]:
    """``(N, step, width)`` of ``reuse_chain_figure``'s strips: ``N`` tokens per map, a map every
    ``step`` columns (``N`` plus a blank of ``max(2, N // 8)``), ``width`` columns in all."""
    N = int(np.asarray(columns[0]["used"]).shape[-1])
    gap = max(2, N // 8)
    return N, N + gap, len(columns) * (N + gap) - gap


def reuse_chain_maps(columns, head: int) -> tuple[list, np.ndarray, float]:
    """What ``reuse_chain_figure`` draws for one head: ``([top strip, bottom strip], keys, colour top)``.

    Each strip is an ``[N, L (N + gap) - gap]`` float array (``_chain_geometry``), NaN in the gaps: the
    top one holds the ``used`` map of each of the ``L`` layers side by side, the bottom one the
    ``vanilla`` map under each layer that has one. The colour top is the 99th percentile of the
    weights shown (a few large weights would leave every other one dark). ``keys``: the key token
    of each cell of a strip (what the hover names), NaN in the gaps.
    """
    N, step, width = _chain_geometry(columns)
    strips = np.full((2, N, width), np.nan)
    for c, column in enumerate(columns):
        for row, key in enumerate(("used", "vanilla")):
            if column.get(key) is not None:
                strips[row, :, c * step:c * step + N] = np.asarray(column[key][head], dtype=float)
    shown = strips[~np.isnan(strips)]
    peak = float(np.percentile(shown, 99)) if shown.size else 0.0
    within = np.arange(width) % step  # a column's place in its map (N and beyond: the gap)
    keys = np.where(within < N, within, np.nan)
    return list(strips), np.tile(keys, (N, 1)), peak or 1.0


def chain_axes(columns, head: int) -> dict:
    """Layout axes of ``reuse_chain_figure``: both strips' ranges, each layer's label over its
    map (top) and, under each less-attention layer, the total variation to the vanilla map (bottom)."""
    N, step, width = _chain_geometry(columns)
    centres = [c * step + (N - 1) / 2 for c in range(len(columns))]
    bottom = ["a VA layer: its own QKᵀ" if c.get("vanilla") is None else
              f"a vanilla layer here (TV {float(np.asarray(c['distance'])[head]):.2f})" for c in columns]
    x = dict(range=[-0.5, width - 0.5], tickvals=centres)
    y = dict(range=[N - 0.5, -0.5])
    return dict(xaxis=dict(x, ticktext=[c["label"] for c in columns]), xaxis2=dict(x, ticktext=bottom),
                yaxis=y, yaxis2=y)


def reuse_chain_figure(columns, head: int = 0, *, title: str | None = None, frames: bool = False) -> go.Figure:
    """LaViT's reuse chain of one stage, for one head: the attention each layer uses (top strip,
    the layers' maps side by side) and, under each less-attention layer, what a vanilla layer
    would compute there (bottom strip).

    ``columns``: one dict per layer, in call order, with ``label`` (shown over its map), ``used``
    (probabilities ``[heads, N, N]``, query rows, key columns) and optionally ``vanilla`` (same
    shape) and ``distance`` (``[heads]``, e.g. ``metrics.reuse_distance``, shown as TV). Traces:
    the two strips (``reuse_chain_maps``; one heatmap each, so a redraw stays cheap), one shared
    colour scale (0 to the 99th percentile of the weights shown); the hover names query and key.
    ``frames=True`` adds one animation frame per head.

    >>> import torch
    >>> eye = torch.eye(4).expand(2, 4, 4)
    >>> cols = [dict(label="VA", used=eye), dict(label="LA", used=eye, vanilla=eye.flip(-1), distance=[0.0, 0.5])]
    >>> fig = reuse_chain_figure(cols, head=1, frames=True)
    >>> len(fig.data), len(fig.frames), fig.layout.xaxis2.ticktext
    (2, 2, ('a VA layer: its own QKᵀ', 'a vanilla layer here (TV 0.50)'))
    """
    heads = {int(np.asarray(c["used"]).shape[0]) for c in columns}
    if len(heads) != 1 or not 0 <= head < min(heads):
        raise ValueError(f"every column needs the same heads and head must index them; got heads {sorted(heads)}, "
                         f"head={head}")
    strips, keys, peak = reuse_chain_maps(columns, head)
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.1)
    for row, (z, what) in enumerate(zip(strips, ("the layer uses", "a vanilla layer here"))):
        fig.add_trace(go.Heatmap(z=gaps(z), customdata=gaps(keys), coloraxis="coloraxis", hoverongaps=False,
                                 name=what, hovertemplate=f"{what}: query %{{y}}, key %{{customdata}}<br>"
                                                          "weight %{z:.3f}<extra></extra>"), row=row + 1, col=1)
    fig.update_xaxes(constrain="domain", showgrid=False, zeroline=False, ticks="", tickfont=dict(size=11))
    fig.update_yaxes(constrain="domain", showgrid=False, zeroline=False, title="query token")
    fig.update_layout(chain_axes(columns, head))
    fig.update_xaxes(side="top", row=1, col=1)
    fig.update_yaxes(scaleanchor="x", row=1, col=1)
    fig.update_yaxes(scaleanchor="x2", row=2, col=1)
    fig.update_layout(title=dict(text=title or f"LaViT reuse chain, head {head}", x=0.5),
                      coloraxis=dict(colorscale="Viridis", cmin=0, cmax=peak,
                                     colorbar=dict(title=dict(text="weight (top: 99th percentile)", side="right"))),
                      width=min(PAGE_PX, 250 * len(columns) + 160), height=620, plot_bgcolor="white",
                      margin=dict(l=60, r=20, t=110, b=50))
    if frames:
        frames_ = []
        for h in range(min(heads)):
            strips, _, peak = reuse_chain_maps(columns, h)
            frames_.append(go.Frame(data=[go.Heatmap(z=gaps(z)) for z in strips], traces=[0, 1], name=str(h),
                                    layout=dict(coloraxis=dict(cmax=peak),
                                                xaxis2=dict(ticktext=chain_axes(columns, h)["xaxis2"]["ticktext"]))))
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
    # the legend under the plot, one name per line: beside it, long names (notebook 08's) squeezed the plot
    # to 200 px, and 11 layer numbers on it overlapped
    fig.update_layout(title=dict(text="Saturation: similarity of consecutive layers", x=0.5),
                      xaxis=dict(title="layer l compared with layer l - 1", dtick=1),
                      yaxis=dict(title="cosine similarity", range=[0, 1.05]), width=440, height=440 + 20 * len(curves),
                      plot_bgcolor="white", margin=dict(l=60, r=20, t=60, b=80 + 20 * len(curves)),
                      legend=dict(x=0, xanchor="left", yref="container", y=0, yanchor="bottom"))
    return fig
