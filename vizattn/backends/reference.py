"""The ``"reference"`` backend of ``attend``: each query's softmax over its own slots, gathered.

The obvious computation, for tests and small maps: the k and v rows of every query's slots are
gathered (memory ``N * K * head_dim``), so no other token is ever read and a NaN or inf reaches
exactly the queries that see it. It is also the explicit path's arithmetic
(``vizattn.functional.slot_logits`` and ``combine``).

Glossary as in ``vizattn.functional``: ``q, k, v [B, heads, H, W, head_dim]``; ``K`` slots per query.

>>> import torch; from vizattn.patterns import Neighborhood
>>> q = k = v = torch.randn(1, 2, 5, 6, 4)
>>> out, weights = run(q, k, v, Neighborhood(3), None, None, 0.5, True)
>>> out.shape, weights.shape
(torch.Size([1, 2, 5, 6, 4]), torch.Size([1, 2, 5, 6, 9]))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..geometry import geometry
from ..patterns import Global
from ..slots import slot_terms

NAME = "reference"


def can_run(q, pattern, rel_emb, return_weights, choosing):
    """Always None: the reference runs every call."""
    return None


def run(q, k, v, pattern, bias, rel_emb, scale, return_weights):
    """``(out [B, heads, H, W, dv], weights [B, heads, H, W, K] or None)``; weights 0 at excluded slots."""
    return attend_slots(q, k, v, pattern, slot_terms(q, pattern, bias, rel_emb, scale), scale, return_weights)


def attend_slots(q, k, v, pattern, terms, scale, return_weights):
    """``run`` with the per-slot terms already formed (``vizattn.slots.slot_terms``)."""
    B, heads, H, W, _ = q.shape
    excluded = geometry(pattern, H, W, q.device).excluded
    weights = logits(q, k, pattern, terms, scale).softmax(-1).masked_fill(excluded, 0)  # [B, heads, N, K]
    out = combine(weights, v, pattern).reshape(B, heads, H, W, -1)
    return out, weights.reshape(B, heads, H, W, -1) if return_weights else None


def logits(q, k, pattern, terms, scale):
    """``[B, heads, N, K]`` logits of each query's own slots, ``-inf`` where a slot is excluded."""
    B, heads, H, W, head_dim = q.shape
    g = geometry(pattern, H, W, q.device)
    qf = q.reshape(B, heads, H * W, head_dim)
    if isinstance(pattern, Global):  # slot j is token j: a plain product, no gathered copy
        out = scale * qf @ k.reshape(B, heads, H * W, head_dim).transpose(-1, -2)
    else:
        out = scale * torch.einsum("bhnd,bhnkd->bhnk", qf, gather_slots(k, g.keys))
    if terms is not None:
        out = out + terms
    return out.masked_fill(g.excluded, -math.inf)


def combine(weights, v, pattern):
    """``weights [B, heads, N, K]`` x ``v [B, heads, H, W, dv]`` -> ``[B, heads, N, dv]``; empty slots add zero."""
    B, heads, H, W, _ = v.shape
    if isinstance(pattern, Global):
        return weights @ v.reshape(B, heads, H * W, -1)
    keys = geometry(pattern, H, W, v.device).keys
    return torch.einsum("bhnk,bhnkd->bhnd", weights, gather_slots(v, keys))


def gather_slots(x, keys):
    """``[B, heads, H, W, d]`` -> ``[B, heads, N, K, d]`` rows of each slot's key, zero for -1."""
    B, heads, H, W, d = x.shape
    padded = F.pad(x.reshape(B, heads, H * W, d), (0, 0, 0, 1))
    return padded[:, :, keys.where(keys >= 0, H * W)]
