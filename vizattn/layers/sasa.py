"""Stand-Alone Self-Attention (SASA, Ramachandran et al. 2019), docs/semantics.md §2.

Two layers:

- ``StandAloneAttention``: a centred ``k x k`` window with **zero padding** (outside positions are
  zero keys/values that still take part in the softmax), logits ``q . k + q . r`` with learned
  relative embeddings ``r``, and the paper's grouped projections (head h has its own W_Q, W_K, W_V
  acting on its channel group h only).
- ``AttentionStem``: the paper's spatially-aware stem, whose value depends on the query-key offset.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..bias import RelativeEmbedding
from ..checks import check_heads, check_input, check_positive
from ..functional import attend, combine, slot_logits
from ..mechanisms import kind_of
from ..patterns import LocalWindow
from .common import AttentionLayer, PatternAttention

__all__ = ["StandAloneAttention", "AttentionStem", "HeadwiseLinear"]


class HeadwiseLinear(nn.Module):
    """Block-diagonal projection without bias: head h maps its channel group h to ``parts`` vectors.

    ``[B, H, W, C] -> [B, H, W, parts * C]`` laid out as ``[parts, heads, head_dim]`` (so with
    ``parts=3`` it is a drop-in ``qkv``). Equivalent to a 1x1 convolution with ``groups=heads``.
    No bias, so a zero input vector (SASA's padding) projects to a zero query, key and value.

    >>> import torch
    >>> HeadwiseLinear(8, heads=2, parts=3)(torch.randn(1, 2, 2, 8)).shape
    torch.Size([1, 2, 2, 24])
    """

    def __init__(self, dim: int, heads: int, parts: int = 3):
        super().__init__()
        self.head_dim = check_heads(dim, heads)
        check_positive(parts=parts)
        self.heads, self.parts = heads, parts
        bound = 1 / math.sqrt(self.head_dim)  # nn.Linear's default init with fan_in = head_dim
        self.weight = nn.Parameter(torch.empty(heads, parts * self.head_dim, self.head_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x = x.reshape(B, H, W, self.heads, self.head_dim)  # [B, H, W, heads, head_dim]
        y = torch.einsum("bhwgc,gjc->bhwgj", x, self.weight)  # [B, H, W, heads, parts * head_dim]
        # -> [B, H, W, heads, parts, head_dim] -> [B, H, W, parts, heads, head_dim] -> [B, H, W, parts * C]
        return y.reshape(B, H, W, self.heads, self.parts, self.head_dim).transpose(3, 4).reshape(B, H, W, -1)


class StandAloneAttention(PatternAttention):
    """SASA: centred ``k x k`` window (odd k), zero padding, relative embeddings, grouped projections.

    Logits ``scale * q . (k + r(dh, dw))`` with ``r = concat(r_row[dh], r_col[dw])`` split per head
    (``vizattn.bias.RelativeEmbedding``). ``scale=None`` means 1.0: the paper uses no ``1/sqrt(d)``
    [vizattn choice: ``scale`` is exposed, the default follows the paper]. ``padding="mask"``
    excludes out-of-map positions instead [vizattn choice]. The projections are grouped and have
    no bias (so padded positions really are zero keys and values), and there is no output
    projection: head outputs are concatenated, as in the paper, where the surrounding 1x1
    convolutions of the ResNet block mix channels.

    >>> import torch
    >>> StandAloneAttention(dim=16, heads=4, kernel_size=3)(torch.randn(2, 5, 6, 16)).shape
    torch.Size([2, 5, 6, 16])
    """

    def __init__(self, dim: int, heads: int, kernel_size, padding: str = "zeros", scale: float | None = None):
        pattern = LocalWindow(kernel_size, padding)
        qkv = HeadwiseLinear(dim, heads, parts=3)
        rel = RelativeEmbedding(heads, qkv.head_dim, pattern.kernel_size)
        super().__init__(dim, heads, pattern, rel_emb=rel, qkv=qkv, proj=False, scale=1.0 if scale is None else scale)


class AttentionStem(AttentionLayer):
    """SASA's spatially-aware attention stem: ``[B, H, W, dim_in] -> [B, H, W, dim]``.

    Logits ``scale * q . k`` over the centred ``k x k`` window (zero padding as in
    ``StandAloneAttention``; ``scale=None`` means 1.0). The value of key ``(a, b)`` for query
    ``(i, j)`` depends on their offset ``(dh, dw) = (a - i, b - j)``::

        v_ab = sum_m p_m(dh, dw) W_V^m x_ab,   p(dh, dw) = softmax_m((emb_row[dh] + emb_col[dw]) . nu_m)

    so ``out = sum_m combine(w * p_m(offset of each slot), v^m)`` with ``w`` the attention weights.
    The projections are full (``dim_in`` is small, e.g. 3 colours) and have no bias; ``p`` is shared
    by the heads; there is no output projection.

    ``fused=True`` uses, per mixture, ``attend`` with the bias table ``log p_m``, which gives
    ``sum_slot w p_m v^m / c_m`` with ``c_m = sum_slot w p_m``, and rescales by ``c_m``: exact, and
    it never gathers the values of every window (``fused=False`` does, M times).

    >>> import torch
    >>> AttentionStem(dim_in=3, dim=8, heads=2, kernel_size=3)(torch.randn(1, 6, 6, 3)).shape
    torch.Size([1, 6, 6, 8])
    """

    def __init__(self, dim_in: int, dim: int, heads: int, kernel_size, mixtures: int = 4, padding: str = "zeros",
                 scale: float | None = None):
        super().__init__()
        self.head_dim = check_heads(dim, heads)
        check_positive(dim_in=dim_in, mixtures=mixtures)
        self.dim_in, self.dim, self.heads, self.mixtures = dim_in, dim, heads, mixtures
        self.scale = 1.0 if scale is None else scale
        self._pattern = LocalWindow(kernel_size, padding)
        kh, kw = self._pattern.kernel_size
        self.qk = nn.Linear(dim_in, 2 * dim, bias=False)
        self.value = nn.Linear(dim_in, mixtures * dim, bias=False)  # W_V^m for m = 0 .. mixtures-1
        self.emb_row = nn.Parameter(nn.init.trunc_normal_(torch.empty(kh, dim), std=0.02))
        self.emb_col = nn.Parameter(nn.init.trunc_normal_(torch.empty(kw, dim), std=0.02))
        self.nu = nn.Parameter(nn.init.trunc_normal_(torch.empty(mixtures, dim), std=0.02))

    @property
    def kind(self) -> str:
        return kind_of(self._pattern)

    def pattern(self, H: int, W: int) -> LocalWindow:
        return self._pattern

    def mixture(self) -> torch.Tensor:
        """``p [mixtures, kh, kw]``: the mixture weights of every window offset (sum 1 over m)."""
        emb = self.emb_row[:, None, :] + self.emb_col[None, :, :]  # [kh, kw, dim]
        return (emb @ self.nu.T).softmax(-1).permute(2, 0, 1)  # [kh, kw, M] -> [M, kh, kw]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = check_input(x, self.dim_in, "AttentionStem")
        pattern, M, heads, head_dim = self._pattern, self.mixtures, self.heads, self.head_dim
        kh, kw = pattern.kernel_size
        # [B, H, W, 2*dim] -> [B, H, W, 2, heads, head_dim] -> 2 x [B, heads, H, W, head_dim]
        q, k = self.qk(x).reshape(B, H, W, 2, heads, head_dim).permute(3, 0, 4, 1, 2, 5)
        # [B, H, W, M*dim] -> [B, H, W, M, heads, head_dim] -> M x [B, heads, H, W, head_dim]
        values = self.value(x).reshape(B, H, W, M, heads, head_dim).permute(3, 0, 4, 1, 2, 5)
        p = self.mixture()  # [M, kh, kw]
        offsets = pattern.offsets(H, W).to(x.device)  # [N, K, 2], key - query in pixels
        # [M, 1, 1, H, W, K]: the mixture weights of each slot's offset
        p_slot = p[:, offsets[..., 0] + kh // 2, offsets[..., 1] + kw // 2].reshape(M, 1, 1, H, W, -1)
        logits = slot_logits(q, k, pattern, scale=self.scale)  # [B, heads, H, W, K]
        probs = logits.softmax(-1)
        if self.fused:
            share = (probs * p_slot).sum(-1, keepdim=True)  # c_m: [M, B, heads, H, W, 1]
            log_p = p.clamp(min=torch.finfo(p.dtype).tiny).log()  # finite even where p underflows to 0
            log_p = F.pad(log_p, (kw // 2, kw // 2, kh // 2, kh // 2))  # [M, 2kh-1, 2kw-1], unused ends 0
            return self._merge(sum(
                share[m] * attend(q, k, values[m], pattern, bias=log_p[m].expand(heads, -1, -1), scale=self.scale)
                for m in range(M)
            ))
        probs = self.attn_probs(probs, pattern, scores=logits)
        return self._merge(sum(combine(probs * p_slot[m], values[m], pattern) for m in range(M)))

    def _merge(self, out: torch.Tensor) -> torch.Tensor:
        B, heads, H, W, head_dim = out.shape
        return out.permute(0, 2, 3, 1, 4).reshape(B, H, W, heads * head_dim)  # [B, H, W, dim]

    def extra_repr(self) -> str:
        return (f"dim_in={self.dim_in}, dim={self.dim}, heads={self.heads}, pattern={self._pattern}, "
                f"mixtures={self.mixtures}")
