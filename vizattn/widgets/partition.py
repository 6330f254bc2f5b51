"""``PartitionExplorer``: which keys a query sees under each mechanism's pattern.

The menus list the layer kinds of ``vizattn.mechanisms`` (``MECHANISMS``); ``pattern_for`` turns a
``PartitionState`` into a pattern through that table (the single source of truth for what is drawn).

Slider bounds (``bounds``) make invalid choices impossible where a rule allows it:
``kernel * dilation <= size`` (kernel's maximum follows ``size // dilation``, dilation's
``size // kernel``), ``stride <= kernel``, the kernel is at least the smallest a mechanism allows (2 for NA/DiNAT), the
query lies on the map, a kernel that must be odd (SASA: its window is centred; the table's ``odd``)
moves in steps of 2 from an odd minimum (``steps``). Block, grid and interval may be any value up to the map size:
when one does not divide the map the pattern is built with ``pad=True`` (the map is padded bottom/right, padded
positions are drawn beyond the map and excluded from the softmax), and the view says so. An
invalid state set directly (``resolve``) is explained under the plot, never raised.

Swin's layers (kind ``"swin"``) have a toggle (``state.rolled``): their groups in original
coordinates (``plots.partition_figure``) or on Swin's map rolled by ``-s`` with its ``P x P``
windows and masked sub-regions (``plots.rolled_figure``), both drawn from the one pattern.

>>> state = PartitionState(mechanism="DiNAT", size=12, kernel=3, dilation=2)
>>> pattern_for(state), resolve(state)[0] == pattern_for(state)
(Neighborhood(3, dilation=2), True)
"""

from __future__ import annotations

import math

import ipywidgets as widgets
import plotly.graph_objects as go
import traitlets
from traitlets import Bool, Enum, HasTraits, Int

from .. import mechanisms, plots
from ..checks import check_query
from ..patterns import Global, Pattern
from . import figure, static
from .base import Explorer, blank_figure, explain, note_html, replace, send, set_range, side_by_side

__all__ = ["MECHANISMS", "PARAMETERS", "PartitionState", "pattern_for", "resolve", "rolled_here", "bounds", "steps",
           "PartitionExplorer"]

MECHANISMS = tuple(mechanisms.LAYERS)
PARAMETERS = {name: tuple(lay.parameters) for name, lay in mechanisms.LAYERS.items()}  # the sliders each one reads
SIZE_RANGE = (4, 64)
NO_COMPARE = "(none)"  # the compare menu's entry for compare=None
GROUPS, KEYS = plots.TRACES.index("groups"), plots.TRACES.index("keys")  # the query's overlay follows the keys


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
    stride = Int(1)
    block = Int(7)
    grid = Int(7)
    interval = Int(2)
    query_i = Int(7)
    query_j = Int(7)
    rolled = Bool(False)  # Swin's layers drawn on Swin's rolled map (``plots.rolled_figure``)

    def mechanisms(self) -> tuple[str, ...]:
        """The mechanisms on screen: ``(mechanism,)`` or ``(mechanism, compare)``."""
        return (self.mechanism,) if self.compare is None else (self.mechanism, self.compare)


def pattern_for(state: PartitionState, mechanism: str | None = None) -> Pattern:
    """The pattern a state shows (``mechanism`` overrides the state's, e.g. for the compare panel).

    Built by the mechanism's row of ``vizattn.mechanisms``: partition patterns get ``pad=True``
    exactly when their size does not divide the map. Raises the pattern's ``ValueError`` for an
    invalid choice.

    >>> pattern_for(PartitionState(mechanism="CrossFormer LDA", size=14, interval=4))
    LongDistance(4, pad=True)
    """
    values = {name: getattr(state, name) for name in mechanisms.PARAMETERS}
    return mechanisms.layer(mechanism or state.mechanism).pattern(values, state.size)


