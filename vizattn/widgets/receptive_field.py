"""``ReceptiveFieldExplorer``: theoretical and effective receptive fields of stacked attention layers,
for the stacks of ``vizattn.mechanisms`` (built by ``vizattn.receptive.stack_for``/``stack_model``).

>>> ReceptiveState().stack in receptive.STACKS
True
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
import traitlets
from traitlets import Enum, HasTraits, Int

from .. import plots, receptive
from ..checks import check_choice
from . import figure, static
from .base import Explorer, explain, one_thread, send, side_by_side

__all__ = ["DEPTH_MAX", "RF_SIZE_RANGE", "ReceptiveState", "ReceptiveFieldExplorer"]

DEPTH_MAX = 8  # the depth slider's end; the random stacks for effective fields are built this deep
RF_SIZE_RANGE = (8, 64)


class ReceptiveState(HasTraits):
    """What a ``ReceptiveFieldExplorer`` shows: a stack, its depth, the map, the pattern parameters.

    >>> ReceptiveState(stack="NA", depth=3).effective
    True
    """

    stack = Enum(receptive.STACKS, default_value="NA + DiNAT")
    size = Int(28)
    depth = Int(2)
    kernel = Int(3)
    dilation = Int(2)
    window = Int(4)
    interval = Int(4)
    effective = traitlets.Bool(True)

    def params(self) -> dict:
        """Keyword arguments of ``vizattn.receptive.stack_for`` / ``stack_model``."""
        return dict(kernel=self.kernel, dilation=self.dilation, window=self.window, interval=self.interval)


class ReceptiveFieldExplorer(Explorer):
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
        check_choice("stack", stack, receptive.STACKS)
        if not (isinstance(depth, int) and 1 <= depth <= DEPTH_MAX):
            raise ValueError(f"depth must be an int in [1, {DEPTH_MAX}]; got depth={depth!r}")
        if not (isinstance(size, int) and RF_SIZE_RANGE[0] <= size <= RF_SIZE_RANGE[1]):
            raise ValueError(f"size must be an int in {list(RF_SIZE_RANGE)}; got size={size!r}")
        self.state = ReceptiveState(stack=stack, size=size, depth=depth, kernel=kernel, dilation=dilation,
                                    window=window, interval=interval, effective=effective)
        s = self.state
        self._theoretical, self._effective = {}, {}  # (stack, size, params, depth) -> field
        style, wide = {"description_width": "70px"}, widgets.Layout(width="300px")
        self.menu = widgets.Dropdown(options=receptive.STACKS, value=stack, description="layers", style=style,
                                     layout=wide)
        self.depth = widgets.IntSlider(value=depth, min=1, max=DEPTH_MAX, description="depth", style=style,
                                       continuous_update=False, layout=wide)
        self.size_slider = widgets.IntSlider(value=size, min=RF_SIZE_RANGE[0], max=RF_SIZE_RANGE[1],
                                             description="map size", style=style, continuous_update=False,
                                             layout=wide)
        self.effective_box = widgets.Checkbox(value=effective, description="effective field (gradients)",
                                              indent=False, layout=widgets.Layout(width="220px"))
        self.depth.add_class("vizattn-depth")
        self.message = widgets.HTML()
        self.figure = figure.FigureWidget(self._figure())
        self.effective_figure = figure.FigureWidget(plots.effective_figure(self._blank_field()))
        self._links = [widgets.link((self.menu, "value"), (s, "stack")),
                       widgets.link((self.depth, "value"), (s, "depth")),
                       widgets.link((self.size_slider, "value"), (s, "size")),
                       widgets.link((self.effective_box, "value"), (s, "effective"))]
        s.observe(self._changed, names=list(s.trait_names()))
        controls = widgets.HBox([self.menu, self.depth, self.size_slider, self.effective_box],
                                layout=widgets.Layout(flex_flow="row wrap"))
        super().__init__([controls,
                          side_by_side([self.figure, self.effective_figure]), self.message], **kwargs)
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
        key, s = self._key(depth), self.state
        if key not in self._theoretical:
            steps = receptive.stack_for(s.stack, key[-1], s.size, **s.params())
            self._theoretical[key] = receptive.theoretical(steps, size=s.size, position=(s.size // 2, s.size // 2))
        return self._theoretical[key]

    def effective_field(self, depth: int | None = None):
        """``vizattn.receptive.effective`` of layer ``depth`` of ``stack_model`` at the centre token (cached).

        Raises the stack's ``ValueError`` for a combination that does not fit the map.
        """
        key, s = self._key(depth), self.state
        if key not in self._effective:
            model = receptive.stack_model(s.stack, DEPTH_MAX, s.size, **s.params())
            images = torch.randn(2, 3, s.size, s.size, generator=torch.Generator().manual_seed(0))
            with one_thread():
                self._effective[key] = receptive.effective(model, images, layer=f"attns.{key[-1] - 1}")
        return self._effective[key]

    def _blank_field(self):
        """An empty effective field on the current map: the starting picture of the effective panel."""
        n = self.state.size
        return receptive.EffectiveField(torch.zeros(n, n), {}, "", (n // 2, n // 2), (n // 2, n // 2))

    def _figure(self) -> go.Figure:
        """The widget's starting figure: ``receptive_figure`` without frames and play buttons."""
        fig = plots.receptive_figure(self.field(1))
        fig.frames, fig.layout.updatemenus, fig.layout.sliders = (), (), ()
        fig.update_layout(width=440, height=520, margin=dict(l=40, r=20, t=50, b=70),  # as the effective panel
                          title_font_size=13)
        return fig

    def _update(self) -> None:
        s = self.state
        try:
            field = self.field()
        except ValueError as exc:  # both panels explain it; nothing stale stays (titles, axes, caption)
            for fig in (self.figure, self.effective_figure):
                explain(fig, str(exc))
            self.message.value = ""
            return
        H, W = field.input.shape
        grid = {"x": np.arange(W), "y": np.arange(H)}  # the map may have another size
        axes = {"xaxis": {"range": [-0.5, W - 0.5], "visible": True},
                "yaxis": {"range": [H - 0.5, -0.5], "visible": True}}
        extent = field.extent(0)
        text = (f"{len(field)} layers of {s.stack}: the centre token can see {int(field.input.sum())} of "
                f"{s.size * s.size} positions, a {extent[0]}x{extent[1]} field.")
        send(self.figure, {0: {"z": plots.field_z(field.input), **grid, "visible": True}},
              layout={"title": {"text": f"theoretical: {s.stack}, depth {len(field)}", "x": 0.5}, **axes},
              arrays={"annotations": ()})
        try:
            erf = self.effective_field() if s.effective else None
        except ValueError as exc:  # e.g. no gradient reaches the input: say so on the panel
            erf, text = None, f"{text} No effective field: {exc}."
        if erf is not None:
            parts = plots.effective_parts(erf)
            text += f" Effective field (random weights, seed 0): {parts['caption']}."
            send(self.effective_figure, {0: {"z": parts["z"], **grid, "zmin": parts["zmin"], "zmax": parts["zmax"],
                                              "visible": True}},
                  layout={"title": {"text": f"effective: {s.stack}, depth {len(field)}"}, **axes},
                  arrays={"shapes": parts["shapes"], "annotations": parts["annotations"]})
        else:
            send(self.effective_figure, {0: {"visible": False}},
                 layout={"title": {"text": "effective field: off"}, "xaxis": {"visible": False},
                         "yaxis": {"visible": False}},
                  arrays={"shapes": (), "annotations": ()})
        self.message.value = html.escape(text)

    # -- without a kernel --------------------------------------------------------------------------
    def static_controls(self) -> list[dict]:
        """The depth, 1 to ``DEPTH_MAX`` (an effective field per depth: a forward and a backward pass each)."""
        return [static.control(self, "depth", static.options(range(1, DEPTH_MAX + 1), self.state.depth, "depth"))]

    def static_panels(self) -> list:
        return [self.figure, self.effective_figure]

    def static_note(self) -> str:
        s = self.state
        return (f"Kernel-free copy of the receptive-field explorer: {s.stack} on a {s.size}x{s.size} map at every "
                f"depth, precomputed by the explorer itself. Not precomputed: the layers menu, the map size, the "
                f"effective-field switch. " + static.LIVE)

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
