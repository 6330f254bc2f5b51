"""vizattn.receptive: theoretical fields against hand-derived answers, effective fields against them, and
every registered model (probe + both fields, each in seconds)."""

import time

import pytest
import torch
from torch import nn

from vizattn import probe
from vizattn.layers import NeighborhoodAttention
from vizattn.models import list_models
from vizattn.patterns import Block, Grid, LocalWindow, LongDistance, Neighborhood
from vizattn.receptive import Downsample, _sides, effective, theoretical

BIG = 41  # a map large enough that the centre's field never touches a border
CENTRE = (20, 20)


def is_square(mask, side, centre):
    want = torch.zeros_like(mask)
    r, c = centre
    want[r - (side - 1) // 2: r + side // 2 + 1, c - (side - 1) // 2: c + side // 2 + 1] = True
    return torch.equal(mask, want)


# ---------------------------------------------------------------------------------------------
# theoretical fields, by hand
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("L", [1, 2, 3])
def test_stacked_neighborhoods_give_a_square_of_side_L_k_minus_1_plus_1(L, k):
    field = theoretical([Neighborhood(k)] * L, BIG, CENTRE)
    assert len(field) == L and all(m.shape == (BIG, BIG) for m in field)
    side = L * (k - 1) + 1
    assert is_square(field.input, side, CENTRE) and field.extent(0) == (side, side)
    assert is_square(field[L - 1], k, CENTRE)  # one step before the output: one window


def test_dilation_alternating_with_plain_neighborhoods_grows_faster():
    na, di = Neighborhood(3), Neighborhood(3, dilation=3)
    # one dilated layer alone: 3 positions per axis spaced 3 apart (extent 7, holes)
    alone = theoretical([di], BIG, CENTRE).input
    assert alone.sum() == 9 and theoretical([di], BIG, CENTRE).extent(0) == (7, 7)
    # each layer adds (k - 1) * d per axis: 3 -> 9 -> 11 -> 17, filled squares
    for steps, side in [([na], 3), ([na, di], 9), ([na, di, na], 11), ([na, di, na, di], 17)]:
        assert is_square(theoretical(steps, BIG, CENTRE).input, side, CENTRE), (steps, side)
    assert theoretical([na] * 4, BIG, CENTRE).extent(0) == (9, 9)  # plain NA: 9 < 17


def test_block_then_grid_covers_the_whole_map_in_two_layers():
    H, P, G = 12, 4, 3  # P * G == H
    for position in [(0, 0), (5, 7), (11, 11)]:
        assert theoretical([Block(P), Grid(G)], H, position).input.all()
        assert theoretical([Grid(G), Block(P)], H, position).input.all()
        one = theoretical([Block(P)], H, position).input
        assert one.sum() == P * P and not one.all()
    assert not theoretical([Block(2), Grid(3)], H, (0, 0)).input.all()  # P * G < H leaves gaps


def test_windows_then_shifted_windows_grow_two_windows_per_pair_of_layers():
    # W-MSA then SW-MSA (Swin, P = 4, s = 2), by hand per axis: the SW group of the output query
    # (boundaries at 2, 6, 10, ...), then the W windows (boundaries at 0, 4, 8, ...) that group meets
    H, P, s = 32, 4, 2
    pair = [Block(P), Block(P, shift=s)]
    assert theoretical([Block(P)], H, (5, 5)).input.sum() == P * P

    def span(steps, position):
        field = theoretical(steps, H, (position, position)).input
        rows = field.any(1).nonzero().flatten().tolist()
        assert field.sum() == len(rows) ** 2 and rows == list(range(rows[0], rows[-1] + 1))  # a filled square
        return rows[0], rows[-1] + 1

    assert span(pair, 5) == (0, 8) and span(pair, 13) == (8, 16) and span(pair, 14) == (12, 20)
    assert span(pair, 1) == (0, 4) and span(pair, 31) == (28, 32)  # the corner groups lie inside one window
    assert span(pair * 2, 15) == (8, 24)  # interior: 2P per W / SW pair, like two NA layers with k = P + 1


def test_sda_then_lda_covers_the_whole_map_when_the_group_reaches_the_interval():
    H = 12
    for position in [(0, 0), (6, 3)]:
        assert theoretical([Block(4), LongDistance(4)], H, position).input.all()
        assert theoretical([LongDistance(3), Block(3)], H, position).input.all()
    field = theoretical([Block(2), LongDistance(4)], H, (0, 0)).input  # group 2 < interval 4
    assert not field.all() and field.sum() == (2 * 3) ** 2  # LDA reaches rows {0, 4, 8}; blocks of 2 double them


def test_sasa_equals_na_inside_and_differs_at_the_corner():
    for L in (1, 2):
        na = theoretical([Neighborhood(3)] * L, 10, (5, 5)).input
        sasa = theoretical([LocalWindow(3)] * L, 10, (5, 5)).input
        assert torch.equal(na, sasa)
        na = theoretical([Neighborhood(3)] * L, 10, (0, 0)).input
        sasa = theoretical([LocalWindow(3)] * L, 10, (0, 0)).input
        assert not torch.equal(na, sasa)
    # one layer at the corner: NA shifts its window inward (3x3), SASA's is clipped (2x2)
    assert theoretical([Neighborhood(3)], 10, (0, 0)).extent(0) == (3, 3)
    assert theoretical([LocalWindow(3)], 10, (0, 0)).extent(0) == (2, 2)


def test_a_2x_downsampling_between_stages_scales_the_field():
    # NA(3) -> patchify 2x2 -> NA(3): 3 positions below read 6 pixels, and NA(3) adds 2: side 8
    field = theoretical([Neighborhood(3), Downsample(2), Neighborhood(3)], 32, (8, 8))
    assert [m.shape for m in field] == [(32, 32), (32, 32), (16, 16)]
    assert is_square(field[1], 6, (16, 16)) and field.extent(0) == (8, 8)  # rows 14..19, then 13..20
    # a 3x3 stride-2 convolution (padding 1) reads 2 * 2 + 3 = 7 pixels for 3 positions: side 9
    assert theoretical([Neighborhood(3), Downsample(2, kernel=3), Neighborhood(3)], 32, (8, 8)).extent(0) == (9, 9)
    conv = nn.Conv2d(4, 4, 3, stride=2, padding=1)
    assert Downsample.of(conv) == Downsample(2, kernel=3)
    same = theoretical([Neighborhood(3), conv, Neighborhood(3)], 32, (8, 8))
    assert torch.equal(same.input, theoretical([Neighborhood(3), Downsample(2, 3), Neighborhood(3)], 32, (8, 8)).input)
    # without the down-sampling the same two layers see only 5
    assert theoretical([Neighborhood(3), Neighborhood(3)], 16, (8, 8)).extent(0) == (5, 5)


def test_downsample_sizes_follow_pytorch():
    x = torch.zeros(1, 1, 17, 18)
    for module in [nn.Conv2d(1, 1, 3, 2, 1), nn.Conv2d(1, 1, 7, 2, 3), nn.MaxPool2d(3, 2, 1),
                   nn.AvgPool2d(2, 2, ceil_mode=True), nn.Conv2d(1, 1, 3, 1, 2, dilation=2)]:
        assert Downsample.of(module).out_size((17, 18)) == tuple(module(x).shape[-2:]), module


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="size .* is required"):
        theoretical([Neighborhood(3)])
    with pytest.raises(ValueError, match="position must be"):
        theoretical([Neighborhood(3)], 8, (8, 0))
    with pytest.raises(ValueError, match="a step must be"):
        theoretical([Neighborhood(3), "pool"], 8)
    with pytest.raises(ValueError, match="kernel_size \\* dilation must not exceed"):
        theoretical([Neighborhood(5)], 4)
    with pytest.raises(ValueError, match="factor must be"):
        Downsample(0)
    # a window that reads only padding: the field is empty, not an error
    assert theoretical([Downsample(2, kernel=1, padding=1)], 8, (0, 0)).extent(0) == (0, 0)


