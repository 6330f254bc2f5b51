"""checkpoints.from_timm: timm models of the supported families, converted, equal timm's outputs; others refused.

Every model is created with ``pretrained=False`` (nothing downloads) and filled by
``reference.randomise`` (every weight random, LayerScale near 1), then converted; the test feeds
both models its own images (not the conversion's self-check input) and compares the outputs.
Where the full model is too slow for 2 CPU cores, a test reduces depth or resolution through
timm's own keyword arguments and says so; the names of issue 27 are each converted once.
"""

from __future__ import annotations

import pytest
import torch
from reference import randomise
from test_checkpoints import timm

import vizattn
from vizattn.checkpoints import from_timm
from vizattn.layers import attention_layers

TOLERANCE = dict(rtol=1e-4, atol=1e-4)


def timm_model(name, **kwargs):
    torch.manual_seed(0)
    return randomise(timm().create_model(name, pretrained=False, **kwargs), std=0.05)


def images(size, batch=2, seed=1):
    h, w = (size, size) if isinstance(size, int) else size
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def assert_converts(name, size, calls, batch=2, **kwargs):
    """Convert timm's ``name`` (``kwargs`` to create_model), compare outputs on ``batch`` images; the model
    has ``calls`` vizattn attention layers. Returns (timm model, converted model)."""
    theirs = timm_model(name, **kwargs)
    ours = from_timm(theirs)
    assert not ours.training and all(type(m).__module__.startswith(("vizattn", "torch")) for m in ours.modules())
    x = images(size, batch)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), **TOLERANCE)
    assert len(attention_layers(ours)) == calls
    return theirs, ours


CASES = {  # name: (image size, attention calls, timm kwargs: reductions for 2 CPU cores, said here)
    "vit_small_patch16_224": (224, 12, {}),
    "deit_tiny_distilled_patch16_224": (224, 12, {}),
    "vit_small_patch14_reg4_dinov2": (224, 12, dict(img_size=224)),  # built for 518 x 518; 224 keeps it quick
    "swin_small_patch4_window7_224": (224, 24, {}),
    "swin_base_patch4_window12_384": (384, 8, dict(depths=(2, 2, 2, 2))),  # 2 of the 18 stage-3 blocks
    "maxvit_small_tf_224": (224, 22, {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_from_timm_equals_timm(name):
    size, calls, kwargs = CASES[name]
    assert_converts(name, size, calls, batch=1 if "384" in name else 2, **kwargs)


@pytest.mark.slow
def test_full_swin_base_384_converts():
    """The full Swin-B at 384 x 384, window 12 (the self-check compares it with timm)."""
    ours = from_timm(timm_model("swin_base_patch4_window12_384"))
    assert [len(s.blocks) for s in ours.layers] == [2, 2, 18, 2]
    assert {b.attn.window for s in ours.layers for b in s.blocks} == {(12, 12)}


def test_the_token_prefix_and_grid_of_vits():
    """The prefix the views split off: class (+ distillation) (+ registers), and the patch grid."""
    for name, kwargs, prefix, grid in (("deit_tiny_distilled_patch16_224", dict(depth=1), 2, (14, 14)),
                                       ("vit_small_patch14_reg4_dinov2", dict(depth=1, img_size=224), 5, (16, 16)),
                                       ("vit_small_patch16_224", dict(depth=1, img_size=(160, 96)), 1, (10, 6))):
        ours = from_timm(timm_model(name, **kwargs))
        assert (ours.prefix_tokens, ours.grid) == (prefix, grid)
        h, w = grid[0] * ours.patch_embed.proj.stride[0], grid[1] * ours.patch_embed.proj.stride[1]
        with torch.no_grad(), vizattn.probe(ours) as rec:
            ours(images((h, w), 1))
        assert rec[0].size == (1, prefix + grid[0] * grid[1])


def test_feature_models_without_a_head():
    """``num_classes=0``: the pooled features, for each family (depth reduced: the head is what is tested)."""
    for name, size, kwargs, width in (
            ("vit_small_patch14_reg4_dinov2", 224, dict(depth=2, img_size=224), 384),
            ("vit_small_patch16_224", 224, dict(depth=2, global_pool="avg"), 384),  # fc_norm after the mean
            ("swin_tiny_patch4_window7_224", 224, dict(depths=(2, 2, 2, 2)), 768),
            ("maxvit_tiny_tf_224", 224, dict(depths=(1, 1, 1, 1)), 512)):
        theirs = timm_model(name, num_classes=0, **kwargs)
        ours = from_timm(theirs)
        x = images(size, 1)
        with torch.no_grad():
            got, expected = ours(x), theirs(x)
        assert got.shape == (1, width)
        torch.testing.assert_close(got, expected, **TOLERANCE)


def test_dynamic_image_size_resamples_position_embeddings_as_timm():
    """DINOv2 with registers, built for 518 x 518 with ``dynamic_img_size``, fed a 266 x 182 image (19 x 13
    patches of 14; depth 2 keeps it quick)."""
    theirs = timm_model("vit_small_patch14_reg4_dinov2", depth=2, dynamic_img_size=True)
    ours = from_timm(theirs)
    x = images((266, 182), 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), **TOLERANCE)


def test_other_resolutions_and_windows():
    """Swin at 256 x 256 with window 8, whose last stage (8 x 8) is one window; a MaxViT-T at 256 (P = G = 8)."""
    assert_converts("swin_tiny_patch4_window7_224", 256, 12, batch=1, img_size=256, window_size=8)
    assert_converts("maxvit_tiny_tf_224", 256, 8, batch=1, img_size=256, depths=(1, 1, 1, 1))


def test_unsupported_models_are_refused_by_name():
    families = "supported timm families: VisionTransformer"
    for name, kwargs, part in (("resnet18", {}, "the model is a ResNet"),
                               ("convnext_atto", {}, "the model is a ConvNeXt"),
                               ("vit_small_patch16_224", dict(depth=1, qk_norm=True), "blocks.0.attn.q_norm is a "),
                               ("vit_small_patch16_224", dict(depth=1, global_pool="map"), "AttentionPoolLatent"),
                               ("maxvit_rmlp_nano_rw_256", dict(depths=(1, 1, 1, 1)), "is a ")):
        with pytest.raises(ValueError, match=f"{part}.*which vizattn has no layer for; {families}"):
            from_timm(timm().create_model(name, pretrained=False, **kwargs))


def test_a_conversion_that_differs_names_the_largest_difference():
    """A timm model whose final LayerNorm has another eps than its blocks (from_timm reads the blocks')."""
    theirs = timm_model("vit_small_patch16_224", depth=1)
    theirs.norm.eps = 0.5
    with pytest.raises(ValueError, match=r"differs from the timm model beyond float32 tolerance .*largest difference "
                                         r"[0-9.e-]+ at output \(0, \d+\)"):
        from_timm(theirs)
    assert not theirs.training  # its mode is restored (randomise left it in eval mode)
