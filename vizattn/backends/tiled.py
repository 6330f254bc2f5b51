"""The ``"tiled"`` backend of ``attend``: a tile of neighbouring queries attends to its halo.

Queries are cut into tiles of neighbours inside one group of the pattern (dilation group, block,
grid line); a tile attends to the union of its windows (its *halo*) with a small mask, and all
tiles run as one batched ``scaled_dot_product_attention``. Partition patterns have tile = group
and need no mask. Memory grows with ``N * halo``. Training runs one autograd Function over chunks
of (batch, head) slices whose backward re-gathers the halos instead of keeping them. ``Global``
without weights or relative embeddings is one plain SDPA call (a bias becomes a dense table).
A halo holds keys that some of its queries do not see: a NaN or inf in k or v, which the masked
product would spread to them (``NaN + -inf``, ``0 * NaN``), takes the reference's per-slot path.

Glossary as in ``vizattn.functional``: ``q, k, v [B, heads, H, W, head_dim]``.

>>> import torch; from vizattn.patterns import Neighborhood
>>> q = k = v = torch.randn(1, 2, 9, 9, 4)
>>> out, weights = run(q, k, v, Neighborhood(3), None, None, 0.5, False)  # no bias, rel_emb; scale 0.5
>>> out.shape, weights
(torch.Size([1, 2, 9, 9, 4]), None)
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..geometry import AxisRule, geometry, table_index
from ..patterns import Global, Pattern
from ..slots import slot_terms, zero_slot_logsumexp
from . import reference

NAME = "tiled"

TILE = 8  # queries per axis in a sliding-window tile (see benchmarks/attention.py)
HALO_BYTES = 2 * 2**20  # (batch, head) slices run in chunks whose gathered k halo stays below this (see _chunks)
KEPT_HALO_BYTES = 16 * 2**20  # training with learnt terms: k and v halos up to this size are kept for backward


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
    takes ``[nT * Tq]``: whether the tile row is the one its query takes; owned: all are.
    kv_source ``[M]``: the halo columns (``tile * Tk + column``) that hold a token in some window of
    their tile, grouped by token in ascending order; kv_start ``[N]``: where each token's group starts
    (how backward sums a token's key gradients).
    identity: one tile holding every query in order, whose halo is every token in order (Global):
    no gathering needed.
    """

    q_idx: torch.Tensor
    kv_idx: torch.Tensor
    tile_slot: torch.Tensor
    out_row: torch.Tensor
    slot_col: torch.Tensor
    zero_col: int | None
    takes: torch.Tensor
    owned: bool
    kv_source: torch.Tensor
    kv_start: torch.Tensor
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


def _plan(pattern: Pattern, H: int, W: int, tile: int, device: torch.device) -> TilePlan:
    """The tile plan of a geometry, made once per geometry and tile size."""
    if torch.device(device).type != "cpu":
        return geometry(pattern, H, W, device).derived(("tile plan", tile),
                                                       lambda g: _plan(pattern, H, W, tile, "cpu").to(device))
    return geometry(pattern, H, W).derived(("tile plan", tile), lambda g: _make_plan(g, tile))


def _make_plan(g, tile: int) -> TilePlan:
    pattern, H, W, rows, cols = g.pattern, g.H, g.W, g.rows, g.cols
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
        slot_col = torch.where((slot_col < 0) & g.zero, zero_col, slot_col)
    else:  # halo padding may point at any token (it is masked): no zero token, no padded copy of k, v
        kv_idx = kv_idx.where(kv_idx < N, 0)
    full = bool((tile_slot >= 0).all())
    everything = torch.arange(N)
    identity = q_idx.shape[0] == 1 and torch.equal(q_idx[0], everything) and torch.equal(kv_idx[0], everything)
    out_row = out_row.reshape(N)
    takes = torch.zeros(q_idx.numel(), dtype=torch.bool).index_fill_(0, out_row, True)
    token = kv_idx.flatten()
    used = ((tile_slot >= 0).any(1).flatten() & (token < N)).nonzero().squeeze(1)  # others get no gradient
    kv_source = used[token[used].argsort(stable=True)]
    count = torch.bincount(token[used], minlength=N)
    return TilePlan(q_idx, kv_idx, tile_slot, out_row, slot_col, zero_col, takes, bool(takes.all()), kv_source,
                    count.cumsum(0) - count, full, identity)


def can_run(q, pattern, rel_emb, return_weights, choosing):
    """Always None: tiles run on any device and dtype."""
    return None


def run(q, k, v, pattern, bias, rel_emb, scale, return_weights):
    """``(out [B, heads, H, W, dv], weights [B, heads, H, W, K] or None)``."""
    if isinstance(pattern, Global) and rel_emb is None and not return_weights:
        return _global(q, k, v, bias, scale), None
    terms = slot_terms(q, pattern, bias, rel_emb, scale)
    B, heads, H, W, _ = q.shape
    plan = _plan(pattern, H, W, TILE, q.device)
    if not plan.full and not finite(k, v):
        return reference.attend_slots(q, k, v, pattern, terms, scale, return_weights)
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


