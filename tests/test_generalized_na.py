"""Generalized neighborhood attention (``Neighborhood(kernel, dilation, stride, causal)``) against NATTEN's
``na2d`` and a brute-force rule written from docs/semantics.md §1, on every backend and awkward maps."""

import math
import os
import warnings

import pytest
import torch
from test_attend import FAST, qkv, tables
from test_nonfinite import POISONS, check_reach, seen_by

from vizattn import attend
from vizattn.patterns import Block, Neighborhood

import brute

# (kernel, dilation, stride, causal, H, W): every combination, odd and non-square maps
CASES = [
    (3, 1, 2, False, 7, 9),
    (4, 1, 4, False, 9, 10),  # stride = kernel on a map it does not divide: the last tile's window shifts inward
    (2, 1, 2, False, 5, 7),
    ((3, 5), (2, 1), (3, 2), False, 11, 9),  # dilation with stride, uneven dilation groups
    (3, 2, 2, False, 13, 8),
    (3, 1, 1, (True, False), 7, 8),  # causal rows only
    ((4, 3), (1, 2), (2, 3), (False, True), 9, 10),  # causal columns, stride and dilation
    (5, 2, 3, True, 12, 11),
    (3, 1, 3, True, 9, 6),
    (2, 3, 1, True, 7, 6),  # k * d = H on rows
]
IDS = [f"k{c[0]} d{c[1]} s{c[2]} c{c[3]} {c[4]}x{c[5]}" for c in CASES]


def pair(x):
    return tuple(x) if isinstance(x, tuple) else (x, x)


