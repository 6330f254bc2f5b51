"""The ``"native"`` backend of ``attend``: a C++ kernel that computes exactly ``K`` logits per query.

Every pattern is a key table (``vizattn.geometry``): query n attends to the tokens
``keys[n, s]``. The kernel (``vizattn/csrc/slot_attention.cpp``) runs over the table directly,
one query at a time in parallel (``at::parallel_for``: ``torch.set_num_threads`` applies), with the
rows of q, k, v held in vector registers; it keeps the weights ``[B, heads, N, K]`` for backward
(memory ``N * K``, also what ``return_weights`` gives). Backward computes dq and the logits'
gradient per query, then dk and dv per key token from an inverse table (the (query, slot) pairs
that use each token, cached per geometry): no write races, the same sums in the same order on any
number of threads.

The kernel is compiled once, by an explicit step: ``python -m vizattn.native build`` (``python3 dev.py``
runs it during set-up; a C++ compiler and ninja are needed, about a minute). ``attend`` never
compiles: it loads the build (about 0.25 s, paid by the first call that uses it) when the cache
holds one for this source, these flags and this torch, and otherwise uses the tiled backend and
says once, with a warning, why and how to build. The build goes into torch's extension cache
(``TORCH_EXTENSIONS_DIR`` if set), with ``-fopenmp`` (``at::parallel_for`` is OpenMP in torch's CPU
builds; the extension shares torch's already loaded ``libgomp.so.1``, so torch's thread count
applies), one build per instruction set: ``-mavx512f -mavx512vl -mavx512bw -mavx512dq -mavx2 -mfma``
where torch reports AVX512, ``-mavx2 -mfma`` for AVX2, none otherwise, never ``-march=native``.
The capability is part of the build's name, so a cache shared with another CPU cannot load a
binary it cannot run.

Glossary as in ``vizattn.functional``: ``q, k, v [B, heads, H, W, head_dim]``.

>>> import torch; from vizattn.patterns import Neighborhood
>>> q = k = v = torch.randn(1, 2, 9, 9, 8)
>>> if unavailable() is None:  # built: python -m vizattn.native build
...     out, weights = run(q, k, v, Neighborhood(3), None, None, 0.5, True)  # no bias, rel_emb; scale 0.5
...     assert out.shape == (1, 2, 9, 9, 8) and weights.shape == (1, 2, 9, 9, 9)
>>> can_run(q.half(), Neighborhood(3), None, False, choosing=False)
'the native backend runs on float32 or float64 CPU tensors; got torch.float16 on cpu'
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import sys
import warnings
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from ..geometry import geometry
from ..patterns import Global
from ..slots import slot_terms

NAME = "native"
SOURCE = Path(__file__).parents[1] / "csrc" / "slot_attention.cpp"
ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}
BUILD_COMMAND = "python -m vizattn.native build"
# the most key slots per query for which the native kernel beats the tiled backend (benchmarks/attention.py,
# 2 cores): a sliding window computes halo x tile logits in tiled, K in native; a partition's group is
# tiled's exact tile, where its GEMMs win once groups are large (LDA I8 at 64x64, K = 64: 1.1x slower)
MAX_SLOTS = {"sliding": 256, "partition": 49}


def can_run(q, pattern, rel_emb, return_weights, choosing):
    """None, or why not: a tensor that is not float32/float64 on the CPU, or no build in the cache (then,
    when choosing, a warning once per process saying how to build); when choosing also ``Global`` and
    windows or groups larger than ``MAX_SLOTS`` (the tiled backend's GEMMs are faster there)."""
    if q.device.type != "cpu" or q.dtype not in (torch.float32, torch.float64):
        return f"the native backend runs on float32 or float64 CPU tensors; got {q.dtype} on {q.device}"
    if choosing:
        if isinstance(pattern, Global):
            return "Global is one SDPA call in the tiled backend"
        K = geometry(pattern, *q.shape[2:4]).keys.shape[1]
        if K > MAX_SLOTS["partition" if pattern.partition else "sliding"]:
            return f"{K} slots per query: the tiled backend is faster"
    why = unavailable()
    if why is not None and choosing:
        _warn_once(why)
    return why


@functools.lru_cache(maxsize=None)
def _warn_once(why):
    warnings.warn(f"vizattn: the native attention kernel is unavailable, using the tiled backend: {why}",
                  stacklevel=6)  # at the caller of attend


def _capability():
    return torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else "DEFAULT"


def build_name():
    """The extension's name in torch's cache: one per instruction set."""
    return "vizattn_slot_attention_" + _capability().lower()


def _flags():
    return ["-O3", "-std=c++20", "-fopenmp"] + ISA_FLAGS.get(_capability(), [])


def build_directory() -> Path:
    """Where the build lives: ``$TORCH_EXTENSIONS_DIR/<name>``, else torch's default cache layout."""
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        get_default_build_root(), f"py{sys.version_info.major}{sys.version_info.minor}_cpu")
    return Path(root) / build_name()


