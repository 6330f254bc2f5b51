"""The notebooks' exercises: one check per exercise, which tells the reader whether an answer is right.

A notebook's exercise starts unanswered (``k = None``); its check cell calls the check here, which
never raises: it gives back a ``Verdict`` that reads ``correct: ...`` or ``not yet — ...`` (with a
hint) and whose ``correct`` says which. Each check measures the answer with vizattn itself (the
patterns, ``attend``, the receptive fields, the cost model), so it also checks what it teaches.

>>> na_reach(None)
not yet — set k to a kernel size (an int), then run this cell again
>>> na_reach(16).correct
True
"""

from __future__ import annotations

import dataclasses
import math

import torch

from . import flow, mechanisms, models, receptive
from .functional import attend
from .patterns import Block, Grid, LocalWindow, LongDistance, Neighborhood

__all__ = ["Verdict", "na_reach", "sasa_padding", "dilations", "block_share", "lda_groups", "lavit_channels",
           "na_depth", "break_even", "grid_spacing", "swin_reach"]


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a check says: ``correct``, and the ``text`` a notebook shows."""

    correct: bool
    text: str

    def __repr__(self) -> str:
        return self.text


def _yes(text: str) -> Verdict:
    return Verdict(True, f"correct: {text}")


def _not_yet(text: str) -> Verdict:
    return Verdict(False, f"not yet — {text}")


def _int(answer, name: str, what: str, minimum: int = 1) -> Verdict | None:
    """A "not yet" for an answer that is not an int of at least ``minimum``, else None."""
    if answer is None or answer is ...:
        return _not_yet(f"set {name} to {what} (an int), then run this cell again")
    if not isinstance(answer, int) or isinstance(answer, bool) or answer < minimum:
        return _not_yet(f"{name} must be an int of at least {minimum}; got {name}={answer!r}")
    return None


def na_reach(k) -> Verdict:
    """00: the smallest kernel with which NA lets (0, 0) see (15, 15) on a 16x16 map in one layer."""
    wrong = _int(k, "k", "a kernel size", minimum=2)
    if wrong:
        return wrong
    if k > 16:
        return _not_yet(f"k={k} does not fit a 16x16 map (kernel_size must not exceed the map size)")
    if not Neighborhood(k).mask(16, 16)[0, 255]:
        return _not_yet(f"with k={k}, (0, 0) does not reach (15, 15): try a larger kernel")
    if k > 2 and Neighborhood(k - 1).mask(16, 16)[0, 255]:
        return _not_yet(f"k={k} works, but so does a smaller kernel")
    return _yes(f"k={k} is the whole map; neighbourhood attention with a full kernel is global attention "
                "(notebook 02)")


def _padding_share(k: int, window: int) -> float:
    """Share of the corner query's attention on zero padding, uniform weights (q = 0), a k x k map."""
    q = torch.zeros(1, 1, k, k, 2)
    kv = torch.randn(1, 1, k, k, 2, generator=torch.Generator().manual_seed(0))
    _, w = attend(q, kv, kv, LocalWindow(window), return_weights=True)
    return w[0, 0, 0, 0][LocalWindow(window).keys(k, k)[0] < 0].sum().item()


def sasa_padding(k) -> Verdict:
    """01: the smallest odd SASA kernel whose corner query gives more than 2/3 of its attention to padding."""
    wrong = _int(k, "k", "an odd kernel size")
    if wrong:
        return wrong
    if k % 2 == 0:
        return _not_yet(f"SASA's window is centred: k must be odd; got k={k}")
    share = _padding_share(k, k)
    if share <= 2 / 3:
        return _not_yet(f"k={k}: only {share:.3f} of the corner's attention goes to padding")
    if k > 1 and _padding_share(k, k - 2) > 2 / 3:
        return _not_yet(f"k={k} works, but so does k={k - 2}")
    return _yes(f"with k={k}, {share:.3f} of the corner's attention goes to padding")


def dilations(answer) -> Verdict:
    """02: three dilations (input first) for k = 3 layers whose centre field covers a 27x27 map."""
    if answer is None or answer is ...:
        return _not_yet("set dilations to three ints, one per layer from the input, then run this cell again")
    values = tuple(answer) if isinstance(answer, (tuple, list)) else ()
    if len(values) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 9 for d in values):
        return _not_yet(f"dilations must be three ints d with 1 <= d and 3 d <= 27; got dilations={answer!r}")
    field = receptive.theoretical([Neighborhood(3, dilation=d) for d in values], size=27, position=(13, 13))
    if not field.input.all():
        return _not_yet(f"dilations {values}: the centre sees {int(field.input.sum())} of 729 tokens")
    return _yes(f"with dilations {values} the centre token sees all 729 tokens after 3 layers of 9 keys")


def block_share(P) -> Verdict:
    """03: the block size P whose block attention on a 16x16 map computes 1/16 of global attention's scores."""
    wrong = _int(P, "P", "a block size")
    if wrong:
        return wrong
    if 16 % P:
        return _not_yet(f"P={P} does not divide the 16x16 map")
    scores, global_scores = 256 * Block(P).keys(16, 16).shape[1], 256 * 256
    if scores * 16 != global_scores:
        return _not_yet(f"P={P}: {scores} scores, {scores / global_scores:.3f} of global")
    return _yes(f"P={P} gives every query {P * P} keys, 1/16 of the 256 tokens")


