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
- ``"flex"``: PyTorch FlexAttention with a cached block mask (compiled on CUDA); sliding windows
  without SASA's zero slots or relative embeddings. Forward-only on CPU (cross-checks).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .checks import check_attention, check_choice, check_instance
from .patterns import AxisRule, Global, Pattern, axis_mask, geometry

__all__ = ["attend", "slot_logits", "combine"]

BACKENDS = ("auto", "reference", "tiled", "flex")
TILE = 8  # queries per axis in a sliding-window tile (see benchmarks/attention.py)
HALO_BYTES = 4 * 2**20  # (batch, head) slices run in chunks whose gathered k halo stays below this
KEPT_HALO_BYTES = 16 * 2**20  # training with learnt terms: k and v halos up to this size are kept for backward


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
        backend: ``"auto"`` (fastest exact path), ``"reference"``, ``"tiled"`` or ``"flex"``.

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
        out, weights = _flex(q, k, v, pattern, bias, scale), None
    elif isinstance(pattern, Global) and backend == "tiled" and rel_emb is None and not return_weights:
        out, weights = _global(q, k, v, bias, scale), None
    else:
        run = _dense if backend == "reference" else _tiled
        out, weights = run(q, k, v, pattern, _slot_terms(q, pattern, bias, rel_emb, scale), scale, return_weights)
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
    keys = _geometry_on(pattern, H, W, q.device)[0]
    qf = q.reshape(B, heads, H * W, head_dim)
    if isinstance(pattern, Global):  # slot j is token j: a plain product, no gathered copy
        logits = scale * qf @ k.reshape(B, heads, H * W, head_dim).transpose(-1, -2)
    else:
        logits = scale * torch.einsum("bhnd,bhnkd->bhnk", qf, _gather_slots(k, keys))  # [B, heads, N, K]
    terms = _slot_terms(q, pattern, bias, rel_emb, scale)
    if terms is not None:
        logits = logits + terms
    excluded = (keys < 0) & (not pattern.zero_slots)
    return logits.masked_fill(excluded, -math.inf).reshape(B, heads, H, W, -1)


def combine(weights, v, pattern):
    """Weighted sum of each query's slot values: ``[B, heads, H, W, K]`` x v -> ``[B, heads, H, W, head_dim_v]``.

    Slots without a token contribute zero (SASA's zero values).
    """
    if not isinstance(v, torch.Tensor) or v.dim() != 5 or not isinstance(weights, torch.Tensor):
        raise ValueError("combine needs weights [B, heads, H, W, K] and v [B, heads, H, W, head_dim_v]")
    B, heads, H, W, _ = v.shape
    pattern.check(H, W)
    keys = _geometry_on(pattern, H, W, v.device)[0]
    if tuple(weights.shape) != (B, heads, H, W, keys.shape[1]):
        raise ValueError(
            f"weights must have shape {(B, heads, H, W, keys.shape[1])} for {pattern} and v {tuple(v.shape)}; "
            f"got {tuple(weights.shape)}"
        )
    weights = weights.reshape(B, heads, H * W, -1)
    if isinstance(pattern, Global):
        out = weights @ v.reshape(B, heads, H * W, -1)
    else:
        out = torch.einsum("bhnk,bhnkd->bhnd", weights, _gather_slots(v, keys))
    return out.reshape(B, heads, H, W, -1)


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
    return "tiled"


# ---------------------------------------------------------------------------------------------
# per-slot additive terms, shared by every backend that accepts them
# ---------------------------------------------------------------------------------------------
def _table_index(offsets, extent):
    """Flat index into a ``[2*kh-1, 2*kw-1]`` table for offsets ``[..., 2]``."""
    kh, kw = extent
    return (offsets[..., 0] + kh - 1) * (2 * kw - 1) + offsets[..., 1] + kw - 1


def _slot_terms(q, pattern, bias, rel_emb, scale):
    """Additive logit terms per slot, ``[B or 1, heads or 1, N, K]``, or None when there are none."""
    B, heads, H, W, head_dim = q.shape
    keys, offsets, (kh, kw) = _geometry_on(pattern, H, W, q.device)
    terms = None
    if bias is not None:
        terms = bias.flatten(1)[:, _table_index(offsets, (kh, kw))][None]  # [1, heads, N, K]
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


