"""Interactive explorers for JupyterLab: typed state (traitlets) + a view (ipywidgets + plotly).

Every explorer keeps its choices in a ``state`` of typed traits that can be driven with no
browser, shows them with controls and one plotly ``FigureWidget`` per panel, redrawn from the
builders of ``vizattn.plots`` inside ``fig.batch_update()``, and exports a static figure with
``to_figure()``:

- ``PartitionExplorer``: which keys a query sees under each mechanism's pattern.
- ``CostExplorer``: cost per attention layer against the map side.
- ``ReceptiveFieldExplorer``: theoretical and effective receptive fields of stacked layers.
- ``AttentionExplorer``: a trained model's attention on a photograph, layer by layer, head by head.
- ``LaViTExplorer``: LaViT's reused attention, its diagonality, and saturation against ViT.

``pattern_for`` turns a ``PartitionState`` into a pattern (the single source of truth for what
is drawn).

Slider bounds (``bounds``) make invalid choices impossible where a rule allows it:
``kernel * dilation <= size`` (kernel's maximum follows ``size // dilation``, dilation's
``size // kernel``), the kernel is at least 2 for NA/DiNAT, the query lies on the map. Block,
grid and interval may be any value up to the map size: when one does not divide the map the
pattern is built with ``pad=True`` (the map is padded bottom/right, padded positions are drawn
beyond the map and excluded from the softmax), and the view says so. What a slider cannot rule
out (an even SASA kernel: its window is centred) is explained under the plot, never raised.

>>> state = PartitionState(mechanism="DiNAT", size=12, kernel=3, dilation=2)
>>> pattern_for(state), resolve(state)[0] == pattern_for(state)
(Neighborhood(3, dilation=2), True)
"""

from __future__ import annotations

import functools
import html
import math

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
import traitlets
from traitlets import Enum, HasTraits, Int

from . import plots
from .data import PHOTOS, TASKS, photo
from .layers.common import PatternAttention
from .models import create, list_models
from .patterns import Block, Global, Grid, LocalWindow, LongDistance, Neighborhood, Pattern
from .probe import probe

__all__ = ["MECHANISMS", "PartitionState", "pattern_for", "resolve", "bounds", "PartitionExplorer", "CostState",
           "CostExplorer", "cost_table", "STACKS", "stack_for", "stack_model", "ReceptiveState",
           "ReceptiveFieldExplorer", "MODELS", "AttentionState",
           "AttentionExplorer", "LaViTState", "LaViTExplorer"]

MECHANISMS = ("global", "SASA", "NA", "DiNAT", "MaxViT block", "MaxViT grid", "CrossFormer SDA",
              "CrossFormer LDA")
# the sliders each mechanism reads
PARAMETERS = {"global": (), "SASA": ("kernel",), "NA": ("kernel",), "DiNAT": ("kernel", "dilation"),
              "MaxViT block": ("block",), "MaxViT grid": ("grid",), "CrossFormer SDA": ("block",),
              "CrossFormer LDA": ("interval",)}
SIZE_RANGE = (4, 64)
NO_COMPARE = "(none)"  # the compare menu's entry for compare=None


class PartitionState(HasTraits):
    """Everything a ``PartitionExplorer`` shows, as typed traits (no widgets, no plotly).

    ``compare``: a second mechanism drawn beside the first with the same parameters, or None.
    SDA's group size G is ``block`` (SDA and MaxViT block attention are one pattern).

    >>> s = PartitionState(mechanism="MaxViT grid", size=8, grid=4)
    >>> s.query_i = 3
    >>> (s.mechanism, s.grid, s.query_i), PartitionState.class_trait_names()[:3]
    (('MaxViT grid', 4, 3), ['block', 'compare', 'dilation'])
    """

    mechanism = Enum(MECHANISMS, default_value="NA")
    compare = Enum(MECHANISMS, default_value=None, allow_none=True)
    size = Int(14)
    kernel = Int(5)
    dilation = Int(1)
    block = Int(7)
    grid = Int(7)
    interval = Int(2)
    query_i = Int(7)
    query_j = Int(7)

    def mechanisms(self) -> tuple[str, ...]:
        """The mechanisms on screen: ``(mechanism,)`` or ``(mechanism, compare)``."""
        return (self.mechanism,) if self.compare is None else (self.mechanism, self.compare)


def pattern_for(state: PartitionState, mechanism: str | None = None) -> Pattern:
    """The pattern a state shows (``mechanism`` overrides the state's, e.g. for the compare panel).

    Partition patterns get ``pad=True`` exactly when their size does not divide the map. Raises
    the pattern's ``ValueError`` for an invalid choice.

    >>> pattern_for(PartitionState(mechanism="CrossFormer LDA", size=14, interval=4))
    LongDistance(4, pad=True)
    """
    s, mech = state, mechanism or state.mechanism
    if mech == "global":
        return Global()
    if mech == "SASA":
        return LocalWindow(s.kernel)
    if mech == "NA":
        return Neighborhood(s.kernel)
    if mech == "DiNAT":
        return Neighborhood(s.kernel, dilation=s.dilation)
    if mech in ("MaxViT block", "CrossFormer SDA"):
        return Block(s.block, pad=s.size % s.block != 0)
    if mech == "MaxViT grid":
        return Grid(s.grid, pad=s.size % s.grid != 0)
    if mech == "CrossFormer LDA":
        return LongDistance(s.interval, pad=s.size % s.interval != 0)
    raise ValueError(f"mechanism must be one of {MECHANISMS}; got mechanism={mech!r}")


def _note(pattern: Pattern, size: int) -> str:
    """What the picture shows that a reader might not expect."""
    if isinstance(pattern, LocalWindow):
        return ("SASA: positions off the map are zero vectors that still take part in the softmax "
                "(cells marked 0).")
    if isinstance(pattern, Neighborhood):
        return "NA: at the border the window shifts inward (solid) instead of being clipped (dashed)."
    if getattr(pattern, "pad", False):
        name = {Block: "block size", Grid: "grid size", LongDistance: "interval"}[type(pattern)]
        value = pattern._size()[1][0]
        padded = math.ceil(size / value) * value
        return (f"{size} is not a multiple of the {name} {value}: pad=True pads the map to {padded} "
                f"(cells marked x), padded keys are excluded from the softmax.")
    return ""


def resolve(state: PartitionState, mechanism: str | None = None) -> tuple[Pattern | None, str]:
    """``(pattern, note)`` for a state, or ``(None, explanation)``; never raises for a bad choice.

    >>> resolve(PartitionState(mechanism="SASA", kernel=4))
    (None, 'LocalWindow (SASA) needs an odd kernel_size, its window is centred; got kernel_size=(4, 4)')
    """
    try:
        pattern = pattern_for(state, mechanism)
        pattern.check(state.size, state.size)
        if not (0 <= state.query_i < state.size and 0 <= state.query_j < state.size):
            raise ValueError(f"the query must lie on the {state.size}x{state.size} map; "
                             f"got query=({state.query_i}, {state.query_j})")
    except ValueError as exc:
        return None, str(exc)
    return pattern, _note(pattern, state.size)


