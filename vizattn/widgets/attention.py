"""``AttentionExplorer``: a trained model's attention on a photograph, layer by layer, head by head.

>>> AttentionState(model="maxvit").scale
'local'
"""

from __future__ import annotations

import ipywidgets as widgets
import plotly.graph_objects as go
import torch
import traitlets
from torch import nn
from traitlets import Enum, HasTraits, Int

from .. import checkpoints, plots
from ..checkpoints import files
from ..checkpoints.vit import class_records, patch_records
from ..checks import check_choice, check_query
from ..data import PHOTOS, TASKS, image, imagenet_normalise, imagenet_top, photo, top_classes
from ..layers.common import attention_layers
from ..models import list_models
from ..probe import probe
from . import custom, figure
from .attention_static import AttentionStatic
from .base import Explorer, note_html, one_thread, pretrained, replace, send, set_range, side_by_side
from .published import RANDOM_HTML, RANDOM_NOTE, WEIGHTS, published, weights_banner
from .upload import PhotoUpload, menu_name

__all__ = ["MODELS", "QUERY_TOKENS", "AttentionState", "AttentionExplorer", "published", "weights_banner"]

MODELS = list_models()
QUERY_TOKENS = ("patch", "class token")  # what queries: a patch of the map, or a ViT's class token


class AttentionState(HasTraits):
    """What an ``AttentionExplorer`` shows, as typed traits (no widgets, no plotly, no model).

    ``layers`` lists the attention layers of the current model (the explorer fills it after each
    forward pass); ``layer`` must be one of them. ``query_i``/``query_j`` are on the layer's own
    map (stages differ in size), ``head`` indexes the layer's heads; ``token="class token"`` (a ViT with a
    class token) queries with the class token instead of patch ``(query_i, query_j)``.

    >>> s = AttentionState(model="maxvit", layers=("a", "b"), layer="b")
    >>> s.layer = "c"
    Traceback (most recent call last):
    ...
    ValueError: layer must be one of the model's attention layers 'a', 'b'; got layer='c'
    """

    model = Enum(MODELS, default_value="nat")
    task = Enum(TASKS, default_value="shape")
    photos = traitlets.Tuple(PHOTOS)  # the photo menu: the bundled photos, then the user's uploads
    photo = traitlets.Unicode("astronaut")
    layers = traitlets.Tuple()
    layer = traitlets.Unicode("")
    head = Int(0)
    query_i = Int(0)
    query_j = Int(0)
    scale = Enum(plots.SCALES, default_value="local")
    token = Enum(QUERY_TOKENS, default_value="patch")

    @traitlets.validate("layer")
    def _known_layer(self, proposal):
        if self.layers and proposal["value"] not in self.layers:
            raise ValueError(f"layer must be one of the model's attention layers {', '.join(map(repr, self.layers))}; "
                             f"got layer={proposal['value']!r}")
        return proposal["value"]

    @traitlets.validate("photo")
    def _known_photo(self, proposal):
        check_choice("photo", proposal["value"], self.photos)
        return proposal["value"]


