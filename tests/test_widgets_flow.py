"""The FlowExplorer (vizattn.widgets.flow) and its figures (vizattn.plots.flow), headless: drive the state,
read the figure data, compare it with ``vizattn.flow`` / ``vizattn.receptive`` called directly here."""

import numpy as np
import pytest

pytest.importorskip("plotly")
pytest.importorskip("ipywidgets")

import torch  # noqa: E402
from plotly.callbacks import Points  # noqa: E402

from vizattn import flow, receptive  # noqa: E402
from vizattn.data import Shapes  # noqa: E402
from vizattn.plots.flow import fields_figure, flow_figure, pooled  # noqa: E402
from vizattn.widgets.base import pretrained  # noqa: E402
from vizattn.widgets.flow import FlowExplorer, FlowState  # noqa: E402


def block_sums(m, bh, bw):
    """Sum over bh x bw blocks, by loops (the reference for ``pooled``)."""
    H, W = m.shape
    return np.array([[m[r * bh:(r + 1) * bh, c * bw:(c + 1) * bw].sum() for c in range(W // bw)]
                     for r in range(H // bh)])


def z(trace):
    return np.asarray(trace.z, dtype=float)


@pytest.mark.parametrize("H, W, bh, bw", [(224, 224, 4, 4), (15, 21, 1, 1), (130, 64, 5, 1), (64, 128, 1, 2)])
def test_pooled_sums_the_smallest_blocks_that_leave_at_most_64_a_side(H, W, bh, bw):
    m = np.random.default_rng(0).random((H, W))
    z_, x, y = pooled(m)
    np.testing.assert_allclose(z_, block_sums(m, bh, bw))
    np.testing.assert_allclose(x, np.arange(W // bw) * bw + (bw - 1) / 2)
    np.testing.assert_allclose(y, np.arange(H // bh) * bh + (bh - 1) / 2)


def test_flow_figure_draws_the_map_over_the_photo():
    m = np.zeros((64, 64))
    m[10, 20] = 1
    fig = flow_figure(torch.rand(3, 64, 64), m, title="t", pixel=(5, 6))
    shown = z(fig.data[1])
    assert shown.shape == (64, 64) and shown[10, 20] == 1 and shown.sum() == 1
    assert fig.data[2].x == (6,) and fig.data[2].y == (5,)


@pytest.fixture(scope="module")
def nat():
    return FlowExplorer("nat", photo="shapes 0")


def reference_input(task="shape", item=0):
    return Shapes(task, "test", length=3)[item][0][None]


def test_the_map_at_every_depth_is_the_flows(nat):
    ex = nat
    model = pretrained("nat", "shape")
    want = flow.rollout(model, reference_input())  # the same defaults: mean of heads, residual 0.5
    before = ex.forwards
    for d in range(1, len(want.names) + 1):
        ex.state.depth = d
        expect = (want.pixels if d == len(want.names) else want.depth(d))[0].numpy()
        np.testing.assert_allclose(z(ex.figure.data[1]), expect, atol=1e-7)
        h, w = want.grids[d - 1]
        assert ex.figure.layout.title.text == f"nat: rollout, layers 1-{d} ({want.kinds[d - 1]}, {h}x{w})"
    assert ex.forwards == before  # a depth move runs no model


def test_a_click_shows_the_tokens_column_and_its_two_receptive_fields(nat):
    ex = nat
    ex.state.depth = 3
    ex._clicked(ex.figure.data[1], Points(point_inds=[[9, 50]], xs=[50.0], ys=[9.0], trace_name="map", trace_index=1))
    assert (ex.state.pixel_i, ex.state.pixel_j) == (9, 50)
    model, x = pretrained("nat", "shape"), reference_input()
    f = flow.rollout(model, x)
    h, w = f.grids[2]
    i, j = 9 * h // 64, 50 * w // 64
    np.testing.assert_allclose(z(ex.fields.data[0]), f.column(2, i, j)[0].numpy(), atol=1e-7)
    theoretical = receptive.theoretical(model, size=64, position=(i, j), layer=f.names[2]).input.numpy()
    assert np.array_equal(np.isfinite(z(ex.fields.data[1])), theoretical)
    erf = receptive.effective(model, x, (i, j), layer=f.names[2]).map.numpy()
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(z(ex.fields.data[2]), np.where(erf > 0, np.log10(erf), np.nan), atol=1e-5)
    assert all(t.x == (50,) and t.y == (9,) for t in ex.fields.data[3:])
    assert f"token ({i}, {j})" in ex.fields.layout.annotations[0].text
    assert not (np.isfinite(z(ex.fields.data[1])) < (z(ex.fields.data[0]) > 0)).any()  # the column inside the field
    ex.state.effective = False
    assert ex.fields.data[2].visible is False and ex.fields.layout.annotations[2].text == "effective field: off"
    ex.state.effective = True


def test_relevance_explains_the_chosen_class_and_disables_rollouts_options(nat):
    ex = nat
    ex.state.depth = 6
    assert ex.target_menu.disabled and not ex.fusion_buttons.disabled
    ex.state.method = "relevance"
    assert not ex.target_menu.disabled and ex.fusion_buttons.disabled and ex.residual_slider.disabled
    assert [v for _, v in ex.target_menu.options] == [0, 1, 2, 3]
    predicted = int(flow.relevance(pretrained("nat", "shape"), reference_input()).target[0])
    assert [label.endswith("(predicted)") for label, _ in ex.target_menu.options] == [k == predicted for k in range(4)]
    assert ex.target_menu.value == predicted and ex.state.target == -1
    ex.target_menu.value = 1  # "square"
    want = flow.relevance(pretrained("nat", "shape"), reference_input(), target=1)
    np.testing.assert_allclose(z(ex.figure.data[1]), want.pixels[0].numpy(), atol=1e-7)
    assert "relevance of square" in ex.figure.layout.title.text
    ex.state.method, ex.state.fusion, ex.state.residual = "rollout", "max", 0.2
    want = flow.rollout(pretrained("nat", "shape"), reference_input(), fusion="max", residual=0.2)
    np.testing.assert_allclose(z(ex.figure.data[1]), want.pixels[0].numpy(), atol=1e-7)
    runs = ex.forwards
    ex.state.residual = 0.5  # (max, 0.5) and (mean, 0.5) were seen on the way: cached
    ex.state.fusion = "mean"
    assert ex.forwards == runs


def test_another_model_shows_its_whole_map_and_keeps_the_pixel(nat):
    ex = nat
    ex.set_pixel(40, 20)
    ex.state.model = "maxvit"
    f = flow.rollout(pretrained("maxvit", "shape"), reference_input())
    assert ex.state.depth == len(f.names) == ex.depth_slider.max
    np.testing.assert_allclose(z(ex.figure.data[1]), f.pixels[0].numpy(), atol=1e-7)
    assert (ex.state.pixel_i, ex.state.pixel_j) == (40, 20)
    ex.state.task = "same"
    assert [label.split()[0] for label, _ in ex.target_menu.options] == ["different", "same"]
    ex.state.model, ex.state.task = "nat", "shape"


def test_a_checkpoint_with_random_weights_says_so_and_offers_its_top5():
    ex = FlowExplorer("deit_tiny_patch16_224", photo="chelsea", weights="random", effective=False,
                      models=("nat", "deit_tiny_patch16_224"))
    assert "RANDOM WEIGHTS" in ex.banner.value and ex.menus["task"].disabled
    assert len(ex.target_menu.options) == 5 and ex.target_menu.options[0][0].endswith("(predicted)")
    assert ex.figure.layout.title.text == "DeiT-Ti: rollout, layers 1-12 (global, 14x14)"
    assert z(ex.figure.data[1]).shape == (56, 56) and np.isclose(z(ex.figure.data[1]).sum(), 1)
    assert ex.flow.grids[0] == (14, 14) and ex.state.depth == 12
    ex.set_pixel(0, 223)  # the class token is not on the grid: the patch under the pixel, (0, 13)
    assert "token (0, 13)" in ex.fields.layout.annotations[0].text
    top5 = [v for _, v in ex.target_menu.options]
    other = next(k for k in range(1000) if k not in top5)
    ex.state.method, ex.state.target = "relevance", other  # a class outside the top 5, set through the state
    assert ex.target_menu.value == other and len(ex.target_menu.options) == 6
    assert ex.figure.layout.title.text.startswith("DeiT-Ti: relevance of")


def test_the_state_is_typed_and_bad_arguments_state_the_rule():
    with pytest.raises(ValueError, match="residual must lie in"):
        FlowState(residual=1.0)
    with pytest.raises(Exception, match="method"):
        FlowState(method="gradcam")
    with pytest.raises(ValueError, match="depth must be an int in \\[1, 4\\] for vit; got depth=9"):
        FlowExplorer("vit", depth=9, effective=False)
    with pytest.raises(ValueError, match="pixel must be"):
        FlowExplorer("vit", pixel=(64, 0), effective=False)
    with pytest.raises(ValueError, match="model must be one of"):
        FlowExplorer("swin", models=("nat",))


def test_an_error_is_explained_on_both_panels(monkeypatch):
    ex = FlowExplorer("vit", photo="shapes 1", effective=False)

    def refuse(*args, **kwargs):
        raise ValueError("the flow needs them to agree")

    monkeypatch.setattr(flow, "relevance", refuse)
    ex.state.method = "relevance"
    assert ex.figure.layout.title.text == ex.fields.layout.title.text == "nothing to draw"
    assert "agree" in ex.message.value
    monkeypatch.undo()
    ex.state.method = "rollout"
    assert ex.figure.layout.title.text.startswith("vit: rollout") and ex.figure.data[1].visible


def test_fields_figure_squares_sit_on_the_effective_panel():
    col = np.zeros((8, 8))
    col[2, 3] = 1
    erf = receptive.EffectiveField(torch.tensor(col), {0.5: 1, 0.99: 3}, "attn", (2, 3), (2, 3))
    fig = fields_figure(col, col > 0, erf, pixel=(2, 3))
    assert [s.xref for s in fig.layout.shapes] == ["x3", "x3"] and "99% within 3x3" in fig.layout.annotations[3].text


def test_another_task_resets_the_class_and_a_failed_effective_field_is_said_in_the_caption(monkeypatch):
    ex = FlowExplorer("vit", photo="shapes 2", method="relevance", target=3)
    assert "relevance of cross" in ex.figure.layout.title.text
    ex.state.task = "same"  # two classes: class 3 does not exist there, the predicted one is explained
    assert ex.state.target == -1 and ex.figure.layout.title.text.startswith("vit: relevance of")

    def no_gradient(*args, **kwargs):
        raise ValueError("the gradient is zero everywhere: no effective field")

    monkeypatch.setattr(receptive, "effective", no_gradient)
    ex.set_pixel(3, 3)
    assert "No effective field: the gradient is zero" in ex.message.value and ex.fields.data[2].visible is False
    assert ex.figure.data[1].visible is not False and ex.figure.layout.title.text != "nothing to draw"
