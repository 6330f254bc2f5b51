"""Numbers about attention maps: diagonality, symmetry, and LaViT's diagonality-preserving loss.

Attention maps here are square, ``attn [..., N, N]`` (query token, key token), usually
post-softmax probabilities whose rows sum to 1; leading axes (batch, heads) are kept by the
measures and averaged by the loss.
"""

from __future__ import annotations

import torch

__all__ = ["diagonality", "symmetry", "diagonality_preserving_loss"]


def _check_square(attn) -> int:
    if not isinstance(attn, torch.Tensor) or attn.dim() < 2 or attn.shape[-1] != attn.shape[-2]:
        got = tuple(attn.shape) if isinstance(attn, torch.Tensor) else type(attn).__name__
        raise ValueError(f"attn must be square maps [..., N, N]; got shape {got}")
    return attn.shape[-1]


def diagonality(attn: torch.Tensor) -> torch.Tensor:
    """Share of the mass on the diagonal, ``trace(A) / sum(A)`` per map: ``[...]``.

    1 for the identity, ``1/N`` for a uniform map.

    >>> import torch
    >>> diagonality(torch.eye(4)).item(), diagonality(torch.full((4, 4), 0.25)).item()
    (1.0, 0.25)
    """
    _check_square(attn)
    return attn.diagonal(dim1=-2, dim2=-1).sum(-1) / attn.sum((-2, -1))


def symmetry(attn: torch.Tensor) -> torch.Tensor:
    """Normalised symmetry *error* ``sum|A - A^T| / (2 sum|A|)`` per map: ``[...]``, in ``[0, 1]``.

    0 for a symmetric map, 1 when no mass has a mirror (e.g. strictly triangular).

    >>> import torch
    >>> symmetry(torch.eye(3)).item(), symmetry(torch.tensor([[0.0, 1.0], [0.0, 0.0]])).item()
    (0.0, 1.0)
    """
    _check_square(attn)
    return (attn - attn.transpose(-1, -2)).abs().sum((-2, -1)) / (2 * attn.abs().sum((-2, -1)))


def diagonality_preserving_loss(attn: torch.Tensor) -> torch.Tensor:
    """LaViT's diagonality-preserving loss of an LA layer's transformed attention (post-softmax).

    Per map ``A [N, N]``::

        L = ( sum_ij |A_ij - A_ji|  +  sum_i [ -(N-1) A_ii + sum_{j != i} A_ij ] ) / N^2

    The first term penalises asymmetry; the second rewards diagonal mass against off-diagonal
    mass, the ``N - 1`` balancing ``N`` diagonal entries against ``N(N-1)`` off-diagonal ones.
    The sign makes minimisation favour the diagonal; the ``1/N^2`` normalisation and the mean over
    leading axes (batch, heads) are [vizattn choices]. For row-stochastic maps the second term is
    ``(N - N trace(A)) / N^2``: the identity scores ``1/N - 1``, a uniform map 0. The training
    loss is ``cross_entropy + lambda * sum over LA layers of L``.

    >>> import torch
    >>> diagonality_preserving_loss(torch.eye(4)).item(), diagonality_preserving_loss(torch.full((4, 4), 0.25)).item()
    (-0.75, 0.0)
    """
    N = _check_square(attn)
    asymmetry = (attn - attn.transpose(-1, -2)).abs().sum((-2, -1))
    diag = attn.diagonal(dim1=-2, dim2=-1).sum(-1)
    off_diagonal = attn.sum((-2, -1)) - diag
    return ((asymmetry - (N - 1) * diag + off_diagonal) / N**2).mean()
