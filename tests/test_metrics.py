"""vizattn.metrics: diagonality, symmetry, LaViT's diagonality-preserving loss (docs/semantics.md §5), and the
measures over probe records (per-layer DP loss, reuse distance, saturation, mean attention distance)."""

import math

import pytest
import torch
from torch import nn

from vizattn import probe
from vizattn.layers import BlockAttention, LessAttention, StandAloneAttention, VanillaAttention
from vizattn.metrics import (
    diagonality,
    diagonality_preserving_loss,
    dp_loss_per_layer,
    mean_attention_distance,
    reuse_chains,
    reuse_distance,
    saturation,
    symmetry,
    vanilla_here,
)

from brute import vanilla_attention
from conftest import D, randn


def row_stochastic(*shape, seed=0):
    return randn(*shape, seed=seed).softmax(-1)


def mixed(N, perm):
    """Half identity, half a permutation: row-stochastic with diagonal mass exactly 1/2 per row."""
    return 0.5 * torch.eye(N, dtype=D) + 0.5 * torch.eye(N, dtype=D)[perm]


def test_diagonality_is_the_share_on_the_diagonal():
    assert diagonality(torch.eye(5, dtype=D)).item() == 1.0
    assert diagonality(torch.full((5, 5), 0.2, dtype=D)).item() == pytest.approx(0.2)
    A = row_stochastic(2, 3, 6, 6)
    want = torch.stack([torch.stack([a.trace() / a.sum() for a in heads]) for heads in A])
    torch.testing.assert_close(diagonality(A), want)


def test_symmetry_error_is_zero_for_symmetric_and_one_for_triangular_maps():
    S = row_stochastic(4, 4)
    assert symmetry(S + S.T).item() == 0.0
    assert symmetry(torch.triu(torch.ones(4, 4, dtype=D), diagonal=1)).item() == 1.0
    A = torch.tensor([[0.5, 0.5], [0.1, 0.9]], dtype=D)
    assert symmetry(A).item() == pytest.approx(0.8 / 4.0)  # |0.5-0.1| twice over 2 * total mass 2
    assert symmetry(row_stochastic(3, 5, 5)).shape == (3,)


def test_loss_values_by_hand():
    N = 4
    assert diagonality_preserving_loss(torch.eye(N, dtype=D)).item() == pytest.approx(1 / N - 1)
    assert diagonality_preserving_loss(torch.full((N, N), 1 / N, dtype=D)).item() == pytest.approx(0.0)
    A = row_stochastic(N, N)
    by_hand = sum(abs(A[i, j] - A[j, i]) for i in range(N) for j in range(N))
    by_hand += sum(-(N - 1) * A[i, i] + sum(A[i, j] for j in range(N) if j != i) for i in range(N))
    assert diagonality_preserving_loss(A).item() == pytest.approx(by_hand.item() / N**2)


def test_loss_prefers_the_diagonal_and_symmetry():
    N = 6
    identity, uniform = torch.eye(N, dtype=D), torch.full((N, N), 1 / N, dtype=D)
    assert diagonality_preserving_loss(identity) < diagonality_preserving_loss(uniform)
    symmetric = mixed(N, [1, 0, 3, 2, 5, 4])  # pair swaps: symmetric
    asymmetric = mixed(N, [1, 2, 3, 4, 5, 0])  # a cycle: asymmetric, the same diagonal mass
    assert symmetry(symmetric) == 0 and symmetry(asymmetric) > 0
    torch.testing.assert_close(diagonality(symmetric), diagonality(asymmetric))
    assert diagonality_preserving_loss(symmetric) < diagonality_preserving_loss(asymmetric)
    A = row_stochastic(N, N).requires_grad_(True)
    diagonality_preserving_loss(A).backward()
    # more diagonal mass always lowers the loss: d/dA_ii = -(N-1) / N^2 (the |A_ii - A_ii| term is flat)
    torch.testing.assert_close(A.grad.diagonal(), torch.full((N,), -(N - 1) / N**2, dtype=D))


def test_loss_averages_over_leading_axes():
    A, B = row_stochastic(5, 5, seed=1), row_stochastic(5, 5, seed=2)
    both = torch.stack([A, B])[:, None]  # [2, 1, 5, 5]
    torch.testing.assert_close(diagonality_preserving_loss(both),
                               (diagonality_preserving_loss(A) + diagonality_preserving_loss(B)) / 2)


