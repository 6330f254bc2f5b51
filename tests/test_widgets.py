"""vizattn.plots and vizattn.widgets, headless: drive the state, read the figure data it produces.

The pictures must show exactly what the kernels compute, so every check compares the drawn
cells with ``pattern.keys(H, W)`` (or with a rule written out here by hand), never with the
drawing code's own helpers.
"""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("plotly")
pytest.importorskip("ipywidgets")

import plotly.graph_objects as go  # noqa: E402
import plotly.io as pio  # noqa: E402
import traitlets  # noqa: E402
from plotly.callbacks import Points  # noqa: E402

from vizattn import plots  # noqa: E402
from vizattn.patterns import Block, Global, Grid, LocalWindow, LongDistance, Neighborhood  # noqa: E402
from vizattn.receptive import theoretical  # noqa: E402
from vizattn.widgets import MECHANISMS, PartitionExplorer, PartitionState, bounds, pattern_for, resolve  # noqa: E402

from brute import vanilla_attention  # noqa: E402
from conftest import pixels  # noqa: E402

KEYS, SLOTS, QUERY = (plots.TRACES.index(n) for n in ("keys", "slots", "query"))


def expected_cells(pattern, H, W, i, j):
    """Real keys of query (i, j) as (row, col), straight from ``pattern.keys``."""
    keys = pattern.keys(H, W)[i * W + j]
    return {(int(t) // W, int(t) % W) for t in keys if t >= 0}


def natten_window(L, k, d, i):
    """NATTEN's rule on one axis, written out: the window shifts inward, never clips."""
    g, ig = i % d, i // d
    group_len = (L - g + d - 1) // d
    start = min(max(ig - k // 2, 0), group_len - k)
    return {(start + t) * d + g for t in range(k)}


# ---------------------------------------------------------------------------------------------
# the state -> pattern function
# ---------------------------------------------------------------------------------------------
def test_pattern_for_every_mechanism():
    s = PartitionState(size=12, kernel=3, dilation=2, stride=2, block=4, grid=3, interval=3)
    want = {"global": Global(), "SASA": LocalWindow(3), "NA": Neighborhood(3),
            "DiNAT": Neighborhood(3, dilation=2), "GNA": Neighborhood(3, dilation=2, stride=2),
            "MaxViT block": Block(4), "MaxViT grid": Grid(3),
            "CrossFormer SDA": Block(4), "CrossFormer LDA": LongDistance(3), "LaViT LA": Global(),
            "Swin W": Block(4), "Swin SW": Block(4, shift=2)}
    assert set(want) == set(MECHANISMS)
    for mech, pattern in want.items():
        assert pattern_for(s, mech) == pattern
        assert resolve(s, mech)[0] == pattern


def test_partitions_pad_exactly_when_the_size_does_not_divide_the_map():
    s = PartitionState(mechanism="MaxViT block", size=14, block=4)
    assert pattern_for(s) == Block(4, pad=True)
    pattern, note = resolve(s)
    assert pattern == Block(4, pad=True) and "pad=True" in note and "16" in note
    s.block = 7
    assert pattern_for(s) == Block(7) and resolve(s)[1] == ""
    assert pattern_for(s, "CrossFormer LDA") == LongDistance(2)
    assert pattern_for(s, "MaxViT grid") == Grid(7)


def test_the_state_is_typed():
    s = PartitionState()
    with pytest.raises(traitlets.TraitError, match="mechanism"):
        s.mechanism = "Swin V2"
    with pytest.raises(traitlets.TraitError, match="kernel"):
        s.kernel = "five"


def test_invalid_choices_are_explained_not_raised():
    s = PartitionState(mechanism="DiNAT", size=12, kernel=5, dilation=3)  # 15 > 12
    pattern, text = resolve(s)
    assert pattern is None and "must not exceed" in text and "dilation=(3, 3)" in text
    s = PartitionState(mechanism="SASA", kernel=4)
    pattern, text = resolve(s)
    with pytest.raises(ValueError) as raised:  # the pattern's own message, word for word
        LocalWindow(4)
    assert pattern is None and text == str(raised.value) and "odd" in text
    s = PartitionState(mechanism="NA", size=8, query_i=8)
    assert resolve(s)[0] is None and "query" in resolve(s)[1]


# ---------------------------------------------------------------------------------------------
# the figures show pattern.keys
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_highlighted_cells_are_the_patterns_keys(mechanism):
    ex = PartitionExplorer(mechanism, size=11, kernel=3, dilation=2, block=4, grid=3, interval=3, query=(0, 0))
    pattern = pattern_for(ex.state)
    H = W = 11
    for i, j in [(0, 0), (0, 10), (10, 10), (5, 5), (7, 2), (10, 3)]:
        ex.state.query_i, ex.state.query_j = i, j
        fig = ex.figures[0]
        assert plots.cells(fig.data[KEYS]) == expected_cells(pattern, H, W, i, j), (mechanism, i, j)
        assert (fig.data[QUERY].x[0], fig.data[QUERY].y[0]) == (j, i)
        # every -1 slot is drawn, off the map
        n_slots = int((pattern.keys(H, W)[i * W + j] < 0).sum())
        slots = plots.cells(fig.data[SLOTS])
        assert len(slots) == n_slots
        assert all(not (0 <= r < H and 0 <= c < W) for r, c in slots)


def test_static_figure_matches_the_widget_and_keys():
    for pattern in [Global(), LocalWindow(5), LocalWindow(3, padding="mask"), Neighborhood((3, 4), dilation=2),
                    Block((2, 3), pad=True), Grid(3, pad=True), LongDistance(2, pad=True)]:
        H, W = 7, 9
        for i, j in itertools.product(range(H), range(W)):
            fig = plots.query_overlay(pattern, H, W, query=(i, j))
            assert plots.cells(fig.data[0]) == expected_cells(pattern, H, W, i, j), (pattern, i, j)
            keys, rows, cols = plots.query_slots(pattern, H, W, i, j)
            assert keys.tolist() == pattern.keys(H, W)[i * W + j].tolist()
            real = keys >= 0
            assert (rows[real] * W + cols[real]).tolist() == keys[real].tolist()


def test_sasa_corner_query_shows_zero_slots_outside_the_map():
    ex = PartitionExplorer("SASA", size=8, kernel=5, query=(0, 0))
    fig = ex.figures[0]
    slots = plots.cells(fig.data[SLOTS])
    # a 5 x 5 window at the corner: 16 of its 25 positions lie off the map, up to 2 rows/cols out
    want = {(r, c) for r in range(-2, 3) for c in range(-2, 3)} - {(r, c) for r in range(3) for c in range(3)}
    assert slots == want
    text = np.array(fig.data[SLOTS].text)
    assert set(text[np.asarray(fig.data[SLOTS].z, dtype=float) == 1].tolist()) == {"0"}
    # the drawn area reaches k // 2 = 2 cells beyond the map on every side
    assert tuple(fig.layout.xaxis.range) == (-2.5, 9.5) and tuple(fig.layout.yaxis.range) == (9.5, -2.5)
    assert "zero" in ex.messages[0].value
    # SASA's mask variant: the same slots, excluded (x), not zero keys
    fig = plots.partition_figure(LocalWindow(5, padding="mask"), 8, 8, query=(0, 0))
    assert plots.cells(fig.data[SLOTS]) == want and fig.data[SLOTS].text[0][0] == "x"


@pytest.mark.parametrize("k, d", [(3, 1), (4, 1), (5, 1), (3, 2), (2, 3)])
def test_na_border_window_is_shifted_like_natten(k, d):
    L = 12
    ex = PartitionExplorer("DiNAT" if d > 1 else "NA", size=L, kernel=k, dilation=d, query=(0, 0))
    for i, j in [(0, 0), (L - 1, 0), (1, L - 1), (L // 2, L // 2)]:
        ex.set_query(i, j)
        fig = ex.figures[0]
        want = {(r, c) for r in natten_window(L, k, d, i) for c in natten_window(L, k, d, j)}
        assert plots.cells(fig.data[KEYS]) == want
        assert len(plots.cells(fig.data[SLOTS])) == 0  # NA never has empty slots
        shapes = {s.name: s for s in fig.layout.shapes}
        window = shapes["window"]
        rows, cols = zip(*want)
        assert (window.x0, window.x1, window.y0, window.y1) == (min(cols) - 0.5, max(cols) + 0.5,
                                                                min(rows) - 0.5, max(rows) + 0.5)
    ex.set_query(0, 0)  # at the corner the centred window would stick out: drawn dashed, off the map
    centred = {s.name: s for s in ex.figures[0].layout.shapes}["centred window"]
    assert centred.line.dash == "dash" and centred.x0 == -(k // 2) * d - 0.5 and centred.y0 == centred.x0
    ex.set_query(L // 2, L // 2)  # in the middle it is not shifted: no dashed outline
    assert [s.name for s in ex.figures[0].layout.shapes] == ["map", "window", "keys"]


def test_the_query_keys_are_outlined():
    fig = plots.partition_figure(Block(4), 8, 8, query=(5, 1))  # its group: rows 4-7, cols 0-3
    path = {s.name: s for s in fig.layout.shapes}["keys"].path
    assert path.count("M") == 16 and "M-0.5,3.5L-0.5,4.5" in path and "M3.5,6.5L3.5,7.5" in path
    fig = plots.partition_figure(Grid(2), 4, 4, query=(0, 0))  # keys (0, 0), (0, 2), (2, 0), (2, 2): apart
    assert {s.name: s for s in fig.layout.shapes}["keys"].path.count("M") == 16


SPECS = [
    (plots.partition_spec, Neighborhood(3, dilation=2), (7, 9), (0, 8)),
    (plots.partition_spec, LocalWindow(3), (5, 5), (0, 0)),  # SASA: the colour bar of real keys
    (plots.partition_spec, Grid(2, pad=True), (5, 7), (4, 6)),
    (plots.overlay_spec, Neighborhood(5), (6, 6), (0, 1)),
    (plots.rolled_spec, Block(4, shift=2, pad=True), (7, 9), (6, 0)),
    (plots.rolled_overlay_spec, Block(4, shift=2), (8, 8), (1, 7)),
]


@pytest.mark.parametrize("spec, pattern, size, query", SPECS, ids=lambda v: getattr(v, "__name__", None))
def test_the_plain_data_figures_are_in_the_form_plotlys_checks_give_them(spec, pattern, size, query):
    """The explorers send these unchecked (``widgets.base.send``): plotly must have nothing to change."""
    plain = json.loads(pio.to_json(spec(pattern, *size, query), validate=False))
    checked = json.loads(go.Figure(plain).to_json())
    checked["layout"].pop("template", None)
    assert checked == plain


def test_padded_partition_draws_padded_cells_beyond_the_map():
    ex = PartitionExplorer("MaxViT block", size=10, block=4, query=(9, 9))
    assert pattern_for(ex.state) == Block(4, pad=True) and "pad=True" in ex.messages[0].value
    fig = ex.figures[0]
    assert plots.cells(fig.data[KEYS]) == {(r, c) for r in (8, 9) for c in (8, 9)}
    assert plots.cells(fig.data[SLOTS]) == {(r, c) for r in range(8, 12) for c in range(8, 12)} - {
        (r, c) for r in (8, 9) for c in (8, 9)}
    assert fig.data[SLOTS].text[-1][-1] == "x"
    ex.state.mechanism = "MaxViT grid"
    ex.state.grid = 3  # spacing ceil(10 / 3) = 4, padded to 12
    assert pattern_for(ex.state) == Grid(3, pad=True)
    assert plots.cells(ex.figures[0].data[KEYS]) == expected_cells(Grid(3, pad=True), 10, 10, 9, 9)


def test_groups_are_coloured_from_the_axis_rules():
    groups = plots.TRACES.index("groups")
    fig = plots.partition_figure(Block(3), 6, 6, query=(0, 0))
    z = np.asarray(fig.data[groups].z, dtype=float)
    assert len(np.unique(z)) == 4  # four blocks, four colours
    assert z[0, 0] == z[2, 2] != z[0, 3] != z[3, 3]
    fig = plots.partition_figure(Grid(2), 6, 6, query=(0, 0))  # spacing 3: (0, 0) and (3, 3) share a group
    z = np.asarray(fig.data[groups].z, dtype=float)
    assert z[0, 0] == z[3, 3] == z[0, 3] != z[0, 1]


# (pattern, H, W): blocks, shifted and padded ones, grid lines, LDA and dilation groups, odd and even numbers of
# groups per axis (three grid lines or dilation groups on both axes: nine classes that all touch each other)
GROUPED = [(Block(3), 9, 12), (Block(4, shift=2), 12, 12), (Block(3, pad=True), 10, 11), (Grid(3), 9, 12),
           (Grid(4, pad=True), 10, 14), (LongDistance(4), 12, 8), (Neighborhood(3, dilation=2), 11, 10),
           (Neighborhood(3, dilation=3), 11, 10), (Grid(3), 9, 9), (LongDistance(3), 12, 9)]


def group_of(pattern, H, W):
    """``group(r, c)`` -> a label shared exactly by the tokens of one group, from the definitions: a
    partition group is a key set (its tokens attend among themselves); NA's dilation groups are the
    sub-grids of equal (r mod d, c mod d)."""
    if isinstance(pattern, Neighborhood):
        d = pattern.dilation
        return lambda r, c: (r % d[0], c % d[1])
    return lambda r, c: frozenset(expected_cells(pattern, H, W, r, c))


def shown_colours(trace):
    """The colour of every cell of a heatmap on a stepped colour scale: ``{(row, col): colour}``."""
    scale, z = trace.colorscale, np.asarray(trace.z, dtype=float)
    out = {}
    for (a, b), v in np.ndenumerate(z):
        x = (v - trace.zmin) / (trace.zmax - trace.zmin)
        out[int(trace.y[a]), int(trace.x[b])] = next(c0 for (lo, c0), (hi, c1) in zip(scale, scale[1:])
                                                     if lo <= x <= hi and c0 == c1)
    return out


@pytest.mark.parametrize("pattern, H, W", GROUPED)
def test_touching_groups_differ_and_the_querys_group_has_a_colour_of_its_own(pattern, H, W):
    group = group_of(pattern, H, W)
    for i, j in [(0, 0), (H - 1, W // 2), (H // 2, W - 1)]:
        colour = shown_colours(plots.partition_figure(pattern, H, W, query=(i, j)).data[plots.TRACES.index("groups")])
        own = {cell for cell in colour if group(*cell) == group(i, j)}
        assert (i, j) in own and len(own) < H * W
        # the query's group is told apart by its colour alone: no cell outside it has one of its colours
        assert {colour[c] for c in own}.isdisjoint(colour[c] for c in colour if c not in own)
        shared = [((r, c), (r + dr, c + dc)) for (r, c), (dr, dc) in itertools.product(colour, [(0, 1), (1, 0),
                                                                                                 (1, 1), (1, -1)])
                  if (r + dr, c + dc) in colour and group(r, c) != group(r + dr, c + dc)
                  and colour[r, c] == colour[r + dr, c + dc]]  # touching cells of different groups, one colour
        assert not shared, shared[:3]


@pytest.mark.parametrize("P, s, L", [(5, 2, 10), (4, 1, 12), (3, 1, 9)])
def test_swins_rolled_map_shows_the_regions_it_brings_together_in_different_colours(P, s, L):
    pattern = Block(P, shift=s)
    group = group_of(pattern, L, L)
    for i, j in [(0, 0), (L // 2, L - 1)]:
        colour = shown_colours(plots.rolled_figure(pattern, L, L, query=(i, j)).data[plots.TRACES.index("groups")])
        token = {(a, b): ((a + s) % L, (b + s) % L) for a, b in colour}  # rolled cell -> the token it holds
        shared = [(c, d) for c in colour for d in [(c[0] + 1, c[1]), (c[0], c[1] + 1), (c[0] + 1, c[1] + 1),
                                                  (c[0] + 1, c[1] - 1)]
                  if d in colour and group(*token[c]) != group(*token[d]) and colour[c] == colour[d]]
        assert not shared, shared[:3]  # Swin's masked sub-regions of one window are told apart
        own = {c for c in colour if group(*token[c]) == group(i, j)}
        assert {colour[c] for c in own}.isdisjoint(colour[c] for c in colour if c not in own)


def test_a_query_move_moves_the_strong_group():
    ex = PartitionExplorer("MaxViT block", size=8, block=4, query=(0, 0))
    first = shown_colours(ex.figures[0].data[plots.TRACES.index("groups")])
    for i, j in [(7, 7), (0, 5), (6, 1), (0, 0)]:
        ex.set_query(i, j)
        colour = shown_colours(ex.figures[0].data[plots.TRACES.index("groups")])
        own = expected_cells(Block(4), 8, 8, i, j)
        assert {colour[c] for c in own}.isdisjoint(colour[c] for c in colour if c not in own)
    assert colour == first  # back at the start: the same picture


# ---------------------------------------------------------------------------------------------
# the view: sliders, bounds, clicks, play, compare, export
# ---------------------------------------------------------------------------------------------
def test_slider_bounds_keep_kernel_times_dilation_within_the_map():
    ex = PartitionExplorer("DiNAT", size=14, kernel=3, dilation=2)
    sl = ex.sliders
    rng = np.random.default_rng(0)
    for _ in range(40):
        name = rng.choice(["size", "kernel", "dilation"])
        sl[name].value = int(rng.integers(sl[name].min, sl[name].max + 1))
        s = ex.state
        assert s.kernel * s.dilation <= s.size and s.kernel >= 2
        assert sl["kernel"].max == s.size // s.dilation and sl["dilation"].max == s.size // s.kernel
        assert sl["query_i"].max == s.size - 1 and 0 <= s.query_i < s.size
        assert (s.kernel, s.dilation, s.size) == (sl["kernel"].value, sl["dilation"].value, sl["size"].value)
        assert resolve(s)[0] is not None and ex.figures[0].layout.title.text.startswith("DiNAT")
    # a value past the bound is clamped, through the slider, into the state
    ex.sliders["size"].value = 14
    ex.sliders["kernel"].value = 3
    ex.sliders["dilation"].value = 2
    assert ex.state.dilation == 2
    ex.state.kernel = 13
    assert ex.state.kernel == 7 and ex.sliders["kernel"].value == 7
    # shrinking the map drags everything that depends on it along
    ex.set_query(13, 13)
    ex.state.size = 6
    s = ex.state
    assert s.kernel * s.dilation <= 6 and (s.query_i, s.query_j) == (5, 5)
    assert bounds(s)["query_j"] == (0, 5)


def test_only_the_sliders_a_mechanism_reads_are_shown():
    ex = PartitionExplorer("MaxViT grid", size=14)
    shown = {n for n, sl in ex.sliders.items() if sl.layout.display != "none"}
    assert shown == {"size", "grid", "query_i", "query_j"}
    ex.state.compare = "DiNAT"
    shown = {n for n, sl in ex.sliders.items() if sl.layout.display != "none"}
    assert shown == {"size", "grid", "kernel", "dilation", "query_i", "query_j"}


def test_sasa_kernels_are_odd_and_clamping_comes_back_when_the_map_grows():
    ex = PartitionExplorer("NA", size=10, kernel=4, compare="SASA")
    assert (ex.sliders["kernel"].min, ex.sliders["kernel"].step, ex.state.kernel) == (3, 2, 3)  # NA's 2, odd
    ex.state.compare = None
    assert (ex.sliders["kernel"].min, ex.sliders["kernel"].step, ex.state.kernel) == (2, 1, 4)  # asked for 4
    ex.state.mechanism = "SASA"
    ex.sliders["kernel"].value = 7
    ex.set_query(9, 8)
    ex.state.size = 4  # kernel 3 at most (odd), query on the map
    assert (ex.state.kernel, ex.state.query_i, ex.state.query_j) == (3, 3, 3)
    assert resolve(ex.state)[0] is not None and ex.figures[0].layout.title.text.startswith("SASA")
    ex.state.size = 12  # what was asked for comes back
    assert (ex.state.kernel, ex.state.query_i, ex.state.query_j) == (7, 9, 8)
    assert ex.sliders["kernel"].value == 7 and len(plots.cells(ex.figures[0].data[KEYS])) == 6 * 7  # row 12 is off


def test_send_shares_a_message_only_between_traces_that_change_the_same_properties():
    from plotly.basedatatypes import Undefined

    from vizattn.widgets.base import send
    fig = go.FigureWidget([go.Scatter(x=[0], y=[0]), go.Scatter(x=[1], y=[1]), go.Scatter(x=[2], y=[2]),
                           go.Heatmap(z=[[1]])])
    sent = []
    fig._send_update_msg = lambda restyle_data, relayout_data, trace_indexes=None, **_: sent.append(
        (restyle_data, relayout_data, trace_indexes))
    # trace 0 asks for its own y again: dropped, so 0 and 2 change x only, 1 changes x and y, 3 changes z
    send(fig, {0: {"x": [5], "y": [0]}, 1: {"x": [6], "y": [7]}, 2: {"x": [8]}, 3: {"z": [[2]]}},
         layout={"title": {"text": "t"}}, arrays={"shapes": [dict(type="line", x0=0, x1=1, y0=0, y1=1)]})
    traces, arrays = [m for m in sent if m[0]], [m for m in sent if not m[0]]
    assert sorted(tuple(indexes) for _, _, indexes in traces) == [(0, 2), (1,), (3,)]
    for restyle, _, indexes in traces:  # nothing padded: every trace of a message sets every property sent
        assert all(len(v) == len(indexes) and not any(x is Undefined for x in v) for v in restyle.values())
    assert [layout for _, layout, _ in traces if layout] == [{"title.text": "t"}]  # rides with one of them
    assert [set(layout) for _, layout, _ in arrays] == [{"shapes"}]  # the arrays follow in one more
    assert [s.type for s in fig.layout.shapes] == ["line"]
    assert (fig.data[0].x, fig.data[0].y, fig.data[1].y) == ((5,), (0,), (7,)) and np.asarray(fig.data[3].z) == 2
    assert fig.layout.title.text == "t" and fig.layout.shapes[0].x1 == 1
    sent.clear()
    send(fig, {0: {"x": [5]}}, layout={"title": {"text": "t"}})  # nothing new: nothing sent
    assert sent == []
    # a trace edit and an array of the same length: one message (one redraw), and the figure's items follow it
    send(fig, {0: {"x": [9]}}, arrays={"shapes": [dict(type="rect", x0=1, x1=2, y0=0, y1=1, line=dict(color="red"))]})
    assert len(sent) == 1 and sent[0][0] == {"x": [[9]]} and set(sent[0][1]) == {"shapes"}
    assert [(s.type, s.x0, s.line.color) for s in fig.layout.shapes] == [("rect", 1, "red")]
    sent.clear()
    send(fig, {}, arrays={"shapes": []})  # another length: through plotly's setters
    assert len(sent) == 1 and sent[0][1] == {"shapes": []} and fig.layout.shapes == ()


def test_an_invalid_choice_shows_its_explanation_not_a_traceback():
    ex = PartitionExplorer("SASA", size=10, kernel=3)
    pattern, note = resolve(PartitionState(mechanism="SASA", kernel=4))  # even: only reachable by hand
    assert pattern is None and "odd kernel_size" in note
    from vizattn.widgets.base import explain
    explain(ex.figures[0], note)
    assert ex.figures[0].layout.title.text == "nothing to draw"
    assert not any(t.visible for t in ex.figures[0].data) and not ex.figures[0].layout.shapes
    assert "odd kernel_size" in ex.figures[0].layout.annotations[0].text
    ex.state.kernel = 5
    fig = ex.figures[0]
    assert fig.layout.title.text.startswith("SASA") and len(plots.cells(fig.data[KEYS])) == 25
    assert all(t.visible for t in fig.data) and len(fig.layout.annotations) == 1
    assert "odd" not in ex.messages[0].value


def test_widget_messages_never_pad_a_trace_with_undefined():
    """plotly pads a batch's unchanged properties with undefined, which its anywidget front end
    stores as null (the query marker lost its x and y in the browser): every update message the
    explorer sends must carry real values only."""
    from plotly.basedatatypes import Undefined
    ex = PartitionExplorer("NA", size=8, kernel=3, query=(0, 0), compare="SASA")
    sent = []
    for fig in ex.figures:
        def record(restyle_data, relayout_data, trace_indexes=None, source_view_id=None,
                   _send=fig._send_update_msg):
            sent.append((restyle_data, relayout_data))
            return _send(restyle_data, relayout_data, trace_indexes, source_view_id)
        fig._send_update_msg = record
    ex.set_query(0, 5)                 # a query move
    ex.state.kernel = 5                # a new geometry
    ex.state.kernel = 4                # SASA: explained, NA: drawn
    ex.state.kernel = 3
    ex.state.mechanism = "MaxViT grid"
    assert len(sent) > 10
    for restyle, relayout in sent:
        assert all(v is not Undefined for values in restyle.values() for v in values), restyle
        assert all(v is not Undefined for v in relayout.values())


def test_clicking_a_cell_picks_the_query():
    ex = PartitionExplorer("NA", size=10, kernel=3, query=(5, 5))
    trace = ex.figures[0].data[0]
    ex._clicked(trace, Points(point_inds=[[2, 3]], xs=[3], ys=[2], trace_name="groups", trace_index=0))
    assert (ex.state.query_i, ex.state.query_j) == (2, 3)
    assert (ex.sliders["query_i"].value, ex.sliders["query_j"].value) == (2, 3)
    assert plots.cells(ex.figures[0].data[KEYS]) == expected_cells(Neighborhood(3), 10, 10, 2, 3)
    slots = ex.figures[0].data[SLOTS]
    ex._clicked(slots, Points(point_inds=[[0, 0]], xs=[-1], ys=[0], trace_name="slots", trace_index=SLOTS))
    assert (ex.state.query_i, ex.state.query_j) == (2, 3)  # off the map: ignored
    assert all(t._click_callbacks for t in ex.figures[0].data)


def test_play_sweeps_the_query_row_by_row():
    ex = PartitionExplorer("MaxViT block", size=8, block=4)
    assert (ex.play.min, ex.play.max) == (0, 63)
    ex.play.value = 13
    assert (ex.state.query_i, ex.state.query_j) == (1, 5)
    assert plots.cells(ex.figures[0].data[KEYS]) == expected_cells(Block(4), 8, 8, 1, 5)
    ex.state.size = 12
    assert ex.play.max == 143


def test_compare_mode_draws_two_panels_with_the_same_query():
    ex = PartitionExplorer("NA", size=12, kernel=3, query=(0, 0), compare="SASA")
    assert [p.layout.display for p in ex._panels] == [None, None]
    assert ex.figures[1].layout.title.text.startswith("SASA")
    ex.set_query(0, 11)
    assert plots.cells(ex.figures[0].data[KEYS]) == expected_cells(Neighborhood(3), 12, 12, 0, 11)
    assert plots.cells(ex.figures[1].data[KEYS]) == expected_cells(LocalWindow(3), 12, 12, 0, 11)
    assert len(plots.cells(ex.figures[1].data[SLOTS])) == 5
    ex.state.compare = None
    assert ex._panels[1].layout.display == "none" and ex.compare_menu.value == "(none)"
    ex.compare_menu.value = "MaxViT block"
    assert ex.state.compare == "MaxViT block" and ex._panels[1].layout.display is None
    ex.compare_menu.value = "(none)"
    assert ex.state.compare is None


def test_to_figure_has_a_query_sweep_that_matches_the_keys():
    ex = PartitionExplorer("CrossFormer LDA", size=6, interval=2)
    fig = ex.to_figure()
    assert len(fig.frames) == 36 and fig.layout.updatemenus and fig.layout.sliders
    for frame in fig.frames[::7]:
        i, j = (int(v) for v in frame.name.strip("()").split(","))
        keys = frame.data[list(frame.traces).index(KEYS)]
        assert plots.cells(keys) == expected_cells(LongDistance(2), 6, 6, i, j)
    big = PartitionExplorer("NA", size=64, kernel=7).to_figure()
    assert 0 < len(big.frames) <= 256
    ex.state.mechanism = "SASA"
    ex.state.kernel = 4  # even: SASA's kernel is clamped to an odd one, the sweep drawn
    assert ex.state.kernel == 3 and len(ex.to_figure().frames) == 36


# ---------------------------------------------------------------------------------------------
# costs, attention maps, receptive fields
# ---------------------------------------------------------------------------------------------
def test_cost_figure_is_log_log_with_one_line_per_mechanism():
    fig = plots.cost_figure([8, 16, 32, 64], mark=32)
    assert len(fig.data) == 2 * len(plots.COST_MECHANISMS)
    assert fig.layout.xaxis.type == fig.layout.yaxis.type == fig.layout.yaxis2.type == "log"
    glob = [t for t in fig.data if t.name == "global"]
    assert list(glob[1].y) == [float(s ** 4) for s in (8, 16, 32, 64)]


def test_every_cost_curve_has_a_style_of_its_own_that_stays_whatever_else_is_shown():
    styles = {(t.line.color, t.line.dash) for t in plots.cost_figure([8, 16]).data}
    assert len(styles) == len(plots.COST_MECHANISMS)  # no two mechanisms look alike
    alone = plots.cost_figure([8, 16], mechanisms=("LaViT LA", "NA")).data
    full = {t.name: (t.line.color, t.line.dash) for t in plots.cost_figure([8, 16]).data}
    assert {t.name: (t.line.color, t.line.dash) for t in alone} == {n: full[n] for n in ("LaViT LA", "NA")}
    assert full["MaxViT block"][0] == full["MaxViT grid"][0] != full["NA"][0]  # a colour per paper


def test_query_map_figure_is_transparent_where_the_query_cannot_look():
    import torch

    from vizattn import probe
    from vizattn.layers import StandAloneAttention
    with torch.random.fork_rng():  # leave the global generator as it was for the tests that follow
        torch.manual_seed(0)
        layer = StandAloneAttention(dim=8, heads=2, kernel_size=3)
        with probe(layer) as rec:
            layer(torch.randn(1, 5, 5, 8))
    fig = plots.query_map_figure(rec[0], 0, 0)
    z = np.asarray(fig.data[0].z, dtype=float)
    assert np.isfinite(z).sum() == 4 and "zero padding" in fig.layout.title.text


def test_query_maps_figure_draws_each_panels_query_map_over_its_photo():
    import torch

    from vizattn import probe
    from vizattn.layers import BlockAttention, NeighborhoodAttention
    with torch.random.fork_rng():
        torch.manual_seed(0)
        layers = torch.nn.ModuleDict({"na": NeighborhoodAttention(8, 2, kernel_size=3),
                                      "block": BlockAttention(8, 2, size=2)})
        with probe(layers) as rec:
            small, large = torch.randn(1, 4, 4, 8), torch.randn(1, 8, 8, 8)
            layers["na"](large), layers["block"](small)
    photo, other = torch.rand(3, 16, 16), torch.rand(3, 32, 32)
    fig = plots.query_maps_figure({"na": (rec["na"], (7, 0), other), "block": (rec["block"], (1, 2))}, photo)
    assert [t.name for t in fig.data] == ["photo", "weights", "query"] * 2
    for n, (record, (i, j), picture) in enumerate([(rec["na"], (7, 0), other), (rec["block"], (1, 2), photo)]):
        image, weights, query = fig.data[3 * n: 3 * n + 3]
        np.testing.assert_array_equal(np.asarray(weights.z, dtype=float), record.query_map(i, j).numpy())
        np.testing.assert_array_equal(pixels(image), plots.grey(picture))
        cell = picture.shape[1] / record.size[0]  # pixels per token
        assert (weights.dx, query.x[0], query.y[0]) == (cell, (j + 0.5) * cell - 0.5, (i + 0.5) * cell - 0.5)


def test_receptive_figure_grows_frame_by_frame():
    field = theoretical([Neighborhood(3), Block(4), Neighborhood(3)], size=12, position=(6, 6))
    fig = plots.receptive_figure(field)
    sizes = [int(np.nansum(np.asarray(f.data[0].z, dtype=float))) for f in fig.frames]
    assert len(sizes) == 3 and sizes[0] == 9 and sizes == sorted(sizes)
    assert sizes[-1] == int(field.input.sum())


def test_import_vizattn_stays_light():
    code = "import sys, vizattn; print(sorted(m for m in ('plotly', 'ipywidgets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_explorer_figures_skip_plotlys_tick_label_overflow_pass():
    """The explorers' axes and colour bars let tick labels overflow (plotly.js's default hiding pass
    measures every label again per label drawn: half of a browser redraw); a figure built with
    another template would lose that."""
    from vizattn.widgets import AttentionExplorer, CostExplorer
    nat = AttentionExplorer("nat", photo="astronaut")
    figures = [PartitionExplorer("SASA", size=8, kernel=3).figures[0], CostExplorer(side=16).figure,
               nat.figure, nat.heads_figure]
    for fig in figures:
        layout = fig.layout.template.layout
        assert (layout.xaxis.ticklabeloverflow, layout.yaxis.ticklabeloverflow,
                layout.coloraxis.colorbar.ticklabeloverflow) == ("allow",) * 3
        assert fig.layout.template.data.heatmap[0].colorbar.ticklabeloverflow == "allow"


# ---------------------------------------------------------------------------------------------
# the cost and receptive-field explorers
# ---------------------------------------------------------------------------------------------
def test_cost_explorer_follows_its_sliders_and_toggles():
    from vizattn.widgets import CostExplorer
    ex = CostExplorer(side=32)
    names = [t.name for t in ex.figure.data]
    assert all(ex.figure.data[k].visible for k in range(len(names)))
    ex.state.mechanisms = ("global", "CrossFormer LDA")
    assert {t.name for t in ex.figure.data if t.visible} == {"global", "CrossFormer LDA"}
    assert ex.toggles.value == ("global", "CrossFormer LDA")
    ex.sliders["interval"].value = 4
    lda = [t for t in ex.figure.data if t.name == "CrossFormer LDA"]
    sides = list(lda[1].x)
    assert list(lda[1].y) == [plots.cost("CrossFormer LDA", s, interval=4)[1] for s in sides]
    ex.sliders["side"].value = 64
    assert ex.figure.layout.shapes[0].x0 == 64 and "64x64" in ex.table.value
    assert "CrossFormer LDA" in ex.table.value and "MaxViT grid" not in ex.table.value


def test_receptive_field_explorer_grows_with_depth_like_theoretical():
    from vizattn.widgets import ReceptiveFieldExplorer, stack_for
    ex = ReceptiveFieldExplorer("NA + DiNAT", size=21, depth=1, kernel=3, dilation=3)
    sizes = []
    for depth in (1, 2, 3):
        ex.depth.value = depth
        want = theoretical(stack_for("NA + DiNAT", depth, 21, kernel=3, dilation=3), size=21, position=(10, 10))
        drawn = plots.cells(ex.figure.data[0])
        assert drawn == {tuple(p) for p in want.input.nonzero().tolist()}
        sizes.append(len(drawn))
    assert sizes == [9, 81, 121]  # [NA] 3x3; [NA, DiNAT] 9x9; [NA, DiNAT, NA] 11x11
    ex = ReceptiveFieldExplorer("MaxViT block + grid", size=16, depth=1, window=4)  # 16 = P * G
    assert len(plots.cells(ex.figure.data[0])) == 16  # one 4x4 block
    ex.depth.value = 2  # block then grid: the whole map
    assert "256 of 256 positions" in ex.message.value and len(plots.cells(ex.figure.data[0])) == 256
    assert len(ex.to_figure().frames) == 2
    with pytest.raises(ValueError, match="stack"):
        stack_for("Swin V2", 2, 8)


# ---------------------------------------------------------------------------------------------
# the attention of a trained model on a photograph
# ---------------------------------------------------------------------------------------------
def independent_records(model_name, photo_name, task="shape"):
    """The records ``vizattn.probe`` captures for a fresh pretrained model on a photo: what the explorer must show."""
    import torch

    from vizattn import probe
    from vizattn.data import photo
    from vizattn.models import create
    model = create(model_name, pretrained=True, task=task)
    with torch.no_grad(), probe(model) as rec:
        model(photo(photo_name, size=64)[None])
    return {r.name: r for r in rec}


def as_float(z):
    return np.asarray(z, dtype=float)  # None (a gap) -> NaN


def count_forwards(model):
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls


@pytest.fixture(scope="module")
def nat_explorer():
    from vizattn.widgets import AttentionExplorer
    return AttentionExplorer("nat", photo="chelsea")


@pytest.mark.parametrize("model", ["nat", "sasa", "maxvit", "crossformer"])
def test_attention_heatmap_is_the_probes_query_map(model):
    from vizattn.widgets import AttentionExplorer
    records = independent_records(model, "coffee")
    ex = AttentionExplorer(model, photo="coffee")
    for name, record in list(records.items())[::2]:
        H, W = record.size
        for head, (i, j) in [(0, (0, 0)), (len(record.heads) - 1, (H - 1, W // 2)), (1, (H // 2, W - 1))]:
            ex.state.layer = name
            ex.state.head = head
            ex.set_query(i, j)
            want = record.query_map(i, j, head=head).numpy()
            z = as_float(ex.figure.data[1].z)
            np.testing.assert_allclose(z, want, rtol=1e-5, atol=1e-7, err_msg=f"{name} head {head} query {(i, j)}")
            keys = record.pattern.keys(H, W)[i * W + j]
            assert {tuple(c) for c in np.argwhere(np.isfinite(z)).tolist()} == {
                (int(t) // W, int(t) % W) for t in keys if t >= 0}
            # the marker sits on the query's cell, in image pixels
            cell = 64 / H
            assert (ex.figure.data[2].x[0], ex.figure.data[2].y[0]) == ((j + 0.5) * cell - 0.5, (i + 0.5) * cell - 0.5)
            assert ex.figure.data[1].dx == cell and pixels(ex.figure.data[0]).shape == (64, 64, 3)


def test_head_thumbnails_show_every_head_and_the_scales(nat_explorer):
    ex = nat_explorer
    records = independent_records("nat", "chelsea")
    ex.state.layer = "stages.1.1.attn"
    ex.set_query(2, 7)
    record = records["stages.1.1.attn"]
    H, W = record.size
    maps = [record.query_map(2, 7, head=h).numpy() for h in range(len(record.heads))]
    assert [t.name for t in ex.heads_figure.data] == list(plots.HEADS_TRACES)
    mosaic = ex.heads_figure.data[0]
    raw, z = as_float(mosaic.customdata), as_float(mosaic.z)
    for h, m in enumerate(maps):  # 4 heads, 4 per row, one-cell gaps
        tile = (slice(0, H), slice(h * (W + 1), h * (W + 1) + W))
        np.testing.assert_allclose(raw[tile], m, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(z[tile], m / np.nanmax(m), rtol=1e-5)  # local: each head up to 1
        assert (ex.heads_figure.data[1].x[h], ex.heads_figure.data[1].y[h]) == (h * (W + 1) + 7, 2)
    assert np.isnan(z[:, W]).all() and mosaic.zmax == 1
    ex.state.scale = "shared"
    mosaic = ex.heads_figure.data[0]
    peak = max(np.nanmax(m) for m in maps)
    assert mosaic.zmax == pytest.approx(peak) and ex.figure.data[1].zmax == pytest.approx(peak)
    np.testing.assert_allclose(as_float(mosaic.z), raw, rtol=1e-6)
    ex.state.scale = "local"
    assert ex.figure.data[1].zmax == pytest.approx(np.nanmax(maps[ex.state.head]))
    # the outline follows the head; clicking a tile picks its head
    ex.state.head = 2
    shapes = ex.heads_figure.layout.shapes
    box = [b for b in shapes if b.name == "selected head"]
    assert len(box) == 1 and (box[0].x0, box[0].x1) == (2 * (W + 1) - 0.5, 2 * (W + 1) + W - 0.5)
    assert [(b.x0, b.y0) for b in shapes if b.name == "tile"] == [(h * (W + 1) - 0.5, -0.5) for h in range(4)]
    ex._clicked_head(ex.heads_figure.data[0], Points(point_inds=[[1, 3 * (W + 1) + 2]], xs=[3 * (W + 1) + 2], ys=[1],
                                                     trace_name="heads", trace_index=0))
    assert ex.state.head == 3 and ex.sliders["head"].value == 3
    ex._clicked_head(ex.heads_figure.data[0], Points(point_inds=[[1, W]], xs=[W], ys=[1], trace_name="heads",
                                                     trace_index=0))
    assert ex.state.head == 3  # the gap between tiles: nothing


def test_only_a_new_model_task_or_photo_runs_the_model():
    from vizattn.widgets import AttentionExplorer
    ex = AttentionExplorer("dinat", photo="rocket")
    calls = count_forwards(ex.model)
    assert ex.forwards == 1
    for head in (1, 0, 1):
        ex.sliders["head"].value = head
    ex.scale_buttons.value = "shared"
    ex.state.scale = "local"
    for j in range(5):
        ex.sliders["query_j"].value = j
    ex.set_query(3, 3)
    ex.layer_menu.value = "stages.1.2.attn"
    ex.state.layer = "stages.0.1.attn"
    assert calls == [] and ex.forwards == 1
    ex.menus["photo"].value = "camera"
    assert len(calls) == 1 and ex.forwards == 2
    ex.state.model = "vit"
    assert ex.forwards == 3 and ex.state.layer in ex.records and "vit" in ex.figure.layout.title.text
    ex.state.task = "same"
    assert ex.forwards == 4
    ex.state.head = 5  # vit has 6 heads
    assert ex.forwards == 4 and ex.state.head == 5


def test_the_query_follows_the_image_across_layers_and_clicks(nat_explorer):
    ex = nat_explorer
    ex.state.layer = "stages.0.0.attn"  # 16 x 16: a cell is 4 pixels
    ex.set_query(13, 2)
    ex.state.layer = "stages.2.1.attn"  # 4 x 4: the same part of the image
    assert (ex.state.query_i, ex.state.query_j) == (3, 0)
    assert (ex.sliders["query_i"].max, ex.sliders["query_j"].max, ex.sliders["head"].max) == (3, 3, 5)
    ex._clicked_photo(ex.figure.data[0], Points(point_inds=[[10, 40]], xs=[40], ys=[10], trace_name="photo",
                                                trace_index=0))
    assert (ex.state.query_i, ex.state.query_j) == (0, 2)  # pixel (10, 40) lies in cell (0, 2) of 16-pixel cells
    ex.state.layer = "stages.1.1.attn"
    assert (ex.state.query_i, ex.state.query_j) == (1, 5)
    ex._clicked_photo(ex.figure.data[1], Points(point_inds=[[0, 0]], xs=[63], ys=[0], trace_name="weights",
                                                trace_index=1))
    assert (ex.state.query_i, ex.state.query_j) == (0, 7)
    assert "rows 0-7, columns 56-63" in ex.message.value


def test_attention_state_is_typed_and_bad_choices_are_explained(nat_explorer):
    from vizattn.widgets import AttentionExplorer
    ex = nat_explorer
    with pytest.raises(ValueError, match="layer must be one of the model's attention layers"):
        ex.state.layer = "stages.9.attn"
    with pytest.raises(traitlets.TraitError, match="model"):
        ex.state.model = "resnet"
    ex.state.layer = "stages.2.2.attn"
    ex.state.head = 40  # past the layer's heads: clamped, like a slider
    ex.state.query_i = -3
    assert ex.state.head == 5 and ex.state.query_i == 0 and ex.sliders["head"].value == 5
    for kwargs, match in [(dict(model="resnet"), "model must be one of"), (dict(photo="moon"), "photo must be one of"),
                          (dict(layer="x"), "layer must be one of"), (dict(head=2), r"head must lie in \[0, 1\]"),
                          (dict(query=(16, 0)), "query must lie on the 16x16 map"),
                          (dict(scale="log"), "scale must be one of")]:
        with pytest.raises(ValueError, match=match):
            AttentionExplorer(**{"model": "nat", **kwargs})


def test_attention_to_figure_animates_the_query(nat_explorer):
    ex = nat_explorer
    ex.state.layer = "stages.1.2.attn"
    ex.state.head = 1
    fig = ex.to_figure()
    record = ex.record
    assert isinstance(fig, go.Figure) and not isinstance(fig, go.FigureWidget)
    assert len(fig.frames) == 64 and [t.name for t in fig.data] == list(plots.ATTENTION_TRACES)
    for frame in fig.frames[::9]:
        i, j = (int(v) for v in frame.name.strip("()").split(","))
        np.testing.assert_allclose(as_float(frame.data[0].z), record.query_map(i, j, head=1).numpy(), rtol=1e-6)


def test_widget_updates_carry_no_nan_and_no_undefined():
    """NaN is not valid JSON and plotly pads batches with undefined (stored as null by its front end):
    every message of the attention explorer carries real values or None gaps only."""
    from plotly.basedatatypes import Undefined

    from vizattn.widgets import AttentionExplorer
    ex = AttentionExplorer("sasa", photo="astronaut")
    sent = []
    for fig in (ex.figure, ex.heads_figure):
        def record(restyle_data, relayout_data, trace_indexes=None, source_view_id=None, _send=fig._send_update_msg):
            sent.append((restyle_data, relayout_data))
            return _send(restyle_data, relayout_data, trace_indexes, source_view_id)
        fig._send_update_msg = record
    ex.set_query(0, 0)
    ex.state.head = 1
    ex.state.scale = "shared"
    ex.state.layer = "stages.2.1.attn"
    assert len(sent) >= 8

    def values(x):
        if isinstance(x, dict):
            for v in x.values():
                yield from values(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                yield from values(v)
        else:
            yield x
    for restyle, relayout in sent:
        for v in values([restyle, relayout]):
            assert v is not Undefined
            assert not (isinstance(v, float) and np.isnan(v))


# ---------------------------------------------------------------------------------------------
# LaViT: the reuse chain, what a vanilla layer would compute, diagonality, saturation
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lavit_run():
    """An independent run of the pretrained LaViT on a photo: records, each LA layer's input, the model."""
    import torch

    from vizattn import probe
    from vizattn.data import photo
    from vizattn.models import create
    model = create("lavit", pretrained=True)
    with torch.no_grad(), probe(model, inputs=True) as rec:
        model(photo("chelsea", size=64)[None])
    inputs = {r.name: r.input for r in rec if r.kind == "less"}
    return model, {r.name: r for r in rec}, inputs


@pytest.fixture(scope="module")
def lavit_explorer():
    from vizattn.widgets import LaViTExplorer
    return LaViTExplorer(photo="chelsea")


def vanilla_by_hand(model, inputs, la_name, source):
    """softmax(Q'K'^T / sqrt(d)) with the source VA layer's qkv weights on the LA layer's input: ``[heads, N, N]``."""
    return vanilla_attention(model.get_submodule(source), inputs[la_name])[0]


def test_lavit_chain_shows_each_layers_attention_and_the_vanilla_one(lavit_explorer, lavit_run):
    ex = lavit_explorer
    model, records, inputs = lavit_run
    for stage, head in [(0, 0), (1, 3), (0, 2)]:
        ex.sliders["stage"].value = stage
        ex.state.head = head
        names = [f"stages.{stage}.attns.{j}" for j in range(3)]
        assert [records[n].kind for n in names] == ["vanilla", "less", "less"]
        assert [records[n].source for n in names[1:]] == [names[0]] * 2
        fig, N = ex.chain_figure, 64 if stage == 0 else 16
        assert fig.layout.xaxis.ticktext == ("VA " + names[0], "LA " + names[1], "LA " + names[2])
        top, bottom = (as_float(t.z) for t in fig.data)
        keys = as_float(fig.data[0].customdata)
        drawn = np.zeros(top.shape, bool)
        for c, (name, centre) in enumerate(zip(names, fig.layout.xaxis.tickvals)):  # each map under its label
            cols = slice(round(centre - (N - 1) / 2), round(centre - (N - 1) / 2) + N)
            drawn[:, cols] = True
            used = records[name].dense()[0, head].numpy()
            np.testing.assert_allclose(top[:, cols], used, rtol=1e-5, atol=1e-7)
            np.testing.assert_array_equal(keys[:, cols], np.tile(np.arange(N), (N, 1)))  # what the hover names
            if c:  # under each LA layer: the vanilla attention at that layer, by hand
                want = vanilla_by_hand(model, inputs, name, records[name].source)[head].numpy()
                np.testing.assert_allclose(bottom[:, cols], want, rtol=1e-4, atol=1e-6)
                tv = 0.5 * np.abs(used - want).sum(-1).mean()
                assert fig.layout.xaxis2.ticktext[c] == f"a vanilla layer here (TV {tv:.2f})"
            else:  # under the VA layer: nothing to compare
                assert np.isnan(bottom[:, cols]).all() and "VA" in fig.layout.xaxis2.ticktext[0]
        assert np.isnan(top[~drawn]).all() and np.isnan(bottom[~drawn]).all() and np.isnan(keys[~drawn]).all()
        assert fig.layout.yaxis.range == (N - 0.5, -0.5) and fig.layout.xaxis.range == (-0.5, top.shape[1] - 0.5)
        assert f"N = {N}" in fig.layout.title.text
        shown = np.concatenate([top[~np.isnan(top)], bottom[~np.isnan(bottom)]])
        assert fig.layout.coloraxis.cmax == pytest.approx(np.percentile(shown, 99))


def test_lavit_measures_and_saturation_are_the_metrics(lavit_explorer, lavit_run):
    import torch

    from vizattn import metrics, probe
    from vizattn.data import photo
    from vizattn.models import create
    ex = lavit_explorer
    model, records, inputs = lavit_run
    names = list(records)
    diag, sym, vdiag = ex.measures_figure.data[0], ex.measures_figure.data[1], ex.measures_figure.data[2]
    for k, name in enumerate(names):
        dense = records[name].dense()[0]
        assert diag.y[k] == pytest.approx(float(metrics.diagonality(dense).mean()), rel=1e-5)
        assert sym.y[k] == pytest.approx(float(metrics.symmetry(dense).mean()), rel=1e-5)
        if records[name].kind == "less":
            vanilla = vanilla_by_hand(model, inputs, name, records[name].source)
            assert vdiag.y[k] == pytest.approx(float(metrics.diagonality(vanilla).mean()), rel=1e-4)
        else:
            assert vdiag.y[k] is None
    ex.state.stage = 1
    shade = ex.measures_figure.layout.shapes[0]
    assert (shade.x0, shade.x1) == (2.5, 5.5)
    vit = create("vit", pretrained=True)
    with torch.no_grad(), probe(vit) as rec:
        vit(photo("chelsea", size=64)[None])
    curves = {t.name: t for t in ex.saturation_figure.data}
    np.testing.assert_allclose(as_float(curves["ViT"].y), metrics.saturation(list(rec)).numpy(), rtol=1e-5)
    lavit = as_float(curves["LaViT"].y)
    np.testing.assert_allclose(lavit, metrics.saturation(list(records.values())).numpy(), rtol=1e-5)
    assert np.isnan(lavit[2]) and np.isfinite(lavit[[0, 1, 3, 4]]).all()  # the map shrinks between stages


def test_lavit_stage_and_head_never_run_the_models():
    from vizattn.widgets import LaViTExplorer
    ex = LaViTExplorer(stage=1, head=2)
    hooks = [count_forwards(ex._model(n)) for n in ("lavit", "vit")]
    for stage, head in [(0, 1), (1, 3), (0, 0)]:
        ex.sliders["stage"].value = stage
        ex.sliders["head"].value = head
    assert hooks == [[], []] and ex.forwards == 2
    ex.menus["photo"].value = "rocket"
    assert hooks == [[1], [1]] and ex.forwards == 4 and "rocket" in ex.chain_figure.layout.title.text
    ex.state.head = 11  # clamped to the 4 heads
    assert ex.state.head == 3 and ex.sliders["head"].value == 3
    ex.menus["photo"].value = "astronaut"  # seen before: kept, so nothing runs
    assert hooks == [[1], [1]] and ex.forwards == 4 and "astronaut" in ex.chain_figure.layout.title.text
    fresh = LaViTExplorer(stage=ex.state.stage, head=ex.state.head)  # the same pictures as a new explorer's
    for mine, new in [(ex.chain_figure, fresh.chain_figure), (ex.measures_figure, fresh.measures_figure),
                      (ex.saturation_figure, fresh.saturation_figure)]:
        for a, b in zip(mine.data, new.data):
            np.testing.assert_array_equal(as_float(a.z if a.type == "heatmap" else a.y),
                                          as_float(b.z if b.type == "heatmap" else b.y))
        assert mine.layout.title.text == new.layout.title.text
    def no_forward(self):
        raise AssertionError("a bad argument ran the models")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LaViTExplorer, "_capture", no_forward)
        for kwargs, match in [(dict(stage=2), r"stage must be None or an int in \[0, 1\]"),
                              (dict(head=4), r"head must lie in \[0, 3\]"), (dict(task="count"), "task must be one of"),
                              (dict(photo="moon"), "photo must be one of")]:
            with pytest.raises(ValueError, match=match):
                LaViTExplorer(**kwargs)


def test_lavit_to_figure_has_a_frame_per_head(lavit_explorer, lavit_run):
    ex = lavit_explorer
    _, records, _ = lavit_run
    ex.state.stage = 1
    fig = ex.to_figure()
    assert isinstance(fig, go.Figure) and not isinstance(fig, go.FigureWidget)
    assert [f.name for f in fig.frames] == ["0", "1", "2", "3"] and fig.layout.sliders
    centre = fig.layout.xaxis.tickvals[1]  # the map of stages.1.attns.1 (16 tokens) in the top strip
    cols = slice(round(centre - 7.5), round(centre - 7.5) + 16)
    for h, frame in enumerate(fig.frames):
        want = records["stages.1.attns.1"].dense()[0, h].numpy()
        np.testing.assert_allclose(as_float(frame.data[0].z)[:, cols], want,
                                   rtol=1e-5, atol=1e-7)
        assert frame.layout.xaxis2.ticktext[1].startswith("a vanilla layer here (TV ")


# ---------------------------------------------------------------------------------------------
# receptive fields: labels, the effective field next to the theoretical one
# ---------------------------------------------------------------------------------------------
def test_receptive_frames_are_labelled_with_the_fields_extent():
    from vizattn.receptive import Downsample
    field = theoretical([Neighborhood(3)] * 3, size=15, position=(7, 7))
    fig = plots.receptive_figure(field)
    assert [s.label for s in fig.layout.sliders[0].steps] == ["3x3", "5x5", "7x7"]
    assert "a 7x7 field, 49 positions" in fig.frames[-1].layout.title.text
    # a downsampling step: each frame is on its own map, labelled with the side the field covers there
    field = theoretical([Downsample(2), Neighborhood(3), Neighborhood(3)], size=16, position=(4, 4))
    fig = plots.receptive_figure(field)
    assert [s.label for s in fig.layout.sliders[0].steps] == ["3x3", "5x5", "10x10"]
    assert [tuple(np.asarray(f.data[0].z, dtype=float).shape) for f in fig.frames] == [(8, 8), (8, 8), (16, 16)]


def receptive_cells(z):
    return {tuple(c) for c in np.argwhere(np.isfinite(as_float(z)) & (as_float(z) != 0)).tolist()}


def test_effective_field_sits_inside_the_theoretical_one_and_is_receptive_effective():
    import torch

    from vizattn.receptive import effective
    from vizattn.widgets import ReceptiveFieldExplorer, stack_for, stack_model
    ex = ReceptiveFieldExplorer("NA + DiNAT", size=21, depth=1, kernel=3, dilation=3)
    for depth in (1, 2, 3):
        ex.depth.value = depth
        model = stack_model("NA + DiNAT", depth, 21, kernel=3, dilation=3)
        images = torch.randn(2, 3, 21, 21, generator=torch.Generator().manual_seed(0))
        want = effective(model, images, layer=f"attns.{depth - 1}")
        z = as_float(ex.effective_figure.data[0].z)
        m = want.map.numpy()
        np.testing.assert_allclose(z[m > 0], np.log10(m[m > 0]), rtol=1e-5)
        # random weights: the gradient reaches exactly the positions the theoretical field allows
        theory = theoretical(stack_for("NA + DiNAT", depth, 21, kernel=3, dilation=3), size=21, position=(10, 10))
        assert receptive_cells(ex.effective_figure.data[0].z) == {tuple(p) for p in theory.input.nonzero().tolist()}
        assert plots.cells(ex.figure.data[0]) == {tuple(p) for p in theory.input.nonzero().tolist()}
        sides = want.sides
        assert f"20% of the gradient within {sides[0.2]}x{sides[0.2]}, 50% within {sides[0.5]}x{sides[0.5]}, " \
               f"99% within {sides[0.99]}x{sides[0.99]}" in ex.message.value
        squares = {s.name: s for s in ex.effective_figure.layout.shapes}
        assert set(squares) == {"20%", "50%", "99%"}
        s99 = squares["99%"]
        assert s99.x1 - s99.x0 == min(sides[0.99], 21)
    assert sides[0.99] <= 9  # NA (3) then DiNAT (3, dilation 3) then NA: a 11x11 theoretical field


def test_effective_fields_are_cached_per_depth(monkeypatch):
    import vizattn.receptive
    from vizattn.widgets import ReceptiveFieldExplorer
    calls = []
    real = vizattn.receptive.effective
    monkeypatch.setattr(vizattn.receptive, "effective", lambda *a, **k: calls.append(k.get("layer")) or real(*a, **k))
    ex = ReceptiveFieldExplorer("MaxViT block + grid", size=16, depth=1, window=4)
    for depth in (2, 3, 2, 1, 3):
        ex.depth.value = depth
    assert calls == ["attns.0", "attns.1", "attns.2"]
    ex.state.effective = False
    ex.depth.value = 4
    assert len(calls) == 3 and not ex.effective_figure.data[0].visible and "random" not in ex.message.value
    ex.effective_box.value = True
    assert calls[-1] == "attns.3" and ex.effective_figure.data[0].visible
    ex.size_slider.value = 24  # another map: computed again, drawn on its own grid
    assert calls[-1] == "attns.3" and len(calls) == 5
    for fig in (ex.figure, ex.effective_figure):
        assert len(fig.data[0].x) == len(fig.data[0].y) == 24 and fig.layout.xaxis.range == (-0.5, 23.5)
        assert as_float(fig.data[0].z).shape == (24, 24)


def test_receptive_explorer_state_and_bad_input():
    from vizattn.widgets import ReceptiveFieldExplorer
    ex = ReceptiveFieldExplorer("NA + DiNAT", size=12, depth=2, kernel=3, dilation=2)
    ex.state.dilation = 5  # 3 * 5 > 12: explained on both panels, not raised; nothing stale stays
    for fig in (ex.figure, ex.effective_figure):
        assert "must not exceed the map size" in fig.layout.annotations[0].text
        assert fig.layout.title.text == "nothing to draw" and fig.layout.xaxis.visible is False
        assert not fig.data[0].visible
    assert ex.message.value == ""
    ex.state.dilation = 2
    assert ex.figure.data[0].visible and "7x7 field" in ex.message.value
    assert ex.figure.layout.title.text.startswith("theoretical") and not ex.figure.layout.annotations
    assert ex.figure.layout.xaxis.visible and ex.effective_figure.layout.yaxis.visible
    with pytest.raises(traitlets.TraitError, match="stack"):
        ex.state.stack = "Swin V2"
    for kwargs, match in [(dict(stack="Swin V2"), "stack must be one of"),
                          (dict(depth=9), r"depth must be an int in \[1, 8\]"),
                          (dict(size=100), r"size must be an int in \[8, 64\]")]:
        with pytest.raises(ValueError, match=match):
            ReceptiveFieldExplorer(**kwargs)


def test_receptive_to_figure_has_both_fields_per_depth():
    from vizattn.widgets import ReceptiveFieldExplorer
    ex = ReceptiveFieldExplorer("NA", size=13, depth=3, kernel=3)
    fig = ex.to_figure()
    assert [f.name for f in fig.frames] == ["1", "2", "3"]
    assert [s.label for s in fig.layout.sliders[0].steps] == ["3x3", "5x5", "7x7"]
    for d, frame in enumerate(fig.frames, 1):
        assert len(plots.cells(frame.data[0])) == (2 * d + 1) ** 2
        erf = ex.effective_field(d)
        np.testing.assert_allclose(as_float(frame.data[1].z)[erf.map.numpy() > 0],
                                   np.log10(erf.map.numpy()[erf.map.numpy() > 0]), rtol=1e-5)
        assert {s.name for s in frame.layout.shapes} == {"20%", "50%", "99%"}


def test_cost_explorer_hides_the_sliders_no_shown_mechanism_reads():
    from vizattn.widgets import CostExplorer
    ex = CostExplorer(side=32, mechanisms=("global", "LaViT LA"))
    shown = {n for n, sl in ex.sliders.items() if sl.layout.display != "none"}
    assert shown == {"side", "channels", "heads"}  # LaViT LA's 2hN^3 reads the heads
    ex.state.mechanisms = ("global", "SASA", "MaxViT grid")
    shown = {n for n, sl in ex.sliders.items() if sl.layout.display != "none"}
    assert shown == {"side", "channels", "heads", "kernel", "window"}


def test_a_model_round_trip_brings_the_query_back():
    from vizattn.widgets import AttentionExplorer
    ex = AttentionExplorer("dinat", query=(4, 7))
    sizes = [ex.record.size]
    ex.state.model = "vit"
    sizes.append(ex.record.size)
    ex.state.model = "dinat"
    assert sizes[0] != sizes[1] and (ex.state.query_i, ex.state.query_j) == (4, 7)
    assert ex.sliders["query_i"].value == 4 and "query (4, 7)" in ex.figure.layout.title.text
    ex.state.layer = "stages.2.1.attn"  # a smaller map, then back: the sliders follow the state both ways
    ex.state.layer = "stages.0.0.attn"
    assert (ex.sliders["query_i"].value, ex.sliders["query_j"].value) == (ex.state.query_i, ex.state.query_j)
