"""Cost per attention layer against map side (the cost model is ``vizattn.mechanisms.cost``).

>>> [t.name for t in cost_figure([8, 16], mechanisms=("global",)).data]
['global', 'global']
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..mechanisms import LAYERS, TABLE, cost
from .style import GROUP_PALETTE, OKABE_ITO

__all__ = ["COST_MECHANISMS", "SIDES", "STYLES", "cost_curves", "cost_title", "side_marks", "cost_figure"]

COST_MECHANISMS = tuple(LAYERS)  # every layer kind of the mechanisms table
SIDES = tuple(range(8, 257, 8))  # the map sides of a cost figure
# a colour per paper (row of the mechanisms table, in its order: Okabe-Ito without its yellow, which is
# faint on white, plus grey and black, then Tol's muted colours for further rows) and a dash per layer of
# it: a curve keeps its style whichever others are shown, and MaxViT's block and grid share a colour
PAPER_COLOURS = ("#7F7F7F", *OKABE_ITO[:3], *OKABE_ITO[4:], "#000000", *GROUP_PALETTE)
STYLES = {lay.name: dict(color=colour, dash=("solid", "dash")[n], width=2)
          for row, colour in zip(TABLE, PAPER_COLOURS) for n, lay in enumerate(row.layers)}


def cost_curves(sides=SIDES, mechanisms=COST_MECHANISMS, **params) -> dict[str, tuple[tuple, tuple]]:
    """``{mechanism: (MACs, attention entries)}`` at every side: what ``cost_figure`` draws.

    >>> cost_curves([8], ("global",), channels=16)
    {'global': ((196608.0,), (4096.0,))}
    """
    return {name: tuple(zip(*(cost(name, s, **params) for s in sides))) for name in mechanisms}


def cost_title(**params) -> str:
    """The title of ``cost_figure`` for these parameters."""
    p = {"channels": 64, "heads": 4, **params}
    return f"Cost per attention layer (C={p['channels']}, heads={p['heads']})"


def side_marks(mark: int) -> list[dict]:
    """The layout shapes that mark map side ``mark`` on both panels of ``cost_figure`` (dotted vertical lines)."""
    return [dict(type="line", xref=x, yref=f"{y} domain", x0=mark, x1=mark, y0=0, y1=1,
                 line=dict(color="#7F7F7F", dash="dot")) for x, y in (("x", "y"), ("x2", "y2"))]


def cost_figure(sides=None, mechanisms=COST_MECHANISMS, *, mark: int | None = None, **params) -> go.Figure:
    """MACs and attention memory per layer against map side, log-log, one line per mechanism.

    ``mechanisms``: layer names of ``vizattn.mechanisms`` (default: all); ``sides``: map sides
    (default 8 ... 256); ``params`` go to ``vizattn.mechanisms.cost`` (channels, heads and the
    layers' parameters: kernel, block, grid, interval); ``mark``: a side to mark with a vertical line.

    >>> fig = cost_figure([8, 16, 32], mechanisms=("global", "NA"))
    >>> len(fig.data), fig.layout.xaxis.type, fig.layout.yaxis.type
    (4, 'log', 'log')
    """
    sides = list(SIDES if sides is None else sides)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("MACs per layer", "attention entries per head"))
    for name, (macs, mem) in cost_curves(sides, mechanisms, **params).items():
        style = STYLES[name]
        fig.add_trace(go.Scatter(x=sides, y=macs, name=name, legendgroup=name, line=style,
                                 hovertemplate=name + ": side %{x}, %{y:.3s} MACs<extra></extra>"), 1, 1)
        fig.add_trace(go.Scatter(x=sides, y=mem, name=name, legendgroup=name, line=style, showlegend=False,
                                 hovertemplate=name + ": side %{x}, %{y:.3s} entries<extra></extra>"), 1, 2)
    fig.update_xaxes(type="log", title="map side (H = W)")
    fig.update_yaxes(type="log", exponentformat="power")  # 10^6 ... 10^16 throughout (SI stops at T)
    fig.update_layout(title=dict(text=cost_title(**params), x=0.5), shapes=() if mark is None else side_marks(mark),
                      height=500, width=900, plot_bgcolor="white", margin=dict(l=50, r=20, t=70, b=50))
    # 500 px: the legend's 11 entries fit beside the plots without scrolling (beside them, not below:
    # a legend below them makes every redraw in the browser slower)
    return fig
