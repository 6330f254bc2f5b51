"""``rollout`` and ``relevance``: one probed forward (and, for relevance, one backward), then the
flow operators (``core``) composed from the last layer back to the pixels. Choices: docs/semantics.md §9."""

from __future__ import annotations

import dataclasses
import weakref

import torch
from torch import nn

from ..checks import check_choice
from ..probe import attention_layers, probe
from ..receptive import Branches, model_steps, token_map
from .core import Operator, carry, normalised

__all__ = ["Flow", "rollout", "relevance", "FUSIONS"]

FUSIONS = ("mean", "max", "min")
_STRUCTURE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {image size: [(name, gap)]}


@dataclasses.dataclass(eq=False, repr=False)
class Flow:
    """Where a whole network looks, for a batch of images ``[B, 3, H, W]``.

    Attributes:
        method: ``"rollout"`` or ``"relevance"``; ``target [B]``: the class each relevance map
            explains (None for rollout); ``logits [B, classes]``: the model's output.
        grid: ``[B, h, w]`` over the tokens of the first attention layer (class tokens excluded),
            non-negative, each item summing to 1.
        pixels: ``[B, H, W]`` over the input pixels, non-negative, each item summing to 1.
        maps: per attention layer ``l``, ``[B, h_l, w_l]``: the whole-model map carried back from the
            output to the tokens entering layer ``l`` (``maps[0]`` is ``grid``), each summing to 1.
        names, kinds, grids: per layer, its name, mechanism (the probe record's ``kind``) and token grid.
        operators: the layers as flow operators (``vizattn.flow.core.Operator``), last ``readout
            [B, N_last]``: the row over the last layer's output tokens that the whole-model map reads.
    """

    method: str
    grid: torch.Tensor
    pixels: torch.Tensor
    maps: list
    names: tuple
    kinds: tuple
    grids: tuple
    target: torch.Tensor | None
    logits: torch.Tensor
    operators: list
    readout: torch.Tensor

    def __repr__(self) -> str:
        return (f"Flow({self.method!r}, {len(self.operators)} layers, grid={tuple(self.grid.shape)}, "
                f"pixels={tuple(self.pixels.shape)})")

    def _layer(self, layer) -> int:
        if isinstance(layer, str) and layer in self.names:
            return self.names.index(layer)
        if isinstance(layer, int) and not isinstance(layer, bool) and -len(self.names) <= layer < len(self.names):
            return layer % len(self.names)
        raise ValueError(f"layer must be a layer index below {len(self.names)} or one of {', '.join(self.names)}; "
                         f"got layer={layer!r}")

    def _pixels(self, v: torch.Tensor, upto: int) -> torch.Tensor:
        """``v [B, M, N]`` over the output tokens of layer ``upto - 1`` -> ``[B, M, H, W]`` summing to 1."""
        _, pixels = carry(self.operators, v, upto)
        return normalised(pixels.reshape(*pixels.shape[:2], *self.pixels.shape[1:]), (2, 3))

    def depth(self, d: int) -> torch.Tensor:
        """``[B, H, W]``: the map of the first ``d`` layers alone (``1 <= d <= len(layers)``), read out
        after layer ``d``: the class token's row, else the mean of its rows (the pooling's weights
        after the last layer). ``depth(len(layers))`` equals ``pixels``."""
        L = len(self.operators)
        if not (isinstance(d, int) and 1 <= d <= L):
            raise ValueError(f"d must be a number of layers from 1 to {L}; got d={d!r}")
        op = self.operators[d - 1]
        if d == L:
            v = self.readout
        else:
            v = self.readout.new_zeros(self.readout.shape[0], op.tokens)
            if op.prefix:
                v[:, 0] = 1
            else:
                v[:] = 1 / op.tokens
        return self._pixels(v[:, None], d)[:, 0]

    def column(self, layer, i: int, j: int) -> torch.Tensor:
        """``[B, H, W]``: which input pixels token ``(i, j)`` of ``layer``'s output draws on (its row of
        the product of the layers up to ``layer``); ``i = -1`` (any ``j``): the class token.

        ``layer``: an index or a name. The row sums to 1 over the pixels (class tokens' shares left out).
        """
        index = self._layer(layer)
        op = self.operators[index]
        h, w = op.grid
        if not (isinstance(i, int) and isinstance(j, int) and (-1 if op.prefix else 0) <= i < h and 0 <= j < w):
            raise ValueError(f"(i, j) must lie on the {h}x{w} token grid of {self.names[index]!r}"
                             f"{' (i = -1: the class token)' if op.prefix else ''}; got ({i!r}, {j!r})")
        v = self.readout.new_zeros(self.readout.shape[0], 1, op.tokens)
        v[:, 0, 0 if i < 0 else op.prefix + i * w + j] = 1
        return self._pixels(v, index + 1)[:, 0]


