"""vizattn.layers against slow computations written by hand from docs/semantics.md: NA as a loop over windows,
SASA's channel groups and zero padding, the attention stem, block / grid / SDA / LDA as reshapes into groups,
the position-bias tables, MBConv, the MaxViT block, the cross-scale embedding, LaViT's layers, MLP and
LayerScale. float64 wherever values are compared (shapes, gradients, fused == explicit, the hook and the
ValueErrors of every layer: test_layers.py)."""

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vizattn.bias import RelativePositionBias
from vizattn.layers import (
    AttentionResidual,
    AttentionStem,
    BlockAttention,
    CrossScaleEmbedding,
    GridAttention,
    LayerScale,
    LessAttention,
    LongShortDistanceAttention,
    MaxViTBlock,
    MBConv,
    Mlp,
    NeighborhoodAttention,
    PatternAttention,
    StandAloneAttention,
    VanillaAttention,
    explicit,
)
from vizattn.layers.crossformer import split_channels
from vizattn.patterns import Block, Global, Neighborhood

from conftest import D, build, randn, randomise


# ---------------------------------------------------------------------------------------------
# hand-written references
# ---------------------------------------------------------------------------------------------
def split_heads(t, heads):
    """[..., C] -> [..., heads, C // heads]."""
    return t.reshape(*t.shape[:-1], heads, -1)


