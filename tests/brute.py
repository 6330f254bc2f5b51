"""Slow, obvious references written straight from docs/semantics.md, independent of vizattn's code.

Patterns are described by plain tuples, e.g. ("na", k, d), so nothing here imports
``vizattn.patterns``. Everything loops in Python over float64 numbers.
"""

from __future__ import annotations

import math

import torch


def axis_slots(spec, L, i):
    """The 1-D slots of query i on an axis of length L: a list of (key or None, offset)."""
    kind = spec[0]
    if kind == "global":
        return [(j, j - i) for j in range(L)]
    if kind == "na":  # docs/semantics.md §1
        _, k, d = spec
        g, ig = i % d, i // d
        group_len = math.ceil((L - g) / d)
        s = min(max(ig - k // 2, 0), group_len - k)
        return [((s + t) * d + g, s + t - ig) for t in range(k)]
    if kind == "sasa":  # docs/semantics.md §2: centred window, outside the map = zero slot
        _, k = spec
        return [(j if 0 <= j < L else None, j - i) for j in range(i - k // 2, i + k // 2 + 1)]
    if kind == "block":  # docs/semantics.md §3, padded map
        _, P = spec
        first = i // P * P
        return [(first + t if first + t < L else None, t - i % P) for t in range(P)]
    if kind == "swin":  # semantics §7 as Swin computes it: roll the (padded) axis by -s, cut windows, mask regions
        _, P, s = spec
        Lp = math.ceil(L / P) * P
        r = (i - s) % Lp  # the query's place on the rolled axis
        start = r // P * P

        def region(x):  # Swin's regions of the rolled axis: [0, Lp-P), [Lp-P, Lp-s), [Lp-s, Lp)
            return 0 if x < Lp - P else 1 if x < Lp - s else 2

        out = []
        for t in range(P):
            j = (start + t + s) % Lp  # back to original coordinates
            out.append((j if region(start + t) == region(r) and j < L else None, t - r % P))
        return out
    if kind == "grid":  # spacing s = L / G on the (padded) map
        _, G = spec
        s = math.ceil(L / G)
        return [(i % s + t * s if i % s + t * s < L else None, t - i // s) for t in range(G)]
    if kind == "lda":  # docs/semantics.md §4: same group iff equal mod I
        _, I = spec
        n = math.ceil(L / I)
        return [(i % I + t * I if i % I + t * I < L else None, t - i // I) for t in range(n)]
    raise AssertionError(kind)


def slots(spec_h, spec_w, H, W):
    """2-D slots of every query (row-major), each a list of (flat key or None, (dh, dw))."""
    out = []
    for h in range(H):
        for w in range(W):
            row = []
            for kh, dh in axis_slots(spec_h, H, h):
                for kw, dw in axis_slots(spec_w, W, w):
                    key = None if kh is None or kw is None else kh * W + kw
                    row.append((key, (dh, dw)))
            out.append(row)
    return out


def attention(q, k, v, table, zero_slots, bias=None, rel=None, scale=None):
    """Attention by definition: for each query a softmax over its slots (docs/semantics.md §1-§4).

    q, k, v: [B, heads, H, W, d]; table: the output of ``slots``. Zero slots (SASA) have a zero
    key and value and stay in the softmax; other empty slots are dropped. Returns (out, weights).
    """
    B, heads, H, W, d = q.shape
    scale = d**-0.5 if scale is None else scale
    q, k, v = (t.double().reshape(B, heads, H * W, -1) for t in (q, k, v))
    kh = (len(bias[0]) + 1) // 2 if bias is not None else None
    out = torch.zeros(B, heads, H * W, v.shape[-1], dtype=torch.float64)
    weights = torch.zeros(B, heads, H * W, len(table[0]), dtype=torch.float64)
    for b in range(B):
        for h in range(heads):
            for n, row in enumerate(table):
                logits, values, used = [], [], []
                for s, (key, (dh, dw)) in enumerate(row):
                    if key is None and not zero_slots:
                        continue
                    kvec = torch.zeros(d, dtype=torch.float64) if key is None else k[b, h, key]
                    if rel is not None:  # r = concat(row half, col half), this head's own tables
                        r_row, r_col = rel
                        rh, rw = (len(r_row[0]) + 1) // 2, (len(r_col[0]) + 1) // 2
                        kvec = kvec + torch.cat([r_row[h, dh + rh - 1].double(), r_col[h, dw + rw - 1].double()])
                    logit = scale * float(q[b, h, n] @ kvec)
                    if bias is not None:
                        kw = (len(bias[0][0]) + 1) // 2
                        logit += float(bias[h, dh + kh - 1, dw + kw - 1])
                    logits.append(logit)
                    values.append(torch.zeros(v.shape[-1], dtype=torch.float64) if key is None else v[b, h, key])
                    used.append(s)
                p = torch.tensor(logits, dtype=torch.float64).softmax(0)
                out[b, h, n] = sum(pi * vi for pi, vi in zip(p, values))
                weights[b, h, n, used] = p
    return out.reshape(B, heads, H, W, -1), weights.reshape(B, heads, H, W, -1)


def vanilla_attention(va, x):
    """What a LaViT vanilla layer ``va`` attends on input ``x [B, H, W, C]``, no residual scores, written out
    (docs/semantics.md §5): ``softmax(Q K^T / sqrt(d))`` with ``va``'s qkv weights, ``[B, heads, N, N]``."""
    B, H, W, C = x.shape
    heads, d = va.heads, C // va.heads
    qkv = x.reshape(B, H * W, C) @ va.qkv.weight.T + va.qkv.bias  # [B, N, 3C]
    q = qkv[..., :C].reshape(B, H * W, heads, d).transpose(1, 2)
    k = qkv[..., C:2 * C].reshape(B, H * W, heads, d).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, -1).detach()
