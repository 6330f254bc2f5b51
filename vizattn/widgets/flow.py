"""``FlowExplorer``: where the whole network looks (``vizattn.flow``), layer by layer, and one token's
rollout column beside its theoretical and effective receptive fields.

>>> FlowState(model="swin").method, "deit_tiny_patch16_224" in FLOW_MODELS
('rollout', True)
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
import traitlets
from traitlets import Bool, Enum, Float, HasTraits, Int

from .. import checkpoints, flow, receptive
from ..checks import check_choice
from ..data import IMAGENET_MEAN, IMAGENET_STD, PHOTOS, TASKS, Shapes, imagenet_classes, photo
from ..models import list_models
from ..plots import flow as plots
from . import figure, static
from .base import Explorer, explain, note_html, one_thread, pretrained, replace, send, set_range, side_by_side
from .published import RANDOM_HTML, RANDOM_NOTE, published

__all__ = ["FLOW_MODELS", "IMAGES", "METHODS", "FlowState", "FlowExplorer"]

FLOW_MODELS = tuple(list_models()) + checkpoints.list()  # the small models, then the papers' checkpoints
SHAPES_ITEMS = ("shapes 0", "shapes 1", "shapes 2")  # items of the Shapes test split (for the chosen task)
IMAGES = PHOTOS + SHAPES_ITEMS
METHODS = ("rollout", "relevance")
RESIDUALS = (0.0, 0.9)  # the residual slider's range (1.0 would leave only the identity: no map)


class FlowState(HasTraits):
    """What a ``FlowExplorer`` shows, as typed traits (no widgets, no plotly, no model).

    ``target``: the class relevance explains (``-1``: the predicted one); ``depth``: how many layers
    the map composes (``1 .. layers``); ``pixel_i``/``pixel_j``: the clicked input pixel.

    >>> FlowState(residual=1.5)
    Traceback (most recent call last):
    ...
    ValueError: residual must lie in [0.0, 0.9] (the identity's weight); got residual=1.5
    """

    model = Enum(FLOW_MODELS, default_value="nat")
    task = Enum(TASKS, default_value="shape")
    photo = Enum(IMAGES, default_value="astronaut")
    method = Enum(METHODS, default_value="rollout")
    target = Int(-1)
    fusion = Enum(flow.FUSIONS, default_value="mean")
    residual = Float(0.5)
    depth = Int(1)
    pixel_i = Int(0)
    pixel_j = Int(0)
    effective = Bool(True)

    @traitlets.validate("residual")
    def _residual(self, proposal):
        if not RESIDUALS[0] <= proposal["value"] <= RESIDUALS[1]:
            raise ValueError(f"residual must lie in [{RESIDUALS[0]}, {RESIDUALS[1]}] (the identity's weight); "
                             f"got residual={proposal['value']!r}")
        return proposal["value"]


def _image(name: str, task: str, size: int) -> torch.Tensor:
    """``[3, size, size]`` in ``[0, 1]``: a bundled photo, or a Shapes test item (resized bilinearly)."""
    if name in PHOTOS:
        return photo(name, size=size)
    item = Shapes(task, "test", length=len(SHAPES_ITEMS))[SHAPES_ITEMS.index(name)][0]
    return item if item.shape[-1] == size else F.interpolate(item[None], size=(size, size), mode="bilinear",
                                                             antialias=True, align_corners=False)[0]


class FlowExplorer(Explorer):
    """The whole-model map of a model on a photo: rollout or class relevance (``vizattn.flow``).

    Left: the map over the photo in grey (summed over blocks of pixels on large images). The depth
    slider composes the first ``d`` layers only (``Flow.depth``): the map spreads as windows,
    dilations, grids and merges add up. Click the photo: the token of layer ``d`` under that pixel,
    and right, three fields of it over the input: which pixels it draws on (its row of the composed
    map, ``Flow.column``), which can reach it at all (``receptive.theoretical``) and its gradient's
    share (``receptive.effective``, on this photo; a forward and a backward pass per click, cached;
    ``effective=False`` skips it). ``fusion`` and ``residual`` shape rollout, ``target`` (the
    classes, or the top 5 of an ImageNet checkpoint) picks the class relevance explains; controls
    that do not apply to the method are disabled. The papers' checkpoints run at 224 x 224 with their
    ImageNet weights when the file is cached, else with seeded random weights (banner: RANDOM WEIGHTS).

    Every flow, map, column and field is cached: a depth, fusion already seen or click costs no model run
    (``forwards`` counts the flows computed).

    >>> ex = FlowExplorer("nat", photo="shapes 0")
    >>> ex.state.depth = 2
    >>> ex.forwards, ex.flow.names[1], "layers 1-2" in ex.figure.layout.title.text
    (1, 'stages.0.1.attn', True)
    """

    def __init__(self, model: str = "nat", task: str = "shape", photo: str = "astronaut", method: str = "rollout",
                 target: int = -1, fusion: str = "mean", residual: float = 0.5, depth: int | None = None,
                 pixel=None, effective: bool = True, models=None, weights: str = "imagenet", **kwargs):
        models = FLOW_MODELS if models is None else tuple(models)
        for m in models:
            check_choice("model", m, FLOW_MODELS)
        for name, value, options in [("model", model, models), ("task", task, TASKS), ("photo", photo, IMAGES),
                                     ("method", method, METHODS), ("fusion", fusion, flow.FUSIONS),
                                     ("weights", weights, ("imagenet", "random"))]:
            check_choice(name, value, options)
        self.weights, self.forwards = weights, 0
        self.state = FlowState(model=model, task=task, photo=photo, method=method, target=target, fusion=fusion,
                               residual=residual, effective=effective)
        s = self.state
        self._runs, self._flows, self._maps, self._columns, self._fields, self._steps = {}, {}, {}, {}, {}, {}
        self._scene = None
        run = self._run()
        self._classes = run["key"][:2]
        L = len(self.flow.names)
        depth = L if depth is None else depth
        if not (isinstance(depth, int) and 1 <= depth <= L):
            raise ValueError(f"depth must be an int in [1, {L}] for {model}; got depth={depth!r}")
        S = run["image"].shape[-1]
        pixel = (S // 2, S // 2) if pixel is None else tuple(pixel)
        if len(pixel) != 2 or not all(isinstance(v, int) and 0 <= v < S for v in pixel):
            raise ValueError(f"pixel must be (row, col) on the {S}x{S} image; got pixel={pixel!r}")
        s.depth, (s.pixel_i, s.pixel_j) = depth, pixel
        self._size = S

        style, wide = {"description_width": "60px"}, widgets.Layout(width="260px")
        self.menus = {name: widgets.Dropdown(options=options, value=getattr(s, name), description=name, style=style,
                                             layout=widgets.Layout(width="300px" if name == "model" else "220px"))
                      for name, options in [("model", models), ("task", TASKS), ("photo", IMAGES)]}
        self.method_buttons = widgets.ToggleButtons(options=METHODS, value=method, description="method", style=style,
                                                    tooltips=("attention rollout (Abnar & Zuidema 2020)",
                                                              "class relevance (Chefer et al. 2021)"))
        self.fusion_buttons = widgets.ToggleButtons(options=flow.FUSIONS, value=fusion, description="heads",
                                                    style=style)
        self.target_menu = widgets.Dropdown(description="class", style=style, layout=widgets.Layout(width="300px"))
        self.residual_slider = widgets.FloatSlider(value=residual, min=RESIDUALS[0], max=RESIDUALS[1], step=0.1,
                                                   description="residual", continuous_update=False, style=style,
                                                   readout_format=".1f", layout=wide)
        self.depth_slider = widgets.IntSlider(value=depth, min=1, max=L, description="depth", style=style,
                                              continuous_update=True, layout=wide)
        self.effective_box = widgets.Checkbox(value=effective, description="effective field (gradients)",
                                              indent=False, layout=widgets.Layout(width="220px"))
        self.depth_slider.add_class("vizattn-flow-depth")
        self.residual_slider.add_class("vizattn-flow-residual")
        self.banner, self.message = widgets.HTML(layout=widgets.Layout(max_width="960px")), widgets.HTML()
        self.figure = figure.FigureWidget(self._main_figure(run))
        self.fields = figure.FigureWidget(self._fields_figure(run))
        self._scene = self._scene_key()
        self._notes = [a.to_plotly_json() for a in self.fields.layout.annotations]
        self._sync_controls(run)
        self._links = [widgets.link((menu, "value"), (s, name)) for name, menu in self.menus.items()]
        self._links += [widgets.link((w, "value"), (s, name)) for w, name in [
            (self.method_buttons, "method"), (self.fusion_buttons, "fusion"), (self.residual_slider, "residual"),
            (self.depth_slider, "depth"), (self.effective_box, "effective")]]
        self.target_menu.observe(self._picked_target, "value")
        for trace in self.figure.data[:2]:
            trace.on_click(self._clicked)
        s.observe(self._changed, names=list(s.trait_names()))
        controls = widgets.VBox([self.banner, widgets.HBox(list(self.menus.values()), layout=_wrap()),
                                 widgets.HBox([self.method_buttons, self.target_menu], layout=_wrap()),
                                 widgets.HBox([self.fusion_buttons, self.residual_slider], layout=_wrap()),
                                 widgets.HBox([self.depth_slider, self.effective_box], layout=_wrap())])
        super().__init__([controls, side_by_side([self.figure, self.fields]), self.message], **kwargs)
        self.add_class("vizattn-flow")  # a handle for browser tests and CSS
        self._changed()

    # -- the model runs (the only places that call the model) -----------------------------------
    def _run_key(self) -> tuple:
        s = self.state
        return s.model, s.task if s.model not in checkpoints.list() else "imagenet", s.photo

    def _run(self) -> dict:
        """The model, its input ``x [1, 3, S, S]``, the picture ``image [3, S, S]`` and whether the weights are
        trained (``real``), once per model, task and photo."""
        s, key = self.state, self._run_key()
        if key not in self._runs:
            if s.model in checkpoints.list():
                model, real = published(s.model, self.weights)
                image = _image(s.photo, s.task, 224)
                mean, std = (torch.tensor(v)[:, None, None] for v in (IMAGENET_MEAN, IMAGENET_STD))
                x = ((image - mean) / std)[None]
            else:
                model, real = pretrained(s.model, s.task), True
                image = _image(s.photo, s.task, model.config["img_size"])
                x = image[None]
            self._runs[key] = dict(model=model, x=x, image=image, real=real, key=key)
        return self._runs[key]

    def _flow_key(self) -> tuple:
        s = self.state
        if s.method == "rollout":
            return self._run_key(), "rollout", s.fusion, round(s.residual, 6)
        return self._run_key(), "relevance", s.target

    @property
    def flow(self) -> flow.Flow:
        """The ``vizattn.flow.Flow`` on show (computed once per model, photo, method and its options)."""
        s, key = self.state, self._flow_key()
        if key not in self._flows:
            run = self._run()
            with one_thread():
                if s.method == "rollout":
                    f = flow.rollout(run["model"], run["x"], fusion=s.fusion, residual=s.residual)
                else:
                    f = flow.relevance(run["model"], run["x"], target=None if s.target < 0 else s.target)
            self._flows[key] = f
            self.forwards += 1
        return self._flows[key]

    def map(self, depth: int | None = None) -> np.ndarray:
        """``[H, W]``: the map of the first ``depth`` layers (default the slider's; the last: ``Flow.pixels``)."""
        f, d = self.flow, depth or self.state.depth
        key = (self._flow_key(), d)
        if key not in self._maps:
            with one_thread():
                self._maps[key] = (f.pixels if d == len(f.names) else f.depth(d))[0].numpy()
        return self._maps[key]

    def token(self) -> tuple[int, tuple[int, int]]:
        """``(layer, (i, j))``: the last layer of the depth and its token under the clicked pixel."""
        s, f = self.state, self.flow
        layer = s.depth - 1
        (h, w), S = f.grids[layer], self._size
        return layer, (min(s.pixel_i * h // S, h - 1), min(s.pixel_j * w // S, w - 1))

    def column(self) -> np.ndarray:
        """``[H, W]``: which input pixels the clicked token draws on (``Flow.column``)."""
        layer, (i, j) = self.token()
        key = (self._flow_key(), layer, i, j)
        if key not in self._columns:
            with one_thread():
                self._columns[key] = self.flow.column(layer, i, j)[0].numpy()
        return self._columns[key]

    def receptive_fields(self):
        """``(theoretical [H, W] bool, EffectiveField or None)`` of the clicked token (cached; None: effective off)."""
        run, f = self._run(), self.flow
        layer, (i, j) = self.token()
        name, size = f.names[layer], tuple(run["x"].shape[-2:])
        key = (run["key"], name, i, j)
        if run["key"] not in self._steps:  # every layer's steps from one trace: layer l's are a prefix
            with one_thread():
                self._steps[run["key"]] = receptive.model_steps(run["model"], size)[:2]
        if key not in self._fields:
            steps, names = self._steps[run["key"]]
            with one_thread():
                field = receptive.theoretical(steps[:names.index(name) + 1], size, (i, j))
            self._fields[key] = [field.input.numpy(), None]
        if self.state.effective and self._fields[key][1] is None:
            prefix, w = f.operators[layer].prefix, f.grids[layer][1]
            position = (0, prefix + i * w + j) if prefix else (i, j)  # a ViT runs its tokens as a 1 x N map
            try:
                with one_thread():
                    self._fields[key][1] = receptive.effective(run["model"], run["x"], position, layer=name)
            except ValueError as exc:  # e.g. no gradient reaches the input: the caption says so
                self._fields[key][1] = exc
        erf = self._fields[key][1] if self.state.effective else None
        return self._fields[key][0], None if isinstance(erf, ValueError) else erf

    # -- state -> view ---------------------------------------------------------------------------
    def _scene_key(self):
        return self._run_key()

    def _title(self) -> str:
        s, f = self.state, self.flow
        d = s.depth
        what = f"relevance of {self._class_name(int(f.target[0]))[:18]}" if s.method == "relevance" else "rollout"
        model = checkpoints.CHECKPOINTS[s.model].label if s.model in checkpoints.list() else s.model
        h, w = f.grids[d - 1]
        return f"{model}: {what}, layers 1-{d} ({f.kinds[d - 1]}, {h}x{w})"  # one line: clear of plotly's toolbar

    def _field_titles(self) -> tuple[str, str, str]:
        layer, (i, j) = self.token()
        return (f"{self.state.method} column of token ({i}, {j})", f"theoretical field (layer {layer + 1})",
                "effective field" if self.state.effective else "effective field: off")

    def _main_figure(self, run) -> go.Figure:
        s = self.state
        return plots.flow_figure(run["image"], self.map(), title=self._title(), pixel=(s.pixel_i, s.pixel_j))

    def _fields_figure(self, run) -> go.Figure:
        s = self.state
        theoretical, erf = self.receptive_fields()
        return plots.fields_figure(self.column(), theoretical, erf, pixel=(s.pixel_i, s.pixel_j),
                                   titles=self._field_titles(), squares=not self.flow.operators[0].prefix)

    def _update(self) -> None:
        s = self.state
        try:
            run = self._run()
            if self._classes != run["key"][:2]:  # another model or task, other classes: the predicted one
                s.target, self._classes = -1, run["key"][:2]
            f = self.flow
            L = len(f.names)
            if self._scene != self._scene_key():  # another model or photo: the depth to the whole map, the pixel kept
                S = run["image"].shape[-1]
                s.pixel_i, s.pixel_j = min(s.pixel_i * S // self._size, S - 1), min(s.pixel_j * S // self._size, S - 1)
                self._size, s.depth = S, L
            s.depth = min(max(s.depth, 1), L)
            self._redraw(run)
        except ValueError as exc:  # an invalid combination: both panels say why, nothing stale stays
            for fig in (self.figure, self.fields):
                explain(fig, str(exc))
            self.message.value = note_html(str(exc))
            self._scene = None
            return
        self._sync_controls(run)

    def _redraw(self, run) -> None:
        s = self.state
        if self._scene != self._scene_key():
            replace(self.figure, self._main_figure(run))
            replace(self.fields, self._fields_figure(run))
            self._notes = [a.to_plotly_json() for a in self.fields.layout.annotations]  # 3 titles, the caption
            self._scene = self._scene_key()
        else:
            parts = plots.map_parts(self.map())
            send(self.figure, {1: dict(z=parts["z"], zmax=parts["zmax"]), 2: dict(x=[s.pixel_j], y=[s.pixel_i])},
                 layout={"title": {"text": self._title()}})
            theoretical, erf = self.receptive_fields()
            fields = plots.fields_parts(self.column(), theoretical, erf, squares=not self.flow.operators[0].prefix)
            traces = {**fields["traces"], **{k: dict(x=[s.pixel_j], y=[s.pixel_i]) for k in (3, 4, 5)}}
            texts = (*self._field_titles(), fields["caption"])
            send(self.fields, traces, arrays={"shapes": fields["shapes"],
                                              "annotations": [dict(a, text=t) for a, t in zip(self._notes, texts)]})
        self.message.value = self._caption()
        self.banner.value = self._banner(run)

    def _class_name(self, index: int) -> str:
        s = self.state
        if s.model in checkpoints.list():
            return imagenet_classes()[index]
        return Shapes.classes(s.task)[index]

    def _predicted(self) -> int:
        return int(self.flow.logits[0].argmax())

    def _class_options(self) -> tuple:
        """The class menu: the task's classes (or the checkpoint's top 5, and the class on show), the predicted one
        marked."""
        p = self.flow.logits[0].float().softmax(-1)
        order = list(range(len(p))) if self.state.model not in checkpoints.list() else p.topk(5).indices.tolist()
        if self.state.target >= 0 and self.state.target not in order:  # a class set through the state
            order.append(self.state.target)
        best = self._predicted()
        return tuple((f"{self._class_name(k)} {float(p[k]):.0%}{' (predicted)' if k == best else ''}", k)
                     for k in order)

    def _sync_controls(self, run) -> None:
        s, f = self.state, self.flow
        set_range(self.depth_slider, 1, len(f.names))
        self.depth_slider.value = s.depth
        options = self._class_options()
        self._syncing = True  # new options reset a Dropdown's value: not a choice of the user
        try:
            if self.target_menu.options != options:
                self.target_menu.options = options
            self.target_menu.value = self._predicted() if s.target < 0 else s.target
        finally:
            self._syncing = False
        rollout = s.method == "rollout"
        self.fusion_buttons.disabled = self.residual_slider.disabled = not rollout
        self.target_menu.disabled = rollout
        self.menus["task"].disabled = s.model in checkpoints.list()

    _syncing = False

    def _picked_target(self, change) -> None:
        if not self._syncing and change["new"] is not None:  # the predicted class is target -1 (its default)
            self.state.target = -1 if change["new"] == self._predicted() else change["new"]

    def _banner(self, run) -> str:
        s = self.state
        if s.model not in checkpoints.list():
            return ""
        if not run["real"]:
            return RANDOM_HTML + note_html(f"{s.model}: {RANDOM_NOTE} Its classes are those of an untrained model.")
        return note_html(f"{s.model}: ImageNet weights.")

    def _caption(self) -> str:
        s, f = self.state, self.flow
        layer, (i, j) = self.token()
        H, W = f.grids[layer]
        col = self.column()
        top = np.unravel_index(int(np.argmax(self.map())), self.map().shape)
        text = (f"{s.model} on {s.photo}, {f.method} through {len(f.names)} attention layers "
                f"({', '.join(sorted(set(f.kinds)))}); the map of layers 1-{s.depth} peaks at pixel "
                f"{tuple(map(int, top))}. "
                f"Pixel ({s.pixel_i}, {s.pixel_j}) lies under token ({i}, {j}) of {f.names[layer]} ({H}x{W}); "
                f"that token draws on {int((col > 0).sum())} input pixels. ")
        failed = self._fields.get((self._run_key(), f.names[layer], i, j), [None, None])[1]
        if s.effective and isinstance(failed, ValueError):
            text += f"No effective field: {failed}. "
        if s.method == "relevance":
            text += "Relevance: heads fused by gradient (fusion and residual apply to rollout only). "
        else:
            text += (f"Rollout: heads fused by their {s.fusion}, the residual weighs {s.residual:.1f}; it does not "
                     "depend on the class (pick relevance to choose one). ")
        return note_html(text.rstrip())

    # -- view -> state ---------------------------------------------------------------------------
    def set_pixel(self, i: int, j: int) -> None:
        """Move the clicked pixel to ``(row, col)`` of the input with one redraw."""
        self._set(pixel_i=int(i), pixel_j=int(j))

    def _clicked(self, trace, points, _device_state=None) -> None:
        if points.xs:
            S = self._size
            x, y = int(round(points.xs[0])), int(round(points.ys[0]))
            if 0 <= x < S and 0 <= y < S:
                self.set_pixel(y, x)

    # -- without a kernel (vizattn.widgets.static) ------------------------------------------------
    STATIC_DEPTHS = 8  # depths precomputed: spread over 1 .. layers, the start included

    def static_controls(self) -> list[dict]:
        """The method and up to ``STATIC_DEPTHS`` depths (the map building up), at this model, photo, class,
        fusion, residual and clicked pixel."""
        s = self.state
        depths = static.spread(1, len(self.flow.names), self.STATIC_DEPTHS)
        return [static.control(self, "method", static.options(METHODS, s.method, "method")),
                static.control(self, "depth", static.options(depths, s.depth, "depth"))]

    def static_panels(self) -> list:
        return [self.figure, self.fields]

    def static_texts(self) -> list:
        return [self.banner, self.message]

    def static_note(self) -> str:
        s = self.state
        return (f"Kernel-free copy of the whole-model explorer: {s.model} on {s.photo}, rollout and relevance "
                f"and the map building up with depth, every state precomputed by the explorer itself. Not "
                f"precomputed: the model, task and photo menus, the class, head fusion and residual, the "
                f"effective-field switch, and clicks on the photo (the fields shown are pixel "
                f"({s.pixel_i}, {s.pixel_j})'s). " + static.LIVE)

    # -- export ----------------------------------------------------------------------------------
    def to_figure(self) -> go.Figure:
        """A static figure of the map with one animation frame per depth (``plots.flow.depth_figure``).

        >>> len(FlowExplorer("vit", photo="shapes 1", effective=False).to_figure().frames)
        4
        """
        return plots.depth_figure(self.flow, self._run()["image"], title=f"{self.state.model}: {self.state.method}")


def _wrap() -> widgets.Layout:
    return widgets.Layout(flex_flow="row wrap")