def _global(q, k, v, bias, scale):
    """``Global``: plain SDPA; a bias becomes a dense ``[heads, N, N]`` table, indexed per axis (no ``[N, N, 2]``)."""
    B, heads, H, W, head_dim = q.shape
    mask = None
    if bias is not None:
        dh, dw = torch.arange(H, device=q.device), torch.arange(W, device=q.device)
        offsets = torch.broadcast_tensors((dh[None, :] - dh[:, None])[:, None, :, None],
                                          (dw[None, :] - dw[:, None])[None, :, None, :])  # [H, W, H, W] each
        mask = bias.flatten(1)[:, table_index(*offsets, (H, W)).reshape(H * W, H * W)][None]  # [1, heads, N, N]
    qf, kf, vf = (t.reshape(B, heads, H * W, -1) for t in (q, k, v))
    return F.scaled_dot_product_attention(qf, kf, vf, attn_mask=mask, scale=scale).reshape(B, heads, H, W, -1)


def finite(*tensors):
    """Whether every value of every tensor is finite, read from their sum (one fast reduction each, float32 or
    wider): a NaN or inf makes it NaN or inf. A sum of finite values that overflows says False too; such
    inputs then take the exact per-slot path, only slower."""
    return bool(torch.isfinite(sum(t.sum(dtype=torch.float32) if t.element_size() < 4 else t.sum() for t in tensors)))


