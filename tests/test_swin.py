"""Swin's shifted windows (docs/semantics.md §7) against a reference written from Swin's own definition:
pad to a multiple of the window, roll the map by -s, cut P x P windows, label the rolled map's regions
as Swin's attention mask does, let only pairs inside one window and one region attend, roll back.
Nothing here uses vizattn's rule in original coordinates (boundaries at s + kP)."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from vizattn import attend
from vizattn.layers import PatchMerging, ShiftedWindowAttention, SwinBlock
from vizattn.patterns import Block

D = torch.float64


def rolled_layout(H, W, P, s):
    """Swin's view of an ``H x W`` map: for every rolled position of the padded map, the original token
    (``-1`` for padding), its window, its region and its position in the window. ``P, s`` are pairs."""
    Hp, Wp = (math.ceil(L / p) * p for L, p in zip((H, W), P))
    token = torch.full((Hp, Wp), -1, dtype=torch.long)
    token[:H, :W] = torch.arange(H * W).reshape(H, W)
    token = torch.roll(token, shifts=(-s[0], -s[1]), dims=(0, 1))  # what sits at each rolled position
    region = torch.zeros(Hp, Wp, dtype=torch.long)  # Swin's img_mask: 3 x 3 slices of the rolled map
    label = 0
    for rows in (slice(0, Hp - P[0]), slice(Hp - P[0], Hp - s[0]), slice(Hp - s[0], Hp)):
        for cols in (slice(0, Wp - P[1]), slice(Wp - P[1], Wp - s[1]), slice(Wp - s[1], Wp)):
            region[rows, cols] = label
            label += 1
    h, w = torch.meshgrid(torch.arange(Hp), torch.arange(Wp), indexing="ij")
    window = (h // P[0]) * (Wp // P[1]) + w // P[1]
    return token, window, region, torch.stack([h % P[0], w % P[1]], -1)


def swin_mask(H, W, P, s):
    """``[N, N]``: may query token a attend to token b, by Swin's definition (padding excluded)."""
    token, window, region, _ = rolled_layout(H, W, P, s)
    t, win, reg = token.flatten(), window.flatten(), region.flatten()
    allowed = (win[:, None] == win[None, :]) & (reg[:, None] == reg[None, :]) & (t[:, None] >= 0) & (t[None, :] >= 0)
    mask = torch.zeros(H * W, H * W, dtype=torch.bool)
    a, b = allowed.nonzero().unbind(-1)
    mask[t[a], t[b]] = True
    return mask


def sizes():
    """(P, s, H, W): windows 2-5 and rectangular, every shift, maps that are multiples, odd or padded."""
    out = []
    for P in (2, 3, 4, 5, (3, 2), (2, 5)):
        Ph, Pw = (P, P) if isinstance(P, int) else P
        shifts = sorted(set(itertools.product(range(Ph), range(Pw))) if Ph * Pw <= 9 else
                        {(s, s) for s in range(min(Ph, Pw))} | {(Ph - 1, 0), (0, Pw - 1)})
        for s in shifts:
            for a, b in ((2, 3), (3, 2), (4, 4)):
                out.append((P, s, a * Ph, b * Pw, False))
            out.append((P, s, 2 * Ph + 1, 3 * Pw - 1, True))  # padded: odd and non-dividing
    return out


SIZES = sizes()


@pytest.mark.parametrize("P, s, H, W, pad", SIZES, ids=[f"P{P}-s{s}-{H}x{W}" for P, s, H, W, _ in SIZES])
def test_shifted_block_is_swins_rolled_window_mask(P, s, H, W, pad):
    pattern = Block(P, shift=s, pad=pad)
    Ph, Pw = pattern.size
    want = swin_mask(H, W, (Ph, Pw), s)
    assert torch.equal(pattern.mask(H, W), want)
    keys = pattern.keys(H, W)  # the key sets, slot by slot: the window position on the rolled map
    assert [sorted(k for k in row if k >= 0) for row in keys.tolist()] == [row.nonzero().flatten().tolist()
                                                                          for row in want]