def test_loss_is_differentiable():
    logits = randn(2, 4, 4, seed=3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: diagonality_preserving_loss(x.softmax(-1)), (logits,))


@pytest.mark.parametrize("measure", [diagonality, symmetry, diagonality_preserving_loss])
def test_non_square_maps_raise(measure):
    with pytest.raises(ValueError, match=r"square maps \[\.\.\., N, N\]; got shape \(2, 3, 4\)"):
        measure(torch.ones(2, 3, 4))


# ---------------------------------------------------------------------------------------------
# measures over probe records
# ---------------------------------------------------------------------------------------------
class Chain(nn.Module):
    """LaViT in miniature: VA -> LA -> LA on a 3x3 map."""

    def __init__(self):
        super().__init__()
        self.va = VanillaAttention(8, 2)
        self.la1, self.la2 = LessAttention(8, 2, tokens=9), LessAttention(8, 2, tokens=9)

    def forward(self, x):
        y, s = self.va(x)
        z, s1 = self.la1(x, s)
        w, s2 = self.la2(x, s1)
        return y + z + w, (s, s1, s2)


def chain(seed=0, move=0.0):
    torch.manual_seed(seed)
    model = Chain().double()
    with torch.no_grad():
        model.la2.theta.weight.add_(move * torch.randn(9, 9, dtype=D))
    x = randn(2, 3, 3, 8, seed=seed + 1)
    with probe(model) as rec:
        _, scores = model(x)
    return rec, scores


def test_dp_loss_per_layer_is_the_loss_of_every_la_layer():
    rec, (_, s1, s2) = chain(move=0.3)
    losses = dp_loss_per_layer(rec)
    assert list(losses) == ["la1", "la2"]
    assert losses["la1"] == pytest.approx(diagonality_preserving_loss(s1.softmax(-1)).item())
    assert losses["la2"] == pytest.approx(diagonality_preserving_loss(s2.softmax(-1)).item())
    with pytest.raises(ValueError, match="no less-attention"):
        dp_loss_per_layer([rec["va"]])
    with pytest.raises(ValueError, match="AttentionRecords"):
        dp_loss_per_layer([torch.eye(3)])


def test_reuse_distance_is_zero_for_exact_reuse_and_grows_with_the_transform():
    rec, _ = chain(move=0.5)
    la1, la2 = rec["la1"], rec["la2"]
    assert la1.source == "va" and la2.source == "va"
    # a fresh LA layer (identity transforms) reuses its source's attention exactly
    assert reuse_distance(la1, rec[la1.source]).abs().max() < 1e-12
    moved = reuse_distance(la2, rec[la2.source])
    assert moved.shape == (2,) and (moved > 0.01).all() and (moved <= 1).all()
    js = reuse_distance(la2, rec["va"].dense(), measure="js")
    assert ((js > 0) & (js <= 1)).all()
    # by hand: total variation of two rows
    p = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]], dtype=D)
    q = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]], dtype=D)
    assert reuse_distance(p, q).tolist() == [0.25]  # rows 0.5 and 0, mean 0.25
    h_mix = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))  # row 0: H(m) - (H(p) + H(q)) / 2 = H(m) - 1/2
    assert reuse_distance(p, q, measure="js").item() == pytest.approx((h_mix - 0.5) / 2)  # row 1 adds 0
    with pytest.raises(ValueError, match="same shape"):
        reuse_distance(p, torch.ones(1, 1, 3, 3))
    with pytest.raises(ValueError, match="measure must be"):
        reuse_distance(p, q, measure="kl")


class Residual(nn.Module):
    """VA then LA on a residual stream: the LA layer's input is not the VA layer's."""

    def __init__(self):
        super().__init__()
        self.stages = nn.ModuleList([nn.ModuleList([VanillaAttention(8, 2), LessAttention(8, 2, tokens=9)])])

    def forward(self, x):
        va, la = self.stages[0]
        y, s = va(x)
        x = x + y
        z, _ = la(x, s)
        return x + z


