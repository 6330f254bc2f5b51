"""AttentionExplorer on the published models (``checkpoint=name``), headless and offline.

Random weights for every name: the explorer builds, every slider, the layer menu and the colour
scale move without running the model again, and what it draws is the probe's record of the same
model (an independent run), with each layer's geometry (56x56 ... 7x7 maps, a DeiT's 14x14 patch
grid with the class token's share beside it, adding up to 1). The "imagenet" branch: a checkpoint
file in the reference's own format (seeded random weights) in a temporary cache folder
(``VIZATTN_CHECKPOINTS``) is loaded, and the banner shows its top-5 labels.
"""

from __future__ import annotations

import html
import re

import numpy as np
import pytest

pytest.importorskip("plotly")
pytest.importorskip("ipywidgets")

import torch  # noqa: E402
from reference import randomise  # noqa: E402

from vizattn import checkpoints, plots, probe  # noqa: E402
from vizattn.checkpoints.vit import patch_query  # noqa: E402
from vizattn.data import imagenet_photo, imagenet_top, photo  # noqa: E402
from vizattn.widgets import AttentionExplorer  # noqa: E402
from vizattn.widgets.published import _published, published  # noqa: E402

from conftest import pixels  # noqa: E402

HIERARCHICAL = {(56, 56), (28, 28), (14, 14), (7, 7)}
NAMES = ("deit_tiny_patch16_224", "deit_small_patch16_224", "nat_mini", "dinat_mini", "crossformer_tiny",
         "maxvit_tiny_tf_224", "swin_tiny_patch4_window7_224")  # the smallest of each family; larger ones look alike
SIZES = {name: {(14, 14)} if name.startswith("deit") else HIERARCHICAL for name in NAMES}
PHOTO = "chelsea"


def as_float(z):
    return np.asarray(z, dtype=float)  # None (a gap) -> NaN


def independent_records(model):
    with torch.no_grad(), probe(model) as rec:
        model(imagenet_photo(PHOTO))
    return {r.name: r for r in rec}


def drawn_share(ex) -> float:
    """The class token's share as the caption states it (a percentage)."""
    found = re.search(r"Class token: this query gives it ([0-9.]+)%", ex.message.value)
    assert found, ex.message.value
    return float(found.group(1)) / 100


