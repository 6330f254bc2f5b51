"""LaViT, the Less-Attention Vision Transformer (CVPR 2024), docs/semantics.md §5. No official code exists.

- ``VanillaAttention``: global MHSA that returns its pre-softmax scores ``A = Q K^T / sqrt(d)``
  (plus optional residual scores), to be reused.
- ``LessAttention``: computes no Q or K; transforms the previous scores,
  ``A_l = Psi(Theta(A_{l-1})^T)^T = W_Psi A_{l-1} W_Theta^T + bias terms``, then ``softmax(A_l) V``.
- ``AttentionResidual``: carries the last scores of stage m-1 into the first VA layer of stage m.

Scores are ``[B, heads, N, N]`` (query token, key token; ``t = h * W + w``). The scores must be
materialised (they are passed on), so these layers always form them with ``slot_logits`` on the
``Global()`` pattern and mix values with ``combine`` (plain matmuls for ``Global``); ``fused``
only decides whether the probabilities pass through the hookable ``attn_probs`` step.
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import as_pair, check_heads, check_input, check_positive, check_scores
from ..functional import combine, slot_logits
from ..patterns import Global
from .common import AttentionLayer, LayerScale

__all__ = ["VanillaAttention", "LessAttention", "AttentionResidual"]

GLOBAL = Global()


class _ScoreAttention(AttentionLayer):
    """Shared shell: scores ``[B, heads, N, N]`` + values -> softmax -> (hook) -> combine -> proj."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.head_dim = check_heads(dim, heads)
        self.dim, self.heads = dim, heads
        self.proj = nn.Linear(dim, dim)

    def _attend(self, scores: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``scores [B, heads, N, N]``, ``v [B, heads, H, W, head_dim]`` -> ``[B, H, W, dim]``."""
        B, heads, H, W, head_dim = v.shape
        probs = scores.softmax(-1).reshape(B, heads, H, W, H * W)  # [B, heads, H, W, K = N]
        if not self.fused:
            probs = self.attn_probs(probs, GLOBAL, scores=scores.reshape(B, heads, H, W, H * W))
        out = combine(probs, v, GLOBAL)  # [B, heads, H, W, head_dim]
        return self.proj(out.permute(0, 2, 3, 1, 4).reshape(B, H, W, heads * head_dim))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}"


class VanillaAttention(_ScoreAttention):
    """LaViT's vanilla attention (VA): global MHSA that returns its pre-softmax scores.

    ``forward(x, residual_scores=None) -> (out [B, H, W, dim], scores [B, heads, N, N])`` with
    ``scores = Q K^T / sqrt(head_dim) + residual_scores`` (the attention residual of the previous
    stage, only in a stage's first VA layer).

    >>> import torch
    >>> out, scores = VanillaAttention(dim=16, heads=2)(torch.randn(1, 4, 4, 16))
    >>> out.shape, scores.shape
    (torch.Size([1, 4, 4, 16]), torch.Size([1, 2, 16, 16]))
    """

    kind = "vanilla"

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__(dim, heads)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)

    def forward(self, x: torch.Tensor, residual_scores: torch.Tensor | None = None):
        B, H, W, C = check_input(x, self.dim, "VanillaAttention")
        N = H * W
        # [B, H, W, 3*C] -> [B, H, W, 3, heads, head_dim] -> 3 x [B, heads, H, W, head_dim]
        q, k, v = self.qkv(x).reshape(B, H, W, 3, self.heads, self.head_dim).permute(3, 0, 4, 1, 2, 5)
        scores = slot_logits(q, k, GLOBAL).reshape(B, self.heads, N, N)  # [B, heads, N, N]
        if residual_scores is not None:
            check_scores("residual_scores", residual_scores, (B, self.heads, N, N))
            scores = scores + residual_scores
        return self._attend(scores, v), scores


class LessAttention(_ScoreAttention):
    """LaViT's less-attention (LA) layer: no Q or K; it transforms the previous layer's scores.

    ``A_l = Psi(Theta(A_{l-1})^T)^T``, with ``Theta, Psi = nn.Linear(N, N)`` acting on the last
    axis, i.e. ``A_l = W_Psi A_{l-1} W_Theta^T + (W_Psi 1) b_Theta^T + b_Psi 1^T``: Theta mixes the
    key axis, Psi the query axis. Both start as the identity with zero bias, so a fresh LA layer
    reuses ``A_{l-1}`` exactly [vizattn choice]. Then ``softmax(A_l) V`` with a value and an output
    projection only. ``forward(x, prev_scores) -> (out, scores)``; ``scores.softmax(-1)`` is what
    ``vizattn.metrics.diagonality_preserving_loss`` takes. ``tokens`` = N of the stage.

    >>> import torch
    >>> x, prev = torch.randn(1, 4, 4, 16), torch.randn(1, 2, 16, 16)
    >>> out, scores = LessAttention(dim=16, heads=2, tokens=16)(x, prev)
    >>> out.shape, torch.equal(scores, prev)                     # identity at initialisation
    (torch.Size([1, 4, 4, 16]), True)
    """

    kind = "less"

    def __init__(self, dim: int, heads: int, tokens: int, qkv_bias: bool = True):
        super().__init__(dim, heads)
        check_positive(tokens=tokens)
        self.tokens = tokens
        self.value = nn.Linear(dim, dim, bias=qkv_bias)
        self.theta, self.psi = nn.Linear(tokens, tokens), nn.Linear(tokens, tokens)
        for linear in (self.theta, self.psi):
            nn.init.eye_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor, prev_scores: torch.Tensor):
        B, H, W, C = check_input(x, self.dim, "LessAttention")
        N = H * W
        if N != self.tokens:
            raise ValueError(f"LessAttention was built for tokens=N={self.tokens}; got a map {(H, W)} with N={N}")
        check_scores("prev_scores", prev_scores, (B, self.heads, N, N))
        # Theta on the key axis, then Psi on the query axis: [B, heads, N(query), N(key)] throughout
        scores = self.psi(self.theta(prev_scores).transpose(-1, -2)).transpose(-1, -2)
        # [B, H, W, C] -> [B, H, W, heads, head_dim] -> [B, heads, H, W, head_dim]
        v = self.value(x).reshape(B, H, W, self.heads, self.head_dim).permute(0, 3, 1, 2, 4)
        return self._attend(scores, v), scores

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tokens={self.tokens}"


class AttentionResidual(nn.Module):
    """LaViT's attention residual: stage m-1's last scores -> an additive term for stage m's first VA.

    ``[B, heads, N', N']`` on an ``H' x W'`` map is seen as ``[B, heads, H', W', H', W']`` (query
    row, query col, key row, key col) and downsampled 2x on both the query grid and the key grid
    [vizattn choice; the paper is ambiguous]: a depthwise conv (kernel 2, stride 2, heads as
    channels) over the query grid, then another one over the key grid (two convs with their own
    weights: a separable 4-D depthwise conv). A 1x1 conv then mixes the heads and a
    ``LayerScale`` (``init=1e-4`` [vizattn choice]: stage m starts close to a plain ViT, as LA
    layers start as exact reuse) scales the result: ``[B, heads, N'/4, N'/4]``. ``H', W'`` even.

    >>> import torch
    >>> AttentionResidual(heads=2, size_prev=8)(torch.randn(1, 2, 64, 64)).shape
    torch.Size([1, 2, 16, 16])
    """

    def __init__(self, heads: int, size_prev, init: float = 1e-4):
        super().__init__()
        check_positive(heads=heads)
        self.heads, self.size_prev = heads, as_pair("size_prev", size_prev)
        if self.size_prev[0] % 2 or self.size_prev[1] % 2:
            raise ValueError(f"AttentionResidual halves the grid, so size_prev must be even on each axis; "
                             f"got size_prev={self.size_prev}")
        self.down_query = nn.Conv2d(heads, heads, 2, stride=2, groups=heads)
        self.down_key = nn.Conv2d(heads, heads, 2, stride=2, groups=heads)
        self.mix = nn.Conv2d(heads, heads, 1)
        self.scale = LayerScale(heads, init=init, axis=1)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        Hp, Wp = self.size_prev
        B = scores.shape[0] if isinstance(scores, torch.Tensor) and scores.dim() == 4 else 1
        check_scores("scores", scores, (B, self.heads, Hp * Wp, Hp * Wp))
        heads, Hm, Wm = self.heads, Hp // 2, Wp // 2
        # query grid: [B, heads, Hp, Wp, N'] -> [B, N', heads, Hp, Wp] -> [B*N', heads, Hp, Wp]
        x = scores.reshape(B, heads, Hp, Wp, Hp * Wp).permute(0, 4, 1, 2, 3).reshape(B * Hp * Wp, heads, Hp, Wp)
        x = self.down_query(x)  # [B*N', heads, Hm, Wm]
        # key grid: [B, Hp, Wp (keys), heads, Nm] -> [B, Nm, heads, Hp, Wp] -> [B*Nm, heads, Hp, Wp]
        x = x.reshape(B, Hp, Wp, heads, Hm * Wm).permute(0, 4, 3, 1, 2).reshape(B * Hm * Wm, heads, Hp, Wp)
        x = self.down_key(x)  # [B*Nm, heads, Hm, Wm]
        # [B, Nm (queries), heads, Nm (keys)] -> [B, heads, Nm, Nm]
        x = x.reshape(B, Hm * Wm, heads, Hm * Wm).permute(0, 2, 1, 3)
        return self.scale(self.mix(x))  # heads mixed per (query, key) pair

    def extra_repr(self) -> str:
        return f"heads={self.heads}, size_prev={self.size_prev}"
