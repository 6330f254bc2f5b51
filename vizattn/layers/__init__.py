"""Attention layers as thin ``nn.Module`` shells over ``vizattn.attend``; channels-last ``[B, H, W, C]``.

One file per paper (``neighborhood``, ``sasa``, ``maxvit``, ``crossformer``, ``lavit``) plus shared
pieces (``common``). Every attention layer has ``fused`` (fast path) and, for ``fused=False``, a
hookable ``attn_probs`` step that sees the probabilities ``[B, heads, H, W, K]`` and their pattern.

>>> import torch
>>> from vizattn.layers import NeighborhoodAttention
>>> NeighborhoodAttention(dim=8, heads=2, kernel_size=3)(torch.randn(1, 5, 5, 8)).shape
torch.Size([1, 5, 5, 8])
"""

from .common import AttentionProbs, LayerScale, Mlp
from .crossformer import CrossScaleEmbedding, DynamicPositionBias, LongShortDistanceAttention
from .lavit import AttentionResidual, LessAttention, VanillaAttention
from .maxvit import BlockAttention, GridAttention, MaxViTBlock, MBConv
from .neighborhood import NeighborhoodAttention
from .sasa import AttentionStem, StandAloneAttention

__all__ = [
    "NeighborhoodAttention",
    "StandAloneAttention",
    "AttentionStem",
    "BlockAttention",
    "GridAttention",
    "MBConv",
    "MaxViTBlock",
    "CrossScaleEmbedding",
    "LongShortDistanceAttention",
    "DynamicPositionBias",
    "VanillaAttention",
    "LessAttention",
    "AttentionResidual",
    "AttentionProbs",
    "Mlp",
    "LayerScale",
]
