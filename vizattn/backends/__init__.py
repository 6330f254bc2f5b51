"""The backends of ``vizattn.attend``, one module each, all exact (docs/semantics.md).

Each module has ``NAME``, ``can_run(q, pattern, rel_emb, return_weights, choosing)`` (None, or a
sentence saying why it cannot run this call; ``choosing``: also the rules of speed that
``backend="auto"`` applies) and ``run(q, k, v, pattern, bias, rel_emb, scale, return_weights)``
-> ``(out [B, heads, H, W, dv], weights [B, heads, H, W, K] or None)``. ``attend`` validates its
inputs and then, for ``"auto"``, takes the first of ``ORDER`` whose ``can_run`` says None:

- ``flex``: FlexAttention, compiled; sliding windows on CUDA.
- ``native``: a C++ kernel over the key table (``K`` logits per query), float32/float64 on the CPU,
  for windows of up to 256 slots and groups of up to 49, once built (``python -m vizattn.native build``).
- ``tiled``: tiles of neighbouring queries attend to their halos in one batched SDPA; any device.
- ``reference``: each query's softmax over its own gathered slots; obvious, for tests and tiny maps.

>>> import torch; from vizattn.patterns import Global
>>> choose(torch.zeros(1, 1, 4, 4, 8), Global(), None, False).NAME
'tiled'
"""

from __future__ import annotations

from . import flex, native, reference, tiled

ORDER = (flex, native, tiled, reference)
BY_NAME = {backend.NAME: backend for backend in ORDER}


def choose(q, pattern, rel_emb, return_weights):
    """The first backend of ``ORDER`` that can run this call and is the fastest choice for it."""
    return next(b for b in ORDER if b.can_run(q, pattern, rel_emb, return_weights, choosing=True) is None)
