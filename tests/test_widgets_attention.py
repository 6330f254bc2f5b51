"""vizattn.widgets.attention and the attention figures (vizattn.plots.attention), headless: what the explorer
draws is what ``vizattn.probe`` captures from a fresh model, and only a new model, task or photo runs it."""


import numpy as np
import pytest

pytest.importorskip("plotly")
pytest.importorskip("ipywidgets")

import plotly.graph_objects as go  # noqa: E402
import traitlets  # noqa: E402
from plotly.callbacks import Points  # noqa: E402

from vizattn import plots  # noqa: E402
from vizattn.widgets import PartitionExplorer  # noqa: E402

from conftest import as_float, count_forwards, pixels  # noqa: E402


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
