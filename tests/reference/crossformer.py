"""CrossFormer v1 as the official code computes it, for the exactness tests.

Transcribed in our own words from cheerss/CrossFormer at commit f20000d ("add code for
classification", the v1 code; HEAD is CrossFormer++), ``models/crossformer.py``: ``DynamicPosBias``
(non-residual), ``Attention`` (the DPB evaluated on every offset of a G x G group and indexed by
query - key: ``coords[:, :, None] - coords[:, None, :]``), ``CrossFormerBlock`` (SDA groups
``x.reshape(B, H/G, G, W/G, G, C)``, LDA groups ``x.reshape(B, G, H/G, G, W/G, C)``, i.e. tokens
``H/G`` apart; a map no larger than G becomes one SDA group), ``PatchMerging``, ``Stage``,
``PatchEmbed`` and ``CrossFormer``, with the CrossFormer-T configuration of
``configs/tiny_patch4_group7_224.yaml``. Parameter and buffer names are the official ones.
"""

from __future__ import annotations

import torch
from torch import nn


class DynamicPosBias(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.pos_dim = dim // 4
        self.pos_proj = nn.Linear(2, self.pos_dim)
        self.pos1 = nn.Sequential(nn.LayerNorm(self.pos_dim), nn.ReLU(), nn.Linear(self.pos_dim, self.pos_dim))
        self.pos2 = nn.Sequential(nn.LayerNorm(self.pos_dim), nn.ReLU(), nn.Linear(self.pos_dim, self.pos_dim))
        self.pos3 = nn.Sequential(nn.LayerNorm(self.pos_dim), nn.ReLU(), nn.Linear(self.pos_dim, num_heads))

    def forward(self, biases):
        return self.pos3(self.pos2(self.pos1(self.pos_proj(biases))))


class Attention(nn.Module):
    def __init__(self, dim, group_size, num_heads):
        super().__init__()
        self.num_heads, self.group_size = num_heads, group_size
        self.scale = (dim // num_heads) ** -0.5
        self.pos = DynamicPosBias(dim // 4, num_heads)
        G = group_size
        offsets = torch.arange(1 - G, G)
        biases = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij")).flatten(1).transpose(0, 1).float()
        self.register_buffer("biases", biases)  # [(2G-1)^2, 2]: every offset, row-major
        coords = torch.stack(torch.meshgrid(torch.arange(G), torch.arange(G), indexing="ij")).flatten(1)  # [2, G*G]
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # query - key, [G*G, G*G, 2]
        self.register_buffer("relative_position_index", (rel[..., 0] + G - 1) * (2 * G - 1) + rel[..., 1] + G - 1)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Identity()  # where a hook sees the probabilities [groups*B, heads, G*G, G*G]

    def forward(self, x):
        B_, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        pos = self.pos(self.biases)  # [(2G-1)^2, heads]
        attn = attn + pos[self.relative_position_index.view(-1)].view(N, N, -1).permute(2, 0, 1)[None]
        attn = self.attn_drop(attn.softmax(-1))
        return self.proj((attn @ v).transpose(1, 2).reshape(B_, N, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def group_ids(H, W, G, lda):
    """Token ids per group ``[groups, G*G]`` in the order the block's reshape puts them (for the tests)."""
    ids = torch.arange(H * W).reshape(1, H, W, 1)
    if lda:
        ids = ids.reshape(1, G, H // G, G, W // G, 1).permute(0, 2, 4, 1, 3, 5)
    else:
        ids = ids.reshape(1, H // G, G, W // G, G, 1).permute(0, 1, 3, 2, 4, 5)
    return ids.reshape(-1, G * G)


class CrossFormerBlock(nn.Module):
    def __init__(self, dim, input_resolution, num_heads, group_size, lsda_flag, mlp_ratio):
        super().__init__()
        self.input_resolution, self.group_size, self.lsda_flag = input_resolution, group_size, lsda_flag
        if min(input_resolution) <= group_size:
            self.lsda_flag, self.group_size = 0, min(input_resolution)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, self.group_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        H, W = self.input_resolution
        B, L, C = x.shape
        G = self.group_size
        shortcut = x
        x = self.norm1(x).view(B, H, W, C)
        if self.lsda_flag == 0:
            x = x.reshape(B, H // G, G, W // G, G, C).permute(0, 1, 3, 2, 4, 5)
        else:
            x = x.reshape(B, G, H // G, G, W // G, C).permute(0, 2, 4, 1, 3, 5)
        x = self.attn(x.reshape(B * H * W // G**2, G**2, C)).reshape(B, H // G, W // G, G, G, C)
        if self.lsda_flag == 0:
            x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, H * W, C)
        else:
            x = x.permute(0, 3, 1, 4, 2, 5).reshape(B, H * W, C)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, input_resolution, dim, patch_size):
        super().__init__()
        self.input_resolution = input_resolution
        self.norm = nn.LayerNorm(dim)
        self.reductions = nn.ModuleList()
        for i, ps in enumerate(patch_size):
            out_dim = 2 * dim // 2**i if i == len(patch_size) - 1 else 2 * dim // 2 ** (i + 1)
            self.reductions.append(nn.Conv2d(dim, out_dim, ps, stride=2, padding=(ps - 2) // 2))

    def forward(self, x):
        H, W = self.input_resolution
        B, L, C = x.shape
        x = self.norm(x).view(B, H, W, C).permute(0, 3, 1, 2)
        return torch.cat([r(x).flatten(2).transpose(1, 2) for r in self.reductions], dim=2)


class Stage(nn.Module):
    def __init__(self, dim, input_resolution, depth, num_heads, group_size, mlp_ratio, merge):
        super().__init__()
        self.blocks = nn.ModuleList(CrossFormerBlock(dim, input_resolution, num_heads, group_size, i % 2, mlp_ratio)
                                    for i in range(depth))
        self.downsample = PatchMerging(input_resolution, dim, merge) if merge else None

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, embed_dim):
        super().__init__()
        self.projs = nn.ModuleList()
        for i, ps in enumerate(patch_size):
            dim = embed_dim // 2**i if i == len(patch_size) - 1 else embed_dim // 2 ** (i + 1)
            self.projs.append(nn.Conv2d(3, dim, ps, stride=patch_size[0], padding=(ps - patch_size[0]) // 2))
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        return self.norm(torch.cat([p(x).flatten(2).transpose(1, 2) for p in self.projs], dim=2))


class CrossFormer(nn.Module):
    def __init__(self, img_size=224, patch_size=(4, 8, 16, 32), embed_dim=64, depths=(1, 1, 8, 6),
                 num_heads=(2, 4, 8, 16), group_size=(7, 7, 7, 7), mlp_ratio=4.0, merge_size=((2, 4),) * 3,
                 num_classes=1000):
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        side = img_size // patch_size[0]
        self.layers = nn.ModuleList(
            Stage(embed_dim * 2**i, (side // 2**i, side // 2**i), depths[i], num_heads[i], group_size[i], mlp_ratio,
                  merge_size[i] if i < len(depths) - 1 else None) for i in range(len(depths)))
        features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(features)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(features, num_classes)

    def forward(self, x):
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(torch.flatten(self.avgpool(self.norm(x).transpose(1, 2)), 1))


def crossformer_tiny():
    return CrossFormer()
