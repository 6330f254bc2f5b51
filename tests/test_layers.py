"""vizattn.layers, every layer from one table: shapes, gradients, fused == explicit, the probabilities hook
and the ValueErrors of bad configurations (against computations written by hand: test_layers_by_hand.py)."""


import pytest
import torch

from vizattn import layers
from vizattn.bias import DynamicPositionBias, RelativeEmbedding, RelativePositionBias
from vizattn.layers import (
    AttentionProbs,
    AttentionResidual,
    AttentionStem,
    BlockAttention,
    CrossScaleEmbedding,
    GlobalAttention,
    GridAttention,
    LayerScale,
    LessAttention,
    LongShortDistanceAttention,
    MaxViTBlock,
    MBConv,
    Mlp,
    NeighborhoodAttention,
    PatchMerging,
    PatternAttention,
    ShiftedWindowAttention,
    StandAloneAttention,
    SwinBlock,
    TransformerBlock,
    VanillaAttention,
    attention_layers,
    explicit,
)
from vizattn.patterns import Block, Global, Grid, LocalWindow, LongDistance, Neighborhood

from conftest import build, randn, randomise


# ---------------------------------------------------------------------------------------------
# every attention layer: (factory, input shape, call, expected [(pattern, (H, W))] seen by the hook)
# ---------------------------------------------------------------------------------------------
def plain(layer, x):
    return layer(x)


def with_scores(seed):
    """Call a LaViT layer with previous/residual scores; return only its output."""
    def call(layer, x):
        B, H, W, _ = x.shape
        return layer(x, randn(B, layer.heads, H * W, H * W, seed=seed))[0]
    return call


def lavit_va(layer, x):
    return layer(x)[0]


def random_la():
    return randomise(LessAttention(8, 2, tokens=12), std=0.3)


def grid_or_rows(H, W):
    """A pattern rule of the map size: a 2 x 2 grid on tall maps, else each row alone."""
    return Grid(2) if H > 4 else Block((1, W))


LAYERS = {
    "vit": (lambda: GlobalAttention(8, 2), (2, 3, 4, 8), plain, [(Global(), (3, 4))]),
    "shell-rule": (lambda: randomise(PatternAttention(8, 2, grid_or_rows, bias=DynamicPositionBias(2, hidden=4)),
                                     std=0.3),
                   (1, 6, 4, 8), plain, [(Grid(2), (6, 4))]),
    "shell-rows": (lambda: PatternAttention(8, 2, grid_or_rows), (2, 3, 5, 8), plain, [(Block((1, 5)), (3, 5))]),
    "nat": (lambda: NeighborhoodAttention(8, 2, 3), (2, 5, 6, 8), plain, [(Neighborhood(3), (5, 6))]),
    "dinat": (lambda: NeighborhoodAttention(8, 2, (3, 2), dilation=(2, 3)), (1, 7, 8, 8), plain,
              [(Neighborhood((3, 2), (2, 3)), (7, 8))]),
    "sasa": (lambda: StandAloneAttention(8, 2, 3), (2, 5, 6, 8), plain, [(LocalWindow(3), (5, 6))]),
    "sasa-mask": (lambda: StandAloneAttention(8, 2, 5, padding="mask", scale=0.3), (1, 4, 6, 8), plain,
                  [(LocalWindow(5, "mask"), (4, 6))]),
    "stem": (lambda: randomise(AttentionStem(3, 8, 2, 3)), (2, 5, 6, 3), plain, [(LocalWindow(3), (5, 6))]),
    "stem-mask": (lambda: randomise(AttentionStem(3, 8, 2, 5, mixtures=3, padding="mask")), (1, 4, 5, 3), plain,
                  [(LocalWindow(5, "mask"), (4, 5))]),
    "block": (lambda: BlockAttention(8, 2, 2), (2, 4, 6, 8), plain, [(Block(2), (4, 6))]),
    "block-pad": (lambda: BlockAttention(8, 2, 3, pad=True), (1, 5, 7, 8), plain, [(Block(3, pad=True), (5, 7))]),
    "grid": (lambda: GridAttention(8, 2, (2, 3)), (2, 4, 6, 8), plain, [(Grid((2, 3)), (4, 6))]),
    "grid-pad": (lambda: GridAttention(8, 2, 2, pad=True), (1, 5, 7, 8), plain, [(Grid(2, pad=True), (5, 7))]),
    "maxvit": (lambda: MaxViTBlock(4, 8, 2, 2, stride=2), (2, 8, 7, 4), plain,
               [(Block(2), (4, 4)), (Grid(2), (4, 4))]),
    "sda": (lambda: LongShortDistanceAttention(8, 2, "sda", group=2), (2, 4, 6, 8), plain, [(Block(2), (4, 6))]),
    "lda": (lambda: LongShortDistanceAttention(8, 2, "lda", group=2, interval=2), (2, 4, 6, 8), plain,
            [(LongDistance(2), (4, 6))]),
    "lda-pad": (lambda: LongShortDistanceAttention(8, 2, "lda", group=2, interval=3, pad=True), (1, 5, 7, 8), plain,
                [(LongDistance(3, pad=True), (5, 7))]),
    "lsda-global": (lambda: LongShortDistanceAttention(8, 2, "lda", group=7), (1, 5, 6, 8), plain,
                    [(Global(), (5, 6))]),
    "swin-w": (lambda: ShiftedWindowAttention(8, 2, 2), (2, 4, 6, 8), plain, [(Block(2), (4, 6))]),
    "swin-sw": (lambda: ShiftedWindowAttention(8, 2, 3, shift=1), (2, 6, 9, 8), plain, [(Block(3, shift=1), (6, 9))]),
    "swin-sw-pad": (lambda: ShiftedWindowAttention(8, 2, (3, 2), shift=(2, 1), pad=True), (1, 5, 7, 8), plain,
                    [(Block((3, 2), shift=(2, 1), pad=True), (5, 7))]),
    "swin-small-map": (lambda: ShiftedWindowAttention(8, 2, 4, shift=2), (1, 3, 8, 8), plain,
                       [(Block((3, 4), shift=(0, 2)), (3, 8))]),
    "swin-block": (lambda: SwinBlock(8, 2, 2, shift=1, mlp_ratio=2.0), (2, 4, 6, 8), plain,
                   [(Block(2, shift=1), (4, 6))]),
    "transformer-block": (lambda: TransformerBlock(8, NeighborhoodAttention(8, 2, 3), mlp_ratio=2.0, eps=1e-6),
                          (2, 5, 7, 8), plain, [(Neighborhood(3), (5, 7))]),
    "va": (lambda: VanillaAttention(8, 2), (2, 3, 4, 8), lavit_va, [(Global(), (3, 4))]),
    "va-residual": (lambda: VanillaAttention(8, 2), (2, 3, 4, 8), with_scores(5), [(Global(), (3, 4))]),
    "la": (random_la, (2, 3, 4, 8), with_scores(6), [(Global(), (3, 4))]),
}


