"""``attend``: exact attention restricted to a pattern; its backends live in ``vizattn.backends``.

Glossary: ``B`` batch, ``heads``, an ``H x W`` map of ``N = H * W`` tokens, ``head_dim``; a
pattern gives each query ``K`` key slots (``vizattn.patterns``).

Logits of query n for its slot s, key token j, offset (dh, dw)::

    logit = scale * q_n . (k_j + r(dh, dw)) + bias[head, dh + kh - 1, dw + kw - 1]

where ``r`` is SASA's relative embedding (``rel_emb``, row half then column half of the head
dimension) and ``bias`` a relative position table; both are optional. A slot with no token is
excluded from the softmax, except for patterns with ``zero_slots`` (SASA's zero padding) where
it is a zero key and value that still takes part (its logit is just the bias/relative term).
A query reads nothing but its own q and its slots' k, v: a NaN or inf reaches exactly the
queries that see it.
"""

from __future__ import annotations

import torch

from . import backends
from .backends import reference
from .checks import check_attention, check_choice, check_instance
from .geometry import geometry
from .patterns import Pattern
from .slots import slot_terms

__all__ = ["attend", "slot_logits", "combine"]

BACKENDS = ("auto",) + tuple(backends.BY_NAME)


def attend(q, k, v, pattern, bias=None, scale=None, return_weights=False, *, rel_emb=None, backend="auto"):
    """Attention of every query over the keys that ``pattern`` gives it.

    Args:
        q, k: ``[B, heads, H, W, head_dim]``; v: ``[B, heads, H, W, head_dim_v]``.
        pattern: a ``vizattn.patterns`` pattern; ``extent = pattern.extent(H, W) = (kh, kw)``.
        bias: optional relative position table ``[heads, 2*kh-1, 2*kw-1]``.
        scale: multiplies ``q . k``; default ``head_dim ** -0.5``.
        return_weights: also return the weights ``[B, heads, H, W, K]``, aligned with
            ``pattern.keys(H, W)`` (zero at excluded slots).
        rel_emb: optional SASA relative embeddings ``(row, col)``: ``row [heads, 2*kh-1, head_dim // 2]``
            and ``col [heads, 2*kw-1, head_dim - head_dim // 2]``, indexed like ``bias``.
        backend: ``"auto"`` (fastest exact path), ``"reference"``, ``"tiled"``, ``"native"`` or ``"flex"``.

    Returns:
        ``out [B, heads, H, W, head_dim_v]``, or ``(out, weights)``.

    >>> import torch; from vizattn import attend; from vizattn.patterns import Neighborhood
    >>> q = k = v = torch.randn(1, 2, 9, 11, 8)
    >>> out, w = attend(q, k, v, Neighborhood(3, dilation=2), return_weights=True)
    >>> out.shape, w.shape
    (torch.Size([1, 2, 9, 11, 8]), torch.Size([1, 2, 9, 11, 9]))
    """
    _validate(q, k, v, pattern, bias, rel_emb, backend)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if backend == "auto":
        chosen = backends.choose(q, pattern, rel_emb, return_weights)
    else:
        chosen = backends.BY_NAME[backend]
        why = chosen.can_run(q, pattern, rel_emb, return_weights, choosing=False)
        if why is not None:
            raise ValueError(why)
    out, weights = chosen.run(q, k, v, pattern, bias, rel_emb, scale, return_weights)
    return (out, weights) if return_weights else out


def slot_logits(q, k, pattern, bias=None, scale=None, *, rel_emb=None):
    """The logits ``attend`` softmaxes, one per key slot: ``[B, heads, H, W, K]``, ``-inf`` at excluded slots.

    The explicit path of a layer is ``combine(hook(slot_logits(...).softmax(-1)), v, pattern)``:
    it gathers every window (memory ``N * K * head_dim``), so use it to look, not to train.

    >>> import torch; from vizattn.patterns import LocalWindow
    >>> q = torch.randn(1, 1, 5, 5, 4)
    >>> w = slot_logits(q, q, LocalWindow(3, padding="mask")).softmax(-1)
    >>> out = attend(q, q, q, LocalWindow(3, padding="mask"))
    >>> torch.allclose(combine(w, q, LocalWindow(3, padding="mask")), out, atol=1e-5)
    True
    """
    _validate(q, k, k, pattern, bias, rel_emb, "auto")
    B, heads, H, W, head_dim = q.shape
    scale = head_dim**-0.5 if scale is None else float(scale)
    logits = reference.logits(q, k, pattern, slot_terms(q, pattern, bias, rel_emb, scale), scale)
    return logits.reshape(B, heads, H, W, -1)


def combine(weights, v, pattern):
    """Weighted sum of each query's slot values: ``[B, heads, H, W, K]`` x v -> ``[B, heads, H, W, head_dim_v]``.

    Slots without a token contribute zero (SASA's zero values).
    """
    if not isinstance(v, torch.Tensor) or v.dim() != 5 or not isinstance(weights, torch.Tensor):
        raise ValueError("combine needs weights [B, heads, H, W, K] and v [B, heads, H, W, head_dim_v]")
    B, heads, H, W, _ = v.shape
    pattern.check(H, W)
    K = geometry(pattern, H, W, v.device).keys.shape[1]
    if tuple(weights.shape) != (B, heads, H, W, K):
        raise ValueError(
            f"weights must have shape {(B, heads, H, W, K)} for {pattern} and v {tuple(v.shape)}; "
            f"got {tuple(weights.shape)}"
        )
    return reference.combine(weights.reshape(B, heads, H * W, K), v, pattern).reshape(B, heads, H, W, -1)


# ---------------------------------------------------------------------------------------------
# validation (the public boundary: everything inside trusts its inputs)
# ---------------------------------------------------------------------------------------------
def _validate(q, k, v, pattern, bias, rel_emb, backend):
    check_choice("backend", backend, BACKENDS)
    check_instance("pattern", pattern, Pattern, "a vizattn.patterns pattern")
    check_attention(q, k, v, pattern, bias, rel_emb)
