"""vizattn.widgets.lavit and LaViT's figures (vizattn.plots.lavit), headless: the reuse chain, what a vanilla
layer would compute, diagonality and saturation are vizattn.metrics' numbers."""


import numpy as np
import pytest

pytest.importorskip("plotly")
pytest.importorskip("ipywidgets")

import plotly.graph_objects as go  # noqa: E402

from brute import vanilla_attention  # noqa: E402
from conftest import as_float, count_forwards  # noqa: E402


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
