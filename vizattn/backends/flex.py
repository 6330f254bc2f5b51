"""The ``"flex"`` backend of ``attend``: PyTorch's FlexAttention with a cached block mask.

Compiled on CUDA, where ``attend`` picks it for sliding windows; eager (unfused, forward only) on
CPU, for cross-checks. No weights, no SASA zero slots, no relative embeddings; a bias table becomes
a ``score_mod`` that reads it through per-axis index tables. Its blocks read keys that a mask then
drops, so a NaN or inf in k or v (which ``0 * NaN`` would spread) takes the reference's path.

Glossary as in ``vizattn.functional``: ``q, k, v [B, heads, H, W, head_dim]``.

>>> import torch, warnings; from vizattn.patterns import Neighborhood
>>> q = k = v = torch.randn(1, 2, 5, 6, 4)
>>> with warnings.catch_warnings():
...     warnings.simplefilter("ignore")  # eager FlexAttention on CPU says it is unfused
...     run(q, k, v, Neighborhood(3), None, None, 0.5, False)[0].shape
torch.Size([1, 2, 5, 6, 4])
"""

from __future__ import annotations

import functools

import torch

from ..geometry import axis_mask, geometry, table_index
from . import reference
from .tiled import finite

NAME = "flex"


def api():
    """``torch.nn.attention.flex_attention``, or None in a torch without it."""
    try:
        from torch.nn.attention import flex_attention
    except ImportError:
        return None
    return flex_attention


def can_run(q, pattern, rel_emb, return_weights, choosing):
    """None, or why not: no FlexAttention, weights, relative embeddings or zero slots asked for; when
    choosing, anything but a sliding window on CUDA (on CPU it runs eager and unfused)."""
    if api() is None:
        return f"this torch ({torch.__version__}) has no FlexAttention"
    if return_weights or rel_emb is not None or pattern.zero_slots:
        return ("the flex backend supports neither return_weights, rel_emb nor zero-padded slots; "
                f"got return_weights={return_weights}, rel_emb given={rel_emb is not None}, pattern={pattern}")
    if choosing and not (q.is_cuda and not pattern.partition):
        return "auto uses flex for sliding windows on CUDA only"
    return None


def run(q, k, v, pattern, bias, rel_emb, scale, return_weights):
    """``(out [B, heads, H, W, dv], None)``."""
    if not finite(k, v):
        return reference.run(q, k, v, pattern, bias, None, scale, False)
    B, heads, H, W, head_dim = q.shape
    score_mod = None
    if bias is not None:
        g = geometry(pattern, H, W, q.device)
        _, offset_h, _, offset_w = g.derived("flex tables", _tables)
        table = bias.flatten(1)  # [heads, (2kh-1) * (2kw-1)]

        def score_mod(score, b, h, q_idx, kv_idx):
            dh, dw = offset_h[q_idx // W, kv_idx // W], offset_w[q_idx % W, kv_idx % W]
            return score + table[h, table_index(dh, dw, g.extent)]

    qf, kf, vf = (t.reshape(B, heads, H * W, -1) for t in (q, k, v))
    out = _kernel(q.device.type)(qf, kf, vf, score_mod=score_mod, block_mask=block_mask(pattern, H, W, q.device),
                                 scale=scale)
    return out.reshape(B, heads, H, W, -1), None


def _tables(g):
    """Per-axis lookup tables ``[L, L]`` of a geometry: is key j in query i's window, and its offset."""
    out = []
    for rule in (g.rows, g.cols):
        L = rule.keys.shape[0]
        slots = rule.keys.where(rule.keys >= 0, L)
        offset = torch.zeros(L, L + 1, dtype=torch.long).scatter_(1, slots, rule.offsets)[:, :L]
        out += [axis_mask(rule).to(g.device), offset.to(g.device)]
    return tuple(out)


def block_mask(pattern, H: int, W: int, device: torch.device):
    """The pattern as FlexAttention's block mask on ``N = H * W`` tokens (made once per geometry)."""
    g = geometry(pattern, H, W, device)
    member_h, _, member_w, _ = g.derived("flex tables", _tables)

    def mask_mod(b, h, q_idx, kv_idx):
        return member_h[q_idx // W, kv_idx // W] & member_w[q_idx % W, kv_idx % W]

    return g.derived("flex block mask", lambda g: api().create_block_mask(mask_mod, None, None, H * W, H * W,
                                                                            device=str(device)))


@functools.lru_cache(maxsize=None)
def _kernel(device_type: str):
    flex = api().flex_attention
    return torch.compile(flex, dynamic=False) if device_type == "cuda" else flex
