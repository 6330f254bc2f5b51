"""Per-slot additive logit terms, shared by every backend of ``attend``.

Glossary as in ``vizattn.functional``: ``q [B, heads, H, W, head_dim]``; a pattern gives each of the
``N = H * W`` queries ``K`` key slots (``vizattn.geometry``).

>>> import torch; from vizattn.patterns import Neighborhood
>>> q = torch.randn(1, 2, 4, 4, 8)
>>> slot_terms(q, Neighborhood(3), torch.zeros(2, 5, 5), None, 0.5).shape
torch.Size([1, 2, 16, 9])
"""

from __future__ import annotations

import math

from .geometry import geometry


def slot_terms(q, pattern, bias, rel_emb, scale):
    """Additive logit terms per slot, ``[B or 1, heads or 1, N, K]``, or None when there are none."""
    B, heads, H, W, head_dim = q.shape
    g = geometry(pattern, H, W, q.device)
    (kh, kw), offsets = g.extent, g.offsets
    terms = None
    if bias is not None:
        terms = bias.flatten(1)[:, g.bias_index][None]  # [1, heads, N, K]
    if rel_emb is not None:
        half = head_dim // 2
        qf = q.reshape(B, heads, H * W, head_dim)
        rows = qf[..., :half] @ rel_emb[0].transpose(-1, -2)[None]  # [B, heads, N, 2kh-1]
        cols = qf[..., half:] @ rel_emb[1].transpose(-1, -2)[None]  # [B, heads, N, 2kw-1]
        shape = (B, heads) + tuple(g.keys.shape)
        rel = rows.gather(-1, (offsets[..., 0] + kh - 1).expand(shape)) + cols.gather(
            -1, (offsets[..., 1] + kw - 1).expand(shape)
        )
        terms = scale * rel if terms is None else terms + scale * rel
    return terms


def zero_slot_logsumexp(terms, zero, dtype):
    """Log of the summed softmax numerators of each query's zero slots: ``[.., N]``.

    All zero slots have a zero key, so together they act as one zero key whose logit is the
    log-sum-exp of their own terms (``log(count)`` without terms; ``-inf`` if the query has none).
    """
    if terms is None:
        return zero.sum(-1).to(dtype).log()
    return terms.masked_fill(~zero, -math.inf).logsumexp(-1)
