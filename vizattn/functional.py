"""``attend``: exact attention restricted to a pattern, with one reference and two fast backends.

Glossary: ``B`` batch, ``heads``, an ``H x W`` map of ``N = H * W`` tokens, ``head_dim``; a
pattern gives each query ``K`` key slots (``vizattn.patterns``).

Logits of query n for its slot s, key token j, offset (dh, dw)::

    logit = scale * q_n . (k_j + r(dh, dw)) + bias[head, dh + kh - 1, dw + kw - 1]

where ``r`` is SASA's relative embedding (``rel_emb``, row half then column half of the head
dimension) and ``bias`` a relative position table; both are optional. A slot with no token is
excluded from the softmax, except for patterns with ``zero_slots`` (SASA's zero padding) where
it is a zero key and value that still takes part (its logit is just the bias/relative term).

Backends, all exact:

- ``"reference"``: dense ``[N, N]`` logits with a mask; obvious, quadratic; for tests and tiny maps.
- ``"tiled"``: queries are cut into tiles of neighbours (inside one dilation group, block or grid
  line); a tile attends to the union of its windows (its *halo*) with a small mask, and all tiles
  run as one batched ``scaled_dot_product_attention``. Partition patterns (block, grid, LDA)
  have tile = group and need no mask, which is the classic reshape + SDPA. Memory grows with
  ``N * halo``, never ``N^2`` (except for ``Global``, where the halo is the whole map).
- ``"native"``: a C++ kernel (``vizattn.native``, compiled on first use) that runs over the key
  table itself: exactly ``K`` logits per query, weights kept for backward (memory ``N * K``). The
  CPU default for float32/float64 where it can be built, for windows of up to 256 slots and
  partitions of up to 49 (beyond, and for ``Global``, tiled's batched SDPA is faster).
- ``"flex"``: PyTorch FlexAttention with a cached block mask (compiled on CUDA); sliding windows
  without SASA's zero slots or relative embeddings. Forward-only on CPU (cross-checks).
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
import torch.nn.functional as F

from . import native
from .checks import check_attention, check_choice, check_instance
from .patterns import Global, Pattern, axis_mask
from .slots import geometry_on, slot_terms
from .tiled import finite, tiled

__all__ = ["attend", "slot_logits", "combine"]

BACKENDS = ("auto", "reference", "tiled", "native", "flex")


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
    B, heads, H, W, head_dim = q.shape
    scale = head_dim**-0.5 if scale is None else float(scale)
    if backend == "auto":
        backend = _choose_backend(q, pattern, rel_emb, return_weights)
    if backend == "flex":
        if return_weights or rel_emb is not None or pattern.zero_slots:
            raise ValueError(
                "the flex backend supports neither return_weights, rel_emb nor zero-padded slots; "
                f"got return_weights={return_weights}, rel_emb given={rel_emb is not None}, pattern={pattern}"
            )
        if finite(k, v):
            out, weights = _flex(q, k, v, pattern, bias, scale), None
        else:  # its blocks read masked keys too (see tiled): NaN or inf there takes the per-slot path
            out, weights = _reference(q, k, v, pattern, slot_terms(q, pattern, bias, None, scale), scale, False)
    elif isinstance(pattern, Global) and backend == "tiled" and rel_emb is None and not return_weights:
        out, weights = _global(q, k, v, bias, scale), None
    else:
        run = {"reference": _reference, "tiled": tiled, "native": native.native}[backend]
        out, weights = run(q, k, v, pattern, slot_terms(q, pattern, bias, rel_emb, scale), scale, return_weights)
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
    logits = _slot_logits(q, k, pattern, slot_terms(q, pattern, bias, rel_emb, scale), scale)
    return logits.reshape(B, heads, H, W, -1)


def combine(weights, v, pattern):
    """Weighted sum of each query's slot values: ``[B, heads, H, W, K]`` x v -> ``[B, heads, H, W, head_dim_v]``.

    Slots without a token contribute zero (SASA's zero values).
    """
    if not isinstance(v, torch.Tensor) or v.dim() != 5 or not isinstance(weights, torch.Tensor):
        raise ValueError("combine needs weights [B, heads, H, W, K] and v [B, heads, H, W, head_dim_v]")
    B, heads, H, W, _ = v.shape
    pattern.check(H, W)
    K = geometry_on(pattern, H, W, v.device)[0].shape[1]
    if tuple(weights.shape) != (B, heads, H, W, K):
        raise ValueError(
            f"weights must have shape {(B, heads, H, W, K)} for {pattern} and v {tuple(v.shape)}; "
            f"got {tuple(weights.shape)}"
        )
    return _combine(weights.reshape(B, heads, H * W, K), v, pattern).reshape(B, heads, H, W, -1)


def _slot_logits(q, k, pattern, terms, scale):
    """``[B, heads, N, K]`` logits of each query's own slots (no other token is read), ``-inf`` where excluded."""
    B, heads, H, W, head_dim = q.shape
    keys = geometry_on(pattern, H, W, q.device)[0]
    qf = q.reshape(B, heads, H * W, head_dim)
    if isinstance(pattern, Global):  # slot j is token j: a plain product, no gathered copy
        logits = scale * qf @ k.reshape(B, heads, H * W, head_dim).transpose(-1, -2)
    else:
        logits = scale * torch.einsum("bhnd,bhnkd->bhnk", qf, _gather_slots(k, keys))  # [B, heads, N, K]
    if terms is not None:
        logits = logits + terms
    excluded = (keys < 0) & (not pattern.zero_slots)
    return logits.masked_fill(excluded, -math.inf)


def _combine(weights, v, pattern):
    """``weights [B, heads, N, K]`` x v ``[B, heads, H, W, dv]`` -> ``[B, heads, N, dv]``."""
    B, heads, H, W, _ = v.shape
    if isinstance(pattern, Global):
        return weights @ v.reshape(B, heads, H * W, -1)
    keys = geometry_on(pattern, H, W, v.device)[0]
    return torch.einsum("bhnk,bhnkd->bhnd", weights, _gather_slots(v, keys))


def _gather_slots(x, keys):
    """``[B, heads, H, W, d]`` -> ``[B, heads, N, K, d]`` rows of each slot's key, zero for -1."""
    B, heads, H, W, d = x.shape
    padded = F.pad(x.reshape(B, heads, H * W, d), (0, 0, 0, 1))
    return padded[:, :, keys.where(keys >= 0, H * W)]


# ---------------------------------------------------------------------------------------------
# validation (the public boundary: everything inside trusts its inputs)
# ---------------------------------------------------------------------------------------------
def _validate(q, k, v, pattern, bias, rel_emb, backend):
    check_choice("backend", backend, BACKENDS)
    check_instance("pattern", pattern, Pattern, "a vizattn.patterns pattern")
    check_attention(q, k, v, pattern, bias, rel_emb)


def _choose_backend(q, pattern, rel_emb, return_weights):
    sliding = not pattern.partition and not pattern.zero_slots and rel_emb is None
    if q.is_cuda and sliding and not return_weights and _flex_api() is not None:
        return "flex"
    if q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64) and _native_wins(pattern, *q.shape[2:4]):
        why = native.unavailable()  # builds the kernel on first use (dev.py's set-up does it once)
        if why is None:
            return "native"
        _warn_no_native(why)
    return "tiled"