def _zero_slot_logsumexp(terms, zero, dtype):
    """Log of the summed softmax numerators of each query's zero slots: ``[.., N]``.

    All zero slots have a zero key, so together they act as one zero key whose logit is the
    log-sum-exp of their own terms (``log(count)`` without terms; ``-inf`` if the query has none).
    """
    if terms is None:
        return zero.sum(-1).to(dtype).log()
    return terms.masked_fill(~zero, -math.inf).logsumexp(-1)


# ---------------------------------------------------------------------------------------------
# reference: dense [N, N] logits with a mask
# ---------------------------------------------------------------------------------------------
def _dense(q, k, v, pattern, terms, scale, return_weights):
    B, heads, H, W, head_dim = q.shape
    N = H * W
    keys, _, _ = _geometry_on(pattern, H, W, q.device)
    K = keys.shape[1]
    qf, kf, vf = (t.reshape(B, heads, N, -1) for t in (q, k, v))
    logits = scale * qf @ kf.transpose(-1, -2)  # [B, heads, N, N]
    slot = torch.zeros(1, 1, N, K, dtype=q.dtype, device=q.device) if terms is None else terms
    # scatter each real slot's term to its key column; the -1 slots land in a spare column N
    columns = keys.where(keys >= 0, N).expand(slot.shape[:2] + (N, K))
    add = torch.full(slot.shape[:2] + (N, N + 1), -math.inf, dtype=q.dtype, device=q.device)
    add = add.scatter(-1, columns, slot)[..., :N]
    zero = (keys < 0) & pattern.zero_slots  # [N, K]: SASA's zero keys, one column each
    extra = slot.masked_fill(~zero, -math.inf).expand(logits.shape[:2] + (N, K))
    probs = torch.cat([logits + add, extra], dim=-1).softmax(-1)  # [B, heads, N, N + K]
    out = probs[..., :N] @ vf
    weights = None
    if return_weights:
        real = probs[..., :N].gather(-1, keys.clamp(min=0).expand(B, heads, N, K))
        weights = torch.where(keys >= 0, real, torch.where(zero, probs[..., N:], 0.0))
        weights = weights.reshape(B, heads, H, W, K)
    return out.reshape(B, heads, H, W, -1), weights


# ---------------------------------------------------------------------------------------------
# tiled: a tile of neighbouring queries attends to its halo, all tiles in one batched SDPA
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TilePlan:
    """How the queries of one (pattern, H, W) are cut into tiles; ``nT`` tiles of ``Tq`` queries.

    q_idx ``[nT, Tq]``: flat query of each tile row. kv_idx ``[nT, Tk]``: flat token of each halo
    column; ``N`` is a zero token (SASA's zero column), other padding of short halos points at
    token 0 and is masked. tile_slot
    ``[nT, Tq, Tk]``: the query's slot holding that column's key, -1 if not in its window.
    out_row ``[N]``: the tile row (``tile * Tq + row``) whose result each query takes.
    slot_col ``[N, K]``: the halo column of each slot in that row, -1 if excluded.
    zero_col: column index of the zero key of SASA's zero slots, or None.
    identity: one tile holding every query in order, whose halo is every token in order (Global):
    no gathering needed.
    """

    q_idx: torch.Tensor
    kv_idx: torch.Tensor
    tile_slot: torch.Tensor
    out_row: torch.Tensor
    slot_col: torch.Tensor
    zero_col: int | None
    full: bool
    identity: bool

    def to(self, device):
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return TilePlan(**{n: x.to(device) if isinstance(x, torch.Tensor) else x for n, x in fields.items()})


@dataclasses.dataclass
class _AxisTiles:
    queries: torch.Tensor  # [nT, T]       query positions of each tile
    halo: torch.Tensor  # [nT, Tk]      key positions, L for padding
    slot: torch.Tensor  # [nT, T, Tk]   axis slot of the halo key for that query, -1 if none
    tile_of: torch.Tensor  # [L]        tile whose result a query takes
    row_of: torch.Tensor  # [L]         its row in that tile
    col_of: torch.Tensor  # [L, k]      halo column of each slot in that tile, -1 if no token


