"""The flow operators and their composition: each attention call as a sparse ``[N, K]`` table, each
down-sampling gap as separable incidences, row vectors propagated from the output back to the pixels.

Glossary as in ``vizattn.patterns``. A layer's tokens are ``prefix`` class tokens followed by its
``h x w`` grid, ``N = prefix + h * w`` (flat ``t = prefix + i * w + j``). An operator ``M`` has rows
for output tokens and columns for input tokens, and ``M[q] = s_q (a e_q + F[q])`` where ``F [B, N, K]``
holds its weights on the key table ``keys [N, K]`` (``-1``: no token; that weight leaves the map),
``a`` is the identity's weight and ``s [B, N]`` an optional row scale (rollout's renormalisation).
A whole-model map is a row vector ``v`` over the last layer's tokens carried back: ``v <- v M``.
Nothing here forms an ``N x N`` matrix.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from ..receptive import Branches

Pair = tuple[int, int]


@dataclasses.dataclass(eq=False)
class Operator:
    """One attention call as a flow operator, and the down-sampling ``gap`` that leads to its map.

    ``name``, ``kind``: the probe record's; ``grid``: its ``(h, w)`` token grid; ``prefix``: class
    tokens before the grid; ``keys [N, K]``; ``weights [B, N, K]``; ``identity`` (``a``) and
    ``scale [B, N]`` or None (see the module docstring); ``gap``: the ``Branches`` from the previous
    layer's grid (the image for the first layer) to ``grid``, None where the map does not change.
    """

    name: str
    kind: str
    grid: Pair
    prefix: int
    keys: torch.Tensor
    weights: torch.Tensor
    identity: float
    scale: torch.Tensor | None
    gap: Branches | None

    @property
    def tokens(self) -> int:
        return self.prefix + self.grid[0] * self.grid[1]

    def back(self, v: torch.Tensor) -> torch.Tensor:
        """``v [B, M, N]`` rows over output tokens -> ``v M`` ``[B, M, N]`` over input tokens (scatter on keys)."""
        if self.scale is not None:
            v = v * self.scale[:, None, :]
        B, M, N = v.shape
        K = self.keys.shape[1]
        slots = self.keys.where(self.keys >= 0, N).reshape(N * K).to(v.device)  # no token -> a dropped column N
        moved = (v[..., None] * self.weights[:, None]).reshape(B, M, N * K)  # [B, M, N*K]
        out = v.new_zeros(B, M, N + 1).index_add_(2, slots, moved)[..., :N]
        return out + self.identity * v if self.identity else out


@functools.lru_cache(maxsize=512)
def _axis_operator(step, in_len: int, out_len: int, axis: int) -> torch.Tensor:
    """``[out_len, in_len]``: a down-sampling step on one axis, each output's row spread evenly over its inputs."""
    incidence = step.incidence(in_len, out_len, axis).double()
    return incidence / incidence.sum(1, keepdim=True)


def back_gap(gap: Branches | None, v: torch.Tensor, prefix: int) -> torch.Tensor:
    """``v [B, M, prefix + h_out * w_out]`` -> ``[B, M, prefix + h_in * w_in]`` through ``gap``.

    Each chain of down-sampling steps spreads an output token's share evenly over the inputs its
    kernel covers (``Downsample.incidence``, row-normalised, per axis); the chains that lead to the
    same map weigh equally. Class tokens pass unchanged. ``gap.everything`` (a squeeze-excite
    gate's global pooling) moves no token and is not followed.
    """
    if gap is None:
        return v
    B, M = v.shape[:2]
    head, body = v[..., :prefix], v[..., prefix:].reshape(B, M, *gap.out_size)
    total = 0
    for chain in gap.chains:
        x = body
        for step, (ha, wa), (hb, wb) in reversed(chain):
            rows, cols = (_axis_operator(step, a, b, axis).to(x) for a, b, axis in ((ha, hb, 0), (wa, wb, 1)))
            x = torch.einsum("bmij,ia,jc->bmac", x, rows, cols)  # [B, M, h_in, w_in]
        total = total + x
    body = (total / len(gap.chains)).reshape(B, M, -1)
    return torch.cat([head, body], dim=-1)


def carry(operators: list[Operator], v: torch.Tensor, upto: int | None = None):
    """Carry ``v [B, M, N]`` (rows over the output tokens of layer ``upto - 1``, default the last) back
    through the layers and gaps. Returns ``(maps, pixels)``: ``maps[l] [B, M, N_l]`` on the tokens
    entering layer ``l`` (``l < upto``), ``pixels [B, M, H * W]`` on the input (class tokens left out)."""
    upto = len(operators) if upto is None else upto
    maps = []
    for op in reversed(operators[:upto]):
        v = op.back(v)
        maps.insert(0, v)
        v = back_gap(op.gap, v, op.prefix)
    return maps, v[..., operators[0].prefix:]


def normalised(x: torch.Tensor, dims) -> torch.Tensor:
    """``x`` divided by its sum over ``dims`` (0 where the sum is 0)."""
    total = x.sum(dims, keepdim=True)
    return torch.where(total > 0, x / total.where(total > 0, torch.ones_like(total)), torch.zeros_like(x))
