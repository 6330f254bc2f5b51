"""Small hierarchical backbones, one per paper, for 64x64 images: ``[B, 3, 64, 64] -> logits [B, classes]``.

``create(name, pretrained=False, task="shape", **overrides)`` builds one; ``list_models()`` lists
the names. Each model keeps its paper's structure at a small scale (about 130k-380k parameters,
maps of 16 -> 8 -> 4 tokens per side for the hierarchical ones), small enough to train on a CPU
in minutes:

- ``vit``: 8x8 patch embedding + learned positions, an isotropic encoder of pre-norm blocks with
  global attention. The baseline.
- ``nat``: NAT's overlapping tokenizer (two 3x3 stride-2 convs), neighborhood-attention stages,
  3x3 stride-2 conv downsamplers between stages.
- ``dinat``: ``nat`` whose blocks alternate dilation 1 and the largest d with ``k * d <= map``.
- ``sasa``: a ResNet with bottleneck blocks (1x1 -> SASA -> 1x1) and 2x2 average pooling after
  the attention layer of a stage's first block. Conv stem (7x7 stride-2 conv + 3x3 max-pool, the
  ResNet stem, as in the paper's conv-stem models) [vizattn choice: the attention stem on a
  64x64 map costs more than the rest of the network].
- ``maxvit``: conv stem (3x3 stride 2, 3x3), stages of ``MaxViTBlock`` (MBConv, stride 2 in a
  stage's first block, then block and grid attention).
- ``crossformer``: cross-scale embedding stem (kernels 4, 8, 16, 32, stride 4), CEL (kernels 2, 4,
  stride 2) between stages, blocks alternating SDA (even index) and LDA (odd index), each with a
  dynamic position bias.
- ``lavit``: each stage starts with vanilla-attention layers and continues with less-attention
  layers that transform the previous scores; an attention residual carries the last scores of a
  stage into the first VA layer of the next. 8x8 patch embedding with learned positions (the
  ViT's tokens), 2x2 stride-2 patch merging: two stages, 8x8 and 4x4 tokens, each VA + 2 LA.
- ``swin``: Swin's patch embedding (4x4 stride-4 convolution + LayerNorm), stages of ``SwinBlock``
  alternating W-MSA (even index) and SW-MSA (odd index, shift ``window // 2``), patch merging
  (2x2 concatenation, LayerNorm, linear to the next width) between stages. On a map no larger
  than the window (the last stage) Swin's rule gives one window of the map and no shift.

Every model normalises its input and ends in a max-pool + linear head (see ``Model``). It exposes
``summary(input_size)`` (parameters and FLOPs) and ``aux_loss()``, the term a training loop adds
to the cross-entropy (LaViT's weighted diagonality-preserving loss, zero for the others).
``create(name, pretrained=True, task=...)`` loads the shipped float16 weights of
``vizattn/weights/{name}-{task}.pt`` (trained with ``python -m vizattn.train``) as float32.

>>> import torch
>>> list_models()
('vit', 'sasa', 'nat', 'dinat', 'maxvit', 'crossformer', 'lavit', 'swin')
>>> _ = torch.manual_seed(0)
>>> model = create("nat", task="same")
>>> model(torch.rand(2, 3, 64, 64)).shape
torch.Size([2, 2])
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .blocks import Conv, ConvStem, ImageToMap, LaViTStage, PositionEmbedding, SASABottleneck
from .checks import check_choice, check_positive, stage_lists
from .data import Shapes
from .layers import (
    AttentionResidual,
    CrossScaleEmbedding,
    LongShortDistanceAttention,
    MaxViTBlock,
    NeighborhoodAttention,
    PatchMerging,
    SwinBlock,
)
from .layers.common import GlobalAttention, TransformerBlock, explicit
from .metrics import diagonality_preserving_loss

__all__ = ["create", "list_models", "Model", "Summary", "WEIGHTS"]

WEIGHTS = Path(__file__).parent / "weights"
PROJECTIONS = ("qkv", "qk", "value", "proj")  # per-token projections inside an attention layer


# ---------------------------------------------------------------------------------------------
# the model shell and its summary
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage as the summary shows it: map side, width, depth, attention (a short text)."""

    size: int
    dim: int
    depth: int
    attention: str


