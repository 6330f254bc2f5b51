"""Cost per attention layer against map side (the cost model is ``vizattn.mechanisms.cost``).

>>> [t.name for t in cost_figure([8, 16], mechanisms=("global",)).data]
['global', 'global']
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..mechanisms import LAYERS, cost
from .style import DASHES, OKABE_ITO

__all__ = ["COST_MECHANISMS", "cost_figure"]

COST_MECHANISMS = tuple(LAYERS)  # every layer kind of the mechanisms table


def cost_figure(sides=None, mechanisms=COST_MECHANISMS, *, mark: int | None = None, **params) -> go.Figure:
    """MACs and attention memory per layer against map side, log-log, one line per mechanism.

    ``mechanisms``: layer names of ``vizattn.mechanisms`` (default: all); ``sides``: map sides
    (default 8 ... 256); ``params`` go to ``vizattn.mechanisms.cost`` (channels, heads and the
    layers' parameters: kernel, block, grid, interval); ``mark``: a side to mark with a vertical line.

    >>> fig = cost_figure([8, 16, 32], mechanisms=("global", "NA"))
    >>> len(fig.data), fig.layout.xaxis.type, fig.layout.yaxis.type
    (4, 'log', 'log')
    """
    sides = list(range(8, 257, 8)) if sides is None else list(sides)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("MACs per layer", "attention entries per head"))
    for n, name in enumerate(mechanisms):
        macs, mem = zip(*(cost(name, s, **params) for s in sides))
        style = dict(color=(OKABE_ITO + ("#000000",))[n % 8], dash=DASHES[(n + n // 8) % len(DASHES)], width=2)
        fig.add_trace(go.Scatter(x=sides, y=macs, name=name, legendgroup=name, line=style,
                                 hovertemplate=name + ": side %{x}, %{y:.3s} MACs<extra></extra>"), 1, 1)
        fig.add_trace(go.Scatter(x=sides, y=mem, name=name, legendgroup=name, line=style, showlegend=False,
                                 hovertemplate=name + ": side %{x}, %{y:.3s} entries<extra></extra>"), 1, 2)
    fig.update_xaxes(type="log", title="map side (H = W)")
    fig.update_yaxes(type="log", exponentformat="power")  # 10^6 ... 10^16 throughout (SI stops at T)
    if mark is not None:
        for col in (1, 2):
            fig.add_vline(x=mark, line=dict(color="#7F7F7F", dash="dot"), row=1, col=col)
    p = {"channels": 64, "heads": 4, **params}
    fig.update_layout(title=dict(text=f"Cost per attention layer (C={p['channels']}, heads={p['heads']})", x=0.5),
                      height=420, width=900, plot_bgcolor="white", margin=dict(l=50, r=20, t=70, b=50))
    return fig
