"""MaxViT: block and grid attention, MBConv, and the block that chains them (docs/semantics.md §3)."""

from __future__ import annotations

import torch
from torch import nn

from ..bias import RelativePositionBias
from ..checks import check_input, check_positive
from ..patterns import Block, Grid
from .common import Mlp, PatternAttention

__all__ = ["BlockAttention", "GridAttention", "MBConv", "MaxViTBlock", "Conv2dSame"]


class BlockAttention(PatternAttention):
    """MaxViT block attention (= CrossFormer SDA): attention inside non-overlapping ``P x P`` windows.

    ``rel_pos_bias``: a table ``[heads, 2P-1, 2P-1]`` indexed by within-window key - query.
    ``pad=True`` pads bottom/right to a multiple of P (padded keys excluded, padded queries
    cropped) [vizattn choice]; otherwise a map that P does not divide raises ``ValueError``.

    >>> import torch
    >>> BlockAttention(dim=16, heads=2, size=4)(torch.randn(1, 8, 12, 16)).shape
    torch.Size([1, 8, 12, 16])
    """

    def __init__(self, dim: int, heads: int, size, pad: bool = False, rel_pos_bias: bool = True,
                 qkv_bias: bool = True):
        pattern = Block(size, pad=pad)
        rpb = RelativePositionBias(heads, pattern.size) if rel_pos_bias else None
        super().__init__(dim, heads, pattern, bias=rpb, qkv_bias=qkv_bias)


class GridAttention(PatternAttention):
    """MaxViT grid attention: a ``G x G`` lattice with spacing ``H / G`` spanning the whole map.

    Arguments as for ``BlockAttention``; the bias table ``[heads, 2G-1, 2G-1]`` is indexed by the
    within-group offset, where one unit is ``H / G`` pixels.

    >>> import torch
    >>> GridAttention(dim=16, heads=2, size=4)(torch.randn(1, 8, 12, 16)).shape
    torch.Size([1, 8, 12, 16])
    """

    def __init__(self, dim: int, heads: int, size, pad: bool = False, rel_pos_bias: bool = True,
                 qkv_bias: bool = True):
        pattern = Grid(size, pad=pad)
        rpb = RelativePositionBias(heads, pattern.size) if rel_pos_bias else None
        super().__init__(dim, heads, pattern, bias=rpb, qkv_bias=qkv_bias)


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's "same" padding: ``ceil(L / stride)`` outputs, the odd pixel padded right/bottom.

    Pads ``max((ceil(L / s) - 1) * s + k - L, 0)`` zeros per axis, half before (rounded down) and
    the rest after, as TF (and timm's ``Conv2dSame``) do; for stride 1 and odd k this is the
    symmetric ``k // 2``.

    >>> import torch
    >>> conv = Conv2dSame(1, 1, 3, stride=2, bias=False)
    >>> _ = conv.weight.data.fill_(1.0)
    >>> conv(torch.ones(1, 1, 4, 4))[0, 0].tolist()       # no padding on the top/left
    [[9.0, 6.0], [6.0, 4.0]]
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "padding": 0})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for length, k, s, d in zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1], self.dilation[::-1]):
            total = max((-(-length // s) - 1) * s + (k - 1) * d + 1 - length, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(nn.functional.pad(x, pads))


class MBConv(nn.Module):
    """MaxViT's inverted bottleneck, channels-last: ``[B, H, W, dim_in] -> [B, H', W', dim_out]``.

    BN -> 1x1 expand to ``dim_out * expand`` -> BN + GELU -> 3x3 depthwise (``stride``) -> BN + GELU
    -> squeeze-excite (to ``int(dim_out * se)`` channels, SiLU, sigmoid gate; ``se=0``: none) -> 1x1
    project, plus a shortcut: identity, or average pooling (kernel = stride = ``stride``) and/or a
    1x1 convolution when the shape changes (timm's ``MbConvBlock``). ``H' = ceil(H / stride)``.

    Options for TensorFlow-trained weights (defaults: PyTorch's): ``eps`` of the BatchNorms
    (TF: 1e-3), ``gelu="tanh"`` (the tanh approximation), ``padding="same"`` (the strided 3x3
    convolution pads right/bottom only, ``Conv2dSame``; default ``"symmetric"``: padding 1).

    >>> import torch
    >>> MBConv(8, 16, stride=2)(torch.randn(2, 7, 8, 8)).shape
    torch.Size([2, 4, 4, 16])
    """

    def __init__(self, dim_in: int, dim_out: int, stride: int = 1, expand: float = 4, se: float = 0.25,
                 eps: float = 1e-5, gelu: str = "none", padding: str = "symmetric"):
        super().__init__()
        check_positive(dim_in=dim_in, dim_out=dim_out, stride=stride)
        hidden = int(dim_out * expand)
        if hidden < 1 or not 0 <= se <= 1:
            raise ValueError(f"MBConv needs dim_out * expand >= 1 and 0 <= se <= 1; got dim_out={dim_out}, "
                             f"expand={expand}, se={se}")
        if padding not in ("symmetric", "same") or gelu not in ("none", "tanh"):
            raise ValueError("padding must be 'symmetric' or 'same' and gelu 'none' or 'tanh'; "
                             f"got padding={padding!r}, gelu={gelu!r}")
        self.dim_in, self.dim_out, self.stride = dim_in, dim_out, stride
        self.pre_norm = nn.BatchNorm2d(dim_in, eps=eps)
        self.expand = nn.Sequential(nn.Conv2d(dim_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden, eps=eps),
                                    nn.GELU(approximate=gelu))
        conv = Conv2dSame if padding == "same" and stride > 1 else nn.Conv2d
        self.depthwise = nn.Sequential(
            conv(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden, eps=eps), nn.GELU(approximate=gelu),
        )
        squeezed = int(dim_out * se)
        self.se = nn.Identity() if squeezed < 1 else SqueezeExcite(hidden, squeezed)
        self.project = nn.Conv2d(hidden, dim_out, 1)
        shortcut = []
        if stride > 1:
            shortcut.append(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False))
        if dim_in != dim_out:
            shortcut.append(nn.Conv2d(dim_in, dim_out, 1))
        self.shortcut = nn.Sequential(*shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = check_input(x, self.dim_in, "MBConv")
        x = x.permute(0, 3, 1, 2)  # [B, dim_in, H, W]
        y = self.depthwise(self.expand(self.pre_norm(x)))  # [B, hidden, H', W']
        y = self.project(self.se(y)) + self.shortcut(x)  # [B, dim_out, H', W']
        return y.permute(0, 2, 3, 1)  # [B, H', W', dim_out]


class SqueezeExcite(nn.Module):
    """Channel gate on ``[B, C, H, W]``: ``x * sigmoid(W2 silu(W1 mean_hw(x)))``.

    >>> import torch
    >>> SqueezeExcite(8, 2)(torch.randn(1, 8, 3, 3)).shape
    torch.Size([1, 8, 3, 3])
    """

    def __init__(self, dim: int, squeezed: int):
        super().__init__()
        self.reduce = nn.Conv2d(dim, squeezed, 1)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(squeezed, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True))))  # [B, C, 1, 1]
        return x * gate.sigmoid()