@pytest.mark.parametrize("name", NAMES)
def test_every_checkpoint_in_the_explorer_with_random_weights(name):
    ex = AttentionExplorer(checkpoint=name, weights="random", photo=PHOTO)
    model = published(name, "random")[0]
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        assert ex.real is False and ex.top5 is None and "RANDOM WEIGHTS" in ex.banner.value
        assert ex.forwards == 1 and ex.figure.layout.title.text.startswith(checkpoints.CHECKPOINTS[name].label + ": ")
        theirs = independent_records(model)
        calls.clear()
        vit = name.startswith("deit")
        assert {r.size for r in ex.records.values()} == SIZES[name]
        # the layer menu lists every attention layer with its map
        labels = [label for label, _ in ex.layer_menu.options]
        assert [value for _, value in ex.layer_menu.options] == list(theirs) == list(ex.records)
        assert {re.search(r"on (\d+x\d+)$", label).group(1) for label in labels} == {
            f"{h}x{w}" for h, w in SIZES[name]}
        for layer in list(ex.records)[:: 1 if vit else 3] + [list(ex.records)[-1]]:
            ex.layer_menu.value = layer
            record = ex.record
            H, W = record.size
            assert ex.figure.data[1].dx == 224 / W and pixels(ex.figure.data[0]).shape == (224, 224, 3)
            assert (ex.sliders["query_i"].max, ex.sliders["query_j"].max, ex.sliders["head"].max) == (
                H - 1, W - 1, len(record.heads) - 1)
            for head, (i, j) in [(0, (0, 0)), (len(record.heads) - 1, (H - 1, W // 2)), (1, (H // 2, W - 1))]:
                ex.sliders["head"].value = head
                ex.sliders["query_i"].value = i
                ex.sliders["query_j"].value = j
                z = as_float(ex.figure.data[1].z)
                if vit:  # the patch grid, and the class token's share apart from it
                    share, want = patch_query(theirs[layer], model.grid, i, j, head=head)
                    assert record.pattern.keys(H, W).shape == (196, 196)
                    assert abs(drawn_share(ex) - share) < 1e-3
                    assert abs(share + float(np.nansum(z)) - 1) < 1e-5
                else:
                    want = theirs[layer].query_map(i, j, head=head)
                    keys = record.pattern.keys(H, W)[i * W + j]
                    assert {tuple(c) for c in np.argwhere(np.isfinite(z)).tolist()} == {
                        (int(t) // W, int(t) % W) for t in keys if t >= 0}
                    assert abs(float(np.nansum(z)) - 1) < 1e-5
                np.testing.assert_allclose(z, want.numpy(), rtol=1e-5, atol=1e-7, err_msg=f"{layer} {head} {(i, j)}")
                cell = 224 / H
                assert (ex.figure.data[2].x[0], ex.figure.data[2].y[0]) == ((j + 0.5) * cell - 0.5,
                                                                            (i + 0.5) * cell - 0.5)
        ex.scale_buttons.value = "shared"
        ex.scale_buttons.value = "local"
        ex.set_query(0, 0)
        assert calls == [] and ex.forwards == 1  # no move ran the model
        assert "RANDOM WEIGHTS" in ex.banner.value
    finally:
        handle.remove()


def test_random_weights_are_seeded_and_leave_the_callers_rng_alone():
    name = "deit_tiny_patch16_224"
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    model = _published.__wrapped__(name, None)  # built afresh, not from the cache
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(0)
    fresh = checkpoints.build(name)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


def reference_file(name, folder):
    """A checkpoint in the reference's own format with seeded random weights, at the cache's file name."""
    if name.startswith("deit"):  # timm's layout is the model's own
        torch.manual_seed(3)
        reference = randomise(checkpoints.build(name), seed=3, std=0.05)
    else:
        from reference import nat

        reference = randomise(getattr(nat, name)(), seed=3, std=0.05)
    path = folder / checkpoints.CHECKPOINTS[name].file
    torch.save({"model": reference.state_dict()}, path)  # as the official training scripts save it
    return reference, path


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "nat_mini"])
def test_a_cached_checkpoint_file_is_loaded_and_the_banner_shows_its_top5(name, tmp_path, monkeypatch):
    monkeypatch.setenv("VIZATTN_CHECKPOINTS", str(tmp_path))
    reference, path = reference_file(name, tmp_path)
    ex = AttentionExplorer(checkpoint=name, photo=PHOTO)  # weights="imagenet": the file in the cache
    model, real = published(name)
    assert real is True and ex.real is True and ex.model is model
    with torch.no_grad():
        logits = reference(imagenet_photo(PHOTO))
    torch.testing.assert_close(model(imagenet_photo(PHOTO)), logits, rtol=1e-4, atol=1e-4)
    top5 = imagenet_top(logits)[0]
    assert [n for n, _ in ex.top5] == [n for n, _ in top5]
    assert "RANDOM WEIGHTS" not in ex.banner.value and "Top-5" in ex.banner.value
    shown = ex.banner.value
    positions = [shown.index(html.escape(n)) for n, _ in top5]
    assert positions == sorted(positions)  # the five labels, most probable first
    ex.sliders["query_j"].value = 1
    assert ex.forwards == 1 and "Top-5" in ex.banner.value
    ex.menus["photo"].value = "coffee"  # another photo: one more run, its own top-5
    with torch.no_grad():
        coffee = imagenet_top(reference(imagenet_photo("coffee")))[0]
    assert ex.forwards == 2 and [n for n, _ in ex.top5] == [n for n, _ in coffee]
    assert html.escape(coffee[0][0]) in ex.banner.value
    # weights="random" ignores the file
    other = AttentionExplorer(checkpoint=name, weights="random", photo=PHOTO)
    assert other.real is False and "RANDOM WEIGHTS" in other.banner.value and other.model is not model
    assert str(path) not in other.banner.value


def test_bad_checkpoint_choices_are_explained():
    for kwargs, match in [(dict(checkpoint="resnet50"), "checkpoint must be one of"),
                          (dict(checkpoint="nat_mini", weights="trained"), "weights must be one of"),
                          (dict(checkpoint="deit_tiny_patch16_224", weights="random", layer="blocks.12.attn"),
                           "layer must be one of"),
                          (dict(checkpoint="deit_tiny_patch16_224", weights="random", query=(14, 0)),
                           "query must lie on the 14x14 map")]:
        with pytest.raises(ValueError, match=match):
            AttentionExplorer(**kwargs)


def test_a_layer_switch_keeps_the_photo_and_a_photo_switch_resends_it():
    ex = AttentionExplorer(checkpoint="deit_tiny_patch16_224", weights="random", photo=PHOTO)
    sent = []

    def record(restyle_data, relayout_data, trace_indexes=None, source_view_id=None, _send=ex.figure._send_update_msg):
        sent.append(trace_indexes)
        return _send(restyle_data, relayout_data, trace_indexes, source_view_id)

    ex.figure._send_update_msg = record
    ex.layer_menu.value = "blocks.3.attn"
    touched = {t for indexes in sent if indexes is not None for t in indexes}
    assert touched == {1, 2}  # the weights and the query marker; the photo stays
    sent.clear()
    ex.menus["photo"].value = "coffee"
    assert 0 in {t for indexes in sent if indexes is not None for t in indexes}
    np.testing.assert_array_equal(pixels(ex.figure.data[0]), plots.grey(photo("coffee", size=224)))