@dataclasses.dataclass(frozen=True)
class Summary:
    """What ``Model.summary`` reports; ``str()`` is a readable block of text.

    ``flops`` counts the matrix products and convolutions of one forward pass of one image
    (``torch.utils.flop_counter``, 2 FLOPs per multiply-add; elementwise ops, softmax and norms
    are not counted). ``attention_flops`` is the part spent inside attention layers other than
    their per-token projections (qkv, value, output): logits and weighted sums over each query's
    K keys, position terms, LaViT's score transforms.
    """

    name: str
    input_size: int
    params: int
    flops: int
    attention_flops: int
    stages: tuple[Stage, ...]

    def __str__(self) -> str:
        lines = [f"{self.name}: {self.params:,} params, {self.flops / 1e6:.1f} MFLOPs at "
                 f"{self.input_size}x{self.input_size} (attention {self.attention_flops / 1e6:.1f} MFLOPs)"]
        lines += [f"  stage {i}: {s.size}x{s.size} tokens, dim {s.dim}, depth {s.depth}, {s.attention}"
                  for i, s in enumerate(self.stages, 1)]
        return "\n".join(lines)


class Model(nn.Module):
    """``images [B, 3, S, S] -> logits [B, classes]``: normalise, stem, stages, max pool, norm, linear head.

    Images in ``[0, 1]`` are normalised with the ``Shapes`` statistics (``(x - 0.22) / 0.13``).
    ``stem`` maps them to a channels-last map ``[B, H, W, C]``; each stage maps
    ``[B, H, W, C] -> [B, H', W', C']``; ``norm`` acts on the pooled features ``[B, C_last]``.
    The head max-pools over tokens [vizattn choice: the papers mean-pool (or use a class
    token), but a Shapes object covers a few of the 16-256 tokens, and with mean pooling small
    models sit on a long plateau before they learn on a CPU budget].
    ``plan`` describes the stages for ``summary``; ``config`` holds the arguments of the build.
    """

    MEAN, STD = 0.22, 0.13  # of Shapes images, every channel

    def __init__(self, name: str, config: dict, stem: nn.Module, stages: list[nn.Module], norm: nn.Module,
                 dim: int, classes: int, plan: list[Stage]):
        super().__init__()
        self.name, self.config, self.plan = name, dict(config), tuple(plan)
        self.stem, self.stages = stem, nn.ModuleList(stages)
        self.norm, self.head = norm, nn.Linear(dim, classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images ``[B, 3, S, S] -> [B, H, W, C]``: the last stage's map."""
        x = self.stem(images)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"{self.name} expects images [B, 3, H, W]; got shape {got}")
        x = self.features((images - self.MEAN) / self.STD)  # [B, H, W, C]
        return self.head(self.norm(x.amax((1, 2))))  # [B, C] -> [B, classes]

    def aux_loss(self) -> torch.Tensor:
        """The term a training loop adds to the cross-entropy after a forward pass (here 0)."""
        return self.head.weight.new_zeros(())

    def summary(self, input_size: int | None = None) -> Summary:
        """Parameters and FLOPs of one ``input_size x input_size`` image (default: the built size).

        FLOPs are counted with every attention layer on its explicit path (``fused=False``), so
        attention costs ``N * K`` per head (the mechanism), not the fused kernel's padded or
        halo work; see ``Summary``.

        >>> import torch; _ = torch.manual_seed(0)
        >>> s = create("vit").summary()
        >>> s.params == sum(p.numel() for p in create("vit").parameters()), s.attention_flops > 0
        (True, True)
        """
        size = self.config["img_size"] if input_size is None else input_size
        training, counter = self.training, FlopCounterMode(display=False)
        try:
            self.eval()
            with torch.no_grad(), explicit(self), counter:
                self(torch.zeros(1, 3, size, size, device=self.head.weight.device))
        finally:
            self.train(training)
        counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
        root, attention = type(self).__name__, 0
        for name, module in self.named_modules():
            if hasattr(module, "attn_probs"):
                attention += counts.get(f"{root}.{name}", 0)
                attention -= sum(counts.get(f"{root}.{name}.{p}", 0) for p in PROJECTIONS)
        return Summary(self.name, size, sum(p.numel() for p in self.parameters()), counter.get_total_flops(),
                       attention, self.plan)


# ---------------------------------------------------------------------------------------------
# validation helpers: a bad configuration fails at construction, naming the stage and the values
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _stage(name: str, index: int, size: int):
    """Prefix any ValueError raised while building stage ``index`` (1-based) with the model and map."""
    try:
        yield
    except ValueError as err:
        raise ValueError(f"{name} stage {index} (map {size}x{size}): {err}") from None


def _fits(layer: nn.Module, size: int) -> str:
    """Raise the pattern's ValueError unless ``layer``'s pattern fits a ``size x size`` map; return its repr."""
    pattern = layer.pattern(size, size)
    pattern.check(size, size)
    return repr(pattern)