# ---------------------------------------------------------------------------------------------
# effective fields
# ---------------------------------------------------------------------------------------------
class LinearNA(nn.Module):
    """A linear embedding then one neighbourhood attention layer: no other spatial mixing."""

    def __init__(self, k=3):
        super().__init__()
        self.embed, self.attn = nn.Linear(3, 8), NeighborhoodAttention(8, 2, kernel_size=k)

    def forward(self, images):
        return self.attn(self.embed(images.permute(0, 2, 3, 1)))


@pytest.mark.parametrize("position", [None, (0, 0), (3, 9)])
def test_effective_field_of_one_na_layer_lies_inside_the_theoretical_one(position):
    torch.manual_seed(0)
    model, images = LinearNA(k=5), torch.randn(3, 3, 12, 12)
    erf = effective(model, images, position=position)
    field = theoretical(model, size=12, position=position)
    assert erf.layer == "attn" and erf.map.shape == (12, 12)
    assert abs(erf.map.sum().item() - 1) < 1e-6
    support = erf.map > 0
    assert not (support & ~field.input).any()  # nothing outside the theoretical field
    assert torch.equal(support, field.input)  # and with random weights every key is felt
    assert field.input.sum() == 25 and len(field) == 1


def test_effective_sides_are_monotone_and_hand_checked():
    mass = torch.zeros(9, 9)
    mass[4, 4], mass[4, 5], mass[0, 0] = 0.5, 0.3, 0.2
    sides = _sides(mass, (4, 4), (0.2, 0.5, 0.8, 0.99))
    assert sides == {0.2: 1, 0.5: 1, 0.8: 2, 0.99: 9}
    torch.manual_seed(1)
    erf = effective(LinearNA(k=5), torch.randn(2, 3, 16, 16))
    assert erf.sides[0.2] <= erf.sides[0.5] <= erf.sides[0.99] <= 5
    assert erf.centre == (8, 8) and erf.position == (8, 8)


