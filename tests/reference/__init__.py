"""Test-only reference implementations of the published models (vizattn.checkpoints is checked against them).

- ``timm_models.timm()``: timm, the reference for DeiT, Swin and MaxViT (its model code needs no
  torchvision; see that module for how it is imported without it).
- ``nat``, ``crossformer``: transcriptions of the official forward passes of NAT/DiNAT and
  CrossFormer v1, for which no installable package exists; each module cites its source.
- ``randomise(model)``: seeded random values for every parameter and BatchNorm statistic, so
  that a comparison exercises every weight (default inits leave LayerNorms at 1/0, biases at 0).
"""

from __future__ import annotations

import torch
from torch import nn


def randomise(model: nn.Module, seed: int = 0, std: float = 0.2) -> nn.Module:
    """Fill every parameter and BatchNorm running statistic with seeded random numbers; eval mode.

    Other buffers (constant tables such as CrossFormer's offsets ``attn.biases``) stay as built.
    """
    gen = torch.Generator().manual_seed(seed)
    stats = [(n, b) for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))]
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + stats:
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith(("weight", "gamma")) and tensor.dim() == 1:  # norms and scales near 1
                tensor.copy_(1 + std * torch.randn(tensor.shape, generator=gen))
            else:
                tensor.copy_(std * torch.randn(tensor.shape, generator=gen))
    return model.eval()