# the most key slots per query for which the native kernel beats the tiled backend (benchmarks/attention.py,
# 2 cores): a sliding window computes halo x tile logits in tiled, K in native; a partition's group is
# tiled's exact tile, where its GEMMs win once groups are large (LDA I8 at 64x64, K = 64: 1.1x slower)
NATIVE_MAX_SLOTS = {"sliding": 256, "partition": 49}


def _native_wins(pattern, H, W):
    if isinstance(pattern, Global):
        return False
    K = geometry_on(pattern, H, W, torch.device("cpu"))[0].shape[1]
    return K <= NATIVE_MAX_SLOTS["partition" if pattern.partition else "sliding"]


@functools.lru_cache(maxsize=1)
def _warn_no_native(why):
    warnings.warn(f"vizattn: the native attention kernel is unavailable, using the tiled backend: {why}", stacklevel=4)


# ---------------------------------------------------------------------------------------------
# reference: each query's softmax over its own slots, gathered (memory N * K * head_dim)
# ---------------------------------------------------------------------------------------------
def _reference(q, k, v, pattern, terms, scale, return_weights):
    B, heads, H, W, _ = q.shape
    keys = geometry_on(pattern, H, W, q.device)[0]
    excluded = (keys < 0) & (not pattern.zero_slots)
    weights = _slot_logits(q, k, pattern, terms, scale).softmax(-1).masked_fill(excluded, 0)  # [B, heads, N, K]
    out = _combine(weights, v, pattern).reshape(B, heads, H, W, -1)
    return out, weights.reshape(B, heads, H, W, -1) if return_weights else None