def bounds(state: PartitionState) -> dict[str, tuple[int, int]]:
    """``{trait: (min, max)}`` for the sliders, so that every reachable choice is valid.

    >>> b = bounds(PartitionState(mechanism="DiNAT", size=14, kernel=3, dilation=2))
    >>> b["kernel"], b["dilation"], b["query_i"]
    ((2, 7), (1, 4), (0, 13))
    """
    mechs = state.mechanisms()
    size = max(SIZE_RANGE[0], state.size)
    neighbourhood = any(m in ("NA", "DiNAT") for m in mechs)
    k_min = 2 if neighbourhood else 1
    d = max(1, state.dilation) if "DiNAT" in mechs else 1
    kernel = max(k_min, state.kernel)
    return {
        "size": SIZE_RANGE,
        "kernel": (k_min, max(k_min, size // d)),
        "dilation": (1, max(1, size // kernel)),
        "block": (1, size),
        "grid": (1, size),
        "interval": (1, size),
        "query_i": (0, size - 1),
        "query_j": (0, size - 1),
    }


def _set_range(slider, lo: int, hi: int) -> None:
    """Move a slider's bounds without ever passing through min > max (the value is clamped)."""
    if hi < slider.min:
        slider.min, slider.max = lo, hi
    else:
        slider.max, slider.min = hi, lo


class _Explorer(widgets.VBox):
    """What the explorers share: a change of ``state`` calls ``_changed``, which redraws once
    through ``_update``; changes made while it runs (clamping, bounds) are absorbed, since
    ``_update`` reads the whole state anyway."""

    _busy = False

    def _changed(self, change=None) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            self._update()
        finally:
            self._busy = False

    def _set(self, **values) -> None:
        """Set several traits of ``state`` with one redraw."""
        self._busy = True
        try:
            for name, value in values.items():
                setattr(self.state, name, value)
        finally:
            self._busy = False
        self._changed()


def _side_by_side(panels) -> widgets.HBox:
    """Panels in a row that wraps onto the next line when the notebook is too narrow (not clipped)."""
    return widgets.HBox(list(panels), layout=widgets.Layout(flex_flow="row wrap"))


def _send(fig: go.FigureWidget, traces: dict[int, dict], layout: dict | None = None, arrays: dict | None = None):
    """Apply edits to a FigureWidget: ``traces`` ``{index: properties}``, ``layout`` properties
    (merged), ``arrays`` layout arrays such as ``shapes`` (replaced).

    One ``batch_update`` per trace, one for the layout: plotly pads a batch's properties that a
    trace leaves unchanged with ``undefined``, and its anywidget front end (plotly 6/7) stores those
    as null, which erases them (a marker's x and y, say). A batch that touches one trace has no
    padding.
    """
    for index, properties in traces.items():
        with fig.batch_update():
            fig.data[index].update(properties)
    if layout or arrays:
        with fig.batch_update():
            if layout:
                fig.layout.update(layout)
            for name, value in (arrays or {}).items():
                fig.layout[name] = value


def _replace(fig: go.FigureWidget, new: go.Figure) -> None:
    """Make ``fig`` show ``new`` (same trace types in the same order): every trace and the layout
    sent, ``shapes`` and ``annotations`` replaced rather than merged, axes made visible again (after
    ``_explain``), the widget's own template kept."""
    layout = new.layout.to_plotly_json()
    arrays = {key: layout.pop(key, ()) for key in ("shapes", "annotations")}
    layout.pop("template", None)
    for key, axis in layout.items():
        if key.startswith(("xaxis", "yaxis")):
            axis.setdefault("visible", True)
    _send(fig, {t: {**data.to_plotly_json(), "visible": True} for t, data in enumerate(new.data)},
          layout=layout, arrays=arrays)


def _explain(fig, text: str) -> None:
    """Turn a panel into an explanation: traces hidden, ``text`` in the middle, no shapes."""
    note = dict(text=html.escape(text), showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    _send(fig, {t: {"visible": False} for t in range(len(fig.data))},
          layout={"title": {"text": "nothing to draw"}, "xaxis": {"visible": False}, "yaxis": {"visible": False}},
          arrays={"shapes": (), "annotations": (note,)})


def _blank_figure(text: str) -> go.Figure:
    """A figure with only ``text``: what ``to_figure`` gives for an invalid choice."""
    fig = go.Figure()
    fig.update_layout(title=dict(text="nothing to draw", x=0.5), plot_bgcolor="white",
                      annotations=[dict(text=html.escape(text), showarrow=False, xref="paper", yref="paper",
                                        x=0.5, y=0.5)],
                      xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig


_LABELS = {"size": "map size", "kernel": "kernel k", "dilation": "dilation d", "block": "block P / SDA G",
           "grid": "grid G", "interval": "LDA interval I", "query_i": "query row", "query_j": "query col"}


class PartitionExplorer(_Explorer):
    """Sliders + one partition picture per mechanism; click a cell or press play to move the query.

    ``state`` (a ``PartitionState``) is the model: set its traits, or move ``sliders[name]``, and
    ``figures`` (plotly ``FigureWidget``s) and ``messages`` follow. ``to_figure()`` gives a static
    figure with a query sweep as animation frames, for a notebook without a kernel.

    >>> ex = PartitionExplorer("NA", size=8, kernel=3, query=(0, 0))
    >>> ex.state.kernel = 5
    >>> len(plots.cells(ex.figures[0].data[2]))      # the 5 x 5 keys of the corner query
    25
    """

    def __init__(self, mechanism: str = "NA", size: int = 14, kernel: int = 5, dilation: int = 1, block: int = 7,
                 grid: int = 7, interval: int = 2, query=(7, 7), compare: str | None = None, **kwargs):
        self.state = PartitionState(mechanism=mechanism, compare=compare, size=size, kernel=kernel,
                                    dilation=dilation, block=block, grid=grid, interval=interval,
                                    query_i=query[0], query_j=query[1])
        self._scenes = [None, None]  # what each panel shows: (mechanism, pattern, size)
        s = self.state
        self.sliders = {}
        for name in ("size", "kernel", "dilation", "block", "grid", "interval", "query_i", "query_j"):
            slider = widgets.IntSlider(value=getattr(s, name), min=0, max=max(64, getattr(s, name)),
                                       description=_LABELS[name], continuous_update=name != "size",
                                       style={"description_width": "110px"},
                                       layout=widgets.Layout(width="340px"))
            slider.add_class(f"vizattn-{name.replace('_', '-')}")  # a handle for browser tests and CSS
            self.sliders[name] = slider
        self.mechanism_menu = widgets.Dropdown(options=MECHANISMS, value=mechanism, description="mechanism",
                                               style={"description_width": "110px"})
        self.compare_menu = widgets.Dropdown(options=(NO_COMPARE,) + MECHANISMS, value=compare or NO_COMPARE,
                                             description="compare with", style={"description_width": "110px"})
        self.play = widgets.Play(value=0, min=0, max=size * size - 1, step=1, interval=300,
                                 description="sweep the query")
        # start from a real picture so that every trace has all its properties from the first message
        self.figures = [go.FigureWidget(plots.partition_figure(Global(), 4, 4)) for _ in range(2)]
        self.messages = [widgets.HTML(), widgets.HTML()]
        self._panels = [widgets.VBox([f, m]) for f, m in zip(self.figures, self.messages)]

        self._apply_bounds()  # clamps the sliders' values; the links then copy them into the state
        self._links = [widgets.link((slider, "value"), (s, name)) for name, slider in self.sliders.items()]
        self._links += [widgets.link((s, "mechanism"), (self.mechanism_menu, "value")),
                        traitlets.link((s, "compare"), (self.compare_menu, "value"),
                                       transform=(lambda m: m or NO_COMPARE, lambda m: None if m == NO_COMPARE else m))]
        self.play.observe(self._played, "value")
        for fig in self.figures:
            for trace in fig.data[:4]:
                trace.on_click(self._clicked)
        s.observe(self._changed, names=list(s.trait_names()))

        controls = widgets.HBox([
            widgets.VBox([self.mechanism_menu, self.compare_menu, self.sliders["size"], self.play]),
            widgets.VBox([self.sliders[n] for n in ("kernel", "dilation", "block", "grid", "interval")]),
            widgets.VBox([self.sliders["query_i"], self.sliders["query_j"]]),
        ])
        super().__init__([controls, _side_by_side(self._panels)], **kwargs)
        self.add_class("vizattn-partition")  # a handle for browser tests and CSS
        self._changed()

    # -- state -> view ---------------------------------------------------------------------------
    def _apply_bounds(self) -> None:
        for name, (lo, hi) in bounds(self.state).items():
            _set_range(self.sliders[name], lo, hi)
        self.play.max = self.state.size ** 2 - 1
        used = {p for m in self.state.mechanisms() for p in PARAMETERS[m]}
        for name in ("kernel", "dilation", "block", "grid", "interval"):
            self.sliders[name].layout.display = None if name in used else "none"

    def _clamp_state(self) -> None:
        """Pull every trait into its bounds (a value set on the state directly may lie outside).

        One trait at a time, bounds recomputed after each: the map first, then the kernel (given the
        dilation), then the dilation (given the kernel), so a kernel gives way before a dilation.
        """
        for name in ("size", "kernel", "dilation", "block", "grid", "interval", "query_i", "query_j"):
            lo, hi = bounds(self.state)[name]
            value = getattr(self.state, name)
            if not lo <= value <= hi:
                setattr(self.state, name, min(max(value, lo), hi))

    def _update(self) -> None:
        self._clamp_state()
        self._apply_bounds()
        self._redraw()

    def panel_figure(self, which: int = 0) -> go.Figure:
        """The static figure panel ``which`` shows now (0: mechanism, 1: compare)."""
        s = self.state
        mech = s.mechanisms()[which]
        pattern, note = resolve(s, mech)
        if pattern is None:
            return _blank_figure(note)
        return plots.partition_figure(pattern, s.size, s.size, query=(s.query_i, s.query_j),
                                      title=f"{mech}: {pattern!r} on {s.size}x{s.size}")

    def _redraw(self) -> None:
        mechs = self.state.mechanisms()
        for k, (fig, message, panel) in enumerate(zip(self.figures, self.messages, self._panels)):
            panel.layout.display = None if k < len(mechs) else "none"
            if k >= len(mechs):
                continue
            pattern, note = resolve(self.state, mechs[k])
            # a query move keeps the map's geometry: send only what follows the query
            scene = (mechs[k], pattern, self.state.size)
            s = self.state
            if pattern is None:
                _explain(fig, note)
            elif scene == self._scenes[k]:
                new = plots.query_overlay(pattern, s.size, s.size, query=(s.query_i, s.query_j))
                moved = {2 + t: {p: data[p] for p in ("x", "y", "z", "text") if p in data and data[p] is not None}
                         for t, data in enumerate(new.data)}  # only the properties that follow the query
                _send(fig, moved, arrays={"shapes": new.layout.shapes, "annotations": new.layout.annotations})
            else:
                _replace(fig, self.panel_figure(k))
            self._scenes[k] = scene
            message.value = f"<span style='font-size: 13px'>{html.escape(note)}</span>" if note else ""

    # -- view -> state ---------------------------------------------------------------------------
    def _played(self, change) -> None:
        size = self.state.size
        self.set_query(*divmod(change["new"] % (size * size), size))

    def set_query(self, i: int, j: int) -> None:
        """Move the query to ``(i, j)`` with one redraw."""
        self._set(query_i=int(i), query_j=int(j))

    def _clicked(self, trace, points, _device_state=None) -> None:
        if not points.point_inds:
            return
        j, i = int(round(points.xs[0])), int(round(points.ys[0]))
        if 0 <= i < self.state.size and 0 <= j < self.state.size:
            self.set_query(i, j)

    # -- export ----------------------------------------------------------------------------------
    def to_figure(self, which: int = 0) -> go.Figure:
        """A static ``go.Figure`` of panel ``which`` with the query sweep as animation frames.

        >>> len(PartitionExplorer("MaxViT block", size=4, block=2).to_figure().frames)
        16
        """
        s = self.state
        mech = s.mechanisms()[which]
        pattern, note = resolve(s, mech)
        if pattern is None:
            return _blank_figure(note)
        return plots.animate_queries(pattern, s.size, s.size)


# ---------------------------------------------------------------------------------------------
# costs
# ---------------------------------------------------------------------------------------------
class CostState(HasTraits):
    """What a ``CostExplorer`` shows: the map side to read off, the mechanisms, the cost parameters.

    >>> CostState(side=32).mechanisms[:2]
    ('global', 'NA / DiNAT')
    """

    side = Int(56)
    mechanisms = traitlets.Tuple(default_value=plots.COST_MECHANISMS)
    channels = Int(64)
    heads = Int(4)
    kernel = Int(7)
    window = Int(7)  # MaxViT block P, grid G and CrossFormer SDA group G
    interval = Int(8)

    def params(self) -> dict:
        """Keyword arguments for ``plots.cost``."""
        w = self.window
        return dict(channels=self.channels, heads=self.heads, kernel=self.kernel, block=w, grid=w, group=w,
                    interval=self.interval)


def cost_table(state: CostState) -> str:
    """HTML table of every shown mechanism's cost at ``state.side``, relative to global attention.

    >>> "NA / DiNAT" in cost_table(CostState(side=16, mechanisms=("global", "NA / DiNAT")))
    True
    """
    glob = plots.cost("global", state.side, **state.params())
    rows = []
    for name in state.mechanisms:
        macs, memory = plots.cost(name, state.side, **state.params())
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{macs:.3g}</td><td>{macs / glob[0]:.3g}</td>"
                    f"<td>{memory:.3g}</td><td>{memory / glob[1]:.3g}</td></tr>")
    head = ("<tr><th>mechanism</th><th>MACs</th><th>/ global</th><th>attention entries</th>"
            "<th>/ global</th></tr>")
    return (f"<b>{state.side}x{state.side} map ({state.side ** 2} tokens)</b>"
            f"<table style='font-size: 13px'>{head}{''.join(rows)}</table>")


class CostExplorer(widgets.VBox):
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
                                    style={"description_width": "110px"}, layout=widgets.Layout(width="340px"))
            for name, lo, hi, step, label in [("side", 8, 256, 8, "map side"), ("channels", 16, 512, 16, "channels C"),
                                               ("heads", 1, 16, 1, "heads"), ("kernel", 3, 15, 1, "NA/SASA k"),
                                               ("window", 2, 16, 1, "window P, G"), ("interval", 1, 32, 1, "LDA I")]}
        self.toggles = widgets.SelectMultiple(options=plots.COST_MECHANISMS, value=s.mechanisms, rows=8,
                                              description="mechanisms", style={"description_width": "110px"})
        self.table = widgets.HTML()
        self.figure = go.FigureWidget(plots.cost_figure(mark=s.side, **s.params()))
        self._links = [widgets.link((slider, "value"), (s, name)) for name, slider in self.sliders.items()]
        self._links.append(widgets.link((self.toggles, "value"), (s, "mechanisms")))
        s.observe(self._changed, names=list(s.trait_names()))
        super().__init__([widgets.HBox([widgets.VBox(list(self.sliders.values())), self.toggles]),
                          self.figure, self.table], **kwargs)
        self.add_class("vizattn-cost")  # a handle for browser tests and CSS
        self._changed()

    def _changed(self, change=None) -> None:
        s = self.state
        new = plots.cost_figure(mechanisms=plots.COST_MECHANISMS, mark=s.side, **s.params())
        _send(self.figure, {t: {"y": data.y, "visible": data.name in s.mechanisms} for t, data in enumerate(new.data)},
              layout={"title": new.layout.title.to_plotly_json()}, arrays={"shapes": new.layout.shapes})
        self.table.value = cost_table(s)

    def to_figure(self) -> go.Figure:
        """A static figure of the shown mechanisms, the map side marked.

        >>> [t.name for t in CostExplorer(side=16, mechanisms=("global",)).to_figure().data]
        ['global', 'global']
        """
        s = self.state
        return plots.cost_figure(mechanisms=s.mechanisms, mark=s.side, **s.params())


# ---------------------------------------------------------------------------------------------
# receptive fields
# ---------------------------------------------------------------------------------------------
STACKS = ("global", "SASA", "NA", "NA + DiNAT", "MaxViT block + grid", "CrossFormer SDA + LDA")


def stack_for(stack: str, depth: int, size: int, kernel: int = 3, dilation: int = 2, window: int = 4,
              interval: int = 4) -> list:
    """The patterns of ``depth`` attention layers of a kind; the two-pattern kinds alternate, as
    the papers stack them (DiNAT: NA then DiNAT; MaxViT: block then grid; CrossFormer: SDA then LDA).

    >>> stack_for("MaxViT block + grid", 3, 16)
    [Block(4), Grid(4), Block(4)]
    """
    pad = dict(pad=size % window != 0)
    pairs = {"global": (Global(),) * 2, "SASA": (LocalWindow(kernel),) * 2, "NA": (Neighborhood(kernel),) * 2,
             "NA + DiNAT": (Neighborhood(kernel), Neighborhood(kernel, dilation=dilation)),
             "MaxViT block + grid": (Block(window, **pad), Grid(window, **pad)),
             "CrossFormer SDA + LDA": (Block(window, **pad), LongDistance(interval, pad=size % interval != 0))}
    if stack not in pairs:
        raise ValueError(f"stack must be one of {STACKS}; got stack={stack!r}")
    return [pairs[stack][d % 2] for d in range(depth)]


DEPTH_MAX = 8  # the depth slider's end; the random stacks for effective fields are built this deep
RF_SIZE_RANGE = (8, 64)


class FixedPatternAttention(PatternAttention):
    """Multi-head attention over one given pattern, no position terms (the layers of ``stack_model``)."""

    def __init__(self, dim: int, heads: int, pattern: Pattern):
        super().__init__(dim, heads)
        self.fixed = pattern

    def pattern(self, H: int, W: int) -> Pattern:
        return self.fixed


class PatternStack(torch.nn.Module):
    """``images [B, 3, H, W]`` -> ``[B, H, W, dim]``: a per-pixel linear embedding, then one pre-norm
    residual attention block ``x + attn(LN(x))`` per pattern (no MLPs: they act per token and
    change no field). Its attention layers are ``attns.0``, ``attns.1``, ..."""

    def __init__(self, patterns, dim: int = 8, heads: int = 2):
        super().__init__()
        self.embed = torch.nn.Linear(3, dim)
        self.norms = torch.nn.ModuleList(torch.nn.LayerNorm(dim) for _ in patterns)
        self.attns = torch.nn.ModuleList(FixedPatternAttention(dim, heads, p) for p in patterns)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images.permute(0, 2, 3, 1))  # [B, H, W, dim]
        for norm, attn in zip(self.norms, self.attns):
            x = x + attn(norm(x))
        return x


def stack_model(stack: str, depth: int, size: int, kernel: int = 3, dilation: int = 2, window: int = 4,
                interval: int = 4, seed: int = 0) -> PatternStack:
    """A randomly initialised ``PatternStack`` (``torch`` seed ``seed``) of the patterns of ``stack_for``.

    Its attention layer ``attns.{d}`` is layer ``d + 1`` of the stack, so the first ``d`` layers of a
    deeper stack are the same network as a stack of depth ``d``.

    >>> [type(a.fixed).__name__ for a in stack_model("MaxViT block + grid", 3, 16).attns]
    ['Block', 'Grid', 'Block']
    """
    patterns = stack_for(stack, depth, size, kernel=kernel, dilation=dilation, window=window, interval=interval)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return PatternStack(patterns).eval()


class ReceptiveState(HasTraits):
    """What a ``ReceptiveFieldExplorer`` shows: a stack, its depth, the map, the pattern parameters.

    >>> ReceptiveState(stack="NA", depth=3).effective
    True
    """

    stack = Enum(STACKS, default_value="NA + DiNAT")
    size = Int(28)
    depth = Int(2)
    kernel = Int(3)
    dilation = Int(2)
    window = Int(4)
    interval = Int(4)
    effective = traitlets.Bool(True)

    def params(self) -> dict:
        """Keyword arguments of ``stack_for`` / ``stack_model``."""
        return dict(kernel=self.kernel, dilation=self.dilation, window=self.window, interval=self.interval)


class ReceptiveFieldExplorer(widgets.VBox):
    """The receptive field of the centre token as attention layers are stacked: theoretical and effective.

    Left, the theoretical field (``vizattn.receptive.theoretical``): every input position that can
    reach the centre token through the first ``depth`` layers of the stack. Right, the effective
    field (``vizattn.receptive.effective``, the gradient of the centre token's features with
    respect to the input) of the same layers in a *randomly initialised* network (``stack_model``:
    seed 0, a linear embedding and pre-norm residual attention blocks, averaged over 2 random
    images, seed 0), with the sides of the squares that hold 20/50/99% of the gradient. No
    trained model has these stacks, so the effective field shows what the wiring alone does.
    Each depth's effective field costs a forward and a backward pass (cached), so the depth and
    map sliders act on release; ``effective=False`` skips it.

    >>> ex = ReceptiveFieldExplorer("NA", size=15, kernel=3)
    >>> ex.depth.value = 3
    >>> int(sum(v == 1 for row in ex.figure.data[0].z for v in row)), ex.effective_field().sides[0.99] <= 7
    (49, True)
    """

    def __init__(self, stack: str = "NA + DiNAT", size: int = 28, depth: int = 2, kernel: int = 3,
                 dilation: int = 2, window: int = 4, interval: int = 4, effective: bool = True, **kwargs):
        _choice("stack", stack, STACKS)
        if not (isinstance(depth, int) and 1 <= depth <= DEPTH_MAX):
            raise ValueError(f"depth must be an int in [1, {DEPTH_MAX}]; got depth={depth!r}")
        if not (isinstance(size, int) and RF_SIZE_RANGE[0] <= size <= RF_SIZE_RANGE[1]):
            raise ValueError(f"size must be an int in {list(RF_SIZE_RANGE)}; got size={size!r}")
        self.state = ReceptiveState(stack=stack, size=size, depth=depth, kernel=kernel, dilation=dilation,
                                    window=window, interval=interval, effective=effective)
        s = self.state
        self._theoretical, self._effective = {}, {}  # (stack, size, params, depth) -> field
        style = {"description_width": "90px"}
        self.menu = widgets.Dropdown(options=STACKS, value=stack, description="layers", style=style)
        self.depth = widgets.IntSlider(value=depth, min=1, max=DEPTH_MAX, description="depth", style=style,
                                       continuous_update=False)
        self.size_slider = widgets.IntSlider(value=size, min=RF_SIZE_RANGE[0], max=RF_SIZE_RANGE[1],
                                             description="map size", style=style, continuous_update=False)
        self.effective_box = widgets.Checkbox(value=effective, description="effective field (gradients)")
        self.depth.add_class("vizattn-depth")
        self.message = widgets.HTML()
        self.figure = go.FigureWidget(self._figure())
        self.effective_figure = go.FigureWidget(plots.effective_figure(self._blank_field()))
        self._links = [widgets.link((self.menu, "value"), (s, "stack")), widgets.link((self.depth, "value"), (s, "depth")),
                       widgets.link((self.size_slider, "value"), (s, "size")),
                       widgets.link((self.effective_box, "value"), (s, "effective"))]
        s.observe(self._changed, names=list(s.trait_names()))
        super().__init__([widgets.HBox([self.menu, self.depth, self.size_slider, self.effective_box]),
                          _side_by_side([self.figure, self.effective_figure]), self.message], **kwargs)
        self.add_class("vizattn-receptive")  # a handle for browser tests and CSS
        self._changed()

    @property
    def size(self) -> int:
        """The map side (``state.size``)."""
        return self.state.size

    def _key(self, depth: int | None) -> tuple:
        s = self.state
        return s.stack, s.size, tuple(s.params().values()), depth or s.depth

    def field(self, depth: int | None = None):
        """``vizattn.receptive.theoretical`` of the first ``depth`` layers, from the centre token (cached).

        Raises the stack's ``ValueError`` for a combination that does not fit the map.
        """
        from .receptive import theoretical

        key, s = self._key(depth), self.state
        if key not in self._theoretical:
            steps = stack_for(s.stack, key[-1], s.size, **s.params())
            self._theoretical[key] = theoretical(steps, size=s.size, position=(s.size // 2, s.size // 2))
        return self._theoretical[key]

    def effective_field(self, depth: int | None = None):
        """``vizattn.receptive.effective`` of layer ``depth`` of ``stack_model`` at the centre token (cached).

        Raises the stack's ``ValueError`` for a combination that does not fit the map.
        """
        from .receptive import effective

        key, s = self._key(depth), self.state
        if key not in self._effective:
            model = stack_model(s.stack, DEPTH_MAX, s.size, **s.params())
            images = torch.randn(2, 3, s.size, s.size, generator=torch.Generator().manual_seed(0))
            self._effective[key] = effective(model, images, layer=f"attns.{key[-1] - 1}")
        return self._effective[key]

    def _blank_field(self):
        """An empty effective field on the current map: the starting picture of the effective panel."""
        from .receptive import EffectiveField

        n = self.state.size
        return EffectiveField(torch.zeros(n, n), {}, "", (n // 2, n // 2), (n // 2, n // 2))

    def _figure(self) -> go.Figure:
        """The widget's starting figure: ``receptive_figure`` without frames and play buttons."""
        fig = plots.receptive_figure(self.field(1))
        fig.frames, fig.layout.updatemenus, fig.layout.sliders = (), (), ()
        fig.update_layout(width=440, height=520, margin=dict(b=50))
        return fig

    def _changed(self, change=None) -> None:
        s = self.state
        try:
            field = self.field()
        except ValueError as exc:
            self.message.value = html.escape(str(exc))
            _send(self.figure, {0: {"visible": False}})
            _send(self.effective_figure, {0: {"visible": False}}, arrays={"shapes": ()})
            return
        H, W = field.input.shape
        grid = {"x": np.arange(W), "y": np.arange(H)}  # the map may have another size
        axes = {"xaxis": {"range": [-0.5, W - 0.5]}, "yaxis": {"range": [H - 0.5, -0.5]}}
        extent = field.extent(0)
        text = (f"{len(field)} layers of {s.stack}: the centre token can see {int(field.input.sum())} of "
                f"{s.size * s.size} positions, a {extent[0]}x{extent[1]} field.")
        _send(self.figure, {0: {"z": plots.field_z(field.input), **grid, "visible": True}},
              layout={"title": {"text": f"theoretical: {s.stack}, depth {len(field)}", "x": 0.5}, **axes})
        try:
            erf = self.effective_field() if s.effective else None
        except ValueError as exc:  # e.g. no gradient reaches the input: say so on the panel
            erf, text = None, f"{text} No effective field: {exc}."
        if erf is not None:
            parts = plots.effective_parts(erf)
            text += f" Effective field (random weights, seed 0): {parts['caption']}."
            _send(self.effective_figure, {0: {"z": parts["z"], **grid, "zmin": parts["zmin"], "zmax": parts["zmax"],
                                              "visible": True}},
                  layout={"title": {"text": f"effective: {s.stack}, depth {len(field)}"}, **axes},
                  arrays={"shapes": parts["shapes"], "annotations": parts["annotations"]})
        else:
            _send(self.effective_figure, {0: {"visible": False}}, layout={"title": {"text": "effective field: off"}},
                  arrays={"shapes": (), "annotations": ()})
        self.message.value = html.escape(text)

    def to_figure(self) -> go.Figure:
        """A static figure with one animation frame per depth up to the slider's: the theoretical field
        and (when on) the effective one of the first ``d`` layers.

        >>> len(ReceptiveFieldExplorer("NA", size=9, depth=3, effective=False).to_figure().frames)
        3
        """
        s = self.state
        depths = range(1, s.depth + 1)
        return plots.receptive_depths_figure([self.field(d) for d in depths],
                                             [self.effective_field(d) for d in depths] if s.effective else None,
                                             title=f"{s.stack} on a {s.size}x{s.size} map")


# ---------------------------------------------------------------------------------------------
# attention of a trained model on a photograph
# ---------------------------------------------------------------------------------------------
MODELS = list_models()


@functools.lru_cache(maxsize=None)
def _pretrained(name: str, task: str):
    """``create(name, pretrained=True, task=task)``, built once per process, shared by the explorers."""
    return create(name, pretrained=True, task=task)


def _choice(name: str, value, options) -> None:
    """ValueError unless ``value`` is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(str, options))}; got {name}={value!r}")


class AttentionState(HasTraits):
    """What an ``AttentionExplorer`` shows, as typed traits (no widgets, no plotly, no model).

    ``layers`` lists the attention layers of the current model (the explorer fills it after each
    forward pass); ``layer`` must be one of them. ``query_i``/``query_j`` are on the layer's own
    map (stages differ in size), ``head`` indexes the layer's heads.

    >>> s = AttentionState(model="maxvit", layers=("a", "b"), layer="b")
    >>> s.layer = "c"
    Traceback (most recent call last):
    ...
    ValueError: layer must be one of the model's attention layers 'a', 'b'; got layer='c'
    """

    model = Enum(MODELS, default_value="nat")
    task = Enum(TASKS, default_value="shape")
    photo = Enum(PHOTOS, default_value="astronaut")
    layers = traitlets.Tuple()
    layer = traitlets.Unicode("")
    head = Int(0)
    query_i = Int(0)
    query_j = Int(0)
    scale = Enum(plots.SCALES, default_value="local")

    @traitlets.validate("layer")
    def _known_layer(self, proposal):
        if self.layers and proposal["value"] not in self.layers:
            raise ValueError(f"layer must be one of the model's attention layers {', '.join(map(repr, self.layers))}; "
                             f"got layer={proposal['value']!r}")
        return proposal["value"]


class AttentionExplorer(_Explorer):
    """The attention of a trained model on a photograph: pick a layer, a head and a query pixel.

    The model (``vizattn.models.create(model, pretrained=True, task=task)``) runs once on the
    photograph (``vizattn.data.photo(photo)``) under ``vizattn.probe``, capturing every layer and
    head; changing the layer, head, query or colour scale only reads those records, and only a
    new model, task or photo runs the model again (``forwards`` counts the runs). The left panel
    shows the selected head's weights for the query where each key lands, over the photo in grey
    (transparent where the query cannot look); the right one every head of the layer at once.
    Click the photo to move the query (the pixel is mapped to the layer's grid: a cell of an
    ``H x W`` map covers ``64 / H`` pixels) or a thumbnail to pick its head. ``scale``: ``"local"``
    colours each head from 0 to its own largest weight, ``"shared"`` uses one scale for all heads.

    >>> ex = AttentionExplorer("maxvit", layer="stages.2.0.grid_attn", head=1)
    >>> ex.state.query_i, ex.state.query_j = 0, 3
    >>> ex.state.scale = "shared"
    >>> ex.forwards, int(np.isfinite(np.asarray(ex.figure.data[1].z, dtype=float)).sum())   # 16 keys of the 4x4 map
    (1, 16)
    """

    def __init__(self, model: str = "nat", task: str = "shape", photo: str = "astronaut", layer: str | None = None,
                 head: int = 0, query=None, scale: str = "local", **kwargs):
        for name, value, options in [("model", model, MODELS), ("task", task, TASKS), ("photo", photo, PHOTOS),
                                     ("scale", scale, plots.SCALES)]:
            _choice(name, value, options)
        self.state = AttentionState(model=model, task=task, photo=photo, scale=scale)
        s = self.state
        self.forwards = 0
        self._captured, self.records, self.image = None, {}, None
        self._syncing, self._scene, self._size = False, None, None
        self._capture()
        names = tuple(self.records)
        if layer is None:
            layer = names[0]
        _choice("layer", layer, names)
        record = self.records[layer]
        H, W = record.size
        query = (H // 2, W // 2) if query is None else tuple(query)
        if not (0 <= head < len(record.heads)):
            raise ValueError(f"head must lie in [0, {len(record.heads) - 1}] for {layer!r}; got head={head!r}")
        if len(query) != 2 or not (0 <= query[0] < H and 0 <= query[1] < W):
            raise ValueError(f"query must lie on the {H}x{W} map of {layer!r}; got query={query!r}")
        s.layers, s.layer, s.head, s.query_i, s.query_j = names, layer, head, *query
        self._size = record.size

        style = {"description_width": "90px"}
        self.menus = {name: widgets.Dropdown(options=options, value=getattr(s, name), description=name,
                                             style=style, layout=widgets.Layout(width="250px"))
                      for name, options in [("model", MODELS), ("task", TASKS), ("photo", PHOTOS)]}
        self.layer_menu = widgets.Dropdown(description="layer", style=style, layout=widgets.Layout(width="520px"))
        self.scale_buttons = widgets.ToggleButtons(options=plots.SCALES, value=s.scale, description="colour scale",
                                                   style=style, tooltips=("each head from 0 to its own largest weight",
                                                                          "one scale for every head"))
        self.sliders = {}
        for name, label in [("head", "head"), ("query_i", "query row"), ("query_j", "query col")]:
            slider = widgets.IntSlider(value=getattr(s, name), min=0, max=max(getattr(s, name), 1),
                                       description=label, continuous_update=True, style=style,
                                       layout=widgets.Layout(width="330px"))
            slider.add_class(f"vizattn-{name.replace('_', '-')}")
            self.sliders[name] = slider
        self.message = widgets.HTML()
        self.figure = go.FigureWidget(self._main_figure())
        self.heads_figure = go.FigureWidget(self._heads_figure())
        self._scene = self._scene_key()

        self._sync_controls()
        self._links = [widgets.link((menu, "value"), (s, name)) for name, menu in self.menus.items()]
        self._links += [widgets.link((slider, "value"), (s, name)) for name, slider in self.sliders.items()]
        self._links.append(widgets.link((self.scale_buttons, "value"), (s, "scale")))
        self.layer_menu.observe(self._picked_layer, "value")
        for trace in self.figure.data[:2]:
            trace.on_click(self._clicked_photo)
        self.heads_figure.data[0].on_click(self._clicked_head)
        s.observe(self._changed, names=[n for n in s.trait_names() if n != "layers"])
        controls = widgets.VBox([
            widgets.HBox(list(self.menus.values())),
            widgets.HBox([self.layer_menu, self.scale_buttons]),
            widgets.HBox(list(self.sliders.values())),
        ])
        super().__init__([controls, _side_by_side([self.figure, self.heads_figure]), self.message], **kwargs)
        self.add_class("vizattn-attention")  # a handle for browser tests and CSS
        self._changed()

    # -- the model run (the only place that calls the model) ------------------------------------
    @property
    def model(self):
        """The current model (``vizattn.models.create(..., pretrained=True)``), cached per name and task."""
        return _pretrained(self.state.model, self.state.task)

    def _capture(self) -> None:
        """Run the model on the photo under ``probe`` unless this model, task and photo already ran."""
        s = self.state
        key = (s.model, s.task, s.photo)
        if key == self._captured:
            return
        model = self.model
        self.image = photo(s.photo, size=model.config["img_size"])
        with torch.no_grad(), probe(model) as rec:
            model(self.image[None])
        self.forwards += 1
        self.records = {r.name: r for r in rec}
        self._captured = key

    @property
    def record(self):
        """The ``AttentionRecord`` of the selected layer."""
        return self.records[self.state.layer]

    # -- state -> view ---------------------------------------------------------------------------
    def _scene_key(self):
        return self._captured, self.state.layer

    def _main_figure(self) -> go.Figure:
        s = self.state
        return plots.query_map_figure(self.record, s.query_i, s.query_j, head=s.head, image=self.image, scale=s.scale,
                                      title=self._title())

    def _heads_figure(self) -> go.Figure:
        s = self.state
        return plots.heads_figure(self.record, s.query_i, s.query_j, selected=s.head, scale=s.scale)

    def _title(self) -> str:
        s = self.state
        return f"{s.model} on {s.photo}: " + plots.query_map_title(self.record, s.query_i, s.query_j, s.head)

    def _update(self) -> None:
        s, before = self.state, tuple(self.records)
        self._capture()
        names = tuple(self.records)
        if s.layers != names:
            previous = s.layer
            s.layers = names
            if previous not in names:  # another model: the layer at the same depth (or the last)
                depth = before.index(previous) if previous in before else 0
                s.layer = names[min(depth, len(names) - 1)]
        H, W = self.record.size
        if self._size != (H, W):  # another map: keep the query on the same part of the image
            h0, w0 = self._size
            s.query_i, s.query_j = int((s.query_i + 0.5) * H / h0), int((s.query_j + 0.5) * W / w0)
            self._size = (H, W)
        s.head = min(max(s.head, 0), len(self.record.heads) - 1)
        s.query_i, s.query_j = min(max(s.query_i, 0), H - 1), min(max(s.query_j, 0), W - 1)
        self._sync_controls()
        self._redraw()

    def _sync_controls(self) -> None:
        """Slider bounds and the layer menu follow the model and the layer (every position valid)."""
        s, record = self.state, self.record
        H, W = record.size
        for name, hi in [("head", len(record.heads) - 1), ("query_i", H - 1), ("query_j", W - 1)]:
            _set_range(self.sliders[name], 0, hi)
        self._syncing = True  # new options reset a Dropdown's value: not a choice of the user
        try:
            options = tuple((f"{r.name}: {r.pattern!r} on {r.size[0]}x{r.size[1]}", n) for n, r in self.records.items())
            if self.layer_menu.options != options:
                self.layer_menu.options = options
            self.layer_menu.value = s.layer
        finally:
            self._syncing = False

    def _redraw(self) -> None:
        s, record = self.state, self.record
        scene = self._scene_key()
        if scene != self._scene:
            _replace(self.figure, self._main_figure())
            _replace(self.heads_figure, self._heads_figure())
            self._scene = scene
        else:  # same photo and layer: only what follows the query, head and scale
            S = self.image.shape[-1]
            weights, query = plots.query_map_traces(record, s.query_i, s.query_j, head=s.head, image_size=S,
                                                    scale=s.scale)
            _send(self.figure, {1: {"z": weights.z, "zmax": weights.zmax}, 2: {"x": query.x, "y": query.y}},
                  layout={"title": {"text": self._title()}})
            mosaic, marks = plots.heads_traces(record, s.query_i, s.query_j, scale=s.scale)
            _send(self.heads_figure, {0: {"z": mosaic.z, "customdata": mosaic.customdata, "zmax": mosaic.zmax,
                                          "colorbar": {"title": {"text": mosaic.colorbar.title.text}}},
                                      1: {"x": marks.x, "y": marks.y}},
                  layout={"title": {"text": f"{record.name}: every head, query ({s.query_i}, {s.query_j})"}},
                  arrays={"shapes": plots.head_shapes(record, s.head)})
        self.message.value = self._caption()

    def _caption(self) -> str:
        s, record = self.state, self.record
        H, W = record.size
        S = self.image.shape[-1]
        cell = S / H
        rows = f"{int(s.query_i * cell)}-{int((s.query_i + 1) * cell) - 1}"
        cols = f"{int(s.query_j * S / W)}-{int((s.query_j + 1) * S / W) - 1}"
        keys = int((record.keys[s.query_i * W + s.query_j] >= 0).sum())
        scale = ("each head from 0 to its own largest weight" if s.scale == "local"
                 else "one scale for every head of the layer")
        text = (f"{record.name}: {record.kind} attention, {record.pattern!r} on a {H}x{W} map, "
                f"{len(record.heads)} heads. Query ({s.query_i}, {s.query_j}) covers image rows {rows}, "
                f"columns {cols}; it attends to {keys} keys (transparent: tokens it cannot see). "
                f"Colour: {scale}. The model ran {self.forwards} time(s).")
        return f"<span style='font-size: 13px'>{html.escape(text)}</span>"

    # -- view -> state ---------------------------------------------------------------------------
    def _picked_layer(self, change) -> None:
        if not self._syncing and change["new"] is not None:
            self.state.layer = change["new"]

    def set_query(self, i: int, j: int) -> None:
        """Move the query to cell ``(i, j)`` of the layer's map with one redraw."""
        self._set(query_i=int(i), query_j=int(j))

    def _clicked_photo(self, trace, points, _device_state=None) -> None:
        if not points.xs:
            return
        S = self.image.shape[-1]
        H, W = self.record.size
        x, y = points.xs[0], points.ys[0]  # image pixels (cell centres for the weights)
        if 0 <= x + 0.5 < S and 0 <= y + 0.5 < S:
            self.set_query(int((y + 0.5) * H / S), int((x + 0.5) * W / S))

    def _clicked_head(self, trace, points, _device_state=None) -> None:
        if points.xs:
            head = plots.head_of_cell(self.record, int(round(points.ys[0])), int(round(points.xs[0])))
            if head is not None:
                self.state.head = head

    # -- export ----------------------------------------------------------------------------------
    def to_figure(self) -> go.Figure:
        """A static figure of the selected head over the photo, one animation frame per query.

        >>> len(AttentionExplorer("maxvit", layer="stages.2.0.block_attn").to_figure().frames)
        16
        """
        s = self.state
        return plots.animate_query_maps(self.record, head=s.head, image=self.image, scale=s.scale)


# ---------------------------------------------------------------------------------------------
# LaViT: reused attention
# ---------------------------------------------------------------------------------------------
class LaViTState(HasTraits):
    """What a ``LaViTExplorer`` shows: the task and photo the models run on, a stage, a head.

    >>> LaViTState(stage=1, head=2).photo
    'astronaut'
    """

    task = Enum(TASKS, default_value="shape")
    photo = Enum(PHOTOS, default_value="astronaut")
    stage = Int(0)
    head = Int(0)


VANILLA_HERE = ("a vanilla layer here: softmax(Q'K'ᵀ/√d), where Q' and K' are the stage's VA layer's own query and "
                "key projections applied to this LA layer's input (after its LayerNorm); no attention residual")


class LaViTExplorer(_Explorer):
    """LaViT's less attention on a photograph: the VA → LA reuse chain of a stage, per-layer
    diagonality and symmetry, and attention saturation against the ViT baseline.

    The pretrained ``lavit`` and ``vit`` models (``task``) run once on the photo (``forwards``
    counts the runs: two per task or photo); stage and head only pick what is drawn.

    - chain: the attention each layer of the stage uses (top: the VA layer's
      softmax(QKᵀ/√d), then each LA layer's softmax(Ψ(Θ(A)ᵀ)ᵀ) of the layer before), and under each
      LA layer what a vanilla layer would compute there: softmax(Q'K'ᵀ/√d) with Q', K' the stage's
      VA layer's query/key projections applied to the LA layer's own (normalised) input, no
      attention residual. TV: ``metrics.reuse_distance`` (total variation, mean over queries).
    - measures: ``metrics.diagonality`` and ``metrics.symmetry`` (the error) of every layer,
      mean of heads, with the vanilla counterpart of each LA layer.
    - saturation: ``metrics.saturation`` of LaViT and of ViT (cosine similarity of consecutive
      layers; a gap where the map size changes).

    >>> ex = LaViTExplorer(stage=1)
    >>> ex.state.head = 3
    >>> ex.forwards, [a.text for a in ex.chain_figure.layout.annotations][:3]
    (2, ['VA stages.1.attns.0', 'LA stages.1.attns.1', 'LA stages.1.attns.2'])
    """

    def __init__(self, task: str = "shape", stage: int | None = None, photo: str = "astronaut", head: int = 0,
                 **kwargs):
        _choice("task", task, TASKS)
        _choice("photo", photo, PHOTOS)
        self.state = LaViTState(task=task, photo=photo, head=head)
        s = self.state
        self.forwards, self._captured = 0, None
        config = self._model("lavit").config  # checked before any forward pass
        stages, heads = len(config["depths"]), min(config["heads"])
        stage = 0 if stage is None else stage
        if not (isinstance(stage, int) and 0 <= stage < stages):
            raise ValueError(f"stage must be None or an int in [0, {stages - 1}]; got stage={stage!r}")
        if not (isinstance(head, int) and 0 <= head < heads):
            raise ValueError(f"head must lie in [0, {heads - 1}]; got head={head!r}")
        self._capture()
        s.stage = stage

        style = {"description_width": "70px"}
        self.menus = {name: widgets.Dropdown(options=options, value=getattr(s, name), description=name, style=style,
                                             layout=widgets.Layout(width="230px"))
                      for name, options in [("task", TASKS), ("photo", PHOTOS)]}
        self.sliders = {name: widgets.IntSlider(value=getattr(s, name), min=0, max=hi, description=name, style=style,
                                                continuous_update=True, layout=widgets.Layout(width="300px"))
                        for name, hi in [("stage", stages - 1), ("head", self.heads - 1)]}
        for name, slider in self.sliders.items():
            slider.add_class(f"vizattn-lavit-{name}")
        self.chain_figure = go.FigureWidget(self._chain_figure())
        self.measures_figure = go.FigureWidget(plots.layer_measures_figure(self.measures, highlight=s.stage))
        self.saturation_figure = go.FigureWidget(plots.saturation_figure(self.saturation))
        self.message = widgets.HTML()
        self._shown = (self._captured, s.stage)
        self._links = [widgets.link((w, "value"), (s, name)) for name, w in {**self.menus, **self.sliders}.items()]
        s.observe(self._changed, names=list(s.trait_names()))
        super().__init__([widgets.HBox([*self.menus.values(), *self.sliders.values()]), self.chain_figure,
                          _side_by_side([self.measures_figure, self.saturation_figure]), self.message], **kwargs)
        self.add_class("vizattn-lavit")  # a handle for browser tests and CSS
        self._changed()

    # -- the model runs ----------------------------------------------------------------------------
    def _model(self, name: str):
        return _pretrained(name, self.state.task)

    def _capture(self) -> None:
        """Run LaViT (capturing every layer and each LA layer's input) and ViT on the photo, once per task and photo."""
        from .layers.lavit import LessAttention
        from .metrics import diagonality, reuse_distance, saturation, symmetry

        s = self.state
        if (s.task, s.photo) == self._captured:
            return
        lavit, vit = self._model("lavit"), self._model("vit")
        image = photo(s.photo, size=lavit.config["img_size"])[None]
        inputs = {}
        hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: inputs.__setitem__(name, args[0]))
                 for name, m in lavit.named_modules() if isinstance(m, LessAttention)]
        try:
            with torch.no_grad(), probe(lavit) as rec:
                lavit(image)
        finally:
            for h in hooks:
                h.remove()
        with torch.no_grad(), probe(vit) as rec_vit:
            vit(image)
        self.forwards += 2
        last = {}
        for r in rec:
            last[r.stage] = r
        self.chains = [rec.chain(last[stage]) for stage in sorted(last)]  # each stage: VA, LA, LA, ...
        self.heads = rec[0].weights.shape[1]
        self.columns, self.measures = [], []
        for chain in self.chains:
            columns = []
            for r in chain:
                used = r.dense()[0]  # [heads, N, N]
                column = dict(label=f"{'VA' if r.kind == 'vanilla' else 'LA'} {r.name}", used=used.numpy())
                row = dict(name=r.name, kind=r.kind, stage=r.stage, diagonality=float(diagonality(used).mean()),
                           symmetry=float(symmetry(used).mean()))
                if r.kind == "less":
                    with torch.no_grad():  # the source VA layer on this layer's input: its scores QK^T / sqrt(d)
                        vanilla = lavit.get_submodule(r.source)(inputs[r.name])[1].softmax(-1)  # [1, heads, N, N]
                    column.update(vanilla=vanilla[0].numpy(), distance=reuse_distance(r, vanilla).numpy())
                    row.update(vanilla_diagonality=float(diagonality(vanilla[0]).mean()),
                               vanilla_symmetry=float(symmetry(vanilla[0]).mean()))
                columns.append(column)
                self.measures.append(row)
            self.columns.append(columns)
        self.saturation = {"LaViT": saturation(list(rec)).tolist(), "ViT": saturation(list(rec_vit)).tolist()}
        self._captured = (s.task, s.photo)

    # -- state -> view ---------------------------------------------------------------------------
    def _chain_title(self) -> str:
        s = self.state
        N = self.columns[s.stage][0]["used"].shape[-1]
        side = math.isqrt(N)
        return f"LaViT stage {s.stage} ({side}x{side} tokens, N = {N}) on {s.photo}: reuse chain, head {s.head}"

    def _chain_figure(self, frames: bool = False) -> go.Figure:
        s = self.state
        return plots.reuse_chain_figure(self.columns[s.stage], head=s.head, frames=frames, title=self._chain_title())

    def _update(self) -> None:
        s = self.state
        s.stage = min(max(s.stage, 0), len(self.chains) - 1)
        s.head = min(max(s.head, 0), self.heads - 1)
        self._capture()
        columns = self.columns[s.stage]
        zs, cmax, titles = plots.reuse_chain_maps(columns, s.head)
        if len(zs) != len(self.chain_figure.data) or self._captured != self._shown[0]:
            _replace(self.chain_figure, self._chain_figure())
        else:  # the same layout: new maps, colour top, titles (and axes, for another stage)
            fig, N = self.chain_figure, columns[0]["used"].shape[-1]
            layout = {"title": {"text": self._chain_title()}, "coloraxis": {"cmax": cmax}}
            if s.stage != self._shown[1]:
                layout.update(plots.chain_axes(N, len(columns)))
            _send(fig, {t: {"z": z} for t, z in enumerate(zs)}, layout=layout,
                  arrays={"annotations": [dict(a.to_plotly_json(), text=t)
                                          for a, t in zip(fig.layout.annotations, titles)]})
        if self._captured != self._shown[0]:
            _replace(self.measures_figure, plots.layer_measures_figure(self.measures, highlight=s.stage))
            _replace(self.saturation_figure, plots.saturation_figure(self.saturation))
        else:
            _send(self.measures_figure, {}, arrays={"shapes": plots.stage_shade(self.measures, s.stage)})
        self._shown = (self._captured, s.stage)
        self.message.value = self._caption()

    def _caption(self) -> str:
        s = self.state
        la = [c for c in self.columns[s.stage] if "vanilla" in c]
        tv = ", ".join(f"{c['label'].split()[1]}: {float(c['distance'][s.head]):.2f}" for c in la)
        text = (f"Top row: the attention each layer uses: the VA layer's softmax(QKᵀ/√d), each LA layer's "
                f"softmax(Ψ(Θ(A)ᵀ)ᵀ) with A the scores of the layer before. Bottom row: {VANILLA_HERE}. "
                f"TV = total variation between the LA layer's attention and that "
                f"vanilla attention, mean over queries (0: the same), head {s.head}: {tv}. A uniform map has "
                f"diagonality 1/N. The models ran {self.forwards} times.")
        return f"<span style='font-size: 13px'>{html.escape(text)}</span>"

    # -- export ----------------------------------------------------------------------------------
    def to_figure(self) -> go.Figure:
        """A static figure of the current stage's reuse chain, one animation frame per head.

        >>> len(LaViTExplorer(stage=1).to_figure().frames)
        4
        """
        return self._chain_figure(frames=True)
