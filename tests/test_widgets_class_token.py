"""The AttentionExplorer's class-token query on a ViT checkpoint (random weights, offline): the drawn map is
the class token's row over the patches, read here from the raw 1 x 197 record with ``patch_query``."""

import numpy as np
import pytest

pytest.importorskip("plotly")
pytest.importorskip("ipywidgets")

import torch  # noqa: E402
from plotly.callbacks import Points  # noqa: E402

from vizattn.checkpoints.vit import patch_query  # noqa: E402
from vizattn.data import imagenet_photo  # noqa: E402
from vizattn.probe import probe  # noqa: E402
from vizattn.widgets import AttentionExplorer  # noqa: E402


@pytest.fixture(scope="module")
def deit():
    return AttentionExplorer(checkpoint="deit_tiny_patch16_224", photo="chelsea", layer="blocks.5.attn",
                             weights="random")


def test_the_class_token_is_a_query_beside_the_patches(deit):
    ex = deit
    assert ex.token_buttons.layout.display is None and ex.state.token == "patch"
    with torch.no_grad(), probe(ex.model) as rec:
        ex.model(imagenet_photo("chelsea"))
    raw = {r.name: r for r in rec}
    for layer, head in [("blocks.5.attn", 0), ("blocks.5.attn", 2), ("blocks.11.attn", 1)]:
        ex.state.layer, ex.state.head, ex.state.token = layer, head, "class token"
        share, picture = patch_query(raw[layer], (14, 14), -1, 0, head=head)
        np.testing.assert_allclose(np.asarray(ex.figure.data[1].z, dtype=float), picture.numpy(), atol=1e-6)
        assert "class token's map" in ex.figure.layout.title.text and f"head {head}" in ex.figure.layout.title.text
        assert f"gives itself {share:.1%}" in ex.message.value
        assert ex.figure.data[2].visible is False and ex.sliders["query_i"].disabled
    ex._clicked_photo(ex.figure.data[0], Points(point_inds=[[40, 80]], xs=[80], ys=[40], trace_name="photo",
                                                trace_index=0))
    assert ex.state.token == "patch" and (ex.state.query_i, ex.state.query_j) == (2, 5)
    assert ex.figure.data[2].visible and not ex.sliders["query_i"].disabled
    assert "query (2, 5)" in ex.figure.layout.title.text


def test_a_model_without_a_class_token_hides_the_choice_and_refuses_it():
    ex = AttentionExplorer("vit", photo="coffee")
    assert ex.token_buttons.layout.display == "none"
    with pytest.raises(ValueError, match="needs a model with a class token"):
        AttentionExplorer("vit", token="class token")
