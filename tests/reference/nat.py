"""NAT / DiNAT classification models as the official code computes them, for the exactness tests.

Transcribed in our own words from SHI-Labs/Neighborhood-Attention-Transformer,
``classification/nat.py`` (``ConvTokenizer``, ``ConvDownsampler``, ``NATLayer``, ``NATBlock``,
``NAT``, ``nat_mini``; ``NATLayer``'s ``layer_scale``: ``gamma1``, ``gamma2``) and ``classification/dinat.py``
(``dinat_mini``: the dilations), with the
attention of NATTEN <= 0.17 (``NeighborhoodAttention2D.forward`` in ``src/natten/natten2d.py``:
``q * scale``, ``natten2dqkrpb``, softmax, ``natten2dav``). The neighbourhood and the bias index
follow NATTEN's CPU kernels (v0.14.6, ``src/natten/csrc/cpu/natten_cpu_commons.h``,
``get_window_start`` and ``get_pb_start``), re-expressed below; attention is computed densely
with a mask built from them, independently of vizattn's patterns. Parameter names and shapes
are the official ones (``attn.rpb`` is a bare parameter), so state dicts are the official layout.
"""

from __future__ import annotations

import torch
from torch import nn

DINAT_MINI = ((1, 8, 1), (1, 4, 1, 4), (1, 2, 1, 2, 1, 2), (1, 1, 1, 1, 1))


def window_start(i: int, length: int, k: int, d: int) -> int:
    """First key index of query ``i`` (NATTEN's ``get_window_start``); keys are start + t*d, t < k."""
    half = k // 2
    if d <= 1:
        return max(i - half, 0) + (i + half >= length) * (length - i - half - 1)
    if i - half * d < 0:
        return i % d
    if i + half * d >= length:
        rest = length - (length // d) * d
        if i % d < rest:
            return length - rest + i % d - 2 * half * d
        return (length // d) * d + i % d - k * d
    return i - half * d


def bias_start(i: int, length: int, k: int, d: int) -> int:
    """Row of the bias table for key slot 0 of query ``i`` (NATTEN's ``get_pb_start``); slot t uses start + t."""
    half = k // 2
    if d <= 1:
        return half + (i < half) * (half - i) + (i + half >= length) * (length - i - 1 - half)
    if i - half * d < 0:
        return k - 1 - i // d
    if i + half * d >= length:
        return (length - i - 1) // d
    return half


def axis_tables(length: int, k: int, d: int):
    """``keys [L, k]`` and bias rows ``[L, k]`` of one axis."""
    keys = torch.tensor([[window_start(i, length, k, d) + t * d for t in range(k)] for i in range(length)])
    rows = torch.tensor([[bias_start(i, length, k, d) + t for t in range(k)] for i in range(length)])
    return keys, rows


def na_mask_and_bias_index(H: int, W: int, k: int, d: int, heads: int):
    """Dense ``mask [N, N]`` (True where the key is in the query's neighbourhood) and, for every
    ``(head, query, key)``, the flat index into the bias table ``[heads, 2k-1, 2k-1]`` ``[heads, N, N]``."""
    (kh, rh), (kw, rw) = axis_tables(H, k, d), axis_tables(W, k, d)
    N, side = H * W, 2 * k - 1
    keys = (kh[:, None, :, None] * W + kw[None, :, None, :]).reshape(N, k * k)  # [N, k*k]
    cells = (rh[:, None, :, None] * side + rw[None, :, None, :]).reshape(N, k * k)  # [N, k*k]
    mask = torch.zeros(N, N, dtype=torch.bool).scatter_(1, keys, True)
    index = torch.zeros(N, N, dtype=torch.long).scatter_(1, keys, cells)
    return mask, index[None] + (torch.arange(heads) * side * side)[:, None, None]


class NeighborhoodAttention2D(nn.Module):
    """NATTEN <= 0.17's module on ``[B, H, W, C]`` (no padding needed at the sizes tested)."""

    def __init__(self, dim, kernel_size, dilation, num_heads):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.kernel_size, self.dilation = kernel_size, dilation
        self.qkv = nn.Linear(dim, dim * 3)
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Identity()  # where a hook sees the probabilities [B, heads, N, N]
        self._tables = {}

    def forward(self, x):
        B, H, W, C = x.shape
        qkv = self.qkv(x).reshape(B, H, W, 3, self.num_heads, self.head_dim).permute(3, 0, 4, 1, 2, 5)
        q, k, v = (t.reshape(B, self.num_heads, H * W, self.head_dim) for t in qkv)
        if (H, W) not in self._tables:
            self._tables[(H, W)] = na_mask_and_bias_index(H, W, self.kernel_size, self.dilation, self.num_heads)
        mask, index = self._tables[(H, W)]
        logits = (q * self.scale) @ k.transpose(-2, -1) + self.rpb.reshape(-1)[index]
        attn = self.attn_drop(logits.masked_fill(~mask, float("-inf")).softmax(-1))
        x = (attn @ v).reshape(B, self.num_heads, H, W, self.head_dim).permute(0, 2, 3, 1, 4).reshape(B, H, W, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class NATLayer(nn.Module):
    """``layer_scale`` (NAT-S/B, DiNAT-B): bare parameters ``gamma1``, ``gamma2`` scaling the two branches."""

    def __init__(self, dim, num_heads, kernel_size, dilation, mlp_ratio, layer_scale=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = NeighborhoodAttention2D(dim, kernel_size, dilation, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.layer_scale = layer_scale is not None
        if self.layer_scale:
            self.gamma1 = nn.Parameter(layer_scale * torch.ones(dim))
            self.gamma2 = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x):
        if not self.layer_scale:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = x + self.gamma1 * self.attn(self.norm1(x))
        return x + self.gamma2 * self.mlp(self.norm2(x))


class ConvTokenizer(nn.Module):
    def __init__(self, embed_dim):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(3, embed_dim // 2, 3, 2, 1), nn.Conv2d(embed_dim // 2, embed_dim, 3, 2, 1))
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ConvDownsampler(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, 3, 2, 1, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x):
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class NATBlock(nn.Module):
    def __init__(self, dim, depth, num_heads, kernel_size, dilations, mlp_ratio, downsample, layer_scale=None):
        super().__init__()
        self.blocks = nn.ModuleList(NATLayer(dim, num_heads, kernel_size, dilations[i], mlp_ratio, layer_scale)
                                    for i in range(depth))
        self.downsample = ConvDownsampler(dim) if downsample else None

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class NAT(nn.Module):
    def __init__(self, embed_dim=64, mlp_ratio=3, depths=(3, 4, 6, 5), num_heads=(2, 4, 8, 16), kernel_size=7,
                 dilations=None, num_classes=1000, layer_scale=None):
        super().__init__()
        dilations = dilations or [[1] * d for d in depths]
        self.patch_embed = ConvTokenizer(embed_dim)
        self.levels = nn.ModuleList(
            NATBlock(embed_dim * 2**i, depths[i], num_heads[i], kernel_size, dilations[i], mlp_ratio,
                     downsample=i < len(depths) - 1, layer_scale=layer_scale) for i in range(len(depths)))
        features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(features)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(features, num_classes)

    def forward(self, x):
        x = self.patch_embed(x)
        for level in self.levels:
            x = level(x)
        x = self.norm(x).flatten(1, 2)  # [B, N, C]
        return self.head(torch.flatten(self.avgpool(x.transpose(1, 2)), 1))


def nat_mini():
    return NAT()


def dinat_mini():
    return NAT(dilations=DINAT_MINI)
