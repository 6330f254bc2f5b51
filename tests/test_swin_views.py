"""Swin in the views: the rolled map of the partition explorer, the cost view, the stacks, the probe.

What a view shows is compared with the pattern's own key sets and, independently, with Swin's
definition (``test_swin.rolled_layout``: roll by -s, cut P x P windows, label the regions).
"""

import numpy as np
import pytest
import torch
from test_swin import rolled_layout

from vizattn.patterns import Block

pytest.importorskip("plotly")
pytest.importorskip("ipywidgets")
from vizattn import plots  # noqa: E402
from vizattn.widgets import CostExplorer, PartitionExplorer, ReceptiveFieldExplorer  # noqa: E402

# (P, s, H, W): square and rectangular windows, every kind of shift, multiples, rectangular and padded maps
CASES = [(4, 2, 8, 8), (4, 0, 8, 12), (3, 1, 9, 6), (3, 2, 6, 9), ((3, 2), (1, 1), 6, 8), (4, 3, 12, 8),
         (4, 2, 10, 10), (3, 1, 7, 11), (5, 2, 11, 13)]


def pattern_of(P, s, H, W):
    return Block(P, shift=s, pad=H % Block(P).size[0] != 0 or W % Block(P).size[1] != 0)


@pytest.mark.parametrize("P, s, H, W", CASES)
def test_both_views_draw_the_patterns_key_sets(P, s, H, W):
    pattern = pattern_of(P, s, H, W)
    sh, sw = pattern.shift
    Hp, Wp = plots.rolled_size(pattern, H, W)
    keys = pattern.keys(H, W)
    token, window, region, _ = rolled_layout(H, W, pattern.size, pattern.shift)  # Swin's definition
    where = {int(t): (a, b) for (a, b), t in np.ndenumerate(token.numpy()) if t >= 0}  # token -> rolled cell
    for i in range(H):
        for j in range(W):
            mine = {(int(k) // W, int(k) % W) for k in keys[i * W + j] if k >= 0}
            original = plots.partition_figure(pattern, H, W, query=(i, j))
            assert plots.cells(original.data[1]) == mine
            rolled = plots.rolled_figure(pattern, H, W, query=(i, j))
            shown = plots.cells(rolled.data[1])
            assert shown == {((r - sh) % Hp, (c - sw) % Wp) for r, c in mine}  # the groups rolled by -s
            # Swin: the keys are the tokens of the query's rolled window and region
            a, b = where[i * W + j]
            same = (window == window[a, b]) & (region == region[a, b]) & (token >= 0)
            assert shown == {tuple(map(int, c)) for c in same.nonzero()}
            # the masked slots fill the rest of its P x P window
            slots = shown | plots.cells(rolled.data[2])
            assert slots == {tuple(map(int, c)) for c in (window == window[a, b]).nonzero()}
            assert (rolled.data[3].y[0], rolled.data[3].x[0]) == ((i - sh) % Hp, (j - sw) % Wp)
    # the group colours: the original map's, rolled by -s (padding: not a group)
    colours = np.full((Hp, Wp), np.nan)
    colours[:H, :W] = np.asarray(plots.partition_figure(pattern, H, W, query=(H - 1, W - 1)).data[0].z, dtype=float)
    got = np.asarray(rolled.data[0].z, dtype=float)
    np.testing.assert_array_equal(got, np.roll(colours, (-sh, -sw), axis=(0, 1)))


def test_the_rolled_view_is_only_for_block_patterns():
    from vizattn.patterns import Neighborhood
    with pytest.raises(ValueError, match="rolled view is Swin's view of a Block"):
        plots.rolled_figure(Neighborhood(3), 8, 8)
    with pytest.raises(ValueError, match="shifted axis needs a map larger"):
        plots.rolled_figure(Block(4, shift=2), 4, 8)


def test_partition_explorer_toggles_swins_rolled_map_beside_na():
    ex = PartitionExplorer("Swin SW", size=14, block=7, kernel=7, query=(0, 0), compare="NA")
    assert ex.roll_toggle.layout.display is None
    assert len(plots.cells(ex.figures[0].data[1])) == 9  # SW-MSA's corner group: 3 x 3
    assert len(plots.cells(ex.figures[1].data[1])) == 49  # NA: a full 7 x 7 window, shifted inward
    ex.roll_toggle.value = True
    assert "rolled map" in ex.figures[0].layout.title.text and "rolled map" not in ex.figures[1].layout.title.text
    assert plots.cells(ex.figures[0].data[1]) == {(r, c) for r in range(11, 14) for c in range(11, 14)}
    ex.set_query(5, 12)  # a query move on the rolled map: the overlay follows
    want = plots.rolled_figure(Block(7, shift=3), 14, 14, query=(5, 12))
    assert plots.cells(ex.figures[0].data[1]) == plots.cells(want.data[1])
    assert ex.figures[0].layout.annotations[0].text == want.layout.annotations[0].text
    # a click on the rolled map selects the token drawn there
    ex._clicked(ex.figures[0].data[0], type("Points", (), dict(point_inds=[0], xs=[0], ys=[13]))())
    assert (ex.state.query_i, ex.state.query_j) == ((13 + 3) % 14, 3)
    ex.roll_toggle.value = False
    assert plots.cells(ex.figures[0].data[1]) == plots.cells(plots.partition_figure(
        Block(7, shift=3), 14, 14, query=(2, 3)).data[1])
    ex.state.mechanism, ex.state.compare = "NA", None
    assert ex.roll_toggle.layout.display == "none"


def test_partition_explorer_explains_a_map_no_larger_than_the_window():
    ex = PartitionExplorer("Swin SW", size=8, block=8, query=(0, 0))
    assert "shifted axis needs a map larger than the window" in ex.messages[0].value or not ex.figures[0].data[0].z
    ex.state.rolled = True  # still explained, no traceback
    ex.state.block = 4
    assert len(plots.cells(ex.figures[0].data[1])) == 4


def test_swin_and_na_cost_the_same_for_the_same_window():
    fig = plots.cost_figure([8, 14, 28, 56, 112], mechanisms=("NA", "Swin W", "Swin SW"), kernel=7, block=7)
    curves = {}
    for t in fig.data:
        curves.setdefault(t.name, []).append(list(t.y))
    assert curves["Swin W"] == curves["Swin SW"] == curves["NA"]
    ex = CostExplorer(side=56)
    ex.state.kernel = ex.state.window = 5
    shown = {(t.name, t.xaxis): list(t.y) for t in ex.figure.data}
    for axis in ("x", "x2"):
        assert shown[("Swin SW", axis)] == shown[("NA", axis)] == shown[("Swin W", axis)]
    ex.state.window = 7
    assert [t.y for t in ex.figure.data if t.name == "Swin SW"] != [t.y for t in ex.figure.data if t.name == "NA"]


def test_receptive_field_explorer_offers_the_w_sw_stack():
    from vizattn.receptive import stack_for
    assert stack_for("Swin W + SW", 3, 16) == [Block(4), Block(4, shift=2), Block(4)]
    ex = ReceptiveFieldExplorer(stack="Swin W + SW", effective=False, size=16, depth=1)
    assert "Swin W + SW" in ex.menu.options
    one = len(plots.cells(ex.figure.data[0]))
    ex.depth.value = 2  # the shifted windows join neighbouring windows
    assert one == 16 and len(plots.cells(ex.figure.data[0])) > one


def test_probe_records_swin_layers_with_their_geometry():
    from vizattn import models
    from vizattn.probe import probe
    assert "swin" in models.list_models()
    model = models.create("swin", pretrained=True).eval()
    with torch.no_grad(), probe(model) as rec:
        model(torch.rand(1, 3, 64, 64))
    swin = [r for r in rec if r.kind == "swin"]
    assert swin and {r.pattern.shift != (0, 0) for r in swin} == {True, False}
    for r in swin:
        assert isinstance(r.pattern, Block) and r.pattern == model.get_submodule(r.name).pattern(*r.size)
        P = r.pattern.size
        assert tuple(r.weights.shape[2:]) == (*r.size, P[0] * P[1])  # [B, heads, H, W, P*P]


def test_attention_explorer_shows_the_trained_swins_layers_with_their_geometry():
    from vizattn.widgets import AttentionExplorer
    ex = AttentionExplorer(model="swin")
    labels = [label for label, _ in ex.layer_menu.options]
    assert "stages.0.1.attn: Block(4, shift=2) on 16x16" in labels
    assert "stages.2.2.attn: Block(4) on 4x4" in labels  # a map no larger than the window: no shift (Swin's rule)
    ex.layer_menu.value = "stages.0.1.attn"
    assert "swin attention, Block(4, shift=2) on a 16x16 map" in ex.message.value