def test_vanilla_here_runs_the_source_va_layer_on_the_la_layers_input():
    torch.manual_seed(0)
    model = Residual().double()
    x = torch.randn(2, 3, 3, 8, dtype=D)
    with torch.no_grad(), probe(model, inputs=True) as rec:
        model(x)
    la, va = rec["stages.0.1"], rec["stages.0.0"]
    assert la.source == "stages.0.0" and torch.equal(va.input, x)
    want = vanilla_attention(model.stages[0][0], x + model.stages[0][0](x)[0])
    torch.testing.assert_close(vanilla_here(model, la), want)
    assert (vanilla_here(model, la) - va.dense()).abs().max() > 1e-3  # another input: another map
    with pytest.raises(ValueError, match="less-attention layer"):
        vanilla_here(model, va)
    with probe(model) as plain:
        model(x)
    with pytest.raises(ValueError, match="inputs=True"):
        vanilla_here(model, plain["stages.0.1"])


def test_reuse_chains_measure_every_layer_and_its_vanilla_counterpart():
    torch.manual_seed(1)
    model = Residual().double()
    x = torch.randn(1, 3, 3, 8, dtype=D)
    with torch.no_grad(), probe(model, inputs=True) as rec:
        model(x)
    (chain,) = reuse_chains(model, rec)
    assert [row["name"] for row in chain] == ["stages.0.0", "stages.0.1"]
    assert [row["kind"] for row in chain] == ["vanilla", "less"] and {row["stage"] for row in chain} == {0}
    for row in chain:
        used = rec[row["name"]].dense()[0]
        torch.testing.assert_close(row["used"], used)
        assert row["diagonality"] == pytest.approx(float(diagonality(used).mean()))
        assert row["symmetry"] == pytest.approx(float(symmetry(used).mean()))
    va_row, la_row = chain
    assert "vanilla" not in va_row
    vanilla = vanilla_here(model, rec["stages.0.1"])
    torch.testing.assert_close(la_row["vanilla"], vanilla[0])
    tv = 0.5 * (la_row["used"] - vanilla[0]).abs().sum(-1).mean(-1)  # [heads], by hand
    torch.testing.assert_close(la_row["distance"], tv)
    assert la_row["vanilla_diagonality"] == pytest.approx(float(diagonality(vanilla[0]).mean()))


def test_saturation_is_one_for_a_repeated_map_and_nan_across_sizes():
    torch.manual_seed(0)
    block, other = BlockAttention(8, 2, size=2).double(), StandAloneAttention(8, 2, kernel_size=3).double()
    x = torch.randn(1, 4, 4, 8, dtype=D)
    with probe(nn.ModuleList([block, other])) as rec:
        block(x), block(x), other(x), block(x[:, :2, :2])
    s = saturation(rec)
    assert s.shape == (3,)
    assert s[0].item() == pytest.approx(1.0) and 0 < s[1].item() < 1 and s[2].isnan()
    with pytest.raises(ValueError, match="at least 2 records"):
        saturation(rec[:1])
    with probe(block, queries=[(0, 0)]) as few:
        block(x), block(x)
    with pytest.raises(ValueError, match="needs every query"):
        saturation(few)


def test_mean_attention_distance_by_hand():
    torch.manual_seed(0)
    layer = StandAloneAttention(8, 2, kernel_size=3).double()
    with torch.no_grad():
        layer.qkv.weight.zero_()  # all logits 0: uniform 1/9 over the 9 slots, zero slots included
        layer.rel.row.zero_(), layer.rel.col.zero_()
    with probe(layer) as rec:
        layer(torch.randn(1, 3, 3, 8, dtype=D))
    r = rec[0]
    # per query: (1/9) * sum of distances to its real keys; zero slots read nothing
    keys = r.pattern.keys(3, 3)
    want = 0.0
    for q in range(9):
        for k in keys[q].tolist():
            if k >= 0:
                want += ((q // 3 - k // 3) ** 2 + (q % 3 - k % 3) ** 2) ** 0.5 / 9
    want /= 9
    torch.testing.assert_close(mean_attention_distance(r), torch.full((2,), want, dtype=D))
    torch.testing.assert_close(mean_attention_distance(r, pixel_size=4.0), torch.full((2,), 4 * want, dtype=D))
    with probe(layer, queries=[(1, 1)]) as one:
        layer(torch.randn(1, 3, 3, 8, dtype=D))
    centre = (4 * 1 + 4 * 2**0.5) / 9
    torch.testing.assert_close(mean_attention_distance(one[0]), torch.full((2,), centre, dtype=D))
    with pytest.raises(ValueError, match="pixel_size must be"):
        mean_attention_distance(r, pixel_size=0)
    with pytest.raises(ValueError, match="AttentionRecord"):
        mean_attention_distance(torch.eye(3))
