"""Receptive fields: which input positions *can* influence an output position (``theoretical``), and
which ones *do*, measured by gradients (``effective``, Luo et al. 2016).

The theoretical field is propagated backwards from one output position through a list of steps:

- a pattern (attention on the current map): a position is reached from every real key of every
  query already in the field (``pattern.mask``, applied one axis at a time; SASA's zero padding
  reaches nothing);
- a ``Downsample`` (strided convolution, pooling, patch embedding/merging): output position ``o``
  reads input positions ``o * factor - padding + t * dilation``, ``t < kernel``, on each axis.

Residual connections and per-token layers (MLPs, norms, 1x1 convolutions) keep a position in its
own field, and every pattern lists the query among its keys, so they add nothing.

>>> from vizattn.patterns import Neighborhood
>>> field = theoretical([Neighborhood(3), Neighborhood(3)], size=9, position=(4, 4))
>>> field.extent(0)                      # two 3x3 neighbourhoods: a 5x5 square on the input
(5, 5)
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from .geometry import axis_mask
from .patterns import Pair, Pattern, as_pair
from .probe import attention_layers, probe
from .stacks import STACKS, PatternStack, stack_for, stack_model  # re-exported: the stacks the fields are drawn for

__all__ = ["Downsample", "Branches", "TheoreticalField", "EffectiveField", "theoretical", "effective", "model_steps",
           "token_map", "STACKS", "stack_for", "PatternStack", "stack_model"]

_POOLS = (nn.AvgPool2d, nn.MaxPool2d)


# ---------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Downsample:
    """A down-sampling step as a receptive field sees it: output ``o`` reads ``o*factor - padding + t*dilation``.

    ``kernel`` defaults to ``factor`` (a patch embedding or merging); ``padding`` to
    ``ceil((kernel - factor) / 2)`` (centred: 3x3 stride 2 -> 1, CrossFormer's 8x8 stride 4 -> 2,
    ResNet's 7x7 stride 2 -> 3). The output has ``floor((L + 2p - d(k-1) - 1) / factor) + 1``
    positions per axis (``ceil_mode``: rounded up, as PyTorch's pools). Ints or ``(h, w)`` pairs.

    >>> Downsample(2, kernel=3).out_size((8, 8)), Downsample.of(nn.MaxPool2d(3, 2, padding=1))
    ((4, 4), Downsample(factor=(2, 2), kernel=(3, 3), padding=(1, 1), dilation=(1, 1), ceil_mode=False))
    """

    factor: Pair | int
    kernel: Pair | int | None = None
    padding: Pair | int | None = None
    dilation: Pair | int = 1
    ceil_mode: bool = False

    def __post_init__(self):
        factor = as_pair("factor", self.factor)
        kernel = factor if self.kernel is None else as_pair("kernel", self.kernel)
        padding = (tuple(max(0, math.ceil((k - f) / 2)) for k, f in zip(kernel, factor)) if self.padding is None
                   else as_pair("padding", self.padding, minimum=0))
        object.__setattr__(self, "factor", factor)
        object.__setattr__(self, "kernel", kernel)
        object.__setattr__(self, "padding", padding)
        object.__setattr__(self, "dilation", as_pair("dilation", self.dilation))

    @classmethod
    def of(cls, module: nn.Module) -> Downsample:
        """The step of an ``nn.Conv2d``, ``nn.AvgPool2d`` or ``nn.MaxPool2d``."""
        if not isinstance(module, (nn.Conv2d, *_POOLS)):
            raise ValueError(f"a step must be a pattern, a Downsample, nn.Conv2d, nn.AvgPool2d or nn.MaxPool2d; "
                             f"got {type(module).__name__}")
        if isinstance(module.padding, str):
            raise ValueError(f"string padding is not supported; got padding={module.padding!r} in {module}")
        stride = module.stride if module.stride is not None else module.kernel_size
        return cls(_pair(stride), _pair(module.kernel_size), _pair(module.padding),
                   _pair(getattr(module, "dilation", 1)), bool(getattr(module, "ceil_mode", False)))

    def _axis_out(self, L: int, a: int) -> int:
        k, s, p, d = self.kernel[a], self.factor[a], self.padding[a], self.dilation[a]
        span = L + 2 * p - d * (k - 1) - 1
        if span < 0:
            raise ValueError(f"the map is smaller than the down-sampling window; got map side {L}, {self}")
        out = (-(-span // s) if self.ceil_mode else span // s) + 1
        if self.ceil_mode and (out - 1) * s >= L + p:  # PyTorch: the last window must start inside
            out -= 1
        return out

    def out_size(self, size) -> Pair:
        """Map size after this step."""
        H, W = as_pair("map size", size)
        return self._axis_out(H, 0), self._axis_out(W, 1)

    def incidence(self, L_in: int, L_out: int, axis: int) -> torch.Tensor:
        """``BoolTensor [L_out, L_in]``: which input positions output ``o`` reads on ``axis``."""
        k, s, p, d = self.kernel[axis], self.factor[axis], self.padding[axis], self.dilation[axis]
        reads = torch.arange(L_out)[:, None] * s - p + torch.arange(k) * d  # [L_out, k]
        out = torch.zeros(L_out, L_in + 1, dtype=torch.bool)
        out.scatter_(1, reads.where((reads >= 0) & (reads < L_in), L_in), True)
        return out[:, :L_in]


def _pair(v) -> Pair:
    return (v, v) if isinstance(v, int) else tuple(v)


def _back_downsample(step: Downsample, field: torch.Tensor, in_size: Pair) -> torch.Tensor:
    """Field on the output map -> field on the input map, through a separable footprint."""
    rows = step.incidence(in_size[0], field.shape[0], 0).double()  # [H_out, H_in]
    cols = step.incidence(in_size[1], field.shape[1], 1).double()  # [W_out, W_in]
    return (rows.T @ field.double() @ cols) > 0  # [H_in, W_in]


def _back_pattern(pattern: Pattern, field: torch.Tensor) -> torch.Tensor:
    """Field on a map -> the positions whose tokens its queries read (their real keys).

    Patterns are separable (``pattern.mask`` is the product of its axis masks), so this is
    ``rows.T @ field @ cols`` with the ``[L, L]`` axis masks: no ``[N, K]`` key table.
    """
    rows, cols = (axis_mask(rule).double() for rule in pattern.axes(*field.shape))  # [H, H], [W, W]
    return (rows.T @ field.double() @ cols) > 0  # [H, W]


@dataclasses.dataclass(frozen=True)
class Branches:
    """Several chains of ``Downsample`` steps from one map to another whose footprints are united
    (a model's traced convolutions and pools between two attention layers; see ``theoretical``).

    ``chains``: tuples of ``(Downsample, in_size, out_size)``; an empty chain is the identity.
    """

    chains: tuple
    in_size: Pair
    out_size: Pair
    label: str = ""
    everything: bool = False  # a global pooling runs in between (chains kept): every position reaches every other

    def back(self, field: torch.Tensor) -> torch.Tensor:
        if self.everything:
            return torch.full(self.in_size, bool(field.any()))
        out = torch.zeros(self.in_size, dtype=torch.bool)
        for chain in self.chains:
            f = field
            for step, a, _ in reversed(chain):
                f = _back_downsample(step, f, a)
            out |= f
        return out


# ---------------------------------------------------------------------------------------------
# theoretical fields
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TheoreticalField:
    """A theoretical receptive field, step by step; behaves as the list ``masks``.

    ``masks[s]``: ``BoolTensor`` on the map that enters step ``s`` (``sizes[s]``): the positions
    there that can influence ``position`` on the output map (``output_size``). ``masks[0]`` is
    the field on the input. ``names[s]`` labels step ``s`` (a layer name for a model).
    """

    masks: list
    sizes: list
    steps: list
    names: list
    position: Pair
    output_size: Pair

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, s):
        return self.masks[s]

    def __iter__(self):
        return iter(self.masks)

    @property
    def input(self) -> torch.Tensor:
        """The field on the input map, ``masks[0]``."""
        return self.masks[0]

    def extent(self, s: int = 0) -> Pair:
        """Height and width of the bounding box of ``masks[s]`` (``(0, 0)`` if it is empty)."""
        rows, cols = self.masks[s].nonzero(as_tuple=True)
        if rows.numel() == 0:
            return 0, 0
        return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def theoretical(layers, size=None, position=None, *, layer: str | None = None) -> TheoreticalField:
    """The input positions that can influence one output position, layer by layer.

    Two forms:

    - ``theoretical(steps, size, position)``: ``steps`` is a list of patterns (attention on the
      current map), ``Downsample`` steps and ``nn.Conv2d`` / ``nn.AvgPool2d`` / ``nn.MaxPool2d``
      modules; ``size`` is the input map.
    - ``theoretical(model, size=64, position, layer=None)``: the steps of a vizattn model, found
      by one forward of a zero image ``[1, 3, size, size]`` under ``vizattn.probe`` (each attention
      layer's pattern and map, in call order) with hooks on its ``nn.Conv2d`` / pooling modules
      (kernel or stride above 1). Between two attention layers, the traced modules are chained
      where each reads the map size the previous one wrote (a module attaches to the latest map of
      its input size, which also finds parallel branches such as MBConv's pooled shortcut or
      CrossFormer's multi-kernel embedding) and the chains that reach the next map are united.
      If none does (patch merging by reshaping, functional pooling), the step is approximated by
      ``Downsample(ceil(L_in / L_out))``, a patchify footprint that under-counts kernels larger
      than the stride. A convolution run on a 1x1 map between two attention layers marks a global
      pooling (squeeze-excite): that step then reaches the whole map. Modules run on other tensors
      than the feature map (batch axis not 1: LaViT's attention residual works on score maps) are
      left out. The output map is that of ``layer`` (default: the last attention layer).

    ``position``: ``(i, j)`` on the output map, default its centre ``(H // 2, W // 2)``.
    Returns a ``TheoreticalField``: ``masks[s]`` on the map entering step ``s``; ``masks[0]`` on the input.

    >>> from vizattn.patterns import Block, Grid
    >>> field = theoretical([Downsample(2), Block(4), Grid(4)], size=32, position=(0, 0))
    >>> [tuple(m.shape) for m in field], bool(field.input.all())    # block + grid: the whole map
    ([(32, 32), (16, 16), (16, 16)], True)
    """
    if isinstance(layers, nn.Module) and not isinstance(layers, (nn.Conv2d, *_POOLS)):
        size = 64 if size is None else size
        steps, names, _ = model_steps(layers, size, layer=layer)
    else:
        if layer is not None:
            raise ValueError("layer= chooses a layer of a model; got a list of steps")
        if isinstance(layers, (Pattern, Downsample, nn.Module)) or not isinstance(layers, (list, tuple)) or not layers:
            raise ValueError(f"layers must be a vizattn model or a non-empty list of steps; got {layers!r}")
        if size is None:
            raise ValueError("size (the input map, an int or an (h, w) pair) is required with a list of steps")
        steps = [Downsample.of(s) if isinstance(s, nn.Module) else s for s in layers]
        bad = [s for s in steps if not isinstance(s, (Pattern, Downsample, Branches))]
        if bad:
            raise ValueError(f"a step must be a pattern, a Downsample, nn.Conv2d, nn.AvgPool2d or nn.MaxPool2d; "
                             f"got {bad[0]!r}")
        names = [repr(s) for s in steps]
    size = as_pair("size", size)
    sizes = [size]
    for step in steps:  # forward: the map entering each step
        if isinstance(step, Pattern):
            step.check(*sizes[-1])
            sizes.append(sizes[-1])
        elif isinstance(step, Branches):
            sizes.append(step.out_size)
        else:
            sizes.append(step.out_size(sizes[-1]))
    H, W = sizes[-1]
    i, j = (H // 2, W // 2) if position is None else position
    if not (isinstance(i, int) and isinstance(j, int) and 0 <= i < H and 0 <= j < W):
        raise ValueError(f"position must be (i, j) on the {H}x{W} output map; got position={position!r}")
    field = torch.zeros(H, W, dtype=torch.bool)
    field[i, j] = True
    masks = []
    for step, in_size in zip(reversed(steps), reversed(sizes[:-1])):  # backward
        if isinstance(step, Pattern):
            field = _back_pattern(step, field)
        elif isinstance(step, Branches):
            field = step.back(field)
        else:
            field = _back_downsample(step, field, in_size)
        masks.insert(0, field)
    return TheoreticalField(masks, sizes[:-1], list(steps), names, (i, j), (H, W))


def _trace(model: nn.Module, size: Pair):
    """One forward of a zero image: attention records (pattern, map) and the spatial modules run
    between them: ``(records, [(record count so far, name, Downsample, in_size, out_size)])``."""
    param = next(model.parameters(), None)
    image = torch.zeros(1, 3, *size, device=None if param is None else param.device,
                        dtype=torch.float32 if param is None else param.dtype)
    modules, handles = [], []

    def hook(name, module, args, out):
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[0] == 1 and isinstance(out, torch.Tensor):
            if tuple(x.shape[-2:]) == (1, 1):  # after a global pooling (squeeze-excite): mark it
                modules.append((len(rec), name, None, (1, 1), (1, 1)))
            else:
                modules.append((len(rec), name, Downsample.of(module), tuple(x.shape[-2:]), tuple(out.shape[-2:])))

    training = model.training
    try:
        with probe(model, batch_items=[0], heads=[0], queries=[(0, 0)]) as rec:
            for name, m in model.named_modules():
                if isinstance(m, (nn.Conv2d, *_POOLS)):
                    handles.append(m.register_forward_hook(lambda mod, a, o, name=name: hook(name, mod, a, o)))
            model.eval()
            with torch.no_grad():
                model(image)
    finally:
        for h in handles:
            h.remove()
        model.train(training)
    return list(rec), modules


def token_map(model: nn.Module, size: Pair) -> tuple[int, Pair]:
    """``(prefix, (h, w))``: the class tokens and the token grid of an attention map of ``size`` in ``model``.

    A ViT with class tokens (attributes ``prefix_tokens`` and ``grid``, as ``vizattn.checkpoints.vit``)
    runs its ``prefix + h*w`` tokens as a ``1 x (prefix + h*w)`` map: that map is the ``grid`` plus
    ``prefix`` tokens with no place on it. Any other map is its own grid, with no prefix.
    """
    prefix, grid = getattr(model, "prefix_tokens", 0), getattr(model, "grid", None)
    if prefix and grid is not None and tuple(size) == (1, prefix + grid[0] * grid[1]):
        return prefix, tuple(grid)
    return 0, tuple(size)


def model_steps(model: nn.Module, size, layer: str | None = None) -> tuple[list, list, list]:
    """The steps ``theoretical(model, size, ...)`` follows: ``(steps, names, sizes)``.

    ``steps`` alternate ``Branches`` (the traced down-sampling between two attention layers, left
    out where there is none) and each attention call's pattern, up to ``layer`` (default: the
    last attention layer called); ``names[s]`` is the layer's name (a pattern) or the branches'
    label; ``sizes[s]`` the map entering step ``s`` (a ViT's layers: its patch ``grid``, see
    ``token_map``). One forward of a zero image ``[1, 3, *size]``.

    >>> import torch; from vizattn.layers import NeighborhoodAttention
    >>> class Tiny(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.down, self.attn = torch.nn.Conv2d(3, 8, 2, 2), NeighborhoodAttention(8, 2, kernel_size=3)
    ...     def forward(self, images):
    ...         return self.attn(self.down(images).permute(0, 2, 3, 1))
    >>> steps, names, sizes = model_steps(Tiny(), 8)
    >>> [type(s).__name__ for s in steps], names[1], sizes
    (['Branches', 'Neighborhood'], 'attn', [(8, 8), (4, 4)])
    """
    size = as_pair("size", size)
    records, modules = _trace(model, size)
    if layer is None:
        last = len(records) - 1
    else:
        found = [r.index for r in records if r.name == layer]
        if not found:
            raise ValueError(f"layer must be an attention layer called in the forward; got layer={layer!r}, "
                             f"called: {', '.join(r.name for r in records)}")
        last = found[0]
    steps, names, sizes, current = [], [], [], size
    for g, record in enumerate(records[: last + 1]):
        grid = token_map(model, record.size)[1]
        step = _gap_step([m for m in modules if m[0] == g], current, grid)
        if step is not None:
            steps.append(step)
            names.append(step.label)
            sizes.append(current)
        steps.append(record.pattern)
        names.append(record.name)
        sizes.append(grid)
        current = grid
    return steps, names, sizes


def _gap_step(gap, in_size: Pair, out_size: Pair) -> Branches | None:
    """United chains of the traced modules from ``in_size`` to ``out_size`` (None: the identity)."""
    pooled = sorted({name for _, name, step, _, _ in gap if step is None}) if in_size != (1, 1) else []
    gap = [m for m in gap if m[2] is not None and (m[2].kernel != (1, 1) or m[2].factor != (1, 1))]
    nodes = [(in_size, ())]
    for _, name, step, a, b in gap:
        for node_size, chain in reversed(nodes):
            if node_size == a:
                nodes.append((b, chain + ((step, a, b, name),)))
                break
    chains = [chain for node_size, chain in nodes if node_size == out_size]
    if chains == [()] and not pooled:
        return None
    if not chains:
        if out_size[0] > in_size[0] or out_size[1] > in_size[1]:
            raise ValueError(f"theoretical fields follow down-sampling only; a map grows from {in_size} to {out_size}")
        factor = (-(-in_size[0] // out_size[0]), -(-in_size[1] // out_size[1]))
        approx = Downsample(factor, ceil_mode=True)
        return Branches((((approx, in_size, out_size),),), in_size, out_size,
                        f"{approx} (approximated from the map sizes {in_size} -> {out_size})", everything=bool(pooled))
    names = sorted({link[3] for chain in chains for link in chain})
    label = f"global pooling before {', '.join(pooled)}" if pooled else " | ".join(names)
    return Branches(tuple(tuple(link[:3] for link in chain) for chain in chains), in_size, out_size, label,
                    everything=bool(pooled))


# ---------------------------------------------------------------------------------------------
# effective fields
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class EffectiveField:
    """A gradient-based receptive field: ``map [H_in, W_in]`` (sums to 1) and the sides of the centred
    squares holding 20/50/99% of its mass (``sides``), centred on ``centre`` (the input pixel under
    ``position`` of ``layer``'s output map)."""

    map: torch.Tensor
    sides: dict
    layer: str
    position: Pair
    centre: Pair


class _Stop(Exception):
    pass


def effective(model: nn.Module, images: torch.Tensor, position=None, layer: str | None = None,
              fractions=(0.2, 0.5, 0.99)) -> EffectiveField:
    """The effective receptive field (Luo et al. 2016) of one position of an attention layer's output.

    The gradient of the sum of the features at ``position`` (default: the centre) of ``layer``'s
    output map (default: the last attention layer called) with respect to ``images [B, C, H, W]``,
    absolute, summed over channels, averaged over the images, normalised to sum 1. The model runs
    in eval mode for this (its mode is restored); parameter gradients are not touched.
    ``sides[f]``: the side of the smallest square centred on the input pixel under ``position``
    (clipped at the borders) that holds a fraction ``f`` of the mass.

    >>> import torch
    >>> from vizattn.layers import NeighborhoodAttention
    >>> class Tiny(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.embed, self.attn = torch.nn.Linear(3, 8), NeighborhoodAttention(8, 2, kernel_size=3)
    ...     def forward(self, images):
    ...         return self.attn(self.embed(images.permute(0, 2, 3, 1)))
    >>> _ = torch.manual_seed(0)
    >>> erf = effective(Tiny(), torch.randn(2, 3, 9, 9))
    >>> int((erf.map > 0).sum()), erf.sides[0.99] <= 3
    (9, True)
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a batch [B, C, H, W]; got {got}")
    layers = attention_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no attention layers")
    if layer is not None and layer not in layers:
        raise ValueError(f"layer must be one of the attention layers: {', '.join(layers)}; got layer={layer!r}")
    fractions = tuple(fractions)
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions must lie in (0, 1]; got fractions={fractions}")
    seen: dict = {}

    def hook(name, module, args, out):
        seen["name"], seen["out"] = name, out[0] if isinstance(out, tuple) else out
        if layer is not None:
            raise _Stop

    chosen = {layer: layers[layer]} if layer is not None else layers
    handles = [m.register_forward_hook(lambda mod, a, o, name=name: hook(name, mod, a, o))
               for name, m in chosen.items()]
    training = model.training
    x = images.detach().clone().requires_grad_(True)
    try:
        model.eval()
        with torch.enable_grad():
            try:
                model(x)
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
        model.train(training)
    if "out" not in seen:
        raise ValueError(f"the attention layer {layer!r} was not called in the forward")
    out = seen["out"]  # [B, H, W, C]
    H, W = out.shape[1:3]
    i, j = (H // 2, W // 2) if position is None else position
    if not (isinstance(i, int) and isinstance(j, int) and 0 <= i < H and 0 <= j < W):
        raise ValueError(f"position must be (i, j) on the {H}x{W} map of {seen['name']!r}; got position={position!r}")
    (grad,) = torch.autograd.grad(out[:, i, j, :].sum(), x)
    erf = grad.abs().sum(1).mean(0)  # [H_in, W_in]
    total = erf.sum()
    if not total > 0:
        raise ValueError(f"the gradient of {seen['name']!r} at {(i, j)} is zero everywhere: no effective field")
    erf = (erf / total).detach()
    H_in, W_in = erf.shape
    centre = (min(int((i + 0.5) * H_in / H), H_in - 1), min(int((j + 0.5) * W_in / W), W_in - 1))
    return EffectiveField(erf, _sides(erf, centre, fractions), seen["name"], (i, j), centre)


def _sides(mass: torch.Tensor, centre: Pair, fractions) -> dict:
    """Smallest side s of the square rows ``c - (s-1)//2 .. c + s//2`` (clipped) holding each fraction."""
    H, W = mass.shape
    integral = torch.zeros(H + 1, W + 1, dtype=torch.float64)
    integral[1:, 1:] = mass.double().cumsum(0).cumsum(1)
    ci, cj = centre
    largest = 2 * max(ci, H - 1 - ci, cj, W - 1 - cj) + 1
    inside = []
    for s in range(1, largest + 1):
        r0, r1 = max(ci - (s - 1) // 2, 0), min(ci + s // 2, H - 1) + 1
        c0, c1 = max(cj - (s - 1) // 2, 0), min(cj + s // 2, W - 1) + 1
        inside.append(float(integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]))
    total = inside[-1]
    return {f: next(s for s, m in enumerate(inside, 1) if m >= f * total * (1 - 1e-6)) for f in fractions}
