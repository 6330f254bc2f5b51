import math

import pytest
import torch

from vizattn.patterns import Block, Global, Grid, LocalWindow, LongDistance, Neighborhood

import brute
from cases import CASES, IDS


@pytest.mark.parametrize("pattern, spec_h, spec_w, H, W", CASES, ids=IDS)
def test_keys_and_offsets_match_semantics(pattern, spec_h, spec_w, H, W):
    table = brute.slots(spec_h, spec_w, H, W)
    keys, offsets = pattern.keys(H, W), pattern.offsets(H, W)
    assert keys.shape == (H * W, len(table[0])) and offsets.shape == keys.shape + (2,)
    assert keys.tolist() == [[-1 if key is None else key for key, _ in row] for row in table]
    assert offsets.tolist() == [[list(off) for _, off in row] for row in table]


@pytest.mark.parametrize("pattern, spec_h, spec_w, H, W", CASES, ids=IDS)
def test_mask_extent_and_offsets_fit_the_table(pattern, spec_h, spec_w, H, W):
    table = brute.slots(spec_h, spec_w, H, W)
    expected = torch.zeros(H * W, H * W, dtype=torch.bool)
    for n, row in enumerate(table):
        for key, _ in row:
            if key is not None:
                expected[n, key] = True
    assert torch.equal(pattern.mask(H, W), expected)
    kh, kw = pattern.extent(H, W)
    assert kh * kw == len(table[0])
    off = pattern.offsets(H, W)
    assert off[..., 0].abs().max() <= kh - 1 and off[..., 1].abs().max() <= kw - 1


def test_worked_examples_from_semantics():
    starts = Neighborhood((2, 3)).keys(2, 7)[:7, 0]  # first row: columns of slot 0 = window starts
    assert starts.tolist() == [0, 0, 1, 2, 3, 4, 4]
    cols = Neighborhood((2, 3), dilation=(1, 2)).keys(2, 7)[:7, :3]
    assert cols[5].tolist() == [1, 3, 5] and cols[6].tolist() == [2, 4, 6]


