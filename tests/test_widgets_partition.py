"""vizattn.widgets.partition and the partition figures (vizattn.plots.partition, plots.swin), headless: drive
the state, read the figure data it produces.

The pictures must show exactly what the kernels compute, so every check compares the drawn cells with
``pattern.keys(H, W)`` (or with a rule written out here by hand), never with the drawing code's own helpers.
"""

import itertools
import json

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
from vizattn.widgets import MECHANISMS, PartitionExplorer, PartitionState, bounds, pattern_for, resolve  # noqa: E402

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
