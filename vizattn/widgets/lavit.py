"""``LaViTExplorer``: LaViT's reused attention, its diagonality, and saturation against ViT.

>>> LaViTState().task
'shape'
"""

from __future__ import annotations

import math

import ipywidgets as widgets
import plotly.graph_objects as go
import torch
from traitlets import Enum, HasTraits, Int

from .. import metrics, plots
from ..checks import check_choice
from ..data import PHOTOS, TASKS, photo
from ..probe import probe
from . import figure, static
from .base import Explorer, note_html, one_thread, pretrained, send, side_by_side

__all__ = ["LaViTState", "VANILLA_HERE", "LaViTExplorer"]


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


class LaViTExplorer(Explorer):
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
    >>> ex.forwards, ex.chain_figure.layout.xaxis.ticktext
    (2, ('VA stages.1.attns.0', 'LA stages.1.attns.1', 'LA stages.1.attns.2'))
    """

    def __init__(self, task: str = "shape", stage: int | None = None, photo: str = "astronaut", head: int = 0,
                 **kwargs):
        check_choice("task", task, TASKS)
        check_choice("photo", photo, PHOTOS)
        self.state = LaViTState(task=task, photo=photo, head=head)
        s = self.state
        self.forwards, self._captured, self._captures = 0, None, {}  # (task, photo) -> what the models gave
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
        self.chain_figure = figure.FigureWidget(self._chain_figure())
        self.measures_figure = figure.FigureWidget(plots.layer_measures_figure(self.measures, highlight=s.stage))
        self.saturation_figure = figure.FigureWidget(plots.saturation_figure(self.saturation))
        self.message = widgets.HTML()
        self._shown = (self._captured, s.stage)
        self._links = [widgets.link((w, "value"), (s, name)) for name, w in {**self.menus, **self.sliders}.items()]
        s.observe(self._changed, names=list(s.trait_names()))
        super().__init__([widgets.HBox([*self.menus.values(), *self.sliders.values()]), self.chain_figure,
                          side_by_side([self.measures_figure, self.saturation_figure]), self.message], **kwargs)
        self.add_class("vizattn-lavit")  # a handle for browser tests and CSS
        self._changed()

    # -- the model runs ----------------------------------------------------------------------------
    def _model(self, name: str):
        return pretrained(name, self.state.task)

    def _capture(self) -> None:
        """Run LaViT (every layer with its input: ``metrics.reuse_chains``) and ViT on the photo, once per task
        and photo (kept: going back to a task or photo runs nothing)."""
        s = self.state
        key = (s.task, s.photo)
        if key == self._captured:
            return
        if key not in self._captures:
            lavit, vit = self._model("lavit"), self._model("vit")
            image = photo(s.photo, size=lavit.config["img_size"])[None]
            with one_thread(), torch.no_grad(), probe(lavit, inputs=True) as rec:
                lavit(image)
            with one_thread(), torch.no_grad(), probe(vit) as rec_vit:
                vit(image)
            self.forwards += 2
            chains = metrics.reuse_chains(lavit, rec)  # each stage: VA, LA, LA, ...
            self._captures[key] = dict(
                heads=rec[0].weights.shape[1],
                measures=[{k: v for k, v in row.items() if k not in ("used", "vanilla", "distance")}
                          for chain in chains for row in chain],
                columns=[[dict(label=f"{'VA' if row['kind'] == 'vanilla' else 'LA'} {row['name']}",
                               **{k: row[k].numpy() for k in ("used", "vanilla", "distance") if k in row})
                          for row in chain] for chain in chains],
                saturation={"LaViT": metrics.saturation(list(rec)).tolist(),
                            "ViT": metrics.saturation(list(rec_vit)).tolist()})
        run = self._captures[key]
        self.heads, self.measures, self.columns, self.saturation = (run[k] for k in ("heads", "measures", "columns",
                                                                                  "saturation"))
        self._captured = key

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
        s.stage = min(max(s.stage, 0), len(self.columns) - 1)
        s.head = min(max(s.head, 0), self.heads - 1)
        self._capture()
        columns = self.columns[s.stage]
        strips, keys, cmax = plots.reuse_chain_maps(columns, s.head)  # keys change with the map size only
        send(self.chain_figure, {row: {"z": z, "customdata": keys} for row, z in enumerate(strips)},
             layout={"title": {"text": self._chain_title()}, "coloraxis": {"cmax": cmax},
                     **plots.chain_axes(columns, s.head)})
        run, stage = self._captured != self._shown[0], s.stage != self._shown[1]
        if run:  # the measures change with the run, their shading with the stage: one message for both
            send(self.saturation_figure, {t: {"y": trace.y}
                                          for t, trace in enumerate(plots.saturation_figure(self.saturation).data)})
        if run or stage:
            measures = plots.layer_measures_figure(self.measures).data if run else ()
            send(self.measures_figure, {t: {"y": trace.y} for t, trace in enumerate(measures)},
                 arrays={"shapes": plots.stage_shade(self.measures, s.stage)} if stage else None)
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
        return note_html(text)

    # -- without a kernel --------------------------------------------------------------------------
    def static_controls(self) -> list[dict]:
        """Every stage and every head."""
        return [static.control(self, name, static.options(range(slider.min, slider.max + 1), slider.value, name))
                for name, slider in self.sliders.items()]

    def static_panels(self) -> list:
        return [self.chain_figure, self.measures_figure, self.saturation_figure]

    def static_layout(self) -> list[list[int]]:
        return [[0], [1, 2]]

    def static_note(self) -> str:
        return ("Kernel-free copy of the LaViT explorer: every stage and head of the reuse chain, precomputed by "
                "the explorer itself. Not precomputed: the task and photo menus. " + static.LIVE)

    # -- export ----------------------------------------------------------------------------------
    def to_figure(self) -> go.Figure:
        """A static figure of the current stage's reuse chain, one animation frame per head.

        >>> len(LaViTExplorer(stage=1).to_figure().frames)
        4
        """
        return self._chain_figure(frames=True)
