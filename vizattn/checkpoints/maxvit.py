"""MaxViT-T/S/B/L with the TF-ported weights (timm ``maxvit_*_tf_224``) in vizattn's layers.

Stem (3x3 stride-2 convolution with TF "same" padding, BatchNorm + tanh-GELU, 3x3 convolution),
four stages of ``MaxViTBlock`` (MBConv, block attention + FFN, grid attention + FFN; P = G = 7,
32 channels per head) with the TF options (BatchNorm eps 1e-3, tanh-approximated GELU, "same"
padding in the strided depthwise convolution, LayerNorm eps 1e-5), then timm's
``NormMlpClassifierHead``: average pool, LayerNorm, the pre-logits Linear + tanh, Linear.
timm's ``RelPosBiasTf`` tables are key - query like vizattn's and its qkv layout
(``head_first=False``: [3, heads, head_dim]) is vizattn's, so ``from_reference`` only renames keys.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch
from torch import nn

from ..layers.maxvit import Conv2dSame, MaxViTBlock

__all__ = ["MaxViT", "SIZES", "maxvit", "from_reference"]

TF = dict(bn_eps=1e-3, ln_eps=1e-5, gelu="tanh", padding="same")


class Stem(nn.Module):
    """``images [B, 3, S, S] -> [B, S/2, S/2, C]``: "same" 3x3 stride 2, BatchNorm + GELU, 3x3 stride 1.

    ``dim``: C, or the two convolutions' widths ``(C1, C)``.
    """

    def __init__(self, dim, eps: float, gelu: str):
        super().__init__()
        mid, dim = (dim, dim) if isinstance(dim, int) else dim
        self.conv1 = Conv2dSame(3, mid, 3, stride=2)
        self.norm1 = nn.Sequential(OrderedDict(bn=nn.BatchNorm2d(mid, eps=eps), act=nn.GELU(approximate=gelu)))
        self.conv2 = nn.Conv2d(mid, dim, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.norm1(self.conv1(images))).permute(0, 2, 3, 1)


class Head(nn.Module):
    """``[B, H, W, C] -> logits``: mean over tokens, LayerNorm, pre-logits Linear + tanh, Linear (``classes=0``:
    none, the features)."""

    def __init__(self, dim: int, hidden: int, classes: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.pre_logits = nn.Sequential(OrderedDict(fc=nn.Linear(dim, hidden), act=nn.Tanh()))
        self.fc = nn.Linear(hidden, classes) if classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pre_logits(self.norm(x.mean((1, 2)))))


class MaxViT(nn.Module):
    """MaxViT: ``images [B, 3, S, S]`` (ImageNet-normalised) -> ``logits [B, classes]``.

    ``size``: P = G (7 at 224 x 224: the image size / 32); ``stem``: C, or ``(C1, C)``.

    >>> import torch; _ = torch.manual_seed(0)
    >>> model = MaxViT(stem=8, dims=(16, 32), depths=(1, 1), head_dim=8, size=2, classes=3, head_hidden=8).eval()
    >>> model(torch.randn(1, 3, 32, 32)).shape
    torch.Size([1, 3])
    """

    def __init__(self, stem=64, dims=(64, 128, 256, 512), depths=(2, 2, 5, 2), head_dim=32, size=7,
                 classes=1000, head_hidden=512, tf=TF):
        super().__init__()
        self.stem = Stem(stem, tf["bn_eps"], tf["gelu"])
        stages, dim_in = [], stem if isinstance(stem, int) else stem[-1]
        for dim, depth in zip(dims, depths):
            stages.append(nn.Sequential(*(MaxViTBlock(dim_in if j == 0 else dim, dim, dim // head_dim, size,
                                                      stride=2 if j == 0 else 1, **tf) for j in range(depth))))
            dim_in = dim
        self.stages = nn.Sequential(*stages)
        self.head = Head(dims[-1], head_hidden, classes, tf["ln_eps"])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(images)))  # [B, 7, 7, 512] -> [B, classes]


SIZES = {  # the paper's Table 1 (stem widths and head as in the TF release)
    "T": dict(stem=64, dims=(64, 128, 256, 512), depths=(2, 2, 5, 2)),
    "S": dict(stem=64, dims=(96, 192, 384, 768), depths=(2, 2, 5, 2)),
    "B": dict(stem=64, dims=(96, 192, 384, 768), depths=(2, 6, 14, 2)),
    "L": dict(stem=128, dims=(128, 256, 512, 1024), depths=(2, 6, 14, 2)),
}


def maxvit(size: str):
    """A builder ``(**changes) -> MaxViT`` of MaxViT-``size`` (T, S, B, L) with the TF options at 224 x 224
    (head hidden = the last width); ``changes`` override the paper's numbers (the tests' reduced depths)."""
    def build(**changes) -> MaxViT:
        config = {**SIZES[size], **changes}
        return MaxViT(head_hidden=config["dims"][-1], **config)

    return build


_RENAMES = [  # timm's names -> vizattn's (inside stages.i.blocks.j / the stem)
    (r"\.blocks\.(\d+)\.", r".\1."),
    (r"\.conv\.pre_norm\.", ".mbconv.pre_norm."),
    (r"\.conv\.conv1_1x1\.", ".mbconv.expand.0."), (r"\.conv\.norm1\.", ".mbconv.expand.1."),
    (r"\.conv\.conv2_kxk\.", ".mbconv.depthwise.0."), (r"\.conv\.norm2\.", ".mbconv.depthwise.1."),
    (r"\.conv\.se\.fc1\.", ".mbconv.se.reduce."), (r"\.conv\.se\.fc2\.", ".mbconv.se.expand."),
    (r"\.conv\.conv3_1x1\.", ".mbconv.project."), (r"\.conv\.shortcut\.expand\.", ".mbconv.shortcut.1."),
    (r"\.attn_block\.norm1\.", ".norm1."), (r"\.attn_block\.norm2\.", ".norm2."), (r"\.attn_block\.mlp\.", ".mlp1."),
    (r"\.attn_grid\.norm1\.", ".norm3."), (r"\.attn_grid\.norm2\.", ".norm4."), (r"\.attn_grid\.mlp\.", ".mlp2."),
    (r"\.attn_block\.attn\.rel_pos\.relative_position_bias_table$", ".block_attn.rpb.table"),
    (r"\.attn_grid\.attn\.rel_pos\.relative_position_bias_table$", ".grid_attn.rpb.table"),
    (r"\.attn_block\.attn\.", ".block_attn."), (r"\.attn_grid\.attn\.", ".grid_attn."),
    (r"^stem\.norm1\.", "stem.norm1.bn."),
]


def from_reference(state: dict) -> dict:
    """timm's ``maxvit_*_tf_*`` keys -> vizattn's (tensors unchanged)."""
    out = {}
    for key, value in state.items():
        for pattern, repl in _RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out