def axis_slots(L, i, k, d, s, causal):
    """docs/semantics.md §1, one axis: a list of (key or None, offset in dilation steps)."""
    g, ig = i % d, i // d
    group_len = math.ceil((L - g) / d)
    if causal:  # the tile's last query ends the window; keys after the query itself drop out
        leader = min(ig // s * s + s - 1, group_len - 1)
        first = leader - k + 1
        return [((first + t) * d + g if 0 <= first + t <= ig else None, first + t - ig) for t in range(k)]
    leader = min(ig // s * s + s // 2, group_len - 1)  # the tile's middle query (right of middle if s is even)
    start = min(max(leader - k // 2, 0), group_len - k)
    return [((start + t) * d + g, start + t - ig) for t in range(k)]


def table(kernel, dilation, stride, causal, H, W):
    """brute.slots' format: per query (row-major), a list of (flat key or None, (dh, dw))."""
    (kh, kw), (dh, dw), (sh, sw), (ch, cw) = map(pair, (kernel, dilation, stride, causal))
    out = []
    for h in range(H):
        for w in range(W):
            out.append([(None if a is None or b is None else a * W + b, (oh, ow))
                        for a, oh in axis_slots(H, h, kh, dh, sh, ch) for b, ow in axis_slots(W, w, kw, dw, sw, cw)])
    return out


def make(kernel, dilation, stride, causal):
    return Neighborhood(kernel, dilation=dilation, stride=stride, causal=causal)


@pytest.mark.parametrize("kernel, dilation, stride, causal, H, W", CASES, ids=IDS)
def test_keys_follow_the_rule(kernel, dilation, stride, causal, H, W):
    pattern, want = make(kernel, dilation, stride, causal), table(kernel, dilation, stride, causal, H, W)
    assert pattern.keys(H, W).tolist() == [[-1 if key is None else key for key, _ in row] for row in want]
    assert pattern.offsets(H, W).tolist() == [[list(offset) for _, offset in row] for row in want]
    kh, kw = pattern.extent(H, W)  # offsets index NAT's [2k-1, 2k-1] table
    assert all(abs(dh) < kh and abs(dw) < kw for row in want for _, (dh, dw) in row)


@pytest.mark.parametrize("backend", FAST + ["flex"])
@pytest.mark.parametrize("kernel, dilation, stride, causal, H, W", CASES, ids=IDS)
def test_attend_matches_the_definition(kernel, dilation, stride, causal, H, W, backend):
    pattern = make(kernel, dilation, stride, causal)
    q, k, v = qkv(1, 2, H, W, 4, dv=3)
    bias, _ = tables(pattern, 2, H, W, 4)
    want_out, want_w = brute.attention(q, k, v, table(kernel, dilation, stride, causal, H, W), False, bias=bias)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # flex's unfused eager path on CPU
        out = attend(q, k, v, pattern, bias=bias, backend=backend)
    torch.testing.assert_close(out, want_out)
    if backend != "flex":
        torch.testing.assert_close(attend(q, k, v, pattern, bias=bias, backend=backend, return_weights=True)[1],
                                   want_w)


@pytest.mark.parametrize("kernel, dilation, stride, causal, H, W", CASES, ids=IDS)
def test_attend_equals_natten(kernel, dilation, stride, causal, H, W):
    """NATTEN >= 0.20's na2d (heads-last [B, H, W, heads, d]); dev.py installs it, CI must have it."""
    if os.environ.get("CI"):
        import natten
    else:
        natten = pytest.importorskip("natten", reason="cross-check needs natten (dev.py installs it)")
    q, k, v = qkv(2, 3, H, W, 8, dtype=torch.float32)
    ours = attend(q, k, v, make(kernel, dilation, stride, causal))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NATTEN's CPU path is unfused FlexAttention
        theirs = natten.na2d(*(t.permute(0, 2, 3, 1, 4) for t in (q, k, v)), kernel_size=pair(kernel),
                             stride=pair(stride), dilation=pair(dilation), is_causal=pair(causal))
    torch.testing.assert_close(ours, theirs.permute(0, 3, 1, 2, 4), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("P, H, W", [(3, 9, 6), ((2, 4), 6, 8), (4, 4, 12)])
def test_stride_equal_to_kernel_is_block_attention_where_it_divides_the_map(P, H, W):
    pattern = Neighborhood(P, stride=P)
    assert pattern.partition and sorted(map(sorted, pattern.keys(H, W).tolist())) == sorted(
        map(sorted, Block(P).keys(H, W).tolist()))
    q, k, v = qkv(1, 2, H, W, 8)
    for backend in FAST:
        torch.testing.assert_close(attend(q, k, v, pattern, backend=backend), attend(q, k, v, Block(P)))


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("kernel, dilation, stride, causal, H, W", [CASES[3], CASES[6], CASES[8]], ids=str)
def test_gradcheck(kernel, dilation, stride, causal, H, W, backend):
    pattern = make(kernel, dilation, stride, causal)
    bias = tables(pattern, 2, H, W, 4)[0].requires_grad_()
    inputs = tuple(t.requires_grad_() for t in qkv(1, 2, H, W, 4)) + (bias,)
    assert torch.autograd.gradcheck(lambda q, k, v, b: attend(q, k, v, pattern, bias=b, backend=backend), inputs,
                                    fast_mode=True)


@pytest.mark.parametrize("where, value", POISONS, ids=[f"{v} in {w}" for w, v in POISONS])
@pytest.mark.parametrize("kernel, dilation, stride, causal, H, W", CASES[::3], ids=IDS[::3])
def test_a_nonfinite_value_reaches_exactly_the_queries_that_see_it(kernel, dilation, stride, causal, H, W, where,
                                                                    value):
    seen = seen_by(None, None, H, W, table=table(kernel, dilation, stride, causal, H, W))
    check_reach(make(kernel, dilation, stride, causal), seen, H, W, where, value)


@pytest.mark.parametrize("make_, message", [
    (lambda: Neighborhood(3, stride=4), r"stride must not exceed kernel_size.*stride=\(4, 4\)"),
    (lambda: Neighborhood(3, stride=0), "stride must be at least 1"),
    (lambda: Neighborhood(3, causal=(True,)), r"causal must be True, False or a pair of them; got causal=\(True,\)"),
    (lambda: Neighborhood(3, causal=1), "causal must be True, False or a pair"),
])
def test_bad_parameters_raise_value_error(make_, message):
    with pytest.raises(ValueError, match=message):
        make_()


def test_repr_names_what_differs_from_na():
    assert repr(Neighborhood(3, stride=2, causal=(True, False))) == "Neighborhood(3, stride=2, causal=(True, False))"
    assert repr(Neighborhood((3, 4), dilation=2, stride=(1, 2), causal=True)) == (
        "Neighborhood((3, 4), dilation=2, stride=(1, 2), causal=True)")
    assert Neighborhood(3, stride=1, causal=False) == Neighborhood(3)


def test_the_partition_explorers_stride_slider_morphs_na_into_windows():
    pytest.importorskip("ipywidgets")
    import numpy as np

    from vizattn import plots
    from vizattn.plots.style import GROUP_PALETTE
    from vizattn.widgets import PartitionExplorer

    ex = PartitionExplorer("GNA", size=12, kernel=4, query=(5, 6))
    assert ex.sliders["stride"].layout.display != "none" and ex.sliders["stride"].max == 4  # stride <= kernel
    keys = lambda: plots.cells(ex.figures[0].data[plots.TRACES.index("keys")])  # noqa: E731

    def own_group():  # the cells of the query's group, drawn in its strong shade (plots.group_z)
        z = np.asarray(ex.figures[0].data[plots.TRACES.index("groups")].z)
        return {(int(h), int(w)) for h, w in zip(*np.nonzero(z >= len(GROUP_PALETTE)))}

    assert keys() == {(h, w) for h in range(3, 7) for w in range(4, 8)}  # stride 1: NA's 4 x 4 window around it
    ex.state.stride = 4
    tile = {(h, w) for h in range(4, 8) for w in range(4, 8)}  # the query's 4 x 4 stride tile, Block(4)'s window
    assert keys() == tile
    assert own_group() == tile
    ex.state.stride = 2  # tiles of 2 x 2 queries share one 4 x 4 window
    assert own_group() == {(4, 6), (4, 7), (5, 6), (5, 7)}
    assert keys() == {(h, w) for h in range(3, 7) for w in range(5, 9)}  # centred on the tile's leader (5, 7)


def test_the_worked_examples_of_semantics_md():
    keys = lambda pattern: [[j for j in row if j >= 0] for row in pattern._axis(7, 0).keys.tolist()]  # noqa: E731
    assert [row[0] for row in keys(Neighborhood(3, stride=2))] == [0, 0, 2, 2, 4, 4, 4]
    assert keys(Neighborhood(3, stride=3, causal=True))[3:] == [[3], [3, 4], [3, 4, 5], [4, 5, 6]]