def case(name, seed=0):
    factory, shape, call, expected = LAYERS[name]
    return build(factory, seed), randn(*shape, seed=seed + 10), call, expected


# the other modules of vizattn.layers: (factory, call(module) -> output, output shape)
MODULES = {
    "probs": (AttentionProbs, lambda m: m(randn(1, 2, 4, 4, 4).softmax(-1), Block(2)), (1, 2, 4, 4, 4)),
    "mlp": (lambda: Mlp(8, ratio=2.0, dim_out=6), lambda m: m(randn(2, 3, 4, 8)), (2, 3, 4, 6)),
    "layer-scale": (lambda: LayerScale(3, init=0.5, axis=1), lambda m: m(randn(2, 3, 4)), (2, 3, 4)),
    "mbconv": (lambda: MBConv(8, 16, stride=2), lambda m: m(randn(2, 7, 6, 8)), (2, 4, 3, 16)),
    "cel": (lambda: CrossScaleEmbedding(3, 8, kernels=(2, 4), stride=2), lambda m: m(randn(1, 6, 8, 3)), (1, 3, 4, 8)),
    "dpb": (lambda: DynamicPositionBias(2, hidden=4), lambda m: m((3, 2)), (2, 5, 3)),
    "residual": (lambda: AttentionResidual(2, (4, 2)), lambda m: m(randn(1, 2, 8, 8)), (1, 2, 2, 2)),
    "merging": (lambda: PatchMerging(8, 12), lambda m: m(randn(2, 6, 4, 8)), (2, 3, 2, 12)),
}


def test_every_class_of_the_layers_package_is_in_a_table():
    """A new layer class fails here until LAYERS (attention layers) or MODULES (the rest) holds it."""
    classes = {getattr(layers, name) for name in layers.__all__ if isinstance(getattr(layers, name), type)}
    tables = [factory for factory, *_ in LAYERS.values()] + [factory for factory, *_ in MODULES.values()]
    covered = {type(build(factory)) for factory in tables}
    assert classes - covered == set(), f"not in a table of tests/test_layers.py: {classes - covered}"
    # attention layers belong in LAYERS, whose tests check fused == explicit and the probabilities hook
    assert all(attention_layers(build(factory)) for factory, *_ in LAYERS.values())
    assert not any(attention_layers(build(factory)) for factory, *_ in MODULES.values())


