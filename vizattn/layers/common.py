"""Shared pieces of the attention layers: the one attention shell, the explicit-path switch, MLP, LayerScale and
the pre-norm transformer block.

``PatternAttention`` is the one attention shell: a pattern (or a rule choosing one per map size)
and optional position terms; each paper's layer only fixes its arguments. ``GlobalAttention``
(the shell on ``Global()``, ViT's attention) is the baseline the models compare against.

Glossary: ``B`` batch, an ``H x W`` map of ``N = H * W`` tokens, ``C`` channels, ``heads``,
``head_dim = C // heads``; a pattern gives each query ``K`` key slots (``vizattn.patterns``).
Modules are channels-last: ``[B, H, W, C]`` in, ``[B, H, W, C]`` out.

Every attention layer (an ``AttentionLayer``) has a switch ``fused``, True unless ``explicit``
turns it off:

- ``fused=True``: the fastest exact path (``vizattn.attend``); no probabilities are formed.
- ``fused=False``: the explicit path ``logits = slot_logits(...)``,
  ``probs = self.attn_probs(logits.softmax(-1), pattern, scores=logits)``,
  ``out = combine(probs, v, pattern)``. The probabilities pass through the named module
  ``attn_probs`` (an ``AttentionProbs``), where a forward hook sees them together with their
  pattern (and, registered ``with_kwargs=True``, the pre-softmax ``scores``: what
  ``vizattn.probe`` uses), and may even replace them (a hook's return value is used). Both paths
  compute the same numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from ..checks import check_heads, check_input, check_instance, check_positive
from ..functional import attend, combine, slot_logits
from ..mechanisms import kind_of
from ..patterns import Global, Pattern

__all__ = ["AttentionProbs", "AttentionLayer", "Mlp", "LayerScale", "TransformerBlock", "PatternAttention",
           "GlobalAttention", "attention_layers", "explicit"]


# ---------------------------------------------------------------------------------------------
# the hookable probabilities step and the explicit-path switch
# ---------------------------------------------------------------------------------------------
class AttentionProbs(nn.Module):
    """The named, hookable attention-probabilities step: returns ``probs`` unchanged.

    ``probs [B, heads, H, W, K]`` are aligned with ``pattern.keys(H, W)``; a forward hook gets
    ``(probs, pattern)`` as its inputs. Layers call it only on their explicit path (``fused=False``)
    and also pass the keyword ``scores``: the pre-softmax logits ``probs`` came from, same layout
    (``-inf`` at excluded slots), which a hook registered with ``with_kwargs=True`` receives.

    >>> import torch; from vizattn.patterns import Block
    >>> step, seen = AttentionProbs(), []
    >>> handle = step.register_forward_hook(lambda mod, inputs, out: seen.append(inputs[1]))
    >>> step(torch.full((1, 1, 4, 4, 4), 0.25), Block(2)).shape, seen
    (torch.Size([1, 1, 4, 4, 4]), [Block(2)])
    >>> handle.remove()
    """

    def forward(self, probs: torch.Tensor, pattern, scores: torch.Tensor | None = None) -> torch.Tensor:
        return probs


class AttentionLayer(nn.Module):
    """Base of the attention layers: the hookable step ``attn_probs``, the switch ``fused`` and ``kind``.

    ``fused`` is a class default (True); ``explicit`` is what turns it off for a while. ``kind`` is
    the layer's mechanism, the name ``vizattn.probe`` gives its records: a layer with one pattern
    takes its pattern's kind from the table (``vizattn.mechanisms.kind_of``); a layer that its
    pattern does not name (LaViT's, CrossFormer's LSDA, Swin's) states it; this default, the class
    name in lower case, names any other.
    """

    fused: bool = True

    def __init__(self):
        super().__init__()
        self.attn_probs = AttentionProbs()

    @property
    def kind(self) -> str:
        return type(self).__name__.lower()


def attention_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The attention layers of ``model`` by qualified name, in registration order.

    An attention layer is a module with an ``attn_probs`` child (an ``AttentionProbs``) and a
    ``fused`` attribute. The model itself is named ``""`` if it is one.

    >>> from vizattn.layers import MaxViTBlock
    >>> list(attention_layers(MaxViTBlock(dim_in=8, dim=8, heads=2, size=2)))
    ['block_attn', 'grid_attn']
    """
    check_instance("model", model, nn.Module, "a torch.nn.Module")
    return {name: m for name, m in model.named_modules()
            if isinstance(getattr(m, "attn_probs", None), AttentionProbs) and hasattr(m, "fused")}


_UNSET = object()


@contextlib.contextmanager
def explicit(*modules: nn.Module):
    """Run every attention layer inside ``modules`` on its explicit path (``fused=False``) in the block.

    The only switch of the explicit path: ``probe`` and ``Model.summary`` use it. Each layer's
    previous ``fused`` (its own value, or the class default) is put back on exit, also on error.

    >>> import torch; from vizattn.layers import MaxViTBlock
    >>> block = MaxViTBlock(dim_in=8, dim=8, heads=2, size=2)
    >>> with explicit(block):
    ...     [layer.fused for layer in attention_layers(block).values()]
    [False, False]
    >>> block.grid_attn.fused, "fused" in vars(block.grid_attn)
    (True, False)
    """
    layers = list({id(m): m for module in modules for m in attention_layers(module).values()}.values())
    saved = [vars(m).get("fused", _UNSET) for m in layers]
    try:
        for m in layers:
            m.fused = False
        yield
    finally:
        for m, fused in zip(layers, saved, strict=True):
            if fused is not _UNSET:
                m.fused = fused
            elif "fused" in vars(m):
                del m.fused


def attention(layer: AttentionLayer, q, k, v, pattern, *, bias=None, rel_emb=None, scale=None) -> torch.Tensor:
    """``q, k, v [B, heads, H, W, head_dim]`` -> ``[B, heads, H, W, head_dim]``, fused or explicit."""
    if layer.fused:
        return attend(q, k, v, pattern, bias=bias, scale=scale, rel_emb=rel_emb)
    logits = slot_logits(q, k, pattern, bias, scale, rel_emb=rel_emb)  # [B, heads, H, W, K]
    probs = layer.attn_probs(logits.softmax(-1), pattern, scores=logits)
    return combine(probs, v, pattern)


# ---------------------------------------------------------------------------------------------
# MLP, LayerScale and the pre-norm transformer block
# ---------------------------------------------------------------------------------------------
class Mlp(nn.Module):
    """Channel MLP on the last axis: ``Linear(dim, hidden) -> GELU -> Linear(hidden, dim_out)``.

    ``hidden = int(dim * ratio)``; ``dim_out`` defaults to ``dim``; ``gelu="tanh"``: the tanh
    approximation of GELU (TF-trained weights).

    >>> import torch
    >>> Mlp(8, ratio=2.0)(torch.randn(1, 3, 3, 8)).shape
    torch.Size([1, 3, 3, 8])
    """

    def __init__(self, dim: int, ratio: float = 4.0, dim_out: int | None = None, gelu: str = "none"):
        super().__init__()
        check_positive(dim=dim, dim_out=dim if dim_out is None else dim_out)
        hidden = int(dim * ratio)
        if hidden < 1:
            raise ValueError(f"dim * ratio must be at least 1; got dim={dim}, ratio={ratio}")
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate=gelu)
        self.fc2 = nn.Linear(hidden, dim if dim_out is None else dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Learned per-channel scale ``gamma`` (initialised to ``init``) on the channel axis ``axis``.

    >>> import torch
    >>> LayerScale(4, init=0.5)(torch.ones(2, 4)).tolist()
    [[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]]
    >>> LayerScale(3, init=2.0, axis=1)(torch.ones(1, 3, 2, 2)).shape   # heads as channels
    torch.Size([1, 3, 2, 2])
    """

    def __init__(self, dim: int, init: float = 1e-5, axis: int = -1):
        super().__init__()
        check_positive(dim=dim)
        self.axis = axis
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[self.axis] = -1
        return x * self.gamma.reshape(shape)


class TransformerBlock(nn.Module):
    """The pre-norm transformer block, channels-last ``[B, H, W, dim] -> [B, H, W, dim]``.

    ``x += ls1(attn(LN(x)))``; ``x += ls2(mlp(LN(x)))`` with ``mlp = Mlp(dim, mlp_ratio, gelu=gelu)``,
    LayerNorms of epsilon ``eps`` and, when ``layer_scale`` is a number, LayerScales initialised to it
    (CaiT, DeiT III, DINOv2, NAT-S/B; otherwise ``ls1, ls2`` are identities). ViT's, NAT's,
    CrossFormer's and Swin's blocks are this one with their attention layer; its module names
    (``norm1, attn, ls1, norm2, mlp, ls2``) are theirs, so their state dicts load as they are.
    Drop-path is left out (vizattn trains no model that needs it).

    >>> import torch
    >>> block = TransformerBlock(8, GlobalAttention(8, 2), mlp_ratio=2.0)
    >>> block(torch.randn(1, 4, 4, 8)).shape, [name for name, _ in block.named_children()]
    (torch.Size([1, 4, 4, 8]), ['norm1', 'attn', 'ls1', 'norm2', 'mlp', 'ls2'])
    """

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float = 4.0, eps: float = 1e-5,
                 layer_scale: float | None = None, gelu: str = "none"):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=eps), attn
        self.ls1 = nn.Identity() if layer_scale is None else LayerScale(dim, layer_scale)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=eps), Mlp(dim, mlp_ratio, gelu=gelu)
        self.ls2 = nn.Identity() if layer_scale is None else LayerScale(dim, layer_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


# ---------------------------------------------------------------------------------------------
# the one attention shell: each paper's layer fixes its pattern and position terms
# ---------------------------------------------------------------------------------------------
class PatternAttention(AttentionLayer):
    """Multi-head attention restricted to a pattern, channels-last: ``[B, H, W, C] -> [B, H, W, C]``.

    ``qkv`` -> ``q, k, v [B, heads, H, W, head_dim]`` -> attention over ``self.pattern(H, W)`` with
    the optional position terms -> ``proj`` Linear.

    Args:
        dim, heads: channels and heads (``heads`` divides ``dim``).
        pattern: a pattern, or a rule ``(H, W) -> pattern`` of the map size (CrossFormer's LSDA
            turns global on small maps). None only for a subclass that defines ``pattern`` itself.
        bias: a position-bias module ``extent -> [heads, 2*kh-1, 2*kw-1]`` (``vizattn.bias``),
            called with the pattern's extent and kept under its ``key`` (``rpb``, ``dpb``).
        rel_emb: SASA's ``RelativeEmbedding`` (``extent -> (row, col)``), kept under ``rel``.
        qkv: the projection ``[B, H, W, C] -> [B, H, W, 3*C]`` laid out ``[3, heads, head_dim]``;
            default ``Linear(dim, 3 * dim, bias=qkv_bias)``.
        proj: an output ``Linear(dim, dim)``, or none (``proj=False``).
        scale: multiplies ``q . k``; None: ``head_dim ** -0.5``.

    >>> import torch; from vizattn.patterns import Block
    >>> layer = PatternAttention(dim=8, heads=2, pattern=Block(2))
    >>> layer(torch.randn(1, 4, 6, 8)).shape, layer.extra_repr(), layer.kind
    (torch.Size([1, 4, 6, 8]), 'dim=8, heads=2, pattern=Block(2)', 'block')
    """

    def __init__(self, dim: int, heads: int, pattern: Pattern | Callable[[int, int], Pattern] | None = None, *,
                 bias: nn.Module | None = None, rel_emb: nn.Module | None = None, qkv: nn.Module | None = None,
                 qkv_bias: bool = True, proj: bool = True, scale: float | None = None):
        super().__init__()
        self.head_dim = check_heads(dim, heads)
        if pattern is not None and not isinstance(pattern, Pattern) and not callable(pattern):
            raise ValueError(f"pattern must be a pattern or a function (H, W) -> pattern; got {type(pattern).__name__}")
        self.dim, self.heads, self.scale, self.rule = dim, heads, scale, pattern
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias) if qkv is None else qkv
        self.proj = nn.Linear(dim, dim) if proj else nn.Identity()
        self.bias_key = self.rel_key = None  # the attribute names of the position terms
        if bias is not None:
            self.bias_key = bias.key
            setattr(self, bias.key, bias)
        if rel_emb is not None:
            self.rel_key = rel_emb.key
            setattr(self, rel_emb.key, rel_emb)

    @property
    def kind(self) -> str:
        """The table's kind of its pattern (``"neighborhood"``, ``"block"``, ...); on a rule: the class name."""
        return kind_of(self.rule) or super().kind

    def pattern(self, H: int, W: int) -> Pattern:
        """The pattern on an ``H x W`` map."""
        if self.rule is None:
            raise NotImplementedError(f"{type(self).__name__} was built without a pattern and defines none")
        return self.rule if isinstance(self.rule, Pattern) else self.rule(H, W)

    def bias(self, H: int, W: int) -> torch.Tensor | None:
        """The relative position table ``[heads, 2*kh-1, 2*kw-1]`` of ``self.pattern(H, W)``, or None."""
        if self.bias_key is None:
            return None
        return getattr(self, self.bias_key)(self.pattern(H, W).extent(H, W))

    def rel_emb(self, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """SASA's relative embeddings ``(row, col)`` (see ``vizattn.attend``), or None."""
        if self.rel_key is None:
            return None
        return getattr(self, self.rel_key)(self.pattern(H, W).extent(H, W))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = check_input(x, self.dim, type(self).__name__)
        pattern = self.pattern(H, W)
        pattern.check(H, W)  # a map too small for the pattern: its own clear ValueError
        # [B, H, W, 3*C] -> [B, H, W, 3, heads, head_dim] -> 3 x [B, heads, H, W, head_dim]
        q, k, v = self.qkv(x).reshape(B, H, W, 3, self.heads, self.head_dim).permute(3, 0, 4, 1, 2, 5)
        out = attention(self, q, k, v, pattern, bias=self.bias(H, W), rel_emb=self.rel_emb(H, W), scale=self.scale)
        # [B, heads, H, W, head_dim] -> [B, H, W, heads, head_dim] -> [B, H, W, C]
        return self.proj(out.permute(0, 2, 3, 1, 4).reshape(B, H, W, C))

    def extra_repr(self) -> str:
        rule = "" if self.rule is None else f", pattern={self.rule}"
        scale = "" if self.scale is None else f", scale={self.scale}"
        return f"dim={self.dim}, heads={self.heads}{rule}{scale}"


class GlobalAttention(PatternAttention):
    """ViT's multi-head self-attention: every token attends to every token (``Global()``), no position terms.

    >>> import torch
    >>> layer = GlobalAttention(dim=8, heads=2)
    >>> layer(torch.randn(1, 3, 4, 8)).shape, layer.pattern(3, 4)
    (torch.Size([1, 3, 4, 8]), Global())
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__(dim, heads, Global(), qkv_bias=qkv_bias)
