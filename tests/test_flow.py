"""``vizattn.flow`` against dense references written here from docs/semantics.md §9: each layer as the
``[N, N]`` matrix of its probe record (``dense()``), each down-sampling gap as dense per-axis
operators from ``Downsample.incidence``, multiplied; relevance's gradients by replacing each
attention map with a leaf tensor (and by finite differences on a tiny model)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from vizattn import checkpoints, flow, models, probe
from vizattn.layers import BlockAttention, NeighborhoodAttention
from vizattn.layers.common import attention_layers, explicit
from vizattn.receptive import Branches, model_steps, token_map

from conftest import randomise

D = torch.float64


# ---------------------------------------------------------------------------------------------
# the dense reference
# ---------------------------------------------------------------------------------------------
def dense_gap(gap: Branches | None, v: torch.Tensor, prefix: int) -> torch.Tensor:
    """``v [B, prefix + N_out] -> [B, prefix + N_in]``: the mean over chains of each chain's product of
    dense operators ``kron(rows, cols)`` (each output spread evenly over the inputs it reads)."""
    if gap is None:
        return v
    head, body = v[:, :prefix], v[:, prefix:]
    out = 0
    for chain in gap.chains:
        x = body
        for step, a, b in reversed(chain):
            rows = step.incidence(a[0], b[0], 0).double()
            cols = step.incidence(a[1], b[1], 1).double()
            rows, cols = rows / rows.sum(1, keepdim=True), cols / cols.sum(1, keepdim=True)
            if rows.numel() * cols.numel() <= 4e7:
                x = x @ torch.kron(rows, cols)  # [B, N_out] @ [N_out, N_in]
            else:  # the same operator, not formed (224x224 pixels): rows^T X cols per item
                x = torch.einsum("bij,ia,jc->bac", x.reshape(-1, *b), rows, cols).reshape(x.shape[0], -1)
        out = out + x
    return torch.cat([head, out / len(gap.chains)], 1)


def fuse(x: torch.Tensor, fusion: str) -> torch.Tensor:
    return {"mean": x.mean(1), "max": x.amax(1), "min": x.amin(1)}[fusion]


def dense_rollout_layer(r, fusion="mean", residual=0.5, discard=0.0, prefix=0) -> torch.Tensor:
    """``[B, N, N]``: ``(res I + (1 - res) F) / row total``, F the fused dense map with the lowest share of the
    pattern's entries dropped; the total counts the weight of slots with no token (SASA), which leaves."""
    A = r.dense().double()  # [B, heads, N, N]
    B, heads, N, _ = A.shape
    F = fuse(A, fusion)
    if discard:
        mask = r.pattern.mask(*r.size).clone()
        mask[torch.arange(prefix), torch.arange(prefix)] = False  # the class token's own weight is kept
        values = F[:, mask]  # [B, entries]
        drop = int(int(mask.sum()) * discard)
        for b in range(B):
            cut = values[b].sort().values[drop - 1] if drop else -1
            F[b][mask & (F[b] <= cut)] = 0
    weights = fuse(r.weights.double().reshape(B, heads, N, -1), fusion)  # [B, N, K]
    padded = (weights * (r.keys < 0)).sum(-1)  # SASA's zero slots
    F = (1 - residual) * F
    total = residual + F.sum(-1) + (1 - residual) * padded
    out = (residual * torch.eye(N, dtype=D) + F) / total[..., None]
    return out.nan_to_num(0.0)  # a row left with nothing (all discarded, residual 0) passes nothing


def readout(model, images, last_tokens: int, prefix: int) -> torch.Tensor:
    B = images.shape[0]
    if prefix:
        return torch.eye(last_tokens, dtype=D)[:1].expand(B, -1)
    if isinstance(model, models.Model):  # max pooling: a channel's maximum picks its token
        with torch.no_grad():
            x = model.features((images - model.MEAN) / model.STD).double().reshape(B, -1, model.head.in_features)
        top = (x == x.amax(1, keepdim=True)).double()
        return (top / top.sum(1, keepdim=True)).mean(-1)
    return torch.full((B, last_tokens), 1 / last_tokens, dtype=D)


def gaps_of(model, size) -> list:
    """The ``Branches`` leading to each attention call's map (None: the same map), from ``model_steps``."""
    gaps, gap = [], None
    for step in model_steps(model, size)[0]:
        if isinstance(step, Branches):
            gap = step
        else:
            gaps.append(gap)
            gap = None
    return gaps


