"""The ``"native"`` backend of ``attend``: a C++ kernel that computes exactly ``K`` logits per query.

Every pattern is a key table (``vizattn.slots.geometry_on``): query n attends to the tokens
``keys[n, s]``. The kernel (``vizattn/csrc/slot_attention.cpp``) runs over the table directly,
one query at a time in parallel (``at::parallel_for``: ``torch.set_num_threads`` applies), with the
rows of q, k, v held in vector registers; it keeps the weights ``[B, heads, N, K]`` for backward
(memory ``N * K``, also what ``return_weights`` gives). Backward computes dq and the logits'
gradient per query, then dk and dv per key token from an inverse table (the (query, slot) pairs
that use each token, cached per geometry): no write races, the same sums in the same order on any
number of threads.

The kernel is compiled on first use with ``torch.utils.cpp_extension.load`` (a C++ compiler and
ninja are needed; ``python3 dev.py`` builds it during set-up; loading the cached build takes about
0.25 s, paid by the first call that uses it) into torch's extension cache, with ``-fopenmp``
(``at::parallel_for`` is OpenMP in torch's CPU builds; the extension shares torch's already
loaded ``libgomp.so.1``, so torch's thread count applies), one build per instruction set:
``-mavx512f -mavx512vl -mavx512bw -mavx512dq -mavx2 -mfma`` where torch reports AVX512,
``-mavx2 -mfma`` for AVX2, none otherwise, never ``-march=native``. The capability is part of
the build's name, so a cache shared with another CPU cannot load a binary it cannot run.

Glossary as in ``vizattn.functional``: ``q, k, v [B, heads, H, W, head_dim]``.

>>> import torch; from vizattn.patterns import Neighborhood
>>> q = k = v = torch.randn(1, 2, 9, 9, 8)
>>> out, weights = native(q, k, v, Neighborhood(3), None, 0.5, True)  # terms=None, scale=0.5
>>> out.shape, weights.shape
(torch.Size([1, 2, 9, 9, 8]), torch.Size([1, 2, 9, 9, 9]))
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from .slots import geometry_on

SOURCE = Path(__file__).parent / "csrc" / "slot_attention.cpp"
ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}
CPU = torch.device("cpu")


def _capability():
    return torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else "DEFAULT"


def build_name():
    """The extension's name in torch's cache: one per instruction set."""
    return "vizattn_slot_attention_" + _capability().lower()


@functools.lru_cache(maxsize=None)
def _extension():
    """The compiled kernel, or a string saying why it cannot be had."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler: {compiler!r} is not on PATH (install g++, or set CXX)"
    try:
        from torch.utils.cpp_extension import load, verify_ninja_availability

        verify_ninja_availability()
    except (ImportError, RuntimeError) as error:
        return f"torch cannot build extensions here ({error}); install ninja"
    flags = ["-O3", "-std=c++20", "-fopenmp"] + ISA_FLAGS.get(_capability(), [])
    try:
        return load(name=build_name(), sources=[str(SOURCE)], extra_cflags=flags, extra_ldflags=["-fopenmp"])
    except (OSError, RuntimeError, ImportError) as error:  # a failed compile (its log went to stderr)
        return f"building {SOURCE.name} failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}"


def unavailable():
    """None when the kernel is built (building it now if need be), else why it cannot be."""
    ext = _extension()
    return ext if isinstance(ext, str) else None


def kernel():
    """The compiled extension; RuntimeError stating why when it cannot be built."""
    ext = _extension()
    if isinstance(ext, str):
        raise RuntimeError(f"the native backend needs its C++ kernel compiled, which is impossible here: {ext}")
    return ext


@functools.lru_cache(maxsize=128)
def tables(pattern, H: int, W: int):
    """The key table, a visiting order and the inverse table: ``keys [N, K]``, ``order [N]``,
    ``start [N + 1]``, ``uses [M]``.

    ``order`` sorts the queries by their largest key (the same for all members of a partition's
    group, and a token of it; near the query itself for sliding windows), which puts queries that
    share keys side by side. ``uses[start[j] : start[j + 1]]`` are the flat slots ``n * K + s``
    whose key is token j, in order.
    """
    keys = geometry_on(pattern, H, W, CPU)[0].contiguous()
    order = keys.max(1).values.argsort(stable=True)
    flat = keys.flatten()
    by_token = flat.argsort(stable=True)
    uses = by_token[flat[by_token] >= 0].contiguous()
    count = torch.bincount(flat[uses], minlength=H * W)
    start = torch.cat([count.new_zeros(1), count.cumsum(0)])
    return keys, order, start, uses


def native(q, k, v, pattern, terms, scale, return_weights):
    """``attend``'s backend signature: ``(out [B, heads, H, W, dv], weights [B, heads, H, W, K] or None)``."""
    if q.device.type != "cpu" or q.dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"the native backend runs on float32 or float64 CPU tensors; got {q.dtype} on {q.device}"
        )
    B, heads, H, W, _ = q.shape
    rows = lambda t: t.reshape(B * heads, H * W, t.shape[-1]).contiguous()  # noqa: E731  [S, N, d]
    terms = None if terms is None else terms.contiguous()  # [B or 1, heads or 1, N, K]
    out, weights = _SlotAttention.apply(rows(q), rows(k), rows(v), terms, pattern, H, W, heads, scale)
    weights = weights.view(B, heads, H, W, -1) if return_weights else None
    return out.view(B, heads, H, W, -1), weights


class _SlotAttention(torch.autograd.Function):
    """``q, k [S, N, d], v [S, N, dv], terms [Bt, Ht, N, K] or None -> (out [S, N, dv], weights [S, N, K])``."""

    @staticmethod
    def forward(ctx, q, k, v, terms, pattern, H, W, heads, scale):
        keys, order, start, uses = tables(pattern, H, W)
        out, weights = kernel().forward(q, k, v, keys, order, terms, scale, pattern.zero_slots, heads)
        ctx.save_for_backward(q, k, v, weights)
        ctx.set_materialize_grads(False)
        ctx.tables, ctx.scale, ctx.heads = (keys, order, start, uses), scale, heads
        ctx.terms_shape = None if terms is None else terms.shape
        return out, weights

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_weights):
        q, k, v, weights = ctx.saved_tensors
        keys, order, start, uses = ctx.tables
        if grad_out is None:  # only the weights were used
            grad_out = v.new_zeros(q.shape[:2] + v.shape[2:])
        if grad_weights is not None:
            grad_weights = grad_weights.contiguous()
        dq, dk, dv, dlogits = kernel().backward(q, k, v, keys, order, weights, grad_out.contiguous(), grad_weights,
                                                start, uses, ctx.scale)
        dterms = None
        if ctx.needs_input_grad[3]:
            S, N, K = dlogits.shape
            dterms = dlogits.view(S // ctx.heads, ctx.heads, N, K).sum_to_size(ctx.terms_shape)
        return dq, dk, dv, dterms, None, None, None, None, None
