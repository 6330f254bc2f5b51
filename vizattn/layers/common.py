"""Shared pieces of the attention layers: the hookable probabilities step, the pattern shell, MLP, LayerScale.

``GlobalAttention`` (the pattern shell on ``Global()``, ViT's attention) is the baseline the
models compare against.

Glossary: ``B`` batch, an ``H x W`` map of ``N = H * W`` tokens, ``C`` channels, ``heads``,
``head_dim = C // heads``; a pattern gives each query ``K`` key slots (``vizattn.patterns``).
Modules are channels-last: ``[B, H, W, C]`` in, ``[B, H, W, C]`` out.

Every attention layer has a switch ``fused`` (default True):

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

import torch
from torch import nn

from ..functional import attend, combine, slot_logits
from ..patterns import Global

__all__ = ["AttentionProbs", "Mlp", "LayerScale", "PatternAttention", "GlobalAttention"]


# ---------------------------------------------------------------------------------------------
# validation at the module boundary
# ---------------------------------------------------------------------------------------------
def check_positive(**values) -> None:
    """Raise ValueError unless every named value is a positive int."""
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {name}={value!r}")


def check_heads(dim: int, heads: int) -> int:
    """Validate ``dim`` and ``heads`` and return ``head_dim = dim // heads``."""
    check_positive(dim=dim, heads=heads)
    if dim % heads:
        raise ValueError(f"heads must divide dim; got dim={dim}, heads={heads}")
    return dim // heads


def check_input(x, dim: int, layer: str) -> tuple[int, int, int, int]:
    """Raise ValueError unless ``x`` is a channels-last map ``[B, H, W, dim]``; return its shape."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[-1] != dim:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{layer} expects a channels-last map [B, H, W, C] with C={dim}; got shape {got}")
    return tuple(x.shape)


# ---------------------------------------------------------------------------------------------
# the shared steps
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


def attention(layer: nn.Module, q, k, v, pattern, *, bias=None, rel_emb=None, scale=None) -> torch.Tensor:
    """``q, k, v [B, heads, H, W, head_dim]`` -> ``[B, heads, H, W, head_dim]``, fused or explicit.

    ``layer`` provides the switch ``fused`` and the hookable step ``attn_probs``.
    """
    if layer.fused:
        return attend(q, k, v, pattern, bias=bias, scale=scale, rel_emb=rel_emb)
    logits = slot_logits(q, k, pattern, bias, scale, rel_emb=rel_emb)  # [B, heads, H, W, K]
    probs = layer.attn_probs(logits.softmax(-1), pattern, scores=logits)
    return combine(probs, v, pattern)


class Mlp(nn.Module):
    """Channel MLP on the last axis: ``Linear(dim, hidden) -> GELU -> Linear(hidden, dim_out)``.

    ``hidden = int(dim * ratio)``; ``dim_out`` defaults to ``dim``.

    >>> import torch
    >>> Mlp(8, ratio=2.0)(torch.randn(1, 3, 3, 8)).shape
    torch.Size([1, 3, 3, 8])
    """

    def __init__(self, dim: int, ratio: float = 4.0, dim_out: int | None = None):
        super().__init__()
        check_positive(dim=dim, dim_out=dim if dim_out is None else dim_out)
        hidden = int(dim * ratio)
        if hidden < 1:
            raise ValueError(f"dim * ratio must be at least 1; got dim={dim}, ratio={ratio}")
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
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


# ---------------------------------------------------------------------------------------------
# the one attention shell: subclasses choose the pattern and the position terms
# ---------------------------------------------------------------------------------------------
class PatternAttention(nn.Module):
    """Multi-head attention restricted to a pattern, channels-last: ``[B, H, W, C] -> [B, H, W, C]``.

    ``qkv`` Linear -> ``q, k, v [B, heads, H, W, head_dim]`` -> attention over ``self.pattern(H, W)``
    with the optional ``self.bias(H, W)`` table and ``self.rel_emb(H, W)`` embeddings -> ``proj``
    Linear (``proj=False``: none). Subclasses override ``pattern`` (required), ``bias`` and
    ``rel_emb``; ``scale`` (None: ``head_dim ** -0.5``) multiplies ``q . k``.

    >>> import torch; from vizattn.patterns import Block
    >>> class Windows(PatternAttention):
    ...     def pattern(self, H, W):
    ...         return Block(2)
    >>> Windows(dim=8, heads=2)(torch.randn(1, 4, 6, 8)).shape
    torch.Size([1, 4, 6, 8])
    """

    fused: bool = True

    def __init__(self, dim: int, heads: int, *, qkv_bias: bool = True, proj: bool = True, scale: float | None = None):
        super().__init__()
        self.head_dim = check_heads(dim, heads)
        self.dim, self.heads, self.scale = dim, heads, scale
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_probs = AttentionProbs()
        self.proj = nn.Linear(dim, dim) if proj else nn.Identity()
        self.fused = True

    def pattern(self, H: int, W: int):
        """The pattern on an ``H x W`` map."""
        raise NotImplementedError

    def bias(self, H: int, W: int) -> torch.Tensor | None:
        """Relative position table ``[heads, 2*kh-1, 2*kw-1]`` for ``self.pattern(H, W)``, or None."""
        return None

    def rel_emb(self, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """SASA relative embeddings ``(row, col)`` (see ``vizattn.attend``), or None."""
        return None

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
        return f"dim={self.dim}, heads={self.heads}"


class GlobalAttention(PatternAttention):
    """ViT's multi-head self-attention: every token attends to every token (``Global()``), no position terms.

    >>> import torch
    >>> layer = GlobalAttention(dim=8, heads=2)
    >>> layer(torch.randn(1, 3, 4, 8)).shape, layer.pattern(3, 4)
    (torch.Size([1, 3, 4, 8]), Global())
    """

    def pattern(self, H: int, W: int) -> Global:
        return Global()