class _HaloAttention(torch.autograd.Function):
    """Tiled attention over chunks of slices ``[1, S, H, W, d]`` -> ``[1, S, N, dv]``.

    Gathered halos only live while their chunk runs (at most ``HALO_BYTES`` each): backward
    re-gathers them and recomputes the logits, keeping just the tile outputs and their log-sum-exps
    (as flash attention does), so training memory stays a few times the size of q.
    """

    @staticmethod
    def forward(ctx, q, k, v, terms, pattern, plan, scale):
        out = q.new_empty(q.shape[:2] + (q.shape[2] * q.shape[3], v.shape[-1]))  # [1, S, N, dv]
        lses, start = [], 0
        for chunk in _chunks(q, k, v, terms, plan):
            part = slice(start, start + chunk[0].shape[1])
            out_t, lse = _halo_forward(*chunk, pattern, plan, scale)  # [1, c, nT * Tq, dv], [c, nT, Tq]
            if plan.identity:
                out[:, part] = out_t
            else:
                _rows(out_t, plan.out_row, out=out[:, part])
            lses.append(lse)
            start = part.stop
        lse = None if lses[0] is None else torch.cat(lses, 0)  # [S, nT, Tq]
        ctx.save_for_backward(q, k, v, terms, out, lse)
        ctx.pattern, ctx.plan, ctx.scale = pattern, plan, scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # grad [1, S, N, dv]
        q, k, v, terms, out, lse = ctx.saved_tensors
        plan, N = ctx.plan, q.shape[2] * q.shape[3]
        dq = q.new_empty(q.shape[:2] + (N, q.shape[-1]))
        dk, dv = [], []
        dterms = torch.empty_like(terms) if terms is not None and ctx.needs_input_grad[3] else None
        (nT, Tq), Tk = plan.q_idx.shape, plan.kv_idx.shape[1]  # rows of the tile gradients, tile-major or not:
        take = {True: plan.out_row, False: plan.out_row % Tq * nT + plan.out_row // Tq}
        source = {True: plan.kv_source, False: plan.kv_source % Tk * nT + plan.kv_source // Tk}
        start = 0
        for qc, kc, vc, tc in _chunks(q, k, v, terms, plan):
            part = slice(start, start + qc.shape[1])
            out_t, grad_t = (t[:, part] if plan.identity else _rows(t[:, part], plan.q_idx) for t in (out, grad))
            if not plan.owned:  # tile rows hold their query's row; those that their query does not take get no gradient
                grad_t = grad_t * plan.takes.view(plan.q_idx.shape).to(grad.dtype)[..., None]
            got = _halo_backward(qc, kc, vc, tc, out_t, None if lse is None else lse[part],
                                 grad_t, dterms is not None, ctx.pattern, plan, ctx.scale)
            rows, tile_major = _as_rows(got[0])
            dq[:, part] = rows if plan.identity else _rows(rows, take[tile_major])
            for parts, g in ((dk, got[1]), (dv, got[2])):
                rows, tile_major = _as_rows(g)
                parts.append(_sum_rows(rows, source[tile_major], plan.kv_start))
            if dterms is not None:
                dterms[:, part] = got[3]
            start = part.stop
        dk, dv = (torch.cat(parts, 1) for parts in (dk, dv))
        return dq.view_as(q), dk.view_as(k), dv.view_as(v), dterms, None, None, None


def _as_rows(x):
    """Tile gradients ``[c, nT, T, d]`` as rows ``[1, c, nT * T, d]`` without a copy, and whether they are tile-major.

    Tile-major: row ``t * T + r`` is tile t's row r. PyTorch's CPU flash backward returns ``[c, T, nT, d]``
    in memory, whose rows are ``r * nT + t``.
    """
    if not x.is_contiguous() and x.transpose(1, 2).is_contiguous():
        return x.transpose(1, 2).flatten(1, 2)[None], False
    return x.flatten(1, 2)[None], True


def _chunks(q, k, v, terms, plan):
    """Slices ``[1, S, ...]`` cut into chunks whose gathered k halo stays within ``HALO_BYTES``.

    Small chunks also keep each chunk's temporaries below glibc's mmap threshold, so that they are
    reused from the heap instead of being mapped and page-faulted afresh (4 MiB chunks at 56x56
    cost ~5000 page faults per forward + backward, 10% of its time).
    """
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
    """Gradients of one chunk: ``dq [c, nT, Tq, d]``, halo ``dk, dv [c, nT, Tk, d]`` (any memory order), dterms."""
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
    return dqt, dkt, dvt, dterms


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
        zero = geometry(pattern, H, W, q.device).zero
        weights = torch.where(zero, weights * _zero_slot_share(terms, zero, q.dtype), weights)
    return out, weights.reshape(B, heads, H, W, -1)


def _rows(x, index, out=None):
    """``x[:, :, index]`` for ``x [B, heads, rows, d]`` and an index of any shape (into ``out`` if given).

    One ``index_select`` over the flattened rows of every slice (a row copy each, several times
    faster than selecting on dim 2); it backpropagates with ``index_add``, no expanded index.
    """
    B, heads, rows, d = x.shape
    flat = _flat_index(index, B * heads, rows, x.device)
    if out is not None:
        return torch.index_select(x.reshape(-1, d), 0, flat, out=out.view(-1, d))
    return x.reshape(-1, d).index_select(0, flat).view(B, heads, *index.shape, d)


def _sum_rows(rows, source, start):
    """Each token t's sum of its rows ``rows[source[start[t]:start[t + 1]]]``: ``[1, c, n, d]`` -> ``[1, c, N, d]``.

    One ``embedding_bag`` (sum) over every slice: several times faster than ``index_add``, and no zeroed copy.
    """
    _, c, n, d = rows.shape
    sources = _flat_index(source, c, n, rows.device)
    offsets = _flat_index(start, c, source.numel(), rows.device)
    return F.embedding_bag(sources, rows.reshape(-1, d), offsets, mode="sum").view(1, c, start.numel(), d)


def _flat_index(index, slices, rows, device):
    """Row ``index`` of every one of ``slices`` slices of ``rows`` rows, as one index into the flattened rows."""
    if slices == 1:  # the usual chunk from 56x56 on (HALO_BYTES)
        return index.flatten()
    return (torch.arange(slices, device=device)[:, None] * rows + index.flatten()).flatten()


def _tile_logit_terms(plan, pattern, terms, H, W, dtype):
    """Additive logits on the tiles ``[B|1, heads|1, nT, Tq, Tk]``: slot terms, ``-inf`` outside windows."""
    if terms is None and plan.zero_col is None and plan.full:
        return None
    add = geometry(pattern, H, W, plan.q_idx.device).derived(("tile mask", dtype, plan.tile_slot.shape),
                                                                    lambda g: _tile_mask(plan, dtype))
    add = add[None, None]  # 0 / -inf
    if terms is not None:
        per_row = terms[:, :, plan.q_idx]  # [.., nT, Tq, K]
        add = add + per_row.gather(-1, plan.tile_slot.clamp(min=0).expand(per_row.shape[:2] + plan.tile_slot.shape))
    if plan.zero_col is not None:
        zero_logit = zero_slot_logsumexp(terms, geometry(pattern, H, W, add.device).zero, dtype)  # [.., N]
        zero_column = zero_logit[..., plan.q_idx, None].expand(add.shape[:-1] + (1,))
        add = torch.cat([add[..., : plan.zero_col], zero_column], -1)
    return add


def _tile_mask(plan, dtype):
    """``[nT, Tq, Tk]``: 0 where the halo key is in the query's window, ``-inf`` elsewhere."""
    return torch.zeros(plan.tile_slot.shape, dtype=dtype, device=plan.tile_slot.device).masked_fill(
        plan.tile_slot < 0, -math.inf)


def _add_terms(logits, add):
    return logits.masked_fill(~add, -math.inf) if add.dtype == torch.bool else logits + add


def _zero_slot_share(terms, zero, dtype):
    """Each zero slot's share of its query's zero-column mass, ``[.., N, K]``."""
    if terms is None:
        return zero.to(dtype) / zero.sum(-1, keepdim=True).clamp(min=1)
    masked = terms.masked_fill(~zero, -math.inf)
    return (masked - masked.logsumexp(-1, keepdim=True).masked_fill(~zero.any(-1, keepdim=True), 0)).exp()