def lda_groups(I) -> Verdict:  # noqa: E741 - the paper's name for the interval
    """04: the LDA interval that gives groups of 8x8 tokens on a 16x16 map."""
    wrong = _int(I, "I", "an interval")
    if wrong:
        return wrong
    if 16 % I:
        return _not_yet(f"I={I} does not divide the 16x16 map")
    extent = LongDistance(I).extent(16, 16)
    if extent != (8, 8):
        return _not_yet(f"I={I}: groups of {extent[0]}x{extent[1]} tokens")
    return _yes(f"interval {I} on 16x16 tokens is MaxViT's grid attention with G = 8")


def lavit_channels(C) -> Verdict:
    """05: from how many channels (a multiple of 8) an LA layer (7x7 tokens, 8 heads) is cheaper than a vanilla one."""
    wrong = _int(C, "C", "a number of channels", minimum=8)
    if wrong:
        return wrong
    if C % 8:
        return _not_yet(f"C must be a multiple of 8 (one channel group per head); got C={C}")

    def cheaper(c):
        return mechanisms.cost("LaViT LA", 7, channels=c, heads=8)[0] < mechanisms.cost("global", 7, channels=c,
                                                                                         heads=8)[0]
    if not cheaper(C):
        la, va = (mechanisms.cost(m, 7, channels=C, heads=8)[0] for m in ("LaViT LA", "global"))
        return _not_yet(f"C={C}: LA {la:.3g} MACs, vanilla {va:.3g}")
    if C > 8 and cheaper(C - 8):
        return _not_yet(f"C={C} works, but so does C={C - 8}")
    saved = 2 * 49 * C * C + 49 * 49 * C  # the Q, K projections not computed, and the QK^T product not formed
    return _yes(f"from C={C} on, what LA saves (2NC^2 + N^2C = {saved:,}) outweighs its transforms "
                f"(2hN^3 = {2 * 8 * 49 ** 3:,})")


def na_depth(depth) -> Verdict:
    """06: how many NA layers (k = 5) the centre of a 16x16 map needs before its field covers the map."""
    wrong = _int(depth, "depth", "a number of layers")
    if wrong:
        return wrong
    if depth > 64:
        return _not_yet(f"depth={depth} is far more than a 16x16 map needs")

    def covers(d):
        return bool(receptive.theoretical(receptive.stack_for("NA", d, 16, kernel=5), size=16).input.all())
    if not covers(depth):
        seen = int(receptive.theoretical(receptive.stack_for("NA", depth, 16, kernel=5), size=16).input.sum())
        return _not_yet(f"{depth} layers: the centre sees {seen} of 256 positions")
    if depth > 1 and covers(depth - 1):
        return _not_yet(f"{depth} layers work, but so do {depth - 1}")
    return _yes(f"{depth} layers; each one adds 2 tokens on each side of the field")


def break_even(N) -> Verdict:
    """07: at how many tokens global attention's 2N^2C equals its projections' 4NC^2, for C = 96."""
    wrong = _int(N, "N", "a number of tokens")
    if wrong:
        return wrong
    projections, attention = 4 * N * 96 * 96, 2 * N * N * 96
    if attention != projections:
        return _not_yet(f"N={N}: attention {attention:,} MACs, projections {projections:,}")
    side = math.sqrt(N)
    return _yes(f"N = 2C = {N} tokens (a {side:.1f}x{side:.1f} map); beyond it, global attention is dominated by "
                "its N^2 term")


def grid_spacing(step) -> Verdict:
    """08: how many tokens apart two neighbouring keys of one query are, along a row, in MaxViT-T's first grid
    attention (G = 7 on 56x56 tokens)."""
    wrong = _int(step, "step", "a number of tokens")
    if wrong:
        return wrong
    keys = Grid(7).keys(56, 56)[0]  # query (0, 0): its 7 x 7 keys, row-major
    row = sorted(int(k) % 56 for k in keys[:7])
    spacing = row[1] - row[0]
    if step != spacing:
        return _not_yet(f"step={step}: a grid query's 7 keys along a row are spread evenly over the whole row "
                        f"of 56 tokens ({7 * step} tokens would be covered with step={step})")
    return _yes(f"{step} tokens, 56 / 7; a token is 4 x 4 pixels, so the keys lie {4 * step} pixels apart and the "
                "7 x 7 keys of one query span the whole 224 x 224 image in the first stage")


def swin_reach(depth) -> Verdict:
    """09: how many attention layers of the small Swin (64 x 64 images) the rollout column of the centre
    token needs before it draws on every pixel (``Flow.column``; any weights: the support is the structure's)."""
    wrong = _int(depth, "depth", "a number of attention layers")
    if wrong:
        return wrong
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        f = flow.rollout(models.create("swin"), torch.rand(1, 3, 64, 64))
    if depth > len(f.names):
        return _not_yet(f"the small Swin has {len(f.names)} attention layers; got depth={depth}")

    def pixels(d):
        h, w = f.grids[d - 1]
        return int((f.column(d - 1, h // 2, w // 2) > 0).sum())
    if pixels(depth) < 64 * 64:
        return _not_yet(f"after {depth} layers the centre token draws on {pixels(depth)} of 4096 pixels")
    if depth > 1 and pixels(depth - 1) == 64 * 64:
        return _not_yet(f"{depth} layers work, but so do {depth - 1}")
    return _yes(f"{depth} layers: windows of 4 tokens and their shifted twins spread the column by one window a "
                "layer, and the patch merging between stages doubles what a window covers")