def _digest():
    """What a build is built from: the source, the flags, the torch version."""
    parts = [SOURCE.read_bytes(), " ".join(_flags()).encode(), torch.__version__.encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


def build(verbose: bool = False):
    """Compile the kernel into the cache (``python -m vizattn.native build``); None, or why it failed."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler: {compiler!r} is not on PATH (install g++, or set CXX)"
    try:
        from torch.utils.cpp_extension import load, verify_ninja_availability

        verify_ninja_availability()
    except (ImportError, RuntimeError) as error:
        return f"torch cannot build extensions here ({error}); install ninja"
    directory = build_directory()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        load(name=build_name(), sources=[str(SOURCE)], extra_cflags=_flags(), extra_ldflags=["-fopenmp"],
             build_directory=str(directory), verbose=verbose)
    except (OSError, RuntimeError, ImportError) as error:  # a failed compile (its log went to stderr)
        return f"building {SOURCE.name} failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
    (directory / "vizattn.sha256").write_text(_digest() + "\n", encoding="utf-8")
    _extension.cache_clear()
    return None


@functools.lru_cache(maxsize=None)
def _extension():
    """The built kernel, imported from the cache without compiling, or a string saying why it cannot be."""
    directory = build_directory()
    stamp, library = directory / "vizattn.sha256", directory / f"{build_name()}.so"
    if not (stamp.is_file() and library.is_file() and stamp.read_text(encoding="utf-8").strip() == _digest()):
        return (f"its C++ kernel is not built for this source and torch {torch.__version__} in {directory}; "
                f"build it once with `{BUILD_COMMAND}`")
    try:
        spec = importlib.util.spec_from_file_location(build_name(), library)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (ImportError, OSError) as error:
        return f"the build in {directory} does not load ({error}); rebuild it with `{BUILD_COMMAND}`"
    return module


def unavailable():
    """None when the kernel's build is in the cache (it is not compiled here), else why not."""
    ext = _extension()
    return ext if isinstance(ext, str) else None


def kernel():
    """The built extension; RuntimeError stating why when there is none."""
    ext = _extension()
    if isinstance(ext, str):
        raise RuntimeError(f"the native backend needs its C++ kernel: {ext}")
    return ext


def tables(g):
    """A geometry's key table, a visiting order and the inverse table: ``keys [N, K]``, ``order [N]``,
    ``start [N + 1]``, ``uses [M]``.

    ``order`` sorts the queries by their largest key (the same for all members of a partition's
    group, and a token of it; near the query itself for sliding windows), which puts queries that
    share keys side by side. ``uses[start[j] : start[j + 1]]`` are the flat slots ``n * K + s``
    whose key is token j, in order.
    """
    keys = g.keys.contiguous()
    order = keys.max(1).values.argsort(stable=True)
    flat = keys.flatten()
    by_token = flat.argsort(stable=True)
    uses = by_token[flat[by_token] >= 0].contiguous()
    count = torch.bincount(flat[uses], minlength=g.H * g.W)
    start = torch.cat([count.new_zeros(1), count.cumsum(0)])
    return keys, order, start, uses


def run(q, k, v, pattern, bias, rel_emb, scale, return_weights):
    """``(out [B, heads, H, W, dv], weights [B, heads, H, W, K] or None)``."""
    terms = slot_terms(q, pattern, bias, rel_emb, scale)
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
        keys, order, start, uses = geometry(pattern, H, W).derived("native tables", tables)
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