@pytest.mark.parametrize("name", MODULES)
def test_other_modules_shape_and_every_parameter_gets_a_gradient(name):
    factory, call, shape = MODULES[name]
    module = randomise(build(factory), std=0.3)
    out = call(module)
    assert out.shape == shape
    if list(module.parameters()):
        (out * randn(*out.shape, seed=3)).sum().backward()
        for pname, p in module.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", LAYERS)
def test_shape_and_every_parameter_gets_a_gradient(name):
    layer, x, call, expected = case(name)
    x.requires_grad_(True)
    out = call(layer, x)
    B, H, W = x.shape[0], *expected[-1][1]
    assert out.shape == (B, H, W, 8)
    (out * randn(*out.shape, seed=3)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", LAYERS)
def test_fused_equals_explicit(name):
    layer, x, call, _ = case(name)
    layer.eval()  # MaxViT's batch norms: the same statistics on both runs
    fused = call(layer, x)
    with explicit(layer):
        slow = call(layer, x)
    torch.testing.assert_close(slow, fused, rtol=1e-9, atol=1e-9)
    assert all(m.fused and "fused" not in vars(m) for m in attention_layers(layer).values())  # switched back


@pytest.mark.parametrize("name", LAYERS)
def test_hook_sees_probabilities_and_their_pattern(name):
    layer, x, call, expected = case(name)
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inputs, out: seen.append(inputs))
             for m in layer.modules() if isinstance(m, AttentionProbs)]
    try:
        call(layer, x)
        assert seen == []  # the fused path forms no probabilities
        with explicit(layer):
            call(layer, x)
    finally:
        for h in hooks:
            h.remove()
    assert [p for _, p in seen] == [p for p, _ in expected]
    for (probs, pattern), (_, (H, W)) in zip(seen, expected):
        K = pattern.keys(H, W).shape[1]
        assert probs.shape == (x.shape[0], 2, H, W, K)
        torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs[..., 0]))
        excluded = (pattern.keys(H, W) < 0) & (not pattern.zero_slots)
        assert (probs[..., excluded.reshape(H, W, K)] == 0).all()


def test_hook_can_replace_the_probabilities():
    layer, x, _, _ = case("nat")
    layer.attn_probs.register_forward_hook(lambda mod, inputs, out: torch.zeros_like(out))
    with explicit(layer):
        torch.testing.assert_close(layer(x), layer.proj.bias.expand_as(x))  # no value reaches proj