def _axis_tiles(rule: AxisRule, size: int) -> _AxisTiles:
    """Cut one axis into tiles of ``size`` neighbours inside a group, each with its key halo."""
    L, k = rule.keys.shape
    keys = rule.keys.tolist()
    members: dict[int, list[int]] = {}
    for i in sorted(range(L), key=lambda i: (rule.group[i].item(), rule.position[i].item())):
        members.setdefault(rule.group[i].item(), []).append(i)
    size = min(size, max(len(m) for m in members.values()))
    tiles = []
    for m in members.values():
        for start in range(0, len(m), size):
            chunk = m[start : start + size] if start + size <= len(m) else m[max(0, len(m) - size) :]
            tiles.append(chunk + [chunk[-1]] * (size - len(chunk)))  # a short group repeats its last query
    halos = [sorted({j for i in tile for j in keys[i] if j >= 0}) for tile in tiles]
    Tk = max(map(len, halos))
    halos = [h + [L] * (Tk - len(h)) for h in halos]
    slot = [[[keys[i].index(j) if j in keys[i] else -1 for j in h] for i in tile] for tile, h in zip(tiles, halos)]
    tile_of, row_of = [0] * L, [0] * L
    for t, tile in reversed(list(enumerate(tiles))):  # the first tile holding a query wins
        for r, i in reversed(list(enumerate(tile))):
            tile_of[i], row_of[i] = t, r
    col_of = [[halos[tile_of[i]].index(j) if j >= 0 else -1 for j in keys[i]] for i in range(L)]
    return _AxisTiles(*map(torch.tensor, (tiles, halos, slot, tile_of, row_of, col_of)))


@functools.lru_cache(maxsize=128)
def _plan(pattern: Pattern, H: int, W: int, tile: int, device: torch.device) -> TilePlan:
    if device.type != "cpu":
        return _plan(pattern, H, W, tile, torch.device("cpu")).to(device)
    rows, cols = pattern.axes(H, W)
    N = H * W
    size = lambda rule: rule.keys.shape[0] if pattern.partition else tile  # noqa: E731
    th, tw = _axis_tiles(rows, size(rows)), _axis_tiles(cols, size(cols))
    kw = cols.keys.shape[1]
    nTh, nTw, Tq = th.queries.shape[0], tw.queries.shape[0], th.queries.shape[1] * tw.queries.shape[1]
    # 2-D tile (a, b) = row tile a x column tile b; within it, row-major over (row query, col query)
    q_idx = (th.queries[:, None, :, None] * W + tw.queries[None, :, None, :]).reshape(nTh * nTw, Tq)
    hh, hw = th.halo[:, None, :, None], tw.halo[None, :, None, :]
    kv_idx = torch.where((hh < H) & (hw < W), hh * W + hw, N).reshape(nTh * nTw, -1)
    sh = th.slot[:, None, :, None, :, None]  # [nTh, 1, T, 1, Tkh, 1]
    sw = tw.slot[None, :, None, :, None, :]  # [1, nTw, 1, T, 1, Tkw]
    tile_slot = torch.where((sh >= 0) & (sw >= 0), sh * kw + sw, -1).reshape(nTh * nTw, Tq, -1)
    out_row = ((th.tile_of[:, None] * nTw + tw.tile_of) * Tq + th.row_of[:, None] * tw.queries.shape[1] + tw.row_of)
    ch, cw = th.col_of[:, None, :, None], tw.col_of[None, :, None, :]  # [H, 1, kh, 1], [1, W, 1, kw]
    slot_col = torch.where((ch >= 0) & (cw >= 0), ch * tw.halo.shape[1] + cw, -1).reshape(N, -1)
    zero_col = None
    if pattern.zero_slots:
        zero_col = kv_idx.shape[1]
        kv_idx = F.pad(kv_idx, (0, 1), value=N)
        tile_slot = F.pad(tile_slot, (0, 1), value=-1)
        slot_col = torch.where((slot_col < 0) & (geometry(pattern, H, W)[0] < 0), zero_col, slot_col)
    else:  # halo padding may point at any token (it is masked): no zero token, no padded copy of k, v
        kv_idx = kv_idx.where(kv_idx < N, 0)
    full = bool((tile_slot >= 0).all())
    identity = q_idx.shape[0] == 1 and torch.equal(q_idx[0], torch.arange(N)) and torch.equal(kv_idx[0], torch.arange(N))
    return TilePlan(q_idx, kv_idx, tile_slot, out_row.reshape(N), slot_col, zero_col, full, identity)


