"""Seeded random stacks of attention layers, as the papers stack them: what the wiring alone does
to a receptive field (``vizattn.receptive``, the receptive-field explorer).

``stack_for`` lists the patterns of a stack (``STACKS``: one per row of the mechanisms table),
``stack_model`` builds them into a randomly initialised ``PatternStack``.

>>> [a.pattern(8, 8) for a in stack_model("NA + DiNAT", 2, 8, kernel=3, dilation=2).attns]
[Neighborhood(3), Neighborhood(3, dilation=2)]
"""

from __future__ import annotations

import torch
from torch import nn

from . import mechanisms
from .layers.common import PatternAttention
from .patterns import Pattern

__all__ = ["STACKS", "stack_for", "PatternStack", "stack_model"]

STACKS = mechanisms.STACKS  # one per row of the mechanisms table


def stack_for(stack: str, depth: int, size: int, kernel: int = 3, dilation: int = 2, window: int = 4,
              interval: int = 4) -> list[Pattern]:
    """The patterns of ``depth`` attention layers of a stack (``STACKS``) on a ``size x size`` map,
    alternating as the papers stack them (DiNAT: NA then DiNAT; MaxViT: block then grid; CrossFormer:
    SDA then LDA); ``window`` is MaxViT's block and grid size and SDA's group size.

    >>> stack_for("MaxViT block + grid", 3, 16)
    [Block(4), Grid(4), Block(4)]
    """
    return mechanisms.stack(stack, depth, size, kernel=kernel, dilation=dilation, block=window, grid=window,
                            interval=interval)


class PatternStack(nn.Module):
    """``images [B, 3, H, W]`` -> ``[B, H, W, dim]``: a per-pixel linear embedding, then one pre-norm
    residual attention block ``x + attn(LN(x))`` per pattern (no MLPs: they act per token and
    change no field). Its attention layers are ``attns.0``, ``attns.1``, ..."""

    def __init__(self, patterns, dim: int = 8, heads: int = 2):
        super().__init__()
        self.embed = nn.Linear(3, dim)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in patterns)
        self.attns = nn.ModuleList(PatternAttention(dim, heads, p) for p in patterns)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images.permute(0, 2, 3, 1))  # [B, H, W, dim]
        for norm, attn in zip(self.norms, self.attns):
            x = x + attn(norm(x))
        return x


def stack_model(stack: str, depth: int, size: int, kernel: int = 3, dilation: int = 2, window: int = 4,
                interval: int = 4, seed: int = 0) -> PatternStack:
    """A randomly initialised ``PatternStack`` (``torch`` seed ``seed``) of the patterns of ``stack_for``.

    Its attention layer ``attns.{d}`` is layer ``d + 1`` of the stack, so the first ``d`` layers of a
    deeper stack are the same network as a stack of depth ``d``.

    >>> [a.pattern(16, 16) for a in stack_model("MaxViT block + grid", 3, 16).attns]
    [Block(4), Grid(4), Block(4)]
    """
    patterns = stack_for(stack, depth, size, kernel=kernel, dilation=dilation, window=window, interval=interval)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return PatternStack(patterns).eval()