# ---------------------------------------------------------------------------------------------
# bad configurations: ValueError stating the rule and the values
# ---------------------------------------------------------------------------------------------
BAD = [
    (lambda: NeighborhoodAttention(10, 3, 3), r"heads must divide dim; got dim=10, heads=3"),
    (lambda: BlockAttention(8, 0, 2), r"heads=0"),
    (lambda: StandAloneAttention(8, 2, 4), r"odd kernel_size.*kernel_size=\(4, 4\)"),
    (lambda: AttentionStem(3, 8, 2, (3, 2)), r"odd kernel_size.*kernel_size=\(3, 2\)"),
    (lambda: AttentionStem(3, 9, 2, 3), r"dim=9, heads=2"),
    (lambda: NeighborhoodAttention(8, 2, 1), r"kernel_size must be at least 2.*kernel_size=1\b"),
    (lambda: NeighborhoodAttention(8, 2, 5)(torch.randn(1, 4, 9, 8)),
     r"kernel_size \* dilation must not exceed the map size.*map=\(4, 9\)"),
    (lambda: NeighborhoodAttention(8, 2, 3, dilation=3)(torch.randn(1, 9, 8, 8)), r"dilation=\(3, 3\), map=\(9, 8\)"),
    (lambda: NeighborhoodAttention(8, 2, 3)(torch.randn(2, 8, 5, 5)),
     r"\[B, H, W, C\] with C=8; got shape \(2, 8, 5, 5\)"),
    (lambda: BlockAttention(8, 2, 2)(torch.randn(4, 4, 8)), r"C=8; got shape \(4, 4, 8\)"),
    (lambda: BlockAttention(8, 2, 3)(torch.randn(1, 4, 6, 8)), r"multiple of size.*size=\(3, 3\), map=\(4, 6\)"),
    (lambda: GridAttention(8, 2, 4)(torch.randn(1, 8, 6, 8)), r"multiple of size.*size=\(4, 4\), map=\(8, 6\)"),
    (lambda: LongShortDistanceAttention(8, 2, "lda", group=2, interval=4)(torch.randn(1, 6, 8, 8)),
     r"multiple of interval.*interval=\(4, 4\), map=\(6, 8\)"),
    (lambda: LongShortDistanceAttention(8, 2, "far"), r"kind must be one of sda, lda; got kind='far'"),
    (lambda: MBConv(8, 8, stride=0), r"stride must be a positive int; got stride=0"),
    (lambda: MBConv(8, 8, se=2), r"se=2"),
    (lambda: MBConv(8, 8)(torch.randn(1, 8, 5, 5)), r"C=8; got shape \(1, 8, 5, 5\)"),
    (lambda: MaxViTBlock(4, 8, 3, 2), r"dim=8, heads=3"),
    (lambda: CrossScaleEmbedding(3, 32, kernels=(4, 7)), r"kernels=\(4, 7\), stride=4"),
    (lambda: CrossScaleEmbedding(3, 32, kernels=(8, 4)), r"increasing.*kernels=\(8, 4\)"),
    (lambda: CrossScaleEmbedding(3, 4), r"dim_out=4, kernels=\(4, 8, 16, 32\)"),
    (lambda: CrossScaleEmbedding(3, 32)(torch.randn(1, 3, 16, 3)), r"at least stride.*stride=4, map=\(3, 16\)"),
    (lambda: LessAttention(8, 2, tokens=12)(torch.randn(1, 4, 4, 8), torch.randn(1, 2, 16, 16)),
     r"tokens=N=12; got a map \(4, 4\) with N=16"),
    (lambda: LessAttention(8, 2, tokens=12)(torch.randn(1, 3, 4, 8), torch.randn(1, 2, 12, 11)),
     r"prev_scores must be scores \[B, heads, N, N\] = \(1, 2, 12, 12\).*got \(1, 2, 12, 11\)"),
    (lambda: VanillaAttention(8, 2)(torch.randn(1, 3, 4, 8), torch.randn(1, 3, 12, 12)),
     r"residual_scores .* = \(1, 2, 12, 12\).*got \(1, 3, 12, 12\)"),
    (lambda: AttentionResidual(2, 7), r"even on each axis; got size_prev=\(7, 7\)"),
    (lambda: AttentionResidual(2, 8)(torch.randn(1, 2, 36, 36)), r"= \(1, 2, 64, 64\).*got \(1, 2, 36, 36\)"),
    (lambda: Mlp(8, ratio=0.0), r"dim=8, ratio=0.0"),
    (lambda: ShiftedWindowAttention(8, 2, 4, shift=4), r"shift must be smaller than size.*shift=\(4, 4\)"),
    (lambda: SwinBlock(8, 2, 4)(torch.randn(1, 6, 8, 8)), r"multiple of size.*size=\(4, 4\), map=\(6, 8\)"),
    (lambda: SwinBlock(8, 3, 4), r"dim=8, heads=3"),
    (lambda: PatchMerging(8)(torch.randn(1, 5, 4, 8)), r"even on each axis; got map=\(5, 4\)"),
    (lambda: PatchMerging(8)(torch.randn(1, 4, 4, 6)), r"C=8; got shape \(1, 4, 4, 6\)"),
    (lambda: PatchMerging(8, dim_out=0), r"dim_out must be a positive int; got dim_out=0"),
    (lambda: RelativePositionBias(2, 3)((4, 3)), r"extent cannot exceed it; got extent=\(4, 3\)"),
    (lambda: RelativePositionBias(0, 3), r"heads must be a positive int; got heads=0"),
    (lambda: RelativeEmbedding(2, 4, 3)((5, 3)), r"built for extent=\(3, 3\); got extent=\(5, 3\)"),
    (lambda: DynamicPositionBias(2, hidden=0), r"hidden must be a positive int; got hidden=0"),
    (lambda: PatternAttention(8, 2, "block"), r"pattern must be a pattern or a function \(H, W\) -> pattern; got str"),
]


@pytest.mark.parametrize("make, message", BAD, ids=[m for _, m in BAD])
def test_bad_configurations_raise_value_error_with_the_values(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_shell_without_a_pattern_needs_a_subclass_that_defines_one():
    with pytest.raises(NotImplementedError, match="PatternAttention was built without a pattern and defines none"):
        PatternAttention(8, 2)(torch.randn(1, 4, 4, 8))

    class Rows(PatternAttention):
        def pattern(self, H, W):
            return Block((1, W))

    assert Rows(8, 2)(torch.randn(1, 4, 4, 8)).shape == (1, 4, 4, 8)