def _tiled(q, k, v, pattern, terms, scale, return_weights):
    B, heads, H, W, _ = q.shape
    plan = _plan(pattern, H, W, TILE, q.device)
    if return_weights:
        return _tiled_with_weights(q, k, v, pattern, plan, terms, scale)
    halos = 2 * B * heads * plan.kv_idx.numel() * q.shape[-1] * q.element_size()
    if terms is not None and terms.requires_grad and torch.is_grad_enabled() and halos <= KEPT_HALO_BYTES:
        # small maps with a learnt bias or relative embedding (the models' layers): autograd through
        # SDPA keeps the halos and probabilities, a faster backward than recomputing them by hand;
        # tiles act as SDPA's "heads", (B, heads) as its batch: a mask without B or heads is not copied
        qt, kt, vt, add = _tiles(q, k, v, pattern, plan, terms)
        mask = add.expand(B, heads, -1, -1, -1).flatten(0, 1)
        out = F.scaled_dot_product_attention(qt.flatten(0, 1), kt.flatten(0, 1), vt.flatten(0, 1), attn_mask=mask,
                                             scale=scale)
        return _untile(out, plan, q.shape).reshape(B, heads, H, W, -1), None
    # (batch, head) pairs become the "heads" of one batch item: [1, S, H, W, d], terms [1, S, N, K]
    slices = (1, B * heads, H, W)
    qs, ks, vs = (t.reshape(*slices, t.shape[-1]) for t in (q, k, v))
    ts = None if terms is None else terms.expand(B, heads, -1, -1).reshape(1, B * heads, *terms.shape[2:])
    out = _HaloAttention.apply(qs, ks, vs, ts, pattern, plan, scale)
    return out.reshape(B, heads, H, W, -1), None


class _HaloAttention(torch.autograd.Function):
    """Tiled attention over chunks of slices ``[1, S, H, W, d]`` -> ``[1, S, N, dv]``.

    Gathered halos only live while their chunk runs (at most ``HALO_BYTES`` each): backward
    re-gathers them and recomputes the logits, keeping just the tile outputs and their log-sum-exps
    (as flash attention does), so training memory stays a few times the size of q.
    """

    @staticmethod
    def forward(ctx, q, k, v, terms, pattern, plan, scale):
        outs, lses = zip(*(_halo_forward(*c, pattern, plan, scale) for c in _chunks(q, k, v, terms, plan)))
        out_t = torch.cat(outs, 1)  # [1, S, nT * Tq, dv]
        lse = None if lses[0] is None else torch.cat(lses, 0)  # [S, nT, Tq]
        ctx.save_for_backward(q, k, v, terms, out_t, lse)
        ctx.pattern, ctx.plan, ctx.scale = pattern, plan, scale
        return out_t.clone() if plan.identity else _rows(out_t, plan.out_row)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # grad [1, S, N, dv]
        q, k, v, terms, out_t, lse = ctx.saved_tensors
        plan, N = ctx.plan, q.shape[2] * q.shape[3]
        grad_t = grad if plan.identity else grad.new_zeros(out_t.shape).index_copy_(2, plan.out_row, grad)
        dq = q.new_empty(q.shape[:2] + (N, q.shape[-1]))
        rows = N + (plan.zero_col is not None)  # row N: SASA's zero token
        dk, dv = (t.new_zeros(1, t.shape[1], rows, t.shape[-1]) for t in (k, v))
        dterms = torch.empty_like(terms) if terms is not None and ctx.needs_input_grad[3] else None
        start = 0
        for qc, kc, vc, tc in _chunks(q, k, v, terms, plan):
            part = slice(start, start + qc.shape[1])
            got = _halo_backward(qc, kc, vc, tc, out_t[:, part], None if lse is None else lse[part],
                                 grad_t[:, part], dterms is not None, ctx.pattern, plan, ctx.scale)
            dq[:, part] = got[0] if plan.identity else _rows(got[0], plan.out_row)
            for whole, g in ((dk, got[1]), (dv, got[2])):
                whole[:, part].index_add_(2, plan.kv_idx.flatten(), g.flatten(2, 3))
            if dterms is not None:
                dterms[:, part] = got[3]
            start = part.stop
        return dq.view_as(q), dk[:, :, :N].reshape(k.shape), dv[:, :, :N].reshape(v.shape), dterms, None, None, None


