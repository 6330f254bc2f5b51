"""vizattn.metrics: diagonality, symmetry and LaViT's diagonality-preserving loss (semantics.md §5)."""

import pytest
import torch

from vizattn.metrics import diagonality, diagonality_preserving_loss, symmetry

D = torch.float64


def row_stochastic(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D).softmax(-1)


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
    logits = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(3), dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: diagonality_preserving_loss(x.softmax(-1)), (logits,))


@pytest.mark.parametrize("measure", [diagonality, symmetry, diagonality_preserving_loss])
def test_non_square_maps_raise(measure):
    with pytest.raises(ValueError, match=r"square maps \[\.\.\., N, N\]; got shape \(2, 3, 4\)"):
        measure(torch.ones(2, 3, 4))