# ---------------------------------------------------------------------------------------------
# Global: plain SDPA; a bias becomes a dense [heads, N, N] table, built per axis (no [N, N] keys)
# ---------------------------------------------------------------------------------------------
def _global(q, k, v, bias, scale):
    B, heads, H, W, head_dim = q.shape
    mask = None
    if bias is not None:
        dh = torch.arange(H, device=q.device)
        dw = torch.arange(W, device=q.device)
        # offset key - query per axis -> flat table index, [H, W, H, W] -> [N, N]
        index = ((dh[None, :] - dh[:, None] + H - 1)[:, None, :, None] * (2 * W - 1)
                 + (dw[None, :] - dw[:, None] + W - 1)[None, :, None, :]).reshape(H * W, H * W)
        mask = bias.flatten(1)[:, index][None]  # [1, heads, N, N]
    qf, kf, vf = (t.reshape(B, heads, H * W, -1) for t in (q, k, v))
    return F.scaled_dot_product_attention(qf, kf, vf, attn_mask=mask, scale=scale).reshape(B, heads, H, W, -1)


# ---------------------------------------------------------------------------------------------
# FlexAttention
# ---------------------------------------------------------------------------------------------
def _flex_api():
    try:
        from torch.nn.attention import flex_attention
    except ImportError:  # torch without FlexAttention
        return None
    return flex_attention


@functools.lru_cache(maxsize=64)
def _flex_tables(pattern: Pattern, H: int, W: int, device: torch.device):
    """Per-axis lookup tables ``[L, L]``: is key j in query i's window, and its table index."""
    tables = []
    for rule in pattern.axes(H, W):
        L, k = rule.keys.shape
        slots = rule.keys.where(rule.keys >= 0, L)
        index = torch.zeros(L, L + 1, dtype=torch.long).scatter_(1, slots, rule.offsets + k - 1)
        tables += [axis_mask(rule).to(device), index[:, :L].to(device)]
    return tuple(tables)


@functools.lru_cache(maxsize=64)
def _flex_block_mask(pattern: Pattern, H: int, W: int, device: torch.device):
    member_h, _, member_w, _ = _flex_tables(pattern, H, W, device)

    def mask_mod(b, h, q_idx, kv_idx):
        return member_h[q_idx // W, kv_idx // W] & member_w[q_idx % W, kv_idx % W]

    return _flex_api().create_block_mask(mask_mod, None, None, H * W, H * W, device=str(device))


@functools.lru_cache(maxsize=None)
def _flex_kernel(device_type: str):
    flex = _flex_api().flex_attention
    return torch.compile(flex, dynamic=False) if device_type == "cuda" else flex


def _flex(q, k, v, pattern, bias, scale):
    B, heads, H, W, head_dim = q.shape
    N = H * W
    score_mod = None
    if bias is not None:
        _, index_h, _, index_w = _flex_tables(pattern, H, W, q.device)
        width = bias.shape[-1]
        table = bias.flatten(1)  # [heads, (2kh-1) * (2kw-1)]

        def score_mod(score, b, h, q_idx, kv_idx):
            return score + table[h, index_h[q_idx // W, kv_idx // W] * width + index_w[q_idx % W, kv_idx % W]]

    qf, kf, vf = (t.reshape(B, heads, N, -1) for t in (q, k, v))
    block_mask = _flex_block_mask(pattern, H, W, q.device)
    out = _flex_kernel(q.device.type)(qf, kf, vf, score_mod=score_mod, block_mask=block_mask, scale=scale)
    return out.reshape(B, heads, H, W, -1)