class MaxViTBlock(nn.Module):
    """One MaxViT block: MBConv, block attention + FFN, grid attention + FFN (pre-norm residuals).

    ``x = MBConv(x)``; ``x += BlockAttn(LN(x))``; ``x += FFN(LN(x))``; ``x += GridAttn(LN(x))``;
    ``x += FFN(LN(x))``. ``size`` is both the window P and the grid G; ``stride=2`` in the first
    block of a stage halves the map (in the MBConv). ``bn_eps``, ``gelu``, ``padding`` go to the
    MBConv, ``gelu`` also to the FFNs, ``ln_eps`` to the LayerNorms (TF-trained weights: 1e-3,
    ``"tanh"``, ``"same"``, 1e-5; the defaults are PyTorch's).

    >>> import torch
    >>> MaxViTBlock(dim_in=8, dim=16, heads=2, size=2, stride=2)(torch.randn(1, 8, 8, 8)).shape
    torch.Size([1, 4, 4, 16])
    """

    def __init__(self, dim_in: int, dim: int, heads: int, size, stride: int = 1, pad: bool = False,
                 mlp_ratio: float = 4.0, expand: float = 4, se: float = 0.25, bn_eps: float = 1e-5,
                 ln_eps: float = 1e-5, gelu: str = "none", padding: str = "symmetric"):
        super().__init__()
        self.mbconv = MBConv(dim_in, dim, stride=stride, expand=expand, se=se, eps=bn_eps, gelu=gelu, padding=padding)
        self.norm1, self.block_attn = nn.LayerNorm(dim, eps=ln_eps), BlockAttention(dim, heads, size, pad=pad)
        self.norm2, self.mlp1 = nn.LayerNorm(dim, eps=ln_eps), Mlp(dim, mlp_ratio, gelu=gelu)
        self.norm3, self.grid_attn = nn.LayerNorm(dim, eps=ln_eps), GridAttention(dim, heads, size, pad=pad)
        self.norm4, self.mlp2 = nn.LayerNorm(dim, eps=ln_eps), Mlp(dim, mlp_ratio, gelu=gelu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mbconv(x)  # [B, H', W', dim]
        x = x + self.block_attn(self.norm1(x))
        x = x + self.mlp1(self.norm2(x))
        x = x + self.grid_attn(self.norm3(x))
        return x + self.mlp2(self.norm4(x))
