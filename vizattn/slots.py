"""Per-slot additive logit terms and device copies of the geometry, shared by every backend of ``attend``.

Glossary as in ``vizattn.functional``: ``q [B, heads, H, W, head_dim]``; a pattern gives each of the
``N = H * W`` queries ``K`` key slots.

>>> import torch; from vizattn.patterns import Neighborhood
>>> keys, offsets, extent = geometry_on(Neighborhood(3), 4, 4, torch.device("cpu"))
>>> keys.shape, offsets.shape, extent
(torch.Size([16, 9]), torch.Size([16, 9, 2]), (3, 3))
"""

from __future__ import annotations

import functools
import math

import torch

from .patterns import Pattern, geometry


def table_index(offsets, extent):
    """Flat index into a ``[2*kh-1, 2*kw-1]`` table for offsets ``[..., 2]``."""
    kh, kw = extent
    return (offsets[..., 0] + kh - 1) * (2 * kw - 1) + offsets[..., 1] + kw - 1


def slot_terms(q, pattern, bias, rel_emb, scale):
    """Additive logit terms per slot, ``[B or 1, heads or 1, N, K]``, or None when there are none."""
    B, heads, H, W, head_dim = q.shape
    keys, offsets, (kh, kw) = geometry_on(pattern, H, W, q.device)
    terms = None
    if bias is not None:
        terms = bias.flatten(1)[:, table_index(offsets, (kh, kw))][None]  # [1, heads, N, K]
    if rel_emb is not None:
        half = head_dim // 2
        qf = q.reshape(B, heads, H * W, head_dim)
        rows = qf[..., :half] @ rel_emb[0].transpose(-1, -2)[None]  # [B, heads, N, 2kh-1]
        cols = qf[..., half:] @ rel_emb[1].transpose(-1, -2)[None]  # [B, heads, N, 2kw-1]
        shape = (B, heads) + tuple(keys.shape)
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



@functools.lru_cache(maxsize=128)
def geometry_on(pattern: Pattern, H: int, W: int, device: torch.device):
    keys, offsets, extent = geometry(pattern, H, W)
    return keys.to(device), offsets.to(device), extent


def zero_slots(pattern, H, W, device):
    """``BoolTensor [N, K]``: slots that are SASA zero keys (all False for other patterns)."""
    keys = geometry_on(pattern, H, W, device)[0]
    return (keys < 0) & pattern.zero_slots