def _chunks(q, k, v, terms, plan):
    """Slices ``[1, S, ...]`` cut into chunks whose gathered k halo stays within ``HALO_BYTES``."""
    size = max(1, HALO_BYTES // (plan.kv_idx.numel() * q.shape[-1] * q.element_size()))
    parts = [t.split(size, dim=1) for t in (q, k, v)]
    return zip(*parts, [None] * len(parts[0]) if terms is None else terms.split(size, dim=1))


def _fused(q, v):
    """Whether PyTorch's CPU flash kernel runs, called directly for the log-sum-exp that backward needs."""
    return q.device.type == "cpu" and q.shape[-1] == v.shape[-1]


def _halo_forward(q, k, v, terms, pattern, plan, scale):
    """One chunk ``[1, c, H, W, d]``: tile outputs ``[1, c, nT * Tq, dv]`` and log-sum-exps ``[c, nT, Tq]`` or None."""
    qt, kt, vt, mask = _chunk_tiles(q, k, v, terms, pattern, plan)
    if _fused(q, v):
        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        out, lse = flash(qt, kt, vt, attn_mask=mask, scale=scale)[:2]
    else:
        out, lse = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale), None
    return out.flatten(1, 2)[None], lse


def _halo_backward(q, k, v, terms, out, lse, grad, terms_grad, pattern, plan, scale):
    """Gradients of one chunk: tile rows ``dq [1, c, nT * Tq, d]``, halo ``dk, dv [1, c, nT, Tk, d]``, dterms."""
    qt, kt, vt, mask = _chunk_tiles(q, k, v, terms, pattern, plan)
    out, grad = (t.reshape(qt.shape[:3] + (-1,)) for t in (out, grad))  # [c, nT, Tq, dv]
    dterms = None
    if lse is not None and not terms_grad:
        dqt, dkt, dvt = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad, qt, kt, vt, out, lse, 0.0, False, attn_mask=mask, scale=scale)[:3]
    else:  # softmax backward by hand, which also gives the logits' gradient for the terms
        logits = torch.matmul(qt, kt.transpose(-1, -2)).mul_(scale)  # [c, nT, Tq, Tk]
        p = (logits if mask is None else logits.add_(mask)).softmax(-1)
        dlogits = torch.matmul(grad, vt.transpose(-1, -2)).sub_((grad * out).sum(-1, keepdim=True)).mul_(p)
        dvt = torch.matmul(p.transpose(-1, -2), grad)
        dqt = torch.matmul(dlogits, kt).mul_(scale)
        dkt = torch.matmul(dlogits.transpose(-1, -2), qt).mul_(scale)
        if terms_grad:
            with torch.enable_grad():
                t = terms.detach().requires_grad_()
                add = _tile_logit_terms(plan, pattern, t, *q.shape[2:4], q.dtype)  # [1, c, nT, Tq, Tk]
                (dterms,) = torch.autograd.grad(add, t, dlogits[None])
    return dqt.flatten(1, 2)[None], dkt[None], dvt[None], dterms


def _chunk_tiles(q, k, v, terms, pattern, plan):
    """SDPA's operands for a chunk ``[1, c, ...]``: tiles as heads, ``[c, nT, T, d]``, and the mask."""
    qt, kt, vt, add = _tiles(q, k, v, pattern, plan, terms)
    mask = None if add is None else add.expand(qt.shape[:4] + (kt.shape[3],))[0]
    return qt[0], kt[0], vt[0], mask


def _tiles(q, k, v, pattern, plan, terms):
    """Gather the tiles: ``qt [B, heads, nT, Tq, d]``, ``kt, vt [B, heads, nT, Tk, d]`` and the logit terms."""
    B, heads, H, W, head_dim = q.shape
    N = H * W
    if plan.identity:
        qt, kt, vt = (t.reshape(B, heads, 1, N, -1) for t in (q, k, v))
    else:
        qt = _rows(q.reshape(B, heads, N, head_dim), plan.q_idx)
        if plan.zero_col is not None:  # token N is SASA's zero key/value
            k, v = (F.pad(t.reshape(B, heads, N, -1), (0, 0, 0, 1)) for t in (k, v))
        kt, vt = (_rows(t.reshape(B, heads, -1, t.shape[-1]), plan.kv_idx) for t in (k, v))
    add = _tile_logit_terms(plan, pattern, terms, H, W, q.dtype)  # None, or [B|1, heads|1, nT, Tq, Tk]
    return qt, kt, vt, add


