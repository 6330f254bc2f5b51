"""CrossFormer v1 (cheerss/CrossFormer at commit f20000d, ``models/crossformer.py``) in vizattn's layers.

Cross-scale embedding (kernels 4, 8, 16, 32, stride 4) + LayerNorm; four stages of blocks that
alternate SDA (``Block(7)``) and LDA (v1's interval is ``map / 7``: ``LongDistance(8, 4, 2)``);
at the end of each stage but the last, LayerNorm + cross-scale embedding (kernels 2, 4, stride
2); then LayerNorm, mean over tokens, linear head. v1 switches a stage whose map is no larger
than the group (7x7) to one group of the whole map: global attention with the bias of a 7x7 group.

Loading the reference's state dict (``from_reference``): ``patch_embed.projs`` /
``downsample.reductions`` become ``cel.convs``; the DPB's ``pos_proj``/``pos1..3`` become
``dpb.mlp``; and since CrossFormer feeds its DPB query - key offsets while vizattn feeds key -
query, the first Linear's weight is negated (semantics.md §8); the non-learned buffers
``attn.biases`` and ``attn.relative_position_index`` are dropped.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..layers.common import TransformerBlock
from ..layers.crossformer import CrossScaleEmbedding, LongShortDistanceAttention

__all__ = ["CrossFormer", "SIZES", "crossformer", "from_reference"]


class Embedding(nn.Module):
    """``[B, H, W, dim_in]`` -> (LayerNorm first if ``norm_first``) cross-scale embedding (-> LayerNorm)."""

    def __init__(self, dim_in: int, dim_out: int, kernels, stride: int, norm_first: bool):
        super().__init__()
        self.norm_first = norm_first
        self.cel = CrossScaleEmbedding(dim_in, dim_out, kernels, stride)
        self.norm = nn.LayerNorm(dim_in if norm_first else dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cel(self.norm(x)) if self.norm_first else self.norm(self.cel(x))


class Stage(nn.Module):
    """Blocks alternating SDA (even index) and LDA (odd), then the downsampling embedding (or None)."""

    def __init__(self, dim, size, depth, heads, group, mlp_ratio, downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(dim, LongShortDistanceAttention(
            dim, heads, "sda" if j % 2 == 0 else "lda", group=group, interval=max(size // group, 1),
            dpb_hidden=dim // 16), mlp_ratio) for j in range(depth))
        self.downsample = Embedding(dim, 2 * dim, (2, 4), 2, norm_first=True) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class CrossFormer(nn.Module):
    """CrossFormer v1: ``images [B, 3, S, S]`` (ImageNet-normalised) -> ``logits [B, classes]``.

    >>> import torch; _ = torch.manual_seed(0)
    >>> model = CrossFormer(dim=32, depths=(2, 2), heads=(2, 4), group=4, img_size=64, classes=3).eval()
    >>> model(torch.randn(1, 3, 64, 64)).shape, model.layers[0].blocks[1].attn.pattern(16, 16)
    (torch.Size([1, 3]), LongDistance(4))
    """

    def __init__(self, dim=64, depths=(1, 1, 8, 6), heads=(2, 4, 8, 16), group=7, mlp_ratio=4.0, img_size=224,
                 classes=1000):
        super().__init__()
        self.patch_embed = Embedding(3, dim, (4, 8, 16, 32), 4, norm_first=False)
        size = img_size // 4
        self.layers = nn.ModuleList(
            Stage(dim * 2**i, size // 2**i, depth, h, group, mlp_ratio, downsample=i < len(depths) - 1)
            for i, (depth, h) in enumerate(zip(depths, heads)))
        features = dim * 2 ** (len(depths) - 1)
        self.norm, self.head = nn.LayerNorm(features), nn.Linear(features, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images.permute(0, 2, 3, 1))  # [B, S/4, S/4, dim]
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x).mean((1, 2)))  # [B, H, W, C] -> [B, C] -> [B, classes]


SIZES = {  # configs/crossformer/{tiny,small,base,large}_patch4_group7_224.yaml: EMBED_DIM, DEPTHS, NUM_HEADS
    "T": dict(dim=64, depths=(1, 1, 8, 6), heads=(2, 4, 8, 16)),
    "S": dict(dim=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24)),
    "B": dict(dim=96, depths=(2, 2, 18, 2), heads=(3, 6, 12, 24)),
    "L": dict(dim=128, depths=(2, 2, 18, 2), heads=(4, 8, 16, 32)),
}


def crossformer(size: str):
    """A builder ``(**changes) -> CrossFormer`` of CrossFormer-``size`` (T, S, B, L; group 7, 224 x 224);
    ``changes`` override the paper's numbers (the tests' reduced depths)."""
    return lambda **changes: CrossFormer(**{**SIZES[size], **changes})


_DPB = {"pos_proj": "0", "pos1.0": "1", "pos1.2": "3", "pos2.0": "4", "pos2.2": "6", "pos3.0": "7", "pos3.2": "9"}
_DROPPED = re.compile(r"\.attn\.(biases|relative_position_index)$|\.attn_mask$")


def from_reference(state: dict) -> dict:
    """The reference's keys and DPB convention (query - key) -> vizattn's (key - query)."""
    out = {}
    for key, value in state.items():
        if _DROPPED.search(key):
            continue
        key = re.sub(r"^patch_embed\.projs\.", "patch_embed.cel.convs.", key)
        key = re.sub(r"\.downsample\.reductions\.", ".downsample.cel.convs.", key)
        match = re.search(r"\.attn\.pos\.(pos_proj|pos\d\.\d)\.(weight|bias)$", key)
        if match:
            key = f"{key[:match.start()]}.attn.dpb.mlp.{_DPB[match.group(1)]}.{match.group(2)}"
            if match.group(1) == "pos_proj" and match.group(2) == "weight":
                value = -value  # the MLP's input: query - key there, key - query here
        out[key] = value
    return out