class AttentionExplorer(AttentionStatic, Explorer):
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

    ``checkpoint=name`` (one of ``vizattn.checkpoints.list()``) shows a published ImageNet model
    instead (``published(name, weights)``: the cached ImageNet file, else random weights) on the
    photo at the model's input size (``CHECKPOINTS[name].size``: 224, or 384), ImageNet-normalised; the
    model and task menus are hidden. A banner above the controls gives the top-5 ImageNet labels, or says
    RANDOM WEIGHTS. Hierarchical models show their 56 x 56 ... 7 x 7 maps at 224 (pixels per cell:
    ``224 / H``); a ViT's layers are drawn on the 14 x 14 patch
    grid (``checkpoints.vit.patch_records``), the class token's share of the query's attention in the caption;
    ``token="class token"`` (the "query" buttons) shows the class token's own row over the patches instead
    (``checkpoints.vit.class_records``: the map DINO and vit-explain draw), its share on itself in the caption.

    ``model=`` a model object shows yours: any ``nn.Module`` with vizattn attention layers
    (``checkpoints.load``/``build``/``from_timm``, ``models.create``, a stack of ``vizattn.layers``;
    ``ValueError`` without one). A first run under the probe finds its layers and their maps. Its pictures
    are ``size`` x ``size`` (default: the model's ``config["img_size"]`` or ``img_size``, else 224),
    ImageNet-normalised unless it is a ``vizattn.models.Model`` (``normalise=`` decides otherwise); the
    banner names its top-5 classes when it returns ``[1, classes]`` scores: ImageNet's for 1000, else
    ``labels`` (one name per class) or the class numbers (``widgets.custom``).

    Your photo: the upload control (``upload``, a ``PhotoUpload``) hands a chosen file to ``use_photo``,
    which prepares it as the bundled photos are (``vizattn.data.image``), adds it to the photo menu and
    shows it; a file that is not an image, is empty or too large leaves a message there, and the photo.

    >>> import numpy as np
    >>> ex = AttentionExplorer("maxvit", layer="stages.2.0.grid_attn", head=1)
    >>> ex.state.query_i, ex.state.query_j = 0, 3
    >>> ex.state.scale = "shared"
    >>> ex.forwards, int(np.isfinite(np.asarray(ex.figure.data[1].z, dtype=float)).sum())   # 16 keys of the 4x4 map
    (1, 16)
    """

    def __init__(self, model: str = "nat", task: str = "shape", photo: str = "astronaut", layer: str | None = None,
                 head: int = 0, query=None, scale: str = "local", checkpoint: str | None = None,
                 weights: str = "imagenet", token: str = "patch", labels=None, size: int | None = None,
                 normalise: bool | None = None, **kwargs):
        self.custom = model if not isinstance(model, str) else None  # a model object: "your model"
        if self.custom is not None:
            if checkpoint is not None:
                raise ValueError(f"give a model object or checkpoint=name, not both; got checkpoint={checkpoint!r}")
            self.size, self.normalise = custom.model_input(self.custom, size, normalise)
            model = "nat"  # the (hidden) model menu's value
        elif (labels, size, normalise) != (None, None, None):
            raise ValueError(f"labels, size and normalise apply to a model object (model=...); got "
                             f"labels={labels!r}, size={size!r}, normalise={normalise!r}")
        for name, value, options in [("model", model, MODELS), ("task", task, TASKS), ("photo", photo, PHOTOS),
                                     ("scale", scale, plots.SCALES), ("weights", weights, WEIGHTS),
                                     ("token", token, QUERY_TOKENS)]:
            check_choice(name, value, options)
        if checkpoint is not None:
            check_choice("checkpoint", checkpoint, checkpoints.list())
        if self.custom is None:  # a published model at its input size, ImageNet-normalised; a small one: its own
            self.size, self.normalise = ((checkpoints.CHECKPOINTS[checkpoint].size, True) if checkpoint
                                         else (pretrained(model, task).config["img_size"], False))
        self.checkpoint, self.weights, self.labels = checkpoint, weights, labels
        self.state = AttentionState(model=model, task=task, photo=photo, scale=scale)
        s = self.state
        self.forwards, self.real, self.top5, self.share, self.output = 0, None, None, {}, None
        self._captured, self.records, self.image, self._uploads = None, {}, None, {}
        self.class_records, self.class_share = {}, {}  # a ViT's class-token queries (checkpoints.vit.class_records)
        self._syncing, self._scene, self._size = False, None, None
        self._capture()
        if token != "patch" and not self.class_records:
            raise ValueError(f"token='class token' needs a model with a class token (a ViT checkpoint such as "
                             f"deit_tiny_patch16_224); got model={checkpoint or model!r}")
        s.token = token
        names = tuple(self.records)
        if not names:
            raise ValueError(f"model: none of its attention layers ran on a picture {[1, 3, self.size, self.size]}")
        if layer is None:
            layer = names[0]
        check_choice("layer", layer, names)
        record = self.records[layer]
        H, W = record.size
        query = (H // 2, W // 2) if query is None else tuple(query)
        if not (0 <= head < len(record.heads)):
            raise ValueError(f"head must lie in [0, {len(record.heads) - 1}] for {layer!r}; got head={head!r}")
        query = check_query(query, H, W, where=f"map of {layer!r}")
        s.layers, s.layer, s.head, s.query_i, s.query_j = names, layer, head, *query
        self._size = record.size
        self._spot = self._where()

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
        shown = widgets.Layout(display=None if self.class_records else "none")  # only a model with a class token
        self.token_buttons = widgets.ToggleButtons(options=QUERY_TOKENS, value=s.token, description="query",
                                                   style=style, tooltips=("a patch of the map (sliders, click)",
                                                                          "the class token: its map over the patches"),
                                                   layout=shown)
        self.message = widgets.HTML()
        self.banner = widgets.HTML(self._banner())
        self.figure = figure.FigureWidget(self._main_figure())
        self.heads_figure = figure.FigureWidget(self._heads_figure())
        self._scene = self._scene_key()

        self._sync_controls()
        self._links = [widgets.link((menu, "value"), (s, name)) for name, menu in self.menus.items()]
        self._links += [widgets.link((slider, "value"), (s, name)) for name, slider in self.sliders.items()]
        self._links.append(widgets.link((self.scale_buttons, "value"), (s, "scale")))
        self._links.append(widgets.link((self.token_buttons, "value"), (s, "token")))
        self.layer_menu.observe(self._picked_layer, "value")
        for trace in self.figure.data[:2]:
            trace.on_click(self._clicked_photo)
        self.heads_figure.data[0].on_click(self._clicked_head)
        s.observe(self._changed, names=[n for n in s.trait_names() if n not in ("layers", "photos")])
        small = checkpoint is None and self.custom is None
        menus = list(self.menus.values()) if small else [self.menus["photo"]]  # a published model or yours
        self.upload = PhotoUpload(self.use_photo)
        controls = widgets.VBox(([] if small else [self.banner]) + [
            widgets.HBox(menus),
            self.upload,
            widgets.HBox([self.layer_menu, self.scale_buttons]),
            self.token_buttons,
            widgets.HBox(list(self.sliders.values())),
        ])
        super().__init__([controls, side_by_side([self.figure, self.heads_figure]), self.message], **kwargs)
        self.add_class("vizattn-attention")  # a handle for browser tests and CSS
        if checkpoint is not None:  # one per published model: several explorers in one notebook
            self.add_class(f"vizattn-checkpoint-{checkpoint.replace('_', '-')}")
        self._changed()

    # -- the model run (the only place that calls the model) ------------------------------------
    @property
    def model(self) -> nn.Module:
        """The current model: yours (``model=`` an object), the ``checkpoint`` (see ``published``), or
        ``vizattn.models.create(..., pretrained=True)``, cached per name and task."""
        if self.custom is not None:
            return self.custom
        if self.checkpoint is not None:
            return published(self.checkpoint, self.weights)[0]
        return pretrained(self.state.model, self.state.task)

    def _capture(self) -> None:
        """Run the model on the photo under ``probe`` unless this model, task and photo already ran."""
        s = self.state
        key = (s.model, s.task, s.photo)
        if key == self._captured:
            return
        model = self.model
        self.image = self._uploads.get(s.photo)  # [3, S, S] in [0, 1]
        if self.image is None:
            self.image = photo(s.photo, size=self.size)
        x = imagenet_normalise(self.image) if self.normalise else self.image[None]  # [1, 3, S, S]
        with one_thread(), probe(model) as rec:  # one thread: 2-4x faster than two on a shared CPU (benchmarks)
            self.output = custom.forward(model, x)
        if self.checkpoint is not None:
            self.real = published(self.checkpoint, self.weights)[1]
            self.top5 = imagenet_top(self.output)[0] if self.real else None
        elif self.custom is not None:
            names = custom.class_names(self.output, self.labels)
            self.top5 = None if names is None else top_classes(self.output, names)[0]
        # a ViT's tokens shown on its patch grid, its class token's row as a query of its own
        vit = hasattr(model, "prefix_tokens")
        self.records, self.share = patch_records(rec, model.grid, model.prefix_tokens) if vit else (
            {r.name: r for r in rec}, {})
        self.class_records, self.class_share = class_records(rec, model.grid, model.prefix_tokens) if vit else ({}, {})
        self.forwards += 1
        self._captured = key

    def use_photo(self, data: bytes, name: str = "your photo") -> str:
        """Show the picture in ``data``, the bytes of an image file (what the upload control hands over):
        prepared as the model takes it (``vizattn.data.image`` at the model's side, ImageNet-normalised or
        not), added to the photo menu (``upload.menu_name``) and chosen there; the model runs on it. Returns
        its name in the menu. A file that is not an accepted image raises ``ValueError``; nothing changes.
        """
        picture = image(data, size=self.size, normalise=False)[0]  # [3, S, S] in [0, 1]
        s = self.state
        key = menu_name(name, s.photos)
        self._uploads[key] = picture
        self._busy = True  # one redraw, for the new photo
        try:
            s.photos = (*s.photos, key)
            self.menus["photo"].options = s.photos  # (resets the menu to its first photo: absorbed here)
            s.photo = key
        finally:
            self._busy = False
        self._changed()
        return key

    @property
    def record(self):
        """The ``AttentionRecord`` of the selected layer (its class-token queries with ``token="class token"``)."""
        s = self.state
        return (self.class_records if s.token != "patch" else self.records)[s.layer]

    # -- state -> view ---------------------------------------------------------------------------
    def _scene_key(self):
        return self._captured, self.state.layer, self.state.token

    def _main_figure(self) -> go.Figure:
        s = self.state
        return plots.query_map_figure(self.record, s.query_i, s.query_j, head=s.head, image=self.image, scale=s.scale,
                                      title=self._title())

    def _heads_figure(self) -> go.Figure:
        s = self.state
        return plots.heads_figure(self.record, s.query_i, s.query_j, selected=s.head, scale=s.scale)

    def _title(self) -> str:
        s = self.state
        title = plots.query_map_title(self.record, s.query_i, s.query_j, s.head)
        if s.token != "patch":
            title = f"{s.layer}: the class token's map, head {s.head}"
        if self.checkpoint is not None:  # the photo menu says which photo: a short title fits the figure
            return f"{checkpoints.CHECKPOINTS[self.checkpoint].label}: {title}"
        if self.custom is not None:
            return f"{self._yours_name()}: {title}"
        return f"{s.model} on {s.photo}: {title}"

    def _update(self) -> None:
        s, before = self.state, tuple(self.records)
        self._capture()
        names = tuple(self.records)
        if s.token != "patch" and s.layer not in self.class_records:
            s.token = "patch"  # (every layer of a ViT has the class token: only a model without one gets here)
        if s.layers != names:
            previous = s.layer
            s.layers = names
            if previous not in names:  # another model: the layer at the same depth (or the last)
                depth = before.index(previous) if previous in before else 0
                s.layer = names[min(depth, len(names) - 1)]
        H, W = self.record.size
        if self._size == (H, W):
            self._spot = self._where()
        else:  # another map: the query on the cell under the spot chosen last (a round trip comes back)
            s.query_i, s.query_j = min(int(self._spot[0] * H), H - 1), min(int(self._spot[1] * W), W - 1)
            self._size = (H, W)
        s.head = min(max(s.head, 0), len(self.record.heads) - 1)
        s.query_i, s.query_j = min(max(s.query_i, 0), H - 1), min(max(s.query_j, 0), W - 1)
        self._redraw()  # the figures first: the browser starts redrawing them while the controls follow
        self._sync_controls()

    def _where(self) -> tuple[float, float]:
        """The query cell's centre as a fraction of the map's height and width (where on the photo it is)."""
        (H, W), s = self._size, self.state
        return (s.query_i + 0.5) / H, (s.query_j + 0.5) / W

    def _sync_controls(self) -> None:
        """Slider bounds and the layer menu follow the model and the layer (every position valid)."""
        s, record = self.state, self.record
        H, W = record.size
        for name, hi in [("head", len(record.heads) - 1), ("query_i", H - 1), ("query_j", W - 1)]:
            set_range(self.sliders[name], 0, hi)
            self.sliders[name].value = getattr(s, name)  # a value set past the old bounds (the link clamped it)
        for name in ("query_i", "query_j"):  # the class token has no cell: the sliders would change nothing
            self.sliders[name].disabled = s.token != "patch"
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
        if scene != self._scene:  # another layer of the same run keeps the photo (trace 0) as it is
            same_photo = self._scene is not None and self._scene[0] == scene[0]
            replace(self.figure, self._main_figure(), keep=(0,) if same_photo else ())
            replace(self.heads_figure, self._heads_figure())
            if s.token != "patch":  # no query cell to mark: the class token has no place on the map
                send(self.figure, {2: {"visible": False}})
                send(self.heads_figure, {1: {"visible": False}}, layout={"title": {"text": self._heads_title()}})
            self._scene = scene
        else:  # same photo and layer: only what follows the query, head and scale
            S = self.image.shape[-1]
            weights, query = plots.query_map_traces(record, s.query_i, s.query_j, head=s.head, image_size=S,
                                                    scale=s.scale)
            send(self.figure, {1: {"z": weights.z, "zmax": weights.zmax}, 2: {"x": query.x, "y": query.y}},
                  layout={"title": {"text": self._title()}})
            mosaic, marks = plots.heads_traces(record, s.query_i, s.query_j, scale=s.scale)
            send(self.heads_figure, {0: {"z": mosaic.z, "customdata": mosaic.customdata, "zmax": mosaic.zmax,
                                          "colorbar": {"title": {"text": mosaic.colorbar.title.text}}},
                                      1: {"x": marks.x, "y": marks.y}},
                  layout={"title": {"text": self._heads_title()}},
                  arrays={"shapes": plots.head_shapes(record, s.head)})
        self.message.value = self._caption()
        self.banner.value = self._banner()

    def _yours_name(self) -> str:
        """Your model's name: a ``vizattn.models.Model``'s own, else its class's."""
        name = getattr(self.custom, "name", None)
        return name if isinstance(name, str) else type(self.custom).__name__

    def _heads_title(self) -> str:
        s = self.state
        query = "the class token" if s.token != "patch" else f"query ({s.query_i}, {s.query_j})"
        return f"{s.layer}: every head, {query}"

    def _banner(self) -> str:
        """For a published model: its top-5 ImageNet labels with real weights, else a random-weights warning;
        for yours: what it takes, and its top-5 classes."""
        if self.custom is not None:
            S, n = self.size, len(attention_layers(self.custom))
            text = (f"Your model ({self._yours_name()}): pictures {S}x{S}, "
                    f"{'ImageNet-normalised' if self.normalise else 'in [0, 1]'}; {n} attention layers. ")
            if self.top5 is None:
                out = self.output
                shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                return note_html(text + f"Its output ({shape}) holds no class scores.")
            return note_html(text + "Top-5: " + ", ".join(f"{name} {p:.0%}" for name, p in self.top5))
        if self.checkpoint is None:
            return ""
        if not self.real:
            file = checkpoints.CHECKPOINTS[self.checkpoint].file
            return (RANDOM_HTML + note_html(
                f"({file} is not in {files.cache_dir()}): {RANDOM_NOTE}"))
        top = ", ".join(f"{name} {p:.0%}" for name, p in self.top5)
        return note_html(f"ImageNet weights. Top-5: {top}")

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
        what = "patches and the class token" if s.layer in self.share else "keys"
        text = (f"{record.name}: {record.kind} attention, {record.pattern!r} on a {H}x{W} map, "
                f"{len(record.heads)} heads. Query ({s.query_i}, {s.query_j}) covers image rows {rows}, "
                f"columns {cols}; it attends to {keys} {what} (transparent: tokens it cannot see). "
                f"Colour: {scale}. The model ran {self.forwards} time(s).")
        if s.token != "patch":
            share = float(self.class_share[s.layer][s.head])
            return note_html(f"{record.name}: the class token's attention over the {H}x{W} patches, head {s.head} "
                             f"of {len(record.heads)}: the map DINO and vit-explain draw. It gives itself {share:.1%}, "
                             f"not drawn: the map shows the other {1 - share:.1%}. Colour: {scale}. "
                             f"The model ran {self.forwards} time(s).")
        if s.layer in self.share:
            share = float(self.share[s.layer][s.head, s.query_i, s.query_j])
            text += (f" Class token: this query gives it {share:.1%} of its attention, not drawn: the map "
                     f"shows the other {1 - share:.1%}, over the {H}x{W} patches.")
        return note_html(text)

    # -- view -> state ---------------------------------------------------------------------------
    def _picked_layer(self, change) -> None:
        if not self._syncing and change["new"] is not None:
            self.state.layer = change["new"]

    def set_query(self, i: int, j: int) -> None:
        """Move the query to cell ``(i, j)`` of the layer's map with one redraw (a patch query)."""
        self._set(query_i=int(i), query_j=int(j), token="patch")

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