def _note(pattern: Pattern, size: int, mechanism: str) -> str:
    """What the picture shows that a reader might not expect."""
    if pattern.zero_slots:
        return ("SASA: positions off the map are zero vectors that still take part in the softmax "
                "(cells marked 0).")
    if pattern.centred(0, 0) is not None:
        return "NA: at the border the window shifts inward (solid) instead of being clipped (dashed)."
    if getattr(pattern, "pad", False):
        first = next(iter(mechanisms.layer(mechanism).parameters))  # the layer's group size
        name, value = mechanisms.PARAMETERS[first].noun, pattern.group_size[0]
        padded = math.ceil(size / value) * value
        return (f"{size} is not a multiple of the {name} {value}: pad=True pads the map to {padded}; "
                f"padded keys (marked x when the query's group reaches them) are excluded from the softmax.")
    return ""


def resolve(state: PartitionState, mechanism: str | None = None) -> tuple[Pattern | None, str]:
    """``(pattern, note)`` for a state, or ``(None, explanation)``; never raises for a bad choice.

    >>> resolve(PartitionState(mechanism="SASA", kernel=4))
    (None, 'LocalWindow (SASA) needs an odd kernel_size, its window is centred; got kernel_size=(4, 4)')
    """
    try:
        pattern = pattern_for(state, mechanism)
        pattern.check(state.size, state.size)
        check_query((state.query_i, state.query_j), state.size, state.size)
    except ValueError as exc:
        return None, str(exc)
    return pattern, _note(pattern, state.size, mechanism or state.mechanism)


def rolled_here(state: PartitionState, mechanism: str) -> bool:
    """Whether ``mechanism``'s panel shows Swin's rolled map: ``state.rolled`` and a Swin layer.

    >>> rolled_here(PartitionState(mechanism="Swin SW", rolled=True), "Swin SW"), rolled_here(
    ...     PartitionState(rolled=True), "NA")
    (True, False)
    """
    return state.rolled and mechanisms.layer(mechanism).kind == "swin"