def _stage_sizes(name: str, img_size: int, stem_stride: int, stages: int) -> list[int]:
    """Map side of each stage: ``img_size / stem_stride``, halved between stages (must divide evenly)."""
    stride = stem_stride * 2 ** (stages - 1)
    if not isinstance(img_size, int) or img_size < stride or img_size % stride:
        raise ValueError(f"{name}: img_size must be a multiple of the total stride {stride} (stem {stem_stride}, "
                         f"{stages} stages); got img_size={img_size!r}")
    return [img_size // stem_stride // 2**i for i in range(stages)]


# ---------------------------------------------------------------------------------------------
# the builders: each validates its configuration stage by stage
# ---------------------------------------------------------------------------------------------
def _vit(img_size, patch, dim, depth, heads, mlp_ratio):
    (size,) = _stage_sizes("vit", img_size, patch, 1)
    with _stage("vit", 1, size):
        blocks = [TransformerBlock(dim, GlobalAttention(dim, heads), mlp_ratio) for _ in range(depth)]
        plan = [Stage(size, dim, depth, _fits(blocks[0].attn, size))]
    stem = ImageToMap(Conv(3, dim, patch, patch, norm=False), PositionEmbedding(size, dim))
    return stem, [nn.Sequential(*blocks)], nn.LayerNorm(dim), dim, plan


def _nat(img_size, dims, depths, heads, kernels, mlp_ratio, dilate=False, name="nat"):
    sizes = _stage_sizes(name, img_size, 4, stage_lists(name, dims=dims, depths=depths, heads=heads, kernels=kernels))
    # NAT's overlapping tokenizer: two 3x3 stride-2 convolutions, then LayerNorm
    stem = ImageToMap(Conv(3, max(dims[0] // 2, 1), 3, 2, 1, norm=False), Conv(max(dims[0] // 2, 1), dims[0], 3, 2, 1))
    stages, plan = [], []
    for i, (size, dim, depth, h, k) in enumerate(zip(sizes, dims, depths, heads, kernels)):
        with _stage(name, i + 1, size):
            # DiNAT: even blocks d = 1, odd blocks the largest d with k * d <= map
            dilations = [1 if j % 2 == 0 or not dilate else max(size // k, 1) for j in range(depth)]
            blocks = [TransformerBlock(dim, NeighborhoodAttention(dim, h, k, d), mlp_ratio) for d in dilations]
            seen = dict.fromkeys(_fits(b.attn, size) for b in blocks)
        down = [Conv(dims[i - 1], dim, 3, 2, 1)] if i else []  # 3x3 stride-2 conv + LayerNorm
        stages.append(nn.Sequential(*down, *blocks))
        plan.append(Stage(size, dim, depth, " / ".join(seen)))
    return stem, stages, nn.LayerNorm(dims[-1]), dims[-1], plan


def _dinat(img_size, **config):
    return _nat(img_size, dilate=True, name="dinat", **config)


def _sasa(img_size, stem_dim, dims, widths, depths, heads, kernels):
    n = stage_lists("sasa", dims=dims, widths=widths, depths=depths, heads=heads, kernels=kernels)
    sizes = _stage_sizes("sasa", img_size, 4, n)
    stem = ConvStem(nn.Conv2d(3, stem_dim, 7, 2, 3, bias=False), nn.BatchNorm2d(stem_dim), nn.ReLU(),
                    nn.MaxPool2d(3, 2, 1))
    stages, plan, dim_in = [], [], stem_dim
    for i, (size, dim, width, depth, h, k) in enumerate(zip(sizes, dims, widths, depths, heads, kernels)):
        with _stage("sasa", i + 1, size):
            if k > size:  # the first block of a later stage attends on the previous (larger) map
                raise ValueError(
                    f"SASA's k x k window must fit the stage map; got kernel_size={k}, map=({size}, {size})")
            blocks = [SASABottleneck(dim_in if j == 0 else dim, width, dim, h, k, 2 if i and j == 0 else 1)
                      for j in range(depth)]
        stages.append(nn.Sequential(*blocks))
        plan.append(Stage(size, dim, depth, f"{_fits(blocks[0].attn, size)} on width {width}"))
        dim_in = dim
    return stem, stages, nn.Identity(), dims[-1], plan


def _maxvit(img_size, stem_dim, dims, depths, heads, window, mlp_ratio):
    n = stage_lists("maxvit", dims=dims, depths=depths, heads=heads)
    sizes = _stage_sizes("maxvit", img_size, 4, n)
    stem = ConvStem(nn.Conv2d(3, stem_dim, 3, 2, 1), nn.BatchNorm2d(stem_dim), nn.GELU(),
                    nn.Conv2d(stem_dim, stem_dim, 3, 1, 1))
    stages, plan, dim_in = [], [], stem_dim
    for i, (size, dim, depth, h) in enumerate(zip(sizes, dims, depths, heads)):
        with _stage("maxvit", i + 1, size):
            blocks = [MaxViTBlock(dim_in if j == 0 else dim, dim, h, window, stride=2 if j == 0 else 1,
                                  mlp_ratio=mlp_ratio) for j in range(depth)]
            seen = f"{_fits(blocks[0].block_attn, size)} then {_fits(blocks[0].grid_attn, size)}"
        stages.append(nn.Sequential(*blocks))
        plan.append(Stage(size, dim, depth, f"MBConv, {seen}"))
        dim_in = dim
    return stem, stages, nn.LayerNorm(dims[-1]), dims[-1], plan


def _crossformer(img_size, dims, depths, heads, group, intervals, mlp_ratio):
    n = stage_lists("crossformer", dims=dims, depths=depths, heads=heads, intervals=intervals)
    sizes = _stage_sizes("crossformer", img_size, 4, n)
    with _stage("crossformer", 1, sizes[0]):
        stem = ImageToMap(CrossScaleEmbedding(3, dims[0], (4, 8, 16, 32), 4), nn.LayerNorm(dims[0]))
    stages, plan = [], []
    for i, (size, dim, depth, h, interval) in enumerate(zip(sizes, dims, depths, heads, intervals)):
        with _stage("crossformer", i + 1, size):
            blocks = [TransformerBlock(dim, LongShortDistanceAttention(
                dim, h, "sda" if j % 2 == 0 else "lda", group=group, interval=interval), mlp_ratio)
                for j in range(depth)]
            seen = dict.fromkeys(_fits(b.attn, size) for b in blocks)
            # CrossFormer's merging: LayerNorm, then the cross-scale embedding (kernels 2, 4, stride 2)
            down = [nn.LayerNorm(dims[i - 1]), CrossScaleEmbedding(dims[i - 1], dim, (2, 4), 2)] if i else []
        stages.append(nn.Sequential(*down, *blocks))
        plan.append(Stage(size, dim, depth, " / ".join(seen) + ", dynamic position bias"))
    return stem, stages, nn.LayerNorm(dims[-1]), dims[-1], plan


class LaViT(Model):
    """LaViT: stages pass their last scores on (attention residual); ``aux_loss`` is LaViT's DP term.

    ``aux_loss() = dp_lambda * sum over LA layers of diagonality_preserving_loss(softmax(A_l))``
    for the last forward pass; the training objective is ``cross_entropy + aux_loss()``. The
    default ``dp_lambda = 0.1`` is a [vizattn choice] (the paper gives no value).
    """

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x, scores = self.stem(images), None
        for stage in self.stages:
            x, scores = stage(x, scores)
        return x

    def aux_loss(self) -> torch.Tensor:
        terms = [diagonality_preserving_loss(a) for stage in self.stages for a in stage.la_maps]
        return self.config["dp_lambda"] * sum(terms, super().aux_loss())


def _lavit(img_size, patch, dims, depths, heads, vanilla, mlp_ratio, dp_lambda):
    n = stage_lists("lavit", dims=dims, depths=depths, heads=heads, vanilla=vanilla)
    sizes = _stage_sizes("lavit", img_size, patch, n)
    # patch embedding + LayerNorm, learned absolute positions (the only position information: VA and LA are global)
    stem = ImageToMap(Conv(3, dims[0], patch, patch), PositionEmbedding(sizes[0], dims[0]))
    stages, plan = [], []
    for i, (size, dim, depth, h, va) in enumerate(zip(sizes, dims, depths, heads, vanilla)):
        with _stage("lavit", i + 1, size):
            if va > depth:
                raise ValueError(
                    f"vanilla layers must not outnumber the stage's layers; got vanilla={va}, depth={depth}")
            if h != heads[0]:
                raise ValueError(f"the attention residual carries heads as channels, so every stage needs the same "
                                 f"heads; got heads={tuple(heads)}")
            residual = AttentionResidual(h, sizes[i - 1]) if i else None
            down = Conv(dims[i - 1], dim, 2, 2) if i else nn.Identity()  # 2x2 stride-2 patch merging + LayerNorm
            stages.append(LaViTStage(down, dim, h, size, depth, va, mlp_ratio, residual))
        la = f" + {depth - va} LessAttention" if depth > va else ""
        plan.append(Stage(size, dim, depth, f"{va} VanillaAttention{la}" + (", attention residual in" if i else "")))
    return stem, stages, nn.LayerNorm(dims[-1]), dims[-1], plan


def _swin(img_size, dims, depths, heads, window, mlp_ratio):
    n = stage_lists("swin", dims=dims, depths=depths, heads=heads)
    sizes = _stage_sizes("swin", img_size, 4, n)
    stem = ImageToMap(Conv(3, dims[0], 4, 4))  # Swin's patch embedding: 4x4 patches + LayerNorm
    stages, plan = [], []
    for i, (size, dim, depth, h) in enumerate(zip(sizes, dims, depths, heads)):
        with _stage("swin", i + 1, size):
            check_positive(window=window)
            blocks = [SwinBlock(dim, h, window, shift=0 if j % 2 == 0 else window // 2, mlp_ratio=mlp_ratio)
                      for j in range(depth)]
            seen = dict.fromkeys(_fits(b.attn, size) for b in blocks)
        down = [PatchMerging(dims[i - 1], dim)] if i else []
        stages.append(nn.Sequential(*down, *blocks))
        plan.append(Stage(size, dim, depth, " / ".join(seen)))
    return stem, stages, nn.LayerNorm(dims[-1]), dims[-1], plan


# ---------------------------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------------------------
_REGISTRY = {  # name: (model class, builder, default configuration)
    "vit": (Model, _vit, dict(patch=8, dim=96, depth=4, heads=6, mlp_ratio=2.0)),
    "sasa": (Model, _sasa, dict(stem_dim=32, dims=(64, 128, 256), widths=(16, 32, 64), depths=(2, 2, 2),
                                heads=(2, 4, 8), kernels=(5, 3, 3))),
    "nat": (Model, _nat, dict(dims=(32, 64, 96), depths=(2, 2, 2), heads=(2, 4, 6), kernels=(5, 3, 3),
                              mlp_ratio=2.0)),
    "dinat": (Model, _dinat, dict(dims=(32, 64, 96), depths=(2, 2, 2), heads=(2, 4, 6), kernels=(5, 3, 3),
                                  mlp_ratio=2.0)),
    "maxvit": (Model, _maxvit, dict(stem_dim=16, dims=(32, 64, 96), depths=(1, 1, 1), heads=(2, 4, 6), window=4,
                             mlp_ratio=2.0)),
    "crossformer": (Model, _crossformer, dict(dims=(32, 64, 96), depths=(2, 2, 2), heads=(2, 4, 6), group=4,
                                       intervals=(4, 2, 1), mlp_ratio=2.0)),
    "lavit": (LaViT, _lavit, dict(patch=8, dims=(64, 96), depths=(3, 3), heads=(4, 4), vanilla=(1, 1), mlp_ratio=2.0,
                                  dp_lambda=0.1)),
    "swin": (Model, _swin, dict(dims=(32, 64, 96), depths=(2, 2, 2), heads=(2, 4, 6), window=4, mlp_ratio=2.0)),
}


def list_models() -> tuple[str, ...]:
    """The registered model names."""
    return tuple(_REGISTRY)


def create(name: str, pretrained: bool = False, task: str = "shape", **overrides) -> Model:
    """Build model ``name`` for ``task`` (its classes: ``vizattn.data.Shapes.classes(task)``).

    ``overrides`` replace entries of the default configuration (``create(name).config`` lists
    them, plus ``img_size=64``); per-stage entries are tuples. ``pretrained=True`` loads the
    shipped float16 weights of the default configuration, converted to float32, and returns
    the model in eval mode; it works offline.

    >>> import torch; _ = torch.manual_seed(0)
    >>> create("dinat", dims=(16, 32), depths=(2, 2), heads=(2, 2), kernels=(3, 3)).plan[0].attention
    'Neighborhood(3) / Neighborhood(3, dilation=5)'
    >>> create("nat", kernels=(5, 5, 5))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: nat stage 3 (map 4x4): kernel_size * dilation must not exceed ...; got kernel_size=(5, 5), ...
    """
    check_choice("name", name, _REGISTRY)
    classes = len(Shapes.classes(task))
    cls, build, defaults = _REGISTRY[name]
    config = {"img_size": 64, **defaults}
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise ValueError(f"{name} accepts overrides {', '.join(config)}; got {', '.join(unknown)}")
    if pretrained and overrides:
        raise ValueError(f"pretrained weights exist for the default configuration only; got overrides {overrides}")
    config.update(overrides)
    stem, stages, norm, dim, plan = build(**config)
    model = cls(name, config, stem, stages, norm, dim, classes, plan)
    if pretrained:
        path = WEIGHTS / f"{name}-{task}.pt"
        if not path.exists():
            raise FileNotFoundError(f"no shipped weights for {name} on task {task!r}: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        model.eval()
    return model
