"""vizattn.widgets.receptive_field and the receptive-field figures (vizattn.plots.receptive), headless: the
drawn fields are ``vizattn.receptive``'s."""


import numpy as np
import pytest

pytest.importorskip("plotly")
pytest.importorskip("ipywidgets")

import traitlets  # noqa: E402

from vizattn import plots  # noqa: E402
from vizattn.patterns import Block, Neighborhood  # noqa: E402
from vizattn.receptive import theoretical  # noqa: E402

from conftest import as_float  # noqa: E402


def test_receptive_figure_grows_frame_by_frame():
    field = theoretical([Neighborhood(3), Block(4), Neighborhood(3)], size=12, position=(6, 6))
    fig = plots.receptive_figure(field)
    sizes = [int(np.nansum(np.asarray(f.data[0].z, dtype=float))) for f in fig.frames]
    assert len(sizes) == 3 and sizes[0] == 9 and sizes == sorted(sizes)
    assert sizes[-1] == int(field.input.sum())


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
