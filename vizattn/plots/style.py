"""What every figure of ``vizattn.plots`` shares: colours, line styles, the query marker, the
animation player, and small helpers for heatmap data and rectangles.

Colours are colour-blind safe: Okabe-Ito for categories, Tol's muted scheme for partition groups,
Cividis for quantities.

>>> pale("#000000", 0.5), gaps([[1.0, float("nan")]])
('#808080', [[1.0, None]])
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

__all__ = ["PAGE_PX", "OKABE_ITO", "GROUP_PALETTE", "KEY_COLOUR", "OUTSIDE_COLOUR", "PALE_CIVIDIS", "DASHES",
           "QUERY_MARKER", "title_font", "gaps", "pale", "stepped", "rect", "player"]

# the widest a figure may be: a notebook's output area in a 1400 px window with JupyterLab's file browser open
PAGE_PX = 960
# Every title hangs 28 px below the figure's top edge: clear of plotly's toolbar (top right, 2-24 px),
# which shows on hover. Tick labels of axes and colour bars may overflow (they never reach past the
# margins here): plotly.js's default, hiding labels past the figure's edge, measures every label again
# for each label drawn, about half of a redraw in the browser. Added to plotly's default template
# once vizattn.plots is imported, merged once: a default named "plotly+vizattn" would be merged again
# by every go.Figure() (~20 ms each).
_TICKS = dict(ticklabeloverflow="allow")
pio.templates["vizattn"] = pio.templates.merge_templates("plotly", go.layout.Template(
    layout=dict(title=dict(yref="container", y=1, yanchor="top", pad=dict(t=28)), xaxis=_TICKS, yaxis=_TICKS,
                coloraxis=dict(colorbar=_TICKS)),
    data=dict(heatmap=[dict(colorbar=_TICKS)])))
pio.templates.default = "vizattn"
# Okabe & Ito (2008), black left out: categories (lines, boxes, heads)
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")
# Paul Tol's muted scheme (colour-blind safe), for the groups of a partition picture: nine colours, one for each
# pair of row and column classes (plots.partition), so that touching groups never share one
GROUP_PALETTE = ("#CC6677", "#332288", "#DDCC77", "#117733", "#88CCEE", "#882255", "#44AA99", "#999933", "#AA4499")
KEY_COLOUR = "#000000"
OUTSIDE_COLOUR = "#E8E8E8"
# plotly's Cividis, each colour 55 % mixed with white (pale), so that black keys stay readable on it
PALE_CIVIDIS = [[k / 9, c] for k, c in enumerate(("#73859E", "#7D90B0", "#939BAE", "#A3A6AF", "#B0B1B2", "#BFBCB5",
                                                 "#CEC9B3", "#DED5AC", "#EEE3A2", "#FEF292"))]
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot", "solid", "dash")
QUERY_MARKER = dict(symbol="x-thin", size=12, line=dict(width=3, color="white"))


def title_font(text: str, width: int, size: int = 17) -> dict:
    """The title font (plotly's 17 px, or smaller, down to 11) that fits ``text`` into a ``width`` px figure on
    one line, so that it is not cut at the figure's edge (about 0.56 em a character, margin 20 px).

    >>> title_font("a short title", 460), title_font("MaxViT stage 1 (16x16 tokens), query (4, 7), mean of heads", 460)
    ({'size': 17}, {'size': 13})
    """
    return {"size": max(11, min(size, int((width - 20) / (0.56 * max(1, len(text))))))}


def gaps(z: np.ndarray, *, array: bool = False):
    """z with None where it is NaN (nested lists): a gap in a heatmap, and valid JSON for a widget.

    Without NaN, z itself: a numeric array is sent to a widget as a binary buffer, much faster.
    ``array=True``: the same values as a numpy object array, which plotly checks and sends without
    visiting every element in Python (the same JSON; what a slider move over a large map needs).
    """
    z = np.asarray(z, dtype=float)
    if not np.isnan(z).any():
        return z
    z = np.where(np.isnan(z), None, z)
    return z if array else z.tolist()


def pale(colour: str, amount: float = 0.55) -> str:
    """``colour`` (``#rrggbb``) mixed with white: ``amount`` of the colour."""
    rgb = (int(colour[k:k + 2], 16) for k in (1, 3, 5))
    return "#" + "".join(f"{round(c * amount + 255 * (1 - amount)):02X}" for c in rgb)


def stepped(colours) -> list:
    """A plotly colour scale of flat steps, one per colour (categories, not a gradient)."""
    n = len(colours)
    scale = []
    for k, c in enumerate(colours):
        scale += [[k / n, c], [(k + 1) / n, c]]
    return scale


def rect(r0, r1, c0, c1, name="map", **line) -> dict:
    """A layout rectangle around rows ``r0..r1`` and columns ``c0..c1`` (cells), outline ``line``."""
    return dict(type="rect", x0=c0 - 0.5, x1=c1 + 0.5, y0=r0 - 0.5, y1=r1 + 0.5, line=line, name=name,
                fillcolor="rgba(0,0,0,0)", layer="above")


def player(frames, prefix: str, duration: int = 400, labels=None) -> dict:
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