# ---------------------------------------------------------------------------------------------
# the model's structure: the gap before each attention call (traced once per model and image size)
# ---------------------------------------------------------------------------------------------
def _structure(model: nn.Module, size: tuple[int, int]) -> list[tuple[str, Branches | None]]:
    """``[(layer name, gap leading to its map)]`` per attention call, from ``receptive.model_steps``."""
    cache = _STRUCTURE.setdefault(model, {})
    if size not in cache:
        steps, names, _ = model_steps(model, size)
        out, gap = [], None
        for step, name in zip(steps, names):
            if isinstance(step, Branches):
                gap = step
            else:
                out.append((name, gap))
                gap = None
        cache[size] = out
    return cache[size]


def _check_images(images) -> tuple[int, int]:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3 or min(images.shape) < 1 \
            or not images.is_floating_point():
        got = (f"{tuple(images.shape)} {images.dtype}" if isinstance(images, torch.Tensor)
               else type(images).__name__)
        raise ValueError(f"images must be a float batch [B, 3, H, W] with B, H, W >= 1; got {got}")
    return tuple(images.shape[-2:])


def _targets(target, logits: torch.Tensor) -> torch.Tensor:
    """``[B]`` class indices: the prediction where ``target`` is None, else one int (every item) or one per item."""
    B, classes = logits.shape
    if target is None:
        return logits.argmax(-1)
    t = torch.as_tensor(target)
    if t.is_floating_point() or t.dim() > 1 or (t.dim() == 1 and t.numel() != B) or t.dtype == torch.bool:
        raise ValueError(f"target must be a class index or one per item ({B}); got target={target!r}")
    t = t.expand(B).to(logits.device)
    if bool(((t < 0) | (t >= classes)).any()):
        raise ValueError(f"target must lie in 0 .. {classes - 1} (the model's classes); got target={t.tolist()}")
    return t.long()


def _readout(model: nn.Module, op: Operator, features: torch.Tensor | None, B: int) -> torch.Tensor:
    """``[B, N_last]``: the row over the last layer's output tokens that the model's output reads.

    Class tokens: the first one's row. ``vizattn.models.Model`` max-pools its last map: each token
    weighs by the share of channels whose maximum it holds (ties split, as ``amax``'s gradient).
    Any other model: the mean over the last map's tokens (the checkpoints' average pooling).
    """
    v = torch.zeros(B, op.tokens, dtype=torch.float64)
    if op.prefix:
        v[:, 0] = 1
        return v
    if features is None:
        return v + 1 / op.tokens
    x = features.detach().double().reshape(B, -1, features.shape[-1])  # [B, h*w, C]
    if x.shape[1] != op.tokens:
        raise ValueError(f"the model pools a {tuple(features.shape[1:3])} map but its last attention layer "
                         f"{op.name!r} runs on {op.grid}: the flow needs them to agree")
    top = (x == x.amax(1, keepdim=True)).double()  # [B, N, C]
    return (top / top.sum(1, keepdim=True)).mean(-1)


def _flow(model: nn.Module, images: torch.Tensor, method: str, target=None, fusion="mean", residual=0.5,
          discard=0.0) -> Flow:
    size = _check_images(images)
    layers = attention_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no attention layers (modules with an AttentionProbs "
                         "'attn_probs' child and a 'fused' switch): there is no attention to follow")
    try:
        structure = _structure(model, size)
    except RuntimeError as err:
        raise ValueError(f"images of shape {tuple(images.shape)} do not fit {type(model).__name__}: {err}") from None
    kept, seen, handles = [], {}, []
    if method == "relevance":
        handles += [m.attn_probs.register_forward_hook(lambda mod, args, out: kept.append(out))
                    for m in layers.values()]
    last = getattr(model, "stages", None)
    if _pools_max(model) and isinstance(last, nn.ModuleList):
        handles.append(last[-1].register_forward_hook(
            lambda mod, args, out: seen.__setitem__("features", out[0] if isinstance(out, tuple) else out)))
    training = model.training
    try:
        model.eval()
        with probe(model) as rec, torch.set_grad_enabled(method == "relevance"):
            try:
                logits = model(images.detach())
            except RuntimeError as err:
                raise ValueError(f"images of shape {tuple(images.shape)} do not fit {type(model).__name__}: "
                                 f"{err}") from None
            targets = grads = None
            if method == "relevance":
                targets = _targets(target, logits)
                grads = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), kept, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    records = list(rec)
    if [r.name for r in records] != [name for name, _ in structure]:
        raise ValueError(f"the attention calls differ from the traced ones: {[r.name for r in records]} vs "
                         f"{[name for name, _ in structure]}")
    operators = []
    for index, (r, (_, gap)) in enumerate(zip(records, structure)):
        prefix, grid = token_map(model, r.size)
        B, heads = r.weights.shape[:2]
        probs = r.weights.double().reshape(B, heads, -1, r.weights.shape[-1])  # [B, heads, N, K]
        if method == "rollout":
            fused, scale = _fuse(probs, r.keys, fusion, discard, prefix, residual)
            op = Operator(r.name, r.kind, grid, prefix, r.keys, fused, residual, scale, gap)
        else:
            g = grads[index]
            g = torch.zeros_like(probs) if g is None else g.detach().double().reshape(probs.shape)
            op = Operator(r.name, r.kind, grid, prefix, r.keys, (g * probs).clamp(min=0).mean(1), 1.0, None, gap)
        operators.append(op)
    readout = _readout(model, operators[-1], seen.get("features"), images.shape[0])
    maps, pixels = carry(operators, readout[:, None])
    maps = [normalised(m[:, 0, op.prefix:].reshape(-1, *op.grid), (1, 2)) for m, op in zip(maps, operators)]
    pixels = normalised(pixels[:, 0].reshape(-1, *size), (1, 2))
    return Flow(method, maps[0], pixels, maps, tuple(op.name for op in operators), tuple(op.kind for op in operators),
                tuple(op.grid for op in operators), targets, logits.detach(), operators, readout)