def test_effective_restores_the_model_and_validates():
    torch.manual_seed(2)
    model = LinearNA().train()
    effective(model, torch.randn(1, 3, 8, 8))
    assert model.training and all(p.grad is None for p in model.parameters())
    assert model.attn.fused and "fused" not in vars(model.attn)  # the layer's switch is left alone
    with pytest.raises(ValueError, match="images must be a batch"):
        effective(model, torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="layer must be one of the attention layers: attn"):
        effective(model, torch.randn(1, 3, 8, 8), layer="x")
    with pytest.raises(ValueError, match="position must be"):
        effective(model, torch.randn(1, 3, 8, 8), position=(8, 1))


# ---------------------------------------------------------------------------------------------
# every registered model
# ---------------------------------------------------------------------------------------------
MODELS = list_models()  # every registered model, so a new one is covered without editing this file


@pytest.mark.parametrize("name", MODELS)
def test_every_model_can_be_probed_and_its_fields_computed_in_seconds(name):
    from vizattn.models import create

    torch.manual_seed(0)
    model = create(name).eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    with torch.no_grad():
        plain = model(images)
        with probe(model) as rec:
            probed = model(images)
    torch.testing.assert_close(probed, plain, rtol=0, atol=1e-5)
    assert len(rec) >= 2
    for r in rec:
        torch.testing.assert_close(r.weights.sum(-1), torch.ones_like(r.weights[..., 0]), rtol=0, atol=1e-5)
    probed_in = time.perf_counter() - start

    start = time.perf_counter()
    field = theoretical(model, size=64)
    theoretical_in = time.perf_counter() - start
    start = time.perf_counter()
    erf = effective(model, images)
    effective_in = time.perf_counter() - start
    assert field.input.shape == (64, 64) and field.output_size == rec[-1].size
    assert [n for n in field.names if n in {r.name for r in rec}] == [r.name for r in rec]
    assert erf.layer == rec[-1].name and abs(erf.map.sum().item() - 1) < 1e-5
    assert not ((erf.map > 0) & ~field.input).any()  # the gradient never leaves the theoretical field
    assert erf.sides[0.2] <= erf.sides[0.5] <= erf.sides[0.99]
    assert max(probed_in, theoretical_in, effective_in) < 30, (probed_in, theoretical_in, effective_in)  # ~0.1 s idle
    if name == "lavit":  # reuse chains and the DP loss the model trains with
        from vizattn.metrics import dp_loss_per_layer

        la = [r for r in rec if r.kind == "less"]
        assert la and all(r.source is not None and r.source.startswith("stages.") for r in la)
        with torch.no_grad():
            model(images)
            aux = model.aux_loss().item()
        assert abs(model.config["dp_lambda"] * sum(dp_loss_per_layer(rec).values()) - aux) < 1e-5