@pytest.mark.parametrize("k, d, L", [(3, 1, 7), (4, 1, 9), (3, 2, 7), (2, 3, 8), (5, 2, 10), (3, 4, 13)])
def test_neighborhood_is_shifted_never_clipped(k, d, L):
    keys = Neighborhood(k, dilation=d).keys(L, L)
    assert (keys >= 0).all() and (keys.sort(-1).values.diff(dim=-1) != 0).all()  # k*k distinct real keys
    q = torch.arange(L * L)[:, None]
    assert (keys == q).any(-1).all()  # every query sees itself
    # attention never crosses dilation groups
    assert ((keys // L) % d == (q // L) % d).all() and ((keys % L) % d == (q % L) % d).all()


def test_local_window_zero_slots_only_outside_the_map():
    keys = LocalWindow(5).keys(6, 6)
    assert (keys[14] >= 0).all()  # (2, 2) is interior
    assert (keys[0] < 0).sum() == 25 - 9  # corner: only a 3 x 3 quarter lies on the map
    assert LocalWindow(5).zero_slots and not LocalWindow(5, padding="mask").zero_slots


@pytest.mark.parametrize("H, W", [(5, 7), (6, 6)])
def test_full_neighborhood_is_global(H, W):
    assert torch.equal(Neighborhood((H, W)).mask(H, W), Global().mask(H, W))


def test_block_equals_grid_equals_global_when_one_group_covers_the_map():
    assert torch.equal(Block(6).mask(6, 6), Grid(6).mask(6, 6))
    assert torch.equal(Block(6).mask(6, 6), Global().mask(6, 6))


@pytest.mark.parametrize("I, H, W", [(2, 6, 8), (4, 8, 12), (3, 9, 9)])
def test_long_distance_equals_grid_of_map_over_interval(I, H, W):
    lda, grid = LongDistance(I), Grid((H // I, W // I))
    assert torch.equal(lda.keys(H, W), grid.keys(H, W)) and torch.equal(lda.offsets(H, W), grid.offsets(H, W))


def test_block_then_grid_partition_the_map():
    # every token is in exactly one block and one grid group; a block and a grid group meet in one token
    H = W = 12
    block, grid = Block(3).mask(H, W), Grid(4).mask(H, W)
    assert (block.sum(-1) == 9).all() and (grid.sum(-1) == 16).all()
    assert ((block.float() @ grid.float()) > 0).all()  # block then grid reaches every token


def test_patterns_are_values():
    assert Neighborhood(7) == Neighborhood((7, 7)) and hash(Block(4)) == hash(Block((4, 4)))
    assert Neighborhood(7, dilation=1) != Neighborhood(7, dilation=2)
    assert repr(Neighborhood(7, dilation=2)) == "Neighborhood(7, dilation=2)"
    assert repr(LocalWindow((3, 5), padding="mask")) == "LocalWindow((3, 5), padding='mask')"
    assert repr(Block(7, shift=3)) == "Block(7, shift=3)" and repr(Block(7)) == "Block(7)"
    assert repr(Block((4, 6), shift=(2, 0), pad=True)) == "Block((4, 6), shift=(2, 0), pad=True)"
    assert Block(4, shift=0) == Block(4) and Block(4, shift=2) == Block((4, 4), shift=(2, 2)) != Block(4)
    keys = Block(2).keys(4, 4)
    keys[0, 0] = 99  # a copy: the cached geometry is safe
    assert Block(2).keys(4, 4)[0, 0] == 0


@pytest.mark.parametrize(
    "make, H, W, message",
    [
        (lambda: Neighborhood(7, dilation=2), 12, 12, "kernel_size * dilation must not exceed the map size"),
        (lambda: Neighborhood(5), 4, 9, "got kernel_size=(5, 5), dilation=(1, 1), map=(4, 9)"),
        (lambda: Block(5), 12, 10, "multiple of size on each axis (or pass pad=True); got size=(5, 5), map=(12, 10)"),
        (lambda: Grid(5), 10, 12, "multiple of size"),
        (lambda: LongDistance(3), 9, 10, "multiple of interval"),
        (lambda: Global(), 0, 4, "map size must be at least 1"),
        (lambda: Block(4, shift=2), 4, 8, "a shifted axis needs a map larger than the window"),
        (lambda: Block(4, shift=(0, 2), pad=True), 9, 3, "got size=(4, 4), shift=(0, 2), map=(9, 3)"),
        (lambda: Block(4, shift=1), 12, 10, "multiple of size"),
    ],
)
def test_patterns_that_do_not_fit_the_map(make, H, W, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        make().keys(H, W)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Neighborhood(1), "kernel_size must be at least 2"),
        (lambda: Neighborhood(3, dilation=0), "dilation must be at least 1"),
        (lambda: Neighborhood(2.5), "kernel_size must be an int or a pair of ints"),
        (lambda: Neighborhood((3, 3, 3)), "kernel_size must be an int or a pair"),
        (lambda: LocalWindow(4), "odd kernel_size"),
        (lambda: LocalWindow(3, padding="reflect"), "padding must be 'zeros' or 'mask'"),
        (lambda: Block(0), "size must be at least 1"),
        (lambda: Block(4, shift=4), r"shift must be smaller than size.*size=\(4, 4\), shift=\(4, 4\)"),
        (lambda: Block((4, 2), shift=(1, 2)), r"0 <= shift < size\); got size=\(4, 2\), shift=\(1, 2\)"),
        (lambda: Block(4, shift=-1), "shift must be at least 0"),
        (lambda: Block(4, shift=1.5), "shift must be an int or a pair of ints"),
        (lambda: Grid(-2), "size must be at least 1"),
        (lambda: LongDistance(True), "interval must be an int or a pair"),
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_padded_partitions_cover_non_dividing_maps():
    H, W = 7, 10
    for pattern in (Block(3, pad=True), Block(3, shift=(1, 2), pad=True), Grid(3, pad=True), LongDistance(4, pad=True)):
        mask = pattern.mask(H, W)
        assert torch.equal(mask, mask.T)  # a partition: symmetric, transitive
        assert torch.equal((mask.float() @ mask.float() > 0), mask)
        assert mask.diagonal().all()
    assert LongDistance(4, pad=True).extent(H, W) == (math.ceil(7 / 4), math.ceil(10 / 4))


@pytest.mark.parametrize("pattern, spec_h, spec_w, H, W", CASES, ids=IDS)
def test_one_geometry_per_pattern_and_map_holds_the_facts_every_backend_reads(pattern, spec_h, spec_w, H, W):
    from vizattn.geometry import geometry

    g = geometry(pattern, H, W)
    assert geometry(pattern, H, W, "cpu") is g and geometry(type(pattern)(**vars(pattern)), H, W) is g  # cached once
    assert g.derived("a table", lambda g: object()) is g.derived("a table", lambda g: object())
    table = brute.slots(spec_h, spec_w, H, W)
    kh, kw = g.extent
    for n, row in enumerate(table):
        for s, (key, (dh, dw)) in enumerate(row):
            assert g.zero[n, s] == (key is None and pattern.zero_slots)
            assert g.excluded[n, s] == (key is None and not pattern.zero_slots)
            assert g.bias_index[n, s] == (dh + kh - 1) * (2 * kw - 1) + (dw + kw - 1)  # [dh + kh - 1, dw + kw - 1]
