"""Attention layers as thin ``nn.Module`` shells over ``vizattn.attend``; channels-last ``[B, H, W, C]``.

One file per paper (``neighborhood``, ``sasa``, ``maxvit``, ``crossformer``, ``lavit``, ``swin``)
plus shared pieces (``common``): the one attention shell ``PatternAttention``, of which each paper's pattern
layer only fixes the arguments. Every attention layer runs its fast path unless ``explicit(model)``
switches it to the explicit one, whose hookable ``attn_probs`` step sees the probabilities
``[B, heads, H, W, K]`` and their pattern.

>>> import torch
>>> from vizattn.layers import NeighborhoodAttention
>>> NeighborhoodAttention(dim=8, heads=2, kernel_size=3)(torch.randn(1, 5, 5, 8)).shape
torch.Size([1, 5, 5, 8])
"""

from .common import (
    AttentionProbs,
    GlobalAttention,
    LayerScale,
    Mlp,
    PatternAttention,
    TransformerBlock,
    attention_layers,
    explicit,
)
from .crossformer import CrossScaleEmbedding, DynamicPositionBias, LongShortDistanceAttention
from .lavit import AttentionResidual, LessAttention, VanillaAttention
from .maxvit import BlockAttention, GridAttention, MaxViTBlock, MBConv
from .neighborhood import NeighborhoodAttention
from .sasa import AttentionStem, StandAloneAttention
from .swin import PatchMerging, ShiftedWindowAttention, SwinBlock

__all__ = [
    "PatternAttention",
    "GlobalAttention",
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
    "ShiftedWindowAttention",
    "SwinBlock",
    "PatchMerging",
    "AttentionProbs",
    "Mlp",
    "LayerScale",
    "TransformerBlock",
    "attention_layers",
    "explicit",
]