@pytest.mark.parametrize("kernel, dilation, H, W", [(3, 1, 5, 6), ((3, 2), (2, 3), 7, 8), (4, 1, 5, 4)])
def test_neighborhood_attention_is_a_loop_over_windows(kernel, dilation, H, W):
    layer = randomise(build(lambda: NeighborhoodAttention(8, 2, kernel, dilation=dilation)))
    x = randn(1, H, W, 8)
    pattern = Neighborhood(kernel, dilation)
    (kh, kw), (dh, dw) = pattern.kernel_size, pattern.dilation
    q, k, v = (split_heads(t, 2) for t in layer.qkv(x)[0].chunk(3, dim=-1))  # [H, W, heads, 4]
    table = layer.rpb.table
    out = torch.zeros(H, W, 2, 4, dtype=D)
    for n, keys in enumerate(pattern.keys(H, W).tolist()):
        i, j = divmod(n, W)
        rows, cols = [key // W for key in keys], [key % W for key in keys]
        for head in range(2):
            logits = torch.stack([
                q[i, j, head] @ k[r, c, head] / math.sqrt(4)
                + table[head, (r - i) // dh + kh - 1, (c - j) // dw + kw - 1]
                for r, c in zip(rows, cols)
            ])
            weights = logits.softmax(0)
            out[i, j, head] = sum(w * v[r, c, head] for w, r, c in zip(weights, rows, cols))
    torch.testing.assert_close(layer(x)[0], layer.proj(out.reshape(H, W, 8)))


def test_sasa_heads_only_see_their_channel_group():
    layer = build(lambda: StandAloneAttention(12, 3, 3))
    x = randn(1, 5, 5, 12)
    base_out, base_qkv = layer(x), layer.qkv(x).reshape(1, 5, 5, 3, 3, 4)  # [.., q/k/v, heads, head_dim]
    for g in range(3):
        moved = x.clone()
        moved[..., 4 * g:4 * g + 4] += randn(1, 5, 5, 4, seed=g + 1)
        out, qkv = layer(moved), layer.qkv(moved).reshape(1, 5, 5, 3, 3, 4)
        others = [h for h in range(3) if h != g]
        assert torch.equal(qkv[..., others, :], base_qkv[..., others, :])
        assert (qkv[..., g, :] != base_qkv[..., g, :]).all()
        channels = [c for h in others for c in range(4 * h, 4 * h + 4)]
        assert torch.equal(out[..., channels], base_out[..., channels])
        assert (out[..., 4 * g:4 * g + 4] != base_out[..., 4 * g:4 * g + 4]).any()


@pytest.mark.parametrize("padding, scale", [("zeros", None), ("zeros", 0.4), ("mask", None)])
def test_sasa_is_zero_padding_then_a_plain_window_softmax(padding, scale):
    """docs/semantics.md §2: pad the map with zero vectors, then softmax over the whole k x k window
    (with padding="mask": over the in-map part only), logits scale * q . (k + concat(r_row, r_col))."""
    H, W, k, heads, hd = 4, 5, 3, 2, 4
    layer = build(lambda: StandAloneAttention(heads * hd, heads, k, padding=padding, scale=scale))
    x = randn(1, H, W, heads * hd)
    p = k // 2
    padded = F.pad(x, (0, 0, p, p, p, p))  # [1, H+2p, W+2p, C]: zero feature vectors outside
    q, kk, v = (split_heads(t, heads) for t in layer.qkv(padded)[0].chunk(3, dim=-1))  # [H+2p, W+2p, heads, hd]
    row, col = layer.rel.row, layer.rel.col  # [heads, k, hd // 2]: index a <-> offset a - k // 2
    out = torch.zeros(H, W, heads, hd, dtype=D)
    for i in range(H):
        for j in range(W):
            for h in range(heads):
                logits, values = [], []
                for a in range(k):
                    for b in range(k):
                        if padding == "mask" and not (0 <= i + a - p < H and 0 <= j + b - p < W):
                            continue
                        r = torch.cat([row[h, a], col[h, b]])
                        s = 1.0 if scale is None else scale
                        logits.append(s * q[i + p, j + p, h] @ (kk[i + a, j + b, h] + r))
                        values.append(v[i + a, j + b, h])
                weights = torch.stack(logits).softmax(0)
                out[i, j, h] = sum(w * val for w, val in zip(weights, values))
    torch.testing.assert_close(layer(x)[0], out.reshape(H, W, heads * hd))
    if padding == "zeros":  # padded positions are literally zero keys/values (no projection bias)
        zero = torch.zeros(1, 1, 1, heads * hd, dtype=D)
        assert torch.equal(layer.qkv(zero), torch.zeros(1, 1, 1, 3 * heads * hd, dtype=D))


@pytest.mark.parametrize("fused", [True, False])
def test_attention_stem_mixes_values_by_the_query_key_offset(fused):
    H, W, k, heads, hd, M = 4, 5, 3, 2, 3, 4
    layer = randomise(build(lambda: AttentionStem(3, heads * hd, heads, k, mixtures=M, scale=0.6)))
    x = randn(1, H, W, 3)
    p = k // 2
    padded = F.pad(x, (0, 0, p, p, p, p))[0]  # [H+2p, W+2p, 3]
    q, kk = (split_heads(t, heads) for t in layer.qk(padded).chunk(2, dim=-1))  # [H+2p, W+2p, heads, hd]
    vm = layer.value(padded).reshape(H + 2 * p, W + 2 * p, M, heads, hd)  # W_V^m x
    mix = torch.zeros(M, k, k, dtype=D)  # p_m(dh, dw) at [m, dh + p, dw + p]
    for a in range(k):
        for b in range(k):
            mix[:, a, b] = ((layer.emb_row[a] + layer.emb_col[b]) @ layer.nu.T).softmax(0)
    out = torch.zeros(H, W, heads, hd, dtype=D)
    for i in range(H):
        for j in range(W):
            for h in range(heads):
                window = [(a, b) for a in range(k) for b in range(k)]
                weights = torch.stack([0.6 * q[i + p, j + p, h] @ kk[i + a, j + b, h] for a, b in window]).softmax(0)
                out[i, j, h] = sum(w * sum(mix[m, a, b] * vm[i + a, j + b, m, h] for m in range(M))
                                   for w, (a, b) in zip(weights, window))
    with contextlib.nullcontext() if fused else explicit(layer):
        torch.testing.assert_close(layer(x)[0], out.reshape(H, W, heads * hd))


def partitioned_by_hand(layer, x, groups, size):
    """Attention inside groups by plain reshapes: ``groups(t)`` maps [H, W, c] -> [n_groups, G*G, c]
    with token r of a group at within-group position (r // Gw, r % Gw); ``size = (Gh, Gw)``."""
    H, W, C = x.shape[1:]
    heads, hd = layer.heads, layer.head_dim
    Gh, Gw = size
    q, k, v = (split_heads(groups(t), heads).permute(2, 0, 1, 3)  # [n, G*G, heads, hd] -> [heads, n, G*G, hd]
               for t in layer.qkv(x)[0].chunk(3, dim=-1))
    pos = torch.stack(torch.meshgrid(torch.arange(Gh), torch.arange(Gw), indexing="ij"), -1).reshape(-1, 2)
    rel = pos[None, :, :] - pos[:, None, :]  # [G*G (query), G*G (key), 2] key - query
    bias = layer.bias(H, W)[:, rel[..., 0] + Gh - 1, rel[..., 1] + Gw - 1]  # [heads, G*G, G*G]
    probs = (q @ k.transpose(-1, -2) / math.sqrt(hd) + bias[:, None]).softmax(-1)
    out = (probs @ v).permute(1, 2, 0, 3).reshape(-1, Gh * Gw, C)  # [n, G*G, C]
    return out


def block_groups(P):
    def groups(t):  # [H, W, c] -> [H/P, P, W/P, P, c] -> [H/P, W/P, P, P, c] -> [n, P*P, c]
        H, W, c = t.shape
        return t.reshape(H // P, P, W // P, P, c).permute(0, 2, 1, 3, 4).reshape(-1, P * P, c)

    def ungroup(t, H, W):
        return t.reshape(H // P, W // P, P, P, -1).permute(0, 2, 1, 3, 4).reshape(H, W, -1)
    return groups, ungroup


def grid_groups(G):
    def groups(t):  # (h, w) = (gi * s + si, gj * s + sj): [G, s, G, s, c] -> [s, s, G, G, c] -> [n, G*G, c]
        H, W, c = t.shape
        return t.reshape(G, H // G, G, W // G, c).permute(1, 3, 0, 2, 4).reshape(-1, G * G, c)

    def ungroup(t, H, W):
        return t.reshape(H // G, W // G, G, G, -1).permute(2, 0, 3, 1, 4).reshape(H, W, -1)
    return groups, ungroup


@pytest.mark.parametrize("kind, size, H, W",
                         [("block", 2, 4, 6), ("block", 3, 6, 3), ("grid", 2, 4, 6), ("grid", 3, 6, 9)])
def test_block_and_grid_attention_are_reshapes_into_groups(kind, size, H, W):
    if kind == "block":
        cls, (groups, ungroup) = BlockAttention, block_groups(size)
    else:
        cls, (groups, ungroup) = GridAttention, grid_groups(size)
    layer = randomise(build(lambda: cls(8, 2, size)))
    x = randn(1, H, W, 8)
    want = layer.proj(ungroup(partitioned_by_hand(layer, x, groups, (size, size)), H, W))
    torch.testing.assert_close(layer(x)[0], want)


def copy_weights(src, dst, table):
    dst.qkv.load_state_dict(src.qkv.state_dict())
    dst.proj.load_state_dict(src.proj.state_dict())
    with torch.no_grad():
        dst.rpb.table.copy_(table)


def test_lda_equals_grid_attention_with_the_same_weights():
    lda = randomise(build(lambda: LongShortDistanceAttention(8, 2, "lda", group=2, interval=2)))
    grid = build(lambda: GridAttention(8, 2, (3, 2)))
    copy_weights(lda, grid, lda.dpb((3, 2)))  # H / I = 3, W / I = 2
    x = randn(2, 6, 4, 8)
    torch.testing.assert_close(lda(x), grid(x))
    assert lda.pattern(6, 4).extent(6, 4) == grid.pattern(6, 4).extent(6, 4) == (3, 2)


def test_sda_equals_block_attention_with_the_same_weights():
    sda = randomise(build(lambda: LongShortDistanceAttention(8, 2, "sda", group=3)))
    block = build(lambda: BlockAttention(8, 2, 3))
    copy_weights(sda, block, sda.dpb((3, 3)))
    x = randn(2, 6, 9, 8)
    torch.testing.assert_close(sda(x), block(x))


def test_lsda_on_a_map_no_larger_than_the_group_is_global_attention_with_pixel_offsets():
    layer = randomise(build(lambda: LongShortDistanceAttention(8, 2, "sda", group=(4, 5))), std=0.3)
    x = randn(1, 4, 5, 8)
    assert layer.pattern(4, 5) == Global() and layer.pattern(5, 5) == Block((4, 5))

    def everything(t):  # one group, position = pixel
        return t.reshape(1, -1, t.shape[-1])

    want = layer.proj(partitioned_by_hand(layer, x, everything, (4, 5)).reshape(4, 5, 8))
    torch.testing.assert_close(layer(x)[0], want)


def test_a_learned_table_serves_smaller_extents_with_the_same_offsets():
    rpb = randomise(build(lambda: RelativePositionBias(2, (3, 4))))
    small = rpb((2, 3))  # offsets -1..1 by -2..2
    assert small.shape == (2, 3, 5)
    for dh in range(-1, 2):
        for dw in range(-2, 3):
            assert torch.equal(small[:, dh + 1, dw + 2], rpb.table[:, dh + 2, dw + 3])
    assert rpb((3, 4)) is rpb.table and rpb() is rpb.table


def test_a_shrunk_table_works_under_flop_counting_and_trains_only_its_centre():
    """Model.summary counts FLOPs under no_grad with module hooks; the shrunk table must pass them."""
    layer = build(lambda: PatternAttention(8, 2, lambda H, W: Block((min(H, 3), min(W, 3))),
                                           bias=RelativePositionBias(2, 3)))
    with torch.no_grad(), FlopCounterMode(display=False):
        layer(randn(1, 2, 2, 8))
    (layer(randn(1, 2, 2, 8)) * randn(1, 2, 2, 8, seed=1)).sum().backward()
    grad = layer.rpb.table.grad  # [2, 5, 5]; a 2 x 2 window uses offsets -1..1: the centre [1:4, 1:4]
    assert grad[:, 1:4, 1:4].abs().sum() > 0
    grad[:, 1:4, 1:4] = 0
    assert (grad == 0).all()


def test_dynamic_position_bias_serves_every_group_size():
    layer = build(lambda: LongShortDistanceAttention(8, 2, "lda", group=2, interval=3, pad=True))
    for H, W in [(5, 7), (9, 4), (6, 6)]:
        assert layer(randn(1, H, W, 8)).shape == (1, H, W, 8)
        assert layer.bias(H, W).shape == (2, 2 * math.ceil(H / 3) - 1, 2 * math.ceil(W / 3) - 1)


def test_mbconv_shortcut_and_strides():
    block = build(lambda: MBConv(8, 8)).eval()
    x = randn(2, 5, 6, 8)
    with torch.no_grad():
        block.project.weight.zero_()
        block.project.bias.zero_()
    torch.testing.assert_close(block(x), x)  # identity shortcut, main branch silenced
    down = build(lambda: MBConv(8, 16, stride=2)).eval()
    with torch.no_grad():
        down.project.weight.zero_()
        down.project.bias.zero_()
    x = randn(2, 7, 6, 8)
    pooled = F.avg_pool2d(x.permute(0, 3, 1, 2), 2, ceil_mode=True, count_include_pad=False)  # [2, 8, 4, 3]
    conv = down.shortcut[-1]
    want = torch.einsum("oc,bchw->bhwo", conv.weight[:, :, 0, 0], pooled) + conv.bias
    torch.testing.assert_close(down(x), want)
    assert build(lambda: MBConv(8, 16, stride=2))(x).shape == (2, 4, 3, 16)


def test_maxvit_block_is_mbconv_then_block_then_grid_with_pre_norm_residuals():
    blk = randomise(build(lambda: MaxViTBlock(4, 8, 2, 2, stride=2)), std=0.3).eval()
    x = randn(1, 8, 8, 4)
    y = blk.mbconv(x)  # [1, 4, 4, 8]
    (bg, bu), (gg, gu) = block_groups(2), grid_groups(2)
    y = y + blk.block_attn.proj(bu(partitioned_by_hand(blk.block_attn, blk.norm1(y), bg, (2, 2)), 4, 4))
    y = y + blk.mlp1.fc2(F.gelu(blk.mlp1.fc1(blk.norm2(y))))
    y = y + blk.grid_attn.proj(gu(partitioned_by_hand(blk.grid_attn, blk.norm3(y), gg, (2, 2)), 4, 4))
    y = y + blk.mlp2.fc2(F.gelu(blk.mlp2.fc1(blk.norm4(y))))
    torch.testing.assert_close(blk(x), y)


def test_cross_scale_embedding_splits_channels_towards_small_kernels():
    assert split_channels(64, 4) == [32, 16, 8, 8]
    assert split_channels(64, 2) == [32, 32]
    assert split_channels(96, 3) == [48, 24, 24]
    cel = CrossScaleEmbedding(3, 64)
    assert [(c.kernel_size[0], c.stride[0], c.padding[0], c.out_channels) for c in cel.convs] == [
        (4, 4, 0, 32), (8, 4, 2, 16), (16, 4, 6, 8), (32, 4, 14, 8)]
    merge = CrossScaleEmbedding(16, 32, kernels=(2, 4), stride=2)
    assert [(c.kernel_size[0], c.padding[0], c.out_channels) for c in merge.convs] == [(2, 0, 16), (4, 1, 16)]
    assert merge(torch.randn(1, 6, 10, 16)).shape == (1, 3, 5, 32)


def test_cross_scale_embedding_windows_share_their_centres():
    """Each conv averages its window: on a ramp input every kernel reports the same centre s*i + (s-1)/2."""
    cel = build(lambda: CrossScaleEmbedding(1, 4, kernels=(4, 8), stride=4))
    with torch.no_grad():
        for conv in cel.convs:
            conv.weight.fill_(1 / conv.kernel_size[0] ** 2)
            conv.bias.zero_()
    ramp = torch.arange(16, dtype=D)
    rows = cel(ramp[None, :, None, None].expand(1, 16, 16, 1))  # value = row index
    cols = cel(ramp[None, None, :, None].expand(1, 16, 16, 1))  # value = column index
    centre = 4 * torch.arange(4, dtype=D) + 1.5
    inside = slice(1, 3)  # outputs whose largest window lies inside the map
    torch.testing.assert_close(rows[0, inside, inside], centre[inside, None, None].expand(2, 2, 4))
    torch.testing.assert_close(cols[0, inside, inside], centre[None, inside, None].expand(2, 2, 4))


def test_cross_scale_embedding_is_concatenated_centred_convolutions():
    cel = build(lambda: CrossScaleEmbedding(3, 8, kernels=(2, 4, 6), stride=2))
    x = randn(2, 8, 6, 3)
    image = x.permute(0, 3, 1, 2)
    want = torch.cat([F.conv2d(image, c.weight, c.bias, stride=2, padding=(k - 2) // 2)
                      for c, k in zip(cel.convs, (2, 4, 6))], dim=1).permute(0, 2, 3, 1)
    assert [c.out_channels for c in cel.convs] == [4, 2, 2]
    torch.testing.assert_close(cel(x), want)


# ---------------------------------------------------------------------------------------------
# LaViT
# ---------------------------------------------------------------------------------------------
def test_vanilla_attention_scores_and_output_by_hand():
    layer = randomise(build(lambda: VanillaAttention(8, 2)), std=0.3)
    x, residual = randn(2, 3, 4, 8), randn(2, 2, 12, 12, seed=4)
    q, k, v = (split_heads(t, 2).reshape(2, 12, 2, 4).transpose(1, 2) for t in layer.qkv(x).chunk(3, dim=-1))
    scores = q @ k.transpose(-1, -2) / 2.0 + residual  # [B, heads, N, N], sqrt(head_dim) = 2
    want = layer.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 3, 4, 8))
    out, got = layer(x, residual)
    torch.testing.assert_close(got, scores)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(layer(x)[1], scores - residual)


def test_less_attention_starts_as_exact_reuse():
    layer = build(lambda: LessAttention(8, 2, tokens=12))
    prev = randn(2, 2, 12, 12, seed=2) * 5
    out, scores = layer(randn(2, 3, 4, 8), prev)
    assert torch.equal(scores, prev)


def test_less_attention_transform_and_output_by_hand():
    layer = build(lambda: randomise(LessAttention(8, 2, tokens=12), std=0.3))
    x, prev = randn(2, 3, 4, 8), randn(2, 2, 12, 12, seed=2)
    w_theta, b_theta, w_psi, b_psi = layer.theta.weight, layer.theta.bias, layer.psi.weight, layer.psi.bias
    ones = torch.ones(12, dtype=D)
    want = w_psi @ prev @ w_theta.T + torch.outer(w_psi @ ones, b_theta) + torch.outer(b_psi, ones)
    out, scores = layer(x, prev)
    torch.testing.assert_close(scores, want)
    v = split_heads(layer.value(x), 2).reshape(2, 12, 2, 4).transpose(1, 2)  # [B, heads, N, head_dim]
    torch.testing.assert_close(out, layer.proj((want.softmax(-1) @ v).transpose(1, 2).reshape(2, 3, 4, 8)))


@pytest.mark.parametrize("size_prev", [8, (4, 6)])
def test_attention_residual_pools_query_and_key_grids(size_prev):
    Hp, Wp = (size_prev, size_prev) if isinstance(size_prev, int) else size_prev
    Hm, Wm = Hp // 2, Wp // 2
    ar = randomise(build(lambda: AttentionResidual(3, size_prev)))
    scores = randn(2, 3, Hp * Wp, Hp * Wp, seed=7)
    out = ar(scores)
    assert out.shape == (2, 3, Hm * Wm, Hm * Wm)
    # by hand on the 4-D view: 2x2 blocks of the query grid (c, d) and of the key grid (a, b)
    blocks = scores.reshape(2, 3, Hm, 2, Wm, 2, Hm, 2, Wm, 2)  # [B, h, qi, c, qj, d, ki, a, kj, b]
    wq, bq = ar.down_query.weight[:, 0], ar.down_query.bias  # [h, 2, 2], [h]
    wk, bk = ar.down_key.weight[:, 0], ar.down_key.bias
    pooled_q = torch.einsum("Bhicjdkalb,hcd->Bhijkalb", blocks, wq) + bq[:, None, None, None, None, None, None]
    pooled = torch.einsum("Bhijkalb,hab->Bhijkl", pooled_q, wk) + bk[:, None, None, None, None]
    pooled = pooled.reshape(2, 3, Hm * Wm, Hm * Wm)
    mixed = torch.einsum("gh,Bhnm->Bgnm", ar.mix.weight[:, :, 0, 0], pooled) + ar.mix.bias[:, None, None]
    torch.testing.assert_close(out, mixed * ar.scale.gamma[:, None, None])


def test_attention_residual_keeps_a_constant_map_constant_and_starts_small():
    assert torch.equal(AttentionResidual(2, 8).scale.gamma, torch.full((2,), 1e-4))
    ar = build(lambda: AttentionResidual(2, 8))
    randomise(ar)
    out = ar(torch.full((1, 2, 64, 64), 3.0, dtype=D))
    assert out.shape == (1, 2, 16, 16)
    torch.testing.assert_close(out, out[..., :1, :1].expand_as(out))  # constant within each head
    assert not torch.allclose(out[0, 0], out[0, 1])  # but the heads are mixed differently


def test_mlp_and_layer_scale():
    mlp = build(lambda: Mlp(4, ratio=2.0, dim_out=3))
    x = randn(2, 5, 4)
    torch.testing.assert_close(mlp(x), mlp.fc2(F.gelu(mlp.fc1(x))))
    assert mlp.fc1.out_features == 8
    scale = build(lambda: LayerScale(3, init=0.5, axis=1))
    with torch.no_grad():
        scale.gamma.copy_(torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(scale(torch.ones(1, 3, 2, dtype=D)),
                               torch.tensor([[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]], dtype=D))