@pytest.mark.parametrize("P, s, H, W", [(3, (1, 2), 6, 9), (4, (2, 2), 8, 12), ((3, 2), (2, 1), 9, 5)])
def test_slots_are_window_positions_and_offsets_swins_relative_coordinates(P, s, H, W):
    pattern = Block(P, shift=s, pad=True)
    Ph, Pw = pattern.size
    token, _, _, position = rolled_layout(H, W, (Ph, Pw), s)
    keys, offsets = pattern.keys(H, W), pattern.offsets(H, W)
    where = {t: tuple(position[h, w].tolist()) for (h, w), t in zip(itertools.product(*map(range, token.shape)),
                                                                    token.flatten().tolist()) if t >= 0}
    for q in range(H * W):
        for slot, (k, off) in enumerate(zip(keys[q].tolist(), offsets[q].tolist())):
            if k >= 0:
                assert where[k] == divmod(slot, Pw)  # slot t = position t of the rolled window
                # key - query in window coordinates (Swin's relative coordinates, negated) = pixels
                assert off == [where[k][0] - where[q][0], where[k][1] - where[q][1]]
                assert off == [k // W - q // W, k % W - q % W]


def test_shift_zero_is_w_msa_and_half_shift_is_swins_default():
    assert Block(4, shift=0) == Block(4)
    assert torch.equal(Block(7, shift=3).mask(14, 14), swin_mask(14, 14, (7, 7), (3, 3)))
    groups = Block(7, shift=3).mask(14, 14)[:14 * 7:14].sum(-1)  # column 0, rows 0-6: groups of 3 then 7 rows
    assert groups.tolist() == [3 * 3] * 3 + [7 * 3] * 4


# ---------------------------------------------------------------------------------------------
# attention: Swin's computation (roll, windows, mask, bias, roll back) against vizattn.attend
# ---------------------------------------------------------------------------------------------
def swin_attention(q, k, v, P, s, bias, scale, table_window=None):
    """Swin's SW-MSA on ``[B, heads, H, W, d]`` (H, W multiples of P): roll by -s, windows, masked softmax
    with the bias ``bias[head, key - query + T - 1]`` (``T = table_window``, default P), roll back.
    Returns ``out`` and the window probabilities ``[B, heads, H, W, P*P]`` of each query, in original
    coordinates."""
    B, heads, H, W, _ = q.shape
    (Ph, Pw), nh, nw = P, H // P[0], W // P[1]

    def windows(t):  # [b, h, H, W, c] -> [b, h, nh * nw, Ph * Pw, c]
        b, h = t.shape[:2]
        return t.reshape(b, h, nh, Ph, nw, Pw, -1).permute(0, 1, 2, 4, 3, 5, 6).reshape(b, h, nh * nw, Ph * Pw, -1)

    def unwindows(t):  # the inverse, then roll back by +s
        t = t.reshape(B, heads, nh, nw, Ph, Pw, -1).permute(0, 1, 2, 4, 3, 5, 6).reshape(B, heads, H, W, -1)
        return torch.roll(t, shifts=s, dims=(2, 3))

    def rolled(t):
        return windows(torch.roll(t, shifts=(-s[0], -s[1]), dims=(2, 3)))

    _, _, region, _ = rolled_layout(H, W, P, s)  # already on the rolled map
    reg = windows(region[None, None, :, :, None])[0, 0, :, :, 0]  # [windows, P*P]
    pos = torch.stack(torch.meshgrid(torch.arange(Ph), torch.arange(Pw), indexing="ij"), -1).reshape(-1, 2)
    rel = pos[None, :, :] - pos[:, None, :]  # [query, key, 2]: key - query
    Th, Tw = table_window or P
    table = bias[:, rel[..., 0] + Th - 1, rel[..., 1] + Tw - 1]  # [heads, P*P, P*P]
    logits = scale * rolled(q) @ rolled(k).transpose(-1, -2) + table[None, :, None]
    logits = logits.masked_fill(reg[:, :, None] != reg[:, None, :], -math.inf)  # Swin: -100, i.e. weight ~ 0
    probs = logits.softmax(-1)  # [B, heads, windows, P*P, P*P]
    return unwindows(probs @ rolled(v)), unwindows(probs)


@pytest.mark.parametrize("backend", ["reference", "tiled", "auto"])
@pytest.mark.parametrize("P, s, H, W", [(3, (1, 1), 6, 9), (4, (2, 2), 12, 8), ((3, 2), (2, 1), 9, 6),
                                        (5, (4, 0), 10, 10)])
def test_attend_equals_swins_shifted_window_attention(P, s, H, W, backend):
    g = torch.Generator().manual_seed(0)
    pattern = Block(P, shift=s)
    Ph, Pw = pattern.size
    q, k, v = (torch.randn(2, 3, H, W, 4, generator=g, dtype=D) for _ in range(3))
    bias = torch.randn(3, 2 * Ph - 1, 2 * Pw - 1, generator=g, dtype=D)
    want, want_w = swin_attention(q, k, v, (Ph, Pw), s, bias, 0.5)
    out, weights = attend(q, k, v, pattern, bias=bias, scale=0.5, return_weights=True, backend=backend)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(weights, want_w)
    torch.testing.assert_close(attend(q, k, v, pattern, bias=bias, scale=0.5, backend=backend), want)


@pytest.mark.parametrize("backend", ["reference", "tiled"])
def test_gradients_equal_swins_and_pass_gradcheck(backend):
    g = torch.Generator().manual_seed(1)
    pattern, s = Block(3, shift=(1, 2)), (1, 2)
    q, k, v = (torch.randn(1, 2, 6, 6, 3, generator=g, dtype=D, requires_grad=True) for _ in range(3))
    bias = torch.randn(2, 5, 5, generator=g, dtype=D, requires_grad=True)
    weights = torch.randn(1, 2, 6, 6, 3, generator=g, dtype=D)
    want = torch.autograd.grad((swin_attention(q, k, v, (3, 3), s, bias, 0.7)[0] * weights).sum(), (q, k, v, bias))
    got = torch.autograd.grad((attend(q, k, v, pattern, bias=bias, scale=0.7, backend=backend) * weights).sum(),
                              (q, k, v, bias))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda *t: attend(*t[:3], pattern, bias=t[3], backend=backend), (q, k, v, bias))