def dense_flow(model, images, rec, layers, gaps):
    """Carry the readout back through the dense layer matrices ``layers`` (one per record of ``rec``) and the
    ``gaps`` (``gaps_of``): (per-layer maps, pixels), each normalised to sum 1."""
    prefixes = [token_map(model, r.size)[0] for r in rec]
    grids = [token_map(model, r.size)[1] for r in rec]
    maps_ = [None] * len(layers)
    v = readout(model, images, layers[-1].shape[-1], prefixes[-1])
    for l in reversed(range(len(layers))):
        v = torch.einsum("bq,bqk->bk", v, layers[l])
        maps_[l] = v
        v = dense_gap(gaps[l], v, prefixes[l])
    maps_ = [normalise(m[:, p:].reshape(-1, *g)) for m, p, g in zip(maps_, prefixes, grids)]
    return maps_, normalise(v[:, prefixes[0] :].reshape(-1, *images.shape[-2:]))


def normalise(x):
    return x / x.sum((1, 2), keepdim=True)


def records(model, images):
    model.eval()
    with probe(model) as rec, torch.no_grad():
        model(images)
    return list(rec)


def leaf_gradients(model, images, target=None):
    """A zero leaf added to each attention map: (records, d logit_target / d map, targets), the gradient
    along every path (also through later layers' softmax), as Chefer et al.'s hooks on the maps see it."""
    leaves, handles = [], []

    def swap(module, args, out):
        leaves.append(torch.zeros_like(out, requires_grad=True))
        return out + leaves[-1]

    model.eval()
    for m in attention_layers(model).values():
        handles.append(m.attn_probs.register_forward_hook(swap))
    try:
        with probe(model) as rec:
            logits = model(images)
    finally:
        for h in handles:
            h.remove()
    target = logits.argmax(-1) if target is None else torch.as_tensor(target).expand(len(images))
    logits.gather(1, target[:, None]).sum().backward()
    return list(rec), [leaf.grad for leaf in leaves], target


def dense_relevance_layers(rec, grads):
    out = []
    for r, g in zip(rec, grads):
        cam = dataclasses.replace(r, weights=(g.double() * r.weights.double()).clamp(min=0)).dense().mean(1)
        out.append(torch.eye(cam.shape[-1], dtype=D) + cam)
    return out


def assert_flow_equals(f, maps_, pixels, tol=1e-9):
    assert len(f.maps) == len(maps_)
    for got, want in zip(f.maps, maps_):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    torch.testing.assert_close(f.grid, maps_[0], rtol=tol, atol=tol)
    torch.testing.assert_close(f.pixels, pixels, rtol=tol, atol=tol)
    assert bool((f.pixels >= 0).all()) and bool((f.grid >= 0).all())
    torch.testing.assert_close(f.pixels.sum((1, 2)), torch.ones(len(f.pixels), dtype=D))


# ---------------------------------------------------------------------------------------------
# exactness: every small model (random weights, float64) on its own and awkward sizes
# ---------------------------------------------------------------------------------------------
SIZES = {"vit": [(64, 64)], "lavit": [(64, 64)], "sasa": [(64, 64), (72, 40)], "nat": [(64, 64), (88, 56)],
         "dinat": [(64, 64), (96, 80)], "maxvit": [(64, 64), (128, 64)], "crossformer": [(64, 64), (128, 64)],
         "swin": [(64, 64), (64, 128)]}
CASES = [(name, size) for name, sizes in SIZES.items() for size in sizes]


def small(name):
    torch.manual_seed(0)
    return randomise(models.create(name).double(), seed=1, std=0.2).eval()


def images(size, B=2, seed=0):
    return torch.rand(B, 3, *size, generator=torch.Generator().manual_seed(seed), dtype=D)


@pytest.mark.parametrize("name,size", CASES)
def test_rollout_and_relevance_equal_the_dense_products_on_every_small_model(name, size):
    model, x = small(name), images(size)
    rec, grads, target = leaf_gradients(model, x)
    gaps = gaps_of(model, size)
    f = flow.rollout(model, x)
    assert_flow_equals(f, *dense_flow(model, x, rec, [dense_rollout_layer(r) for r in rec], gaps))
    assert f.grids == tuple(r.size for r in rec) and f.names == tuple(r.name for r in rec)
    g = flow.relevance(model, x)
    assert torch.equal(g.target, target)
    assert_flow_equals(g, *dense_flow(model, x, rec, dense_relevance_layers(rec, grads), gaps))


@pytest.mark.parametrize("name,fusion,residual,discard", [
    ("sasa", "max", 0.3, 0.5), ("swin", "min", 0.5, 0.2), ("dinat", "max", 0.0, 0.9), ("lavit", "mean", 0.7, 0.3),
    ("maxvit", "min", 1.0, 0.0),
])
def test_rollout_options_equal_the_dense_product(name, fusion, residual, discard):
    model, x = small(name), images(SIZES[name][-1])
    f = flow.rollout(model, x, fusion=fusion, residual=residual, discard=discard)
    rec = records(model, x)
    layers = [dense_rollout_layer(r, fusion, residual, discard) for r in rec]
    assert_flow_equals(f, *dense_flow(model, x, rec, layers, gaps_of(model, SIZES[name][-1])))