def bounds(state: PartitionState) -> dict[str, tuple[int, int]]:
    """``{trait: (min, max)}`` for the sliders, so that every reachable choice is valid.

    >>> b = bounds(PartitionState(mechanism="DiNAT", size=14, kernel=3, dilation=2))
    >>> b["kernel"], b["dilation"], b["query_i"]
    ((2, 7), (1, 4), (0, 13))
    """
    read = [mechanisms.layer(m).parameters for m in state.mechanisms()]  # {parameter: smallest value}
    size = max(SIZE_RANGE[0], state.size)
    step = steps(state)["kernel"]
    k_min = max(p.get("kernel", 1) for p in read)
    k_min += (k_min - 1) % step  # odd kernels: the smallest odd one
    d = max(1, state.dilation) if any("dilation" in p for p in read) else 1
    kernel = max(k_min, state.kernel)
    k_max = max(k_min, size // d)
    return {
        "size": SIZE_RANGE,
        "kernel": (k_min, k_max - (k_max - k_min) % step),
        "dilation": (1, max(1, size // kernel)),
        "stride": (1, min(kernel, k_max)),  # a stride tile is at most the window
        "block": (1, size),
        "grid": (1, size),
        "interval": (1, size),
        "query_i": (0, size - 1),
        "query_j": (0, size - 1),
    }


def steps(state: PartitionState) -> dict[str, int]:
    """``{trait: step}`` for the sliders: 2 for a parameter that one mechanism on screen needs odd.

    >>> both = PartitionState(mechanism="NA", compare="SASA")
    >>> steps(both)["kernel"], bounds(PartitionState(mechanism="SASA"))["kernel"]
    (2, (1, 13))
    """
    odd = {name for m in state.mechanisms() for name in mechanisms.layer(m).odd}
    return {name: 2 if name in odd else 1 for name in _SLIDERS}


_LABELS = {"size": "map size", **{name: p.label for name, p in mechanisms.PARAMETERS.items()},
           "query_i": "query row", "query_j": "query col"}
_SLIDERS = tuple(_LABELS)  # in the order bounds are applied: the map, the parameters, the query


class PartitionExplorer(Explorer):
    """Sliders + one partition picture per mechanism; click a cell or press play to move the query.

    ``state`` (a ``PartitionState``) is the model: set its traits, or move ``sliders[name]``, and
    ``figures`` (plotly ``FigureWidget``s) and ``messages`` follow. ``to_figure()`` gives a static
    figure with a query sweep as animation frames, for a notebook without a kernel.

    >>> ex = PartitionExplorer("NA", size=8, kernel=3, query=(0, 0))
    >>> ex.state.kernel = 5
    >>> len(plots.cells(ex.figures[0].data[1]))      # the 5 x 5 keys of the corner query
    25
    """

    def __init__(self, mechanism: str = "NA", size: int = 14, kernel: int = 5, dilation: int = 1, block: int = 7,
                 grid: int = 7, interval: int = 2, query=(7, 7), compare: str | None = None, rolled: bool = False,
                 stride: int = 1, **kwargs):
        self.state = PartitionState(mechanism=mechanism, compare=compare, size=size, kernel=kernel,
                                    dilation=dilation, stride=stride, block=block, grid=grid, interval=interval,
                                    query_i=query[0], query_j=query[1], rolled=rolled)
        self._scenes = [None, None]  # what each panel shows: (mechanism, pattern, size, cell size)
        # what was asked for (a slider move, a value set): clamping follows the map down and back up
        self._wanted = {name: getattr(self.state, name) for name in _SLIDERS}
        s = self.state
        self.sliders = {}
        for name in _SLIDERS:
            slider = widgets.IntSlider(value=getattr(s, name), min=0, max=max(64, getattr(s, name)),
                                       description=_LABELS[name], continuous_update=name != "size",
                                       style={"description_width": "116px"},
                                       layout=widgets.Layout(width="320px"))
            slider.add_class(f"vizattn-{name.replace('_', '-')}")  # a handle for browser tests and CSS
            self.sliders[name] = slider
        self.mechanism_menu = widgets.Dropdown(options=MECHANISMS, value=mechanism, description="mechanism",
                                               style={"description_width": "116px"},
                                               layout=widgets.Layout(width="320px"))
        self.compare_menu = widgets.Dropdown(options=(NO_COMPARE,) + MECHANISMS, value=compare or NO_COMPARE,
                                             description="compare with", style={"description_width": "116px"},
                                             layout=widgets.Layout(width="320px"))
        self.roll_toggle = widgets.ToggleButtons(options=[("original map", False), ("rolled map", True)],
                                                 value=self.state.rolled, description="Swin view",
                                                 style={"description_width": "116px", "button_width": "120px"})
        self.roll_toggle.add_class("vizattn-rolled")  # a handle for browser tests and CSS
        self.play = widgets.Play(value=0, min=0, max=size * size - 1, step=1, interval=300,
                                 description="sweep the query")
        # start from a real picture so that every trace has all its properties from the first message
        self.figures = [figure.FigureWidget(plots.partition_figure(Global(), 4, 4)) for _ in range(2)]
        # a caption no wider than its picture, so that two panels fit side by side
        self.messages = [widgets.HTML(layout=widgets.Layout(max_width="450px")) for _ in range(2)]
        self._panels = [widgets.VBox([f, m]) for f, m in zip(self.figures, self.messages)]

        self._apply_bounds()  # clamps the sliders' values; the links then copy them into the state
        self._links = [widgets.link((slider, "value"), (s, name)) for name, slider in self.sliders.items()]
        self._links += [widgets.link((s, "mechanism"), (self.mechanism_menu, "value")),
                        traitlets.link((s, "compare"), (self.compare_menu, "value"),
                                       transform=(lambda m: m or NO_COMPARE, lambda m: None if m == NO_COMPARE else m)),
                        widgets.link((s, "rolled"), (self.roll_toggle, "value"))]
        self.play.observe(self._played, "value")
        for fig in self.figures:
            for trace in fig.data:
                trace.on_click(self._clicked)
        s.observe(self._changed, names=list(s.trait_names()))

        controls = widgets.HBox([
            widgets.VBox([self.mechanism_menu, self.compare_menu, self.sliders["size"],
                          widgets.HBox([widgets.Label("sweep the query", layout=widgets.Layout(width="116px")),
                                        self.play]),
                          self.roll_toggle]),
            widgets.VBox([self.sliders[n] for n in mechanisms.PARAMETERS]),
            widgets.VBox([self.sliders["query_i"], self.sliders["query_j"]]),
        ], layout=widgets.Layout(flex_flow="row wrap"))
        super().__init__([controls, side_by_side(self._panels)], **kwargs)
        self.add_class("vizattn-partition")  # a handle for browser tests and CSS
        self._changed()

    # -- state -> view ---------------------------------------------------------------------------
    def _changed(self, change=None) -> None:
        if change is not None and not self._busy and change["name"] in self._wanted:
            self._wanted[change["name"]] = change["new"]  # asked for, not a clamp
        super()._changed(change)

    def _set(self, **values) -> None:
        self._wanted.update({k: v for k, v in values.items() if k in self._wanted})
        super()._set(**values)

    def _apply_bounds(self) -> None:
        step = steps(self.state)
        for name, (lo, hi) in bounds(self.state).items():
            with self.sliders[name].hold_sync():  # one message per slider
                set_range(self.sliders[name], lo, hi)
                self.sliders[name].step = step[name]
                self.sliders[name].value = getattr(self.state, name)  # a value restored past the old bounds
        self.play.max = self.state.size ** 2 - 1
        used = {p for m in self.state.mechanisms() for p in PARAMETERS[m]}
        for name in mechanisms.PARAMETERS:
            self.sliders[name].layout.display = None if name in used else "none"
        swin = any(mechanisms.layer(m).kind == "swin" for m in self.state.mechanisms())
        self.roll_toggle.layout.display = None if swin else "none"

    def _clamp_state(self) -> None:
        """Every trait at the value asked for, pulled into its bounds and onto its steps: a kernel or
        query that a smaller map clamped comes back when the map grows again.

        One trait at a time, bounds recomputed after each: the map first, then the kernel (given the
        dilation), then the dilation (given the kernel), so a kernel gives way before a dilation.
        """
        for name in _SLIDERS:
            lo, hi = bounds(self.state)[name]
            step = steps(self.state)[name]
            value = min(max(self._wanted[name], lo), hi)
            value = lo + (value - lo) // step * step
            if getattr(self.state, name) != value:
                setattr(self.state, name, value)

    def _update(self) -> None:
        self._clamp_state()
        self._redraw()  # the figures first: the browser starts redrawing them while the sliders follow
        self._apply_bounds()

    def panel_figure(self, which: int = 0) -> go.Figure:
        """The static figure panel ``which`` shows now (0: mechanism, 1: compare)."""
        return go.Figure(self._panel_spec(which))

    def _panel_spec(self, which: int) -> dict | go.Figure:
        """``panel_figure`` as plain data (a blank figure when there is nothing to draw): what a redraw sends."""
        s = self.state
        mech = s.mechanisms()[which]
        pattern, note = resolve(s, mech)
        if pattern is None:
            return blank_figure(note)
        spec = plots.rolled_spec if rolled_here(s, mech) else plots.partition_spec
        where = ", Swin's rolled map" if rolled_here(s, mech) else ""
        return spec(pattern, s.size, s.size, query=(s.query_i, s.query_j),
                    title=f"{mech}: {pattern!r} on {s.size}x{s.size}{where}", area_px=self._area())

    def _area(self) -> int:
        """Pixels for the map: two panels side by side fit a 1000 px notebook."""
        return 448 if self.state.compare is None else 300

    def _redraw(self) -> None:
        mechs = self.state.mechanisms()
        for k, (fig, message, panel) in enumerate(zip(self.figures, self.messages, self._panels)):
            panel.layout.display = None if k < len(mechs) else "none"
            if k >= len(mechs):
                continue
            pattern, note = resolve(self.state, mechs[k])
            # a query move keeps the map's geometry: send only what follows the query
            s = self.state
            rolled = rolled_here(s, mechs[k])
            scene = (mechs[k], pattern, s.size, self._area(), rolled)
            if pattern is None:
                explain(fig, note)
            elif scene == self._scenes[k]:
                overlay = plots.rolled_overlay_spec if rolled else plots.overlay_spec
                new = overlay(pattern, s.size, s.size, query=(s.query_i, s.query_j))
                moved = {KEYS + t: {p: data[p] for p in ("x", "y", "z", "text") if data.get(p) is not None}
                         for t, data in enumerate(new["data"])}  # only the properties that follow the query
                if pattern.grouped:  # the query's own group is the strong one
                    groups = plots.rolled_groups if rolled else plots.group_z
                    moved[GROUPS] = {"z": groups(pattern, s.size, s.size, (s.query_i, s.query_j))}
                send(fig, moved, arrays=new["layout"])
            else:
                replace(fig, self._panel_spec(k))
            self._scenes[k] = scene
            message.value = note_html(note) if note else ""

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
        for fig, mech in zip(self.figures, self.state.mechanisms()):
            pattern = resolve(self.state, mech)[0]
            if any(trace is t for t in fig.data) and pattern is not None and rolled_here(self.state, mech):
                Hp, Wp = plots.rolled_size(pattern, self.state.size, self.state.size)  # undo the roll by -s
                i, j = (i + pattern.shift[0]) % Hp, (j + pattern.shift[1]) % Wp
        if 0 <= i < self.state.size and 0 <= j < self.state.size:
            self.set_query(i, j)

    # -- without a kernel --------------------------------------------------------------------------
    STATIC_STATES = 600  # the kernel-free form's budget of states (each one a redraw while the site is built)

    def static_controls(self) -> list[dict]:
        """The compare menu (the notebook's choice, global attention and one more mechanism that reads no other
        parameter), up to 3 values of each parameter on screen, Swin's view, and a grid of queries: 3 to 5 per
        axis and the start, as many as ``STATIC_STATES`` allows."""
        s, controls = self.state, []
        if s.compare is not None:
            reads = {p for m in s.mechanisms() for p in PARAMETERS[m]}
            others = [m for m in MECHANISMS if m not in (s.mechanism, s.compare) and set(PARAMETERS[m]) <= reads
                      and mechanisms.layer(m).kind not in ("swin", "less")]
            choices = [s.compare, *others[:2]]
            controls.append(static.control(self, "compare with", [(m, {"compare": m}) for m in choices]))
        b, step = bounds(s), steps(s)
        for name in [p for p in mechanisms.PARAMETERS if p in {q for m in s.mechanisms() for q in PARAMETERS[m]}]:
            lo, hi = b[name]
            values = static.spread(lo, min(hi, max(lo, 2 * getattr(s, name))), 3, step[name])
            controls.append(static.control(self, _LABELS[name], static.options(values, getattr(s, name), name)))
        if any(mechanisms.layer(m).kind == "swin" for m in s.mechanisms()):
            controls.append(static.control(self, "Swin view", [("original map", {"rolled": False}),
                                                               ("rolled map", {"rolled": True})]))
        others = math.prod(len(c["options"]) for c in controls)
        n = max(3, min(5, math.isqrt(self.STATIC_STATES // others)))  # query positions per axis (and the start)
        for name in ("query_i", "query_j"):
            values = static.spread(0, s.size - 1, n)
            controls.append(static.control(self, _LABELS[name], static.options(values, getattr(s, name), name)))
        return controls

    def static_panels(self) -> list:
        return self.figures[:len(self.state.mechanisms())]

    def static_texts(self) -> list:
        return self.messages[:len(self.state.mechanisms())]

    def static_note(self) -> str:
        s = self.state
        return (f"Kernel-free copy of the partition explorer: {s.mechanism} on a {s.size}x{s.size} map, every "
                f"state precomputed by the explorer itself. Not precomputed: the mechanism menu, the map size, other "
                f"parameter values and queries between the grid's (click-to-move and the sweep need a kernel). "
                + static.LIVE)

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
            return blank_figure(note)
        return plots.animate_queries(pattern, s.size, s.size)