def test_memory_of_the_fast_path_grows_with_tokens_times_window():
    from vizattn.backends.tiled import TILE, _plan
    for side in (28, 56):
        plan = _plan(Block(7, shift=3), side, side, TILE, torch.device("cpu"))
        assert plan.tile_slot.numel() <= (side // 7 + 1) ** 2 * 49 * 49  # windows + the cut ones, never N^2


# ---------------------------------------------------------------------------------------------
# the layers, by hand
# ---------------------------------------------------------------------------------------------
def randomised(module, seed=1, std=0.5):
    g = torch.Generator().manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D) * std)
    return module


def by_hand(attn, x, P, s, table_window=None):
    """The attention branch of a Swin layer from its weights: qkv, Swin's window attention, proj."""
    B, H, W, C = x.shape
    q, k, v = attn.qkv(x).reshape(B, H, W, 3, attn.heads, -1).permute(3, 0, 4, 1, 2, 5)  # [B, heads, H, W, hd]
    out, _ = swin_attention(q, k, v, P, s, attn.rpb.table, attn.head_dim**-0.5, table_window)
    return attn.proj(out.permute(0, 2, 3, 1, 4).reshape(B, H, W, C))


@pytest.mark.parametrize("shift", [0, 1, 2])
def test_swin_block_is_pre_norm_shifted_window_attention_then_mlp(shift):
    torch.manual_seed(0)
    blk = randomised(SwinBlock(8, 2, 3, shift=shift, mlp_ratio=2.0), std=0.3)
    x = torch.randn(2, 6, 9, 8, generator=torch.Generator().manual_seed(2), dtype=D)
    y = x + by_hand(blk.attn, blk.norm1(x), (3, 3), (shift, shift))
    y = y + blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(y))))
    torch.testing.assert_close(blk(x), y)


@pytest.mark.parametrize("H, W, window, shift", [(4, 4, (4, 4), (0, 0)), (3, 8, (3, 4), (0, 2)),
                                                 (8, 2, (4, 2), (2, 0))])
def test_a_map_no_larger_than_the_window_gets_one_window_of_its_size_and_no_shift(H, W, window, shift):
    torch.manual_seed(0)
    attn = randomised(ShiftedWindowAttention(8, 2, 4, shift=2), std=0.3)
    assert attn.pattern(H, W) == Block(window, shift=shift)
    x = torch.randn(1, H, W, 8, generator=torch.Generator().manual_seed(3), dtype=D)
    # the full [heads, 7, 7] table, indexed by key - query + 4 - 1: the same offsets, the same bias
    torch.testing.assert_close(attn(x), by_hand(attn, x, window, shift, table_window=(4, 4)))


def test_patch_merging_concatenates_swins_2x2_order_then_norm_and_linear():
    torch.manual_seed(0)
    merge = randomised(PatchMerging(4, 6), std=0.3)
    x = torch.randn(2, 6, 4, 4, generator=torch.Generator().manual_seed(4), dtype=D)
    parts = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
    torch.testing.assert_close(merge(x), F.linear(F.layer_norm(parts, (16,), merge.norm.weight, merge.norm.bias),
                                                  merge.reduction.weight))
    assert merge.reduction.bias is None and PatchMerging(8).reduction.out_features == 16
