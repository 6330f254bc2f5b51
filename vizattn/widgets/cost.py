"""``CostExplorer``: cost per attention layer against the map side, for the layer kinds of
``vizattn.mechanisms`` (its ``cost`` model).

>>> "MaxViT grid" in cost_table(CostState(side=16, mechanisms=("global", "MaxViT grid")))
True
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import plotly.graph_objects as go
import traitlets
from traitlets import HasTraits, Int

from .. import mechanisms, plots
from . import figure, static
from .base import Explorer, send

__all__ = ["CostState", "cost_table", "CostExplorer"]


class CostState(HasTraits):
    """What a ``CostExplorer`` shows: the map side to read off, the mechanisms, the cost parameters.

    >>> CostState(side=32).mechanisms[:3]
    ('global', 'SASA', 'NA')
    """

    side = Int(56)
    mechanisms = traitlets.Tuple(default_value=plots.COST_MECHANISMS)  # layer names of vizattn.mechanisms
    channels = Int(64)
    heads = Int(4)
    kernel = Int(7)
    window = Int(7)  # MaxViT block P, grid G and CrossFormer SDA group G
    interval = Int(8)

    def params(self) -> dict:
        """Keyword arguments for ``vizattn.mechanisms.cost``."""
        w = self.window
        return dict(channels=self.channels, heads=self.heads, kernel=self.kernel, block=w, grid=w,
                    interval=self.interval)


def cost_table(state: CostState) -> str:
    """HTML table of every shown mechanism's cost at ``state.side``, relative to global attention.

    >>> "DiNAT" in cost_table(CostState(side=16, mechanisms=("global", "DiNAT")))
    True
    """
    glob = mechanisms.cost("global", state.side, **state.params())
    rows = []
    for name in state.mechanisms:
        macs, memory = mechanisms.cost(name, state.side, **state.params())
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{macs:.3g}</td><td>{macs / glob[0]:.3g}</td>"
                    f"<td>{memory:.3g}</td><td>{memory / glob[1]:.3g}</td></tr>")
    head = ("<tr><th>mechanism</th><th>MACs</th><th>/ global</th><th>attention entries</th>"
            "<th>/ global</th></tr>")
    return (f"<b>{state.side}x{state.side} map ({state.side ** 2} tokens)</b>"
            f"<table style='font-size: 13px'>{head}{''.join(rows)}</table>")


class CostExplorer(Explorer):
    """Cost per attention layer against map side: a side slider, mechanism toggles, a table.

    >>> ex = CostExplorer(side=32)
    >>> ex.state.mechanisms = ("global",)
    >>> [t.visible for t in ex.figure.data][:4]
    [True, True, False, False]
    """

    def __init__(self, side: int = 56, mechanisms=plots.COST_MECHANISMS, **kwargs):
        self.state = CostState(side=side, mechanisms=tuple(mechanisms))
        s = self.state
        self.sliders = {
            name: widgets.IntSlider(value=getattr(s, name), min=lo, max=hi, step=step, description=label,
                                    style={"description_width": "110px"}, layout=widgets.Layout(width="330px"))
            for name, lo, hi, step, label in [("side", 8, 256, 8, "map side"), ("channels", 16, 512, 16, "channels C"),
                                               ("heads", 1, 16, 1, "heads"), ("kernel", 3, 15, 1, "NA/SASA k"),
                                               ("window", 2, 16, 1, "window P, G"), ("interval", 1, 32, 1, "LDA I")]}
        self.toggles = widgets.SelectMultiple(options=plots.COST_MECHANISMS, value=s.mechanisms,
                                              rows=len(plots.COST_MECHANISMS),
                                              description="mechanisms", style={"description_width": "110px"})
        self.table = widgets.HTML()
        self._cache = {}  # cost parameters -> plots.cost_curves
        self.figure = figure.FigureWidget(plots.cost_figure(mark=s.side, **s.params()))
        self._links = [widgets.link((slider, "value"), (s, name)) for name, slider in self.sliders.items()]
        self._links.append(widgets.link((self.toggles, "value"), (s, "mechanisms")))
        s.observe(self._changed, names=list(s.trait_names()))
        super().__init__([widgets.HBox([widgets.VBox(list(self.sliders.values())), self.toggles]),
                          self.figure, self.table], **kwargs)
        self.add_class("vizattn-cost")  # a handle for browser tests and CSS
        self._changed()

    def _reads(self, name: str) -> bool:
        """Whether the cost of one shown mechanism depends on slider ``name`` (else the slider is hidden)."""
        s, slider = self.state, self.sliders[name]
        other = dict(s.params(), **{"block" if name == "window" else name: getattr(s, name) + slider.step})
        if name == "window":
            other["grid"] = other["block"]
        return any(mechanisms.cost(m, s.side, **s.params()) != mechanisms.cost(m, s.side, **other)
                   for m in s.mechanisms)

    def _update(self) -> None:
        s = self.state
        curves = self._curves()
        ys = [y for name in plots.COST_MECHANISMS for y in curves[name]]  # the figure's traces: MACs, entries
        # the figure first: the browser starts redrawing it while the sliders and the table follow
        send(self.figure, {t: {"y": y, "visible": self.figure.data[t].name in s.mechanisms} for t, y in enumerate(ys)},
             layout={"title": {"text": plots.cost_title(**s.params())}}, arrays={"shapes": plots.side_marks(s.side)})
        for name, slider in self.sliders.items():
            if name != "side":
                slider.layout.display = None if self._reads(name) else "none"
        self.table.value = cost_table(s)

    def _curves(self) -> dict:
        """``plots.cost_curves`` of every mechanism for the current parameters (cached: the side and the
        mechanisms shown do not change them)."""
        key = tuple(self.state.params().items())
        if key not in self._cache:
            self._cache[key] = plots.cost_curves(mechanisms=plots.COST_MECHANISMS, **self.state.params())
        return self._cache[key]

    # -- without a kernel --------------------------------------------------------------------------
    def static_controls(self) -> list[dict]:
        """The map side (every 16th of its slider's values and the start) and up to 3 values of each cost
        parameter the shown mechanisms read (kernel, window, interval)."""
        s, controls = self.state, []
        side = self.sliders["side"]
        controls.append(static.control(self, "map side", static.options(
            range(side.min, side.max + 1, 2 * side.step), s.side, "side")))
        for name in ("kernel", "window", "interval"):
            slider = self.sliders[name]
            if self._reads(name):
                values = static.spread(slider.min, slider.max, 3)
                controls.append(static.control(self, slider.description, static.options(values, getattr(s, name),
                                                                                         name)))
        return controls

    def static_texts(self) -> list:
        return [self.table]

    def static_note(self) -> str:
        return ("Kernel-free copy of the cost explorer: the map side and the parameters above, every state "
                "precomputed by the explorer itself; click a curve's name in the legend to hide or show it. Not "
                "precomputed: the mechanism list, the channels and heads, other parameter values. " + static.LIVE)

    def to_figure(self) -> go.Figure:
        """A static figure of the shown mechanisms, the map side marked.

        >>> [t.name for t in CostExplorer(side=16, mechanisms=("global",)).to_figure().data]
        ['global', 'global']
        """
        s = self.state
        return plots.cost_figure(mechanisms=s.mechanisms, mark=s.side, **s.params())