def test_sasa_padded_slots_take_their_weight_out_of_the_map():
    """A corner query of SASA gives weight to zero-padded slots: with residual 0, a single layer's row sums to
    1 minus that weight (the flow's column keeps the loss until the final normalisation)."""
    model, x = small("sasa"), images((64, 64), B=1)
    f = flow.rollout(model, x, residual=0.0)
    op, r = f.operators[0], records(model, x)[0]
    v = torch.zeros(1, 1, op.tokens, dtype=D)
    v[0, 0, 0] = 1
    moved = op.back(v).sum()
    assert 0 < float(moved) < 1
    torch.testing.assert_close(moved, 1 - torch.tensor(r.outside_mass(0, 0), dtype=D), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# depth and columns
# ---------------------------------------------------------------------------------------------
def test_depth_reads_out_after_each_layer_and_the_last_equals_pixels():
    model, x = small("nat"), images((64, 64))
    f = flow.rollout(model, x)
    torch.testing.assert_close(f.depth(len(f.names)), f.pixels)
    layers = [dense_rollout_layer(r) for r in records(model, x)]
    d = 3  # the mean of layer 3's rows through layers 1-3 and the gaps, dense
    v = torch.full((2, layers[d - 1].shape[-1]), 1 / layers[d - 1].shape[-1], dtype=D)
    gap_before = gaps_of(model, (64, 64))
    for l in reversed(range(d)):
        v = dense_gap(gap_before[l], torch.einsum("bq,bqk->bk", v, layers[l]), 0)
    torch.testing.assert_close(f.depth(d), normalise(v.reshape(2, 64, 64)))


def test_a_swin_column_with_the_identity_alone_is_its_patch_footprint():
    """residual=1: every layer is the identity, so a token draws on exactly the pixels its patch embedding
    (4x4) and patch merging (2x2) cover, evenly."""
    model = small("swin")
    f = flow.rollout(model, images((64, 64)), residual=1.0)
    column = f.column("stages.1.1.attn", 2, 5)[0]  # stage 2: 8x8 tokens of 8x8 pixels
    want = torch.zeros(64, 64, dtype=D)
    want[16:24, 40:48] = 1 / 64
    torch.testing.assert_close(column, want)


def test_column_of_a_token_equals_its_dense_row():
    model, x = small("dinat"), images((96, 80), B=1)
    f = flow.rollout(model, x)
    layers = [dense_rollout_layer(r) for r in records(model, x)]
    gap_before = gaps_of(model, (96, 80))
    layer, (i, j) = 3, (4, 7)  # stage 2 (12x10), DiNAT's dilated layer
    v = torch.zeros(1, layers[layer].shape[-1], dtype=D)
    v[0, i * 10 + j] = 1
    for l in reversed(range(layer + 1)):
        v = dense_gap(gap_before[l], torch.einsum("bq,bqk->bk", v, layers[l]), 0)
    torch.testing.assert_close(f.column(layer, i, j), normalise(v.reshape(1, 96, 80)))


# ---------------------------------------------------------------------------------------------
# the papers' checkpoints (random weights, 224x224: the published configurations fix the size).
# The smallest size of each paper: the larger ones are the same layers and gaps with other widths,
# depths and dilations (a dense 224x224 product per layer of a DiNAT-L does not fit 2 CPU cores).
# ---------------------------------------------------------------------------------------------
SMALLEST = sorted({c.paper: c for c in sorted(checkpoints.CHECKPOINTS.values(), key=lambda c: -c.params)
                   if c.size == 224}.values(), key=lambda c: c.name)


@pytest.mark.parametrize("name", [c.name for c in SMALLEST])
def test_flow_equals_the_dense_product_on_every_checkpoint(name):
    """float32 as published (both sides read the same records in float64)."""
    torch.manual_seed(0)
    model = checkpoints.build(name)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    rec, grads, _ = leaf_gradients(model, x, target=7)
    gaps = gaps_of(model, (224, 224))
    layers = [dense_rollout_layer(r, prefix=token_map(model, r.size)[0]) for r in rec]
    assert_flow_equals(flow.rollout(model, x), *dense_flow(model, x, rec, layers, gaps), tol=1e-8)
    g = flow.relevance(model, x, target=7)
    assert_flow_equals(g, *dense_flow(model, x, rec, dense_relevance_layers(rec, grads), gaps), tol=1e-6)


def test_deit_equals_the_textbook_rollout_and_relevance_of_the_class_token_row():
    """vit-explain's rollout (rows renormalised as it intends) and Chefer et al.'s R[0, 1:], on 197 x 197 matrices."""
    torch.manual_seed(0)
    model = checkpoints.build("deit_tiny_patch16_224").double()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1), dtype=D)
    rec = records(model, x)
    result = torch.eye(197, dtype=D).expand(2, -1, -1)
    for r in rec:
        a = (r.weights[:, :, 0].double().mean(1) + torch.eye(197, dtype=D)) / 2
        result = (a / a.sum(-1, keepdim=True)) @ result
    f = flow.rollout(model, x)
    assert f.grid.shape == (2, 14, 14)
    torch.testing.assert_close(f.grid, normalise(result[:, 0, 1:].reshape(2, 14, 14)))
    rec, grads, target = leaf_gradients(model, x)
    R = torch.eye(197, dtype=D).expand(2, -1, -1)
    for r, g in zip(rec, grads):
        cam = (g[:, :, 0].double() * r.weights[:, :, 0].double()).clamp(min=0).mean(1)
        R = R + cam @ R
    torch.testing.assert_close(flow.relevance(model, x).grid, normalise(R[:, 0, 1:].reshape(2, 14, 14)))