def _pools_max(model: nn.Module) -> bool:
    from ..models import Model  # the small models max-pool their last map (models.Model.forward)

    return isinstance(model, Model)


def _fuse(probs: torch.Tensor, keys: torch.Tensor, fusion: str, discard: float, prefix: int, residual: float):
    """Rollout's per-layer weights: heads fused, the lowest ``discard`` share of the real slots dropped, scaled by
    ``1 - residual``; and the row scale ``1 / (residual + row total)`` (the total counts SASA's padded slots, whose
    weight then leaves the map; 0 for a row left with nothing).
    ``probs [B, heads, N, K]`` -> ``([B, N, K], [B, N])``."""
    fused = probs.mean(1) if fusion == "mean" else probs.amax(1) if fusion == "max" else probs.amin(1)
    if discard > 0:
        real = (keys >= 0).to(fused.device)  # [N, K]
        if prefix:
            real = real.clone()
            real[:prefix] &= keys[:prefix].to(fused.device) != torch.arange(prefix, device=fused.device)[:, None]
        drop = int(float(real.sum()) * discard)
        if drop:
            B = fused.shape[0]
            flat = fused.masked_fill(~real, torch.inf).reshape(B, -1)
            lowest = flat.topk(drop, dim=-1, largest=False).indices
            fused = fused.reshape(B, -1).scatter(1, lowest, 0.0).reshape(fused.shape)
    fused = (1 - residual) * fused
    total = residual + fused.sum(-1)  # [B, N]; 0 where discard left a row nothing and residual is 0
    return fused, torch.where(total > 0, 1 / total.where(total > 0, torch.ones_like(total)), torch.zeros_like(total))


def _check_rollout(fusion, residual, discard) -> None:
    check_choice("fusion", fusion, FUSIONS)
    if isinstance(residual, bool) or not isinstance(residual, (int, float)) or not 0 <= residual <= 1:
        raise ValueError(f"residual (the identity's weight) must be a number in [0, 1]; got residual={residual!r}")
    if isinstance(discard, bool) or not isinstance(discard, (int, float)) or not 0 <= discard < 1:
        raise ValueError(f"discard (the share of lowest weights dropped per layer) must be in [0, 1); "
                         f"got discard={discard!r}")


def rollout(model: nn.Module, images: torch.Tensor, *, fusion: str = "mean", residual: float = 0.5,
            discard: float = 0.0) -> Flow:
    """Attention rollout (Abnar & Zuidema 2020) through the whole network, exactly on each pattern.

    Per layer ``A_hat = residual * I + (1 - residual) * fuse(A)``, rows renormalised, composed from
    the first layer to the last with the down-sampling between (docs/semantics.md §9); ``fusion``:
    how heads combine (``"mean"``, ``"max"``, ``"min"``, as vit-explain); ``discard``: the share of
    each layer's lowest fused weights set to 0 before the identity is added (vit-explain's
    ``discard_ratio``; the class token's own weight is kept). The model runs once in eval mode
    (its mode is restored).

    >>> import torch; from vizattn import models
    >>> _ = torch.manual_seed(0)
    >>> f = rollout(models.create("nat"), torch.rand(2, 3, 64, 64))
    >>> f, [round(float(s), 6) for s in f.pixels.sum((1, 2))]
    (Flow('rollout', 6 layers, grid=(2, 16, 16), pixels=(2, 64, 64)), [1.0, 1.0])
    """
    _check_rollout(fusion, residual, discard)
    return _flow(model, images, "rollout", fusion=fusion, residual=float(residual), discard=float(discard))


def relevance(model: nn.Module, images: torch.Tensor, target=None) -> Flow:
    """Class relevance, the generic rule of Chefer et al. 2021: ``A_bar = mean_heads((dy_t/dA * A)+)``,
    ``R <- R + A_bar R`` from ``R = I``, through the whole network (docs/semantics.md §9).

    ``y_t`` is the logit of class ``target`` (one index for every item or one per item; default the
    predicted class), ``dy_t/dA`` its gradient by autograd through each layer's explicit path.

    >>> import torch; from vizattn import models
    >>> _ = torch.manual_seed(0)
    >>> f = relevance(models.create("swin"), torch.rand(1, 3, 64, 64), target=1)
    >>> f.target.tolist(), tuple(f.grid.shape), f.grids[-1]
    ([1], (1, 16, 16), (4, 4))
    """
    return _flow(model, images, "relevance", target=target)