def _untile(x, plan, shape):
    """Tile rows ``[B, heads, nT, Tq, d]`` back to each query's own row: ``[B, heads, N, d]``."""
    B, heads = shape[:2]
    x = x.reshape(B, heads, -1, x.shape[-1])
    return x if plan.identity else _rows(x, plan.out_row)


def _tiled_with_weights(q, k, v, pattern, plan, terms, scale):
    B, heads, H, W, _ = q.shape
    qt, kt, vt, add = _tiles(q, k, v, pattern, plan, terms)
    logits = scale * qt @ kt.transpose(-1, -2)
    probs = (logits if add is None else _add_terms(logits, add)).softmax(-1)  # [B, heads, nT, Tq, Tk]
    out = _untile(probs @ vt, plan, q.shape).reshape(B, heads, H, W, -1)
    rows = _untile(probs, plan, q.shape)  # [B, heads, N, Tk]
    weights = rows.gather(-1, plan.slot_col.clamp(min=0).expand(B, heads, -1, -1)).masked_fill(plan.slot_col < 0, 0)
    if plan.zero_col is not None:  # split the zero column's mass over the zero slots
        zero = _zero_slots(pattern, H, W, q.device)
        weights = torch.where(zero, weights * _zero_slot_share(terms, zero, q.dtype), weights)
    return out, weights.reshape(B, heads, H, W, -1)


def _rows(x, index):
    """``x[:, :, index]`` for ``x [B, heads, rows, d]`` and an index of any shape.

    ``index_select`` backpropagates with ``index_add`` (no expanded index as advanced indexing builds).
    """
    return x.index_select(2, index.flatten()).unflatten(2, index.shape)


def _tile_logit_terms(plan, pattern, terms, H, W, dtype):
    """Additive logits on the tiles ``[B|1, heads|1, nT, Tq, Tk]``: slot terms, ``-inf`` outside windows."""
    if terms is None and plan.zero_col is None and plan.full:
        return None
    add = _tile_mask(pattern, H, W, plan.q_idx.device, dtype)[None, None]  # 0 / -inf
    if terms is not None:
        per_row = terms[:, :, plan.q_idx]  # [.., nT, Tq, K]
        add = add + per_row.gather(-1, plan.tile_slot.clamp(min=0).expand(per_row.shape[:2] + plan.tile_slot.shape))
    if plan.zero_col is not None:
        zero_logit = _zero_slot_logsumexp(terms, _zero_slots(pattern, H, W, add.device), dtype)  # [.., N]
        add = torch.cat([add[..., : plan.zero_col], zero_logit[..., plan.q_idx, None].expand(add.shape[:-1] + (1,))], -1)
    return add


@functools.lru_cache(maxsize=64)
def _tile_mask(pattern, H, W, device, dtype):
    """``[nT, Tq, Tk]``: 0 where the halo key is in the query's window, ``-inf`` elsewhere (cached)."""
    plan = _plan(pattern, H, W, TILE, device)
    return torch.zeros(plan.tile_slot.shape, dtype=dtype, device=device).masked_fill(plan.tile_slot < 0, -math.inf)


def _add_terms(logits, add):
    return logits.masked_fill(~add, -math.inf) if add.dtype == torch.bool else logits + add


def _zero_slot_share(terms, zero, dtype):
    """Each zero slot's share of its query's zero-column mass, ``[.., N, K]``."""
    if terms is None:
        return zero.to(dtype) / zero.sum(-1, keepdim=True).clamp(min=1)
    masked = terms.masked_fill(~zero, -math.inf)
    return (masked - masked.logsumexp(-1, keepdim=True).masked_fill(~zero.any(-1, keepdim=True), 0)).exp()


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
# device copies of the geometry (cached)
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=128)
def _geometry_on(pattern: Pattern, H: int, W: int, device: torch.device):
    keys, offsets, extent = geometry(pattern, H, W)
    return keys.to(device), offsets.to(device), extent


def _zero_slots(pattern, H, W, device):
    """``BoolTensor [N, K]``: slots that are SASA zero keys (all False for other patterns)."""
    keys = _geometry_on(pattern, H, W, device)[0]
    return (keys < 0) & pattern.zero_slots


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
        index = torch.zeros(L, L + 1, dtype=torch.long).scatter_(1, rule.keys.where(rule.keys >= 0, L), rule.offsets + k - 1)
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