# ---------------------------------------------------------------------------------------------
# relevance's gradients by finite differences on a tiny model
# ---------------------------------------------------------------------------------------------
class Tiny(nn.Module):
    """``[B, 3, 6, 8] -> [B, 3]``: 2x2 patches, NA(3) then Block((3, 2)) on the 3x4 map, mean pool, linear."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 2, 2)
        self.na, self.block = NeighborhoodAttention(8, 2, kernel_size=3), BlockAttention(8, 2, size=(3, 2))
        self.head = nn.Linear(8, 3)

    def forward(self, images):
        x = self.embed(images).permute(0, 2, 3, 1)
        x = x + self.na(x)
        x = x + self.block(x)
        return self.head(x.mean((1, 2)))


def test_relevance_gradients_equal_finite_differences_on_a_tiny_model():
    """Central differences of the target logit, nudging every attention weight in turn (on the explicit path,
    where the weights exist), give the flow's layer weights mean_heads((dy/dA * A)+)."""
    torch.manual_seed(0)
    model = randomise(Tiny().double(), seed=2, std=0.5).eval()
    x = images((6, 8), B=1, seed=3)
    f = flow.relevance(model, x, target=1)
    nudge = {}

    def hook(name):
        def add(module, args, out):
            return out + nudge[name] if name in nudge else out

        return add

    handles = [m.attn_probs.register_forward_hook(hook(n)) for n, m in attention_layers(model).items()]
    try:
        with explicit(model), torch.no_grad():
            for op, r in zip(f.operators, records(model, x)):
                A = r.weights.double()  # [1, heads, H, W, K]
                grad = torch.zeros(A.numel(), dtype=D)
                for index in range(A.numel()):
                    e = torch.zeros(A.numel(), dtype=D)
                    e[index] = 1e-6
                    nudge[r.name] = e.reshape(A.shape)
                    up = model(x)[0, 1]
                    nudge[r.name] = -e.reshape(A.shape)
                    down = model(x)[0, 1]
                    grad[index] = (up - down) / 2e-6
                nudge.clear()
                want = (grad.reshape(A.shape) * A).clamp(min=0).mean(1).reshape(op.weights.shape)
                assert bool((want > 0).any()) and bool((want == 0).any())  # both signs of dy/dA occur
                torch.testing.assert_close(op.weights, want, rtol=1e-6, atol=1e-10)
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_bad_input_raises_value_errors_naming_the_rule():
    model, x = small("nat"), images((64, 64), B=2)
    with pytest.raises(ValueError, match="no attention layers"):
        flow.rollout(nn.Sequential(nn.Conv2d(3, 3, 1)), x)
    with pytest.raises(ValueError, match=r"target must lie in 0 \.\. 3 .*got target=\[5, 5\]"):
        flow.relevance(model, x, target=5)
    with pytest.raises(ValueError, match="one per item"):
        flow.relevance(model, x, target=[0, 1, 2])
    with pytest.raises(ValueError, match=r"images must be a float batch \[B, 3, H, W\].*\(3, 64, 64\)"):
        flow.rollout(model, x[0])
    with pytest.raises(ValueError, match="do not fit"):
        flow.rollout(small("vit"), images((48, 48)))
    with pytest.raises(ValueError, match="fusion"):
        flow.rollout(model, x, fusion="sum")
    with pytest.raises(ValueError, match=r"residual .* \[0, 1\]; got residual=1.5"):
        flow.rollout(model, x, residual=1.5)
    with pytest.raises(ValueError, match=r"discard .* \[0, 1\); got discard=1"):
        flow.rollout(model, x, discard=1)
    f = flow.rollout(model, x)
    with pytest.raises(ValueError, match="16x16 token grid"):
        f.column(0, 16, 0)
    with pytest.raises(ValueError, match="d must be a number of layers from 1 to 6"):
        f.depth(0)
