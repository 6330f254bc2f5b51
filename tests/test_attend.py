import os
import warnings

import pytest
import torch

from vizattn import attend
from vizattn.backends import native, tiled
from vizattn.bias import DynamicPositionBias, RelativeEmbedding, RelativePositionBias
from vizattn.patterns import Block, Global, Grid, LocalWindow, LongDistance, Neighborhood

import brute
from cases import CASES, IDS, LARGER
from conftest import D, generator

# the native kernel must build in CI (CI=true); elsewhere its tests need a compiler
FAST = ["reference", "tiled"] + (["native"] if os.environ.get("CI") or native.unavailable() is None else [])


def qkv(B, heads, H, W, d, dtype=D, seed=0, dv=None):
    g = generator(seed)
    q, k = (torch.randn(B, heads, H, W, d, generator=g, dtype=dtype) for _ in range(2))
    return q, k, torch.randn(B, heads, H, W, dv or d, generator=g, dtype=dtype)


def tables(pattern, heads, H, W, d, dtype=D, seed=1):
    g = generator(seed)
    kh, kw = pattern.extent(H, W)
    bias = torch.randn(heads, 2 * kh - 1, 2 * kw - 1, generator=g, dtype=dtype)
    rel = (torch.randn(heads, 2 * kh - 1, d // 2, generator=g, dtype=dtype),
           torch.randn(heads, 2 * kw - 1, d - d // 2, generator=g, dtype=dtype))
    return bias, rel


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("pattern, spec_h, spec_w, H, W", CASES, ids=IDS)
def test_attend_matches_the_definition(pattern, spec_h, spec_w, H, W, backend):
    q, k, v = qkv(1, 2, H, W, 4, dv=3)
    bias, rel = tables(pattern, 2, H, W, 4)
    table = brute.slots(spec_h, spec_w, H, W)
    for kwargs in ({}, {"bias": bias, "rel_emb": rel, "scale": 0.7}):
        want_out, want_w = brute.attention(q, k, v, table, pattern.zero_slots, bias=kwargs.get("bias"),
                                           rel=kwargs.get("rel_emb"), scale=kwargs.get("scale"))
        out, weights = attend(q, k, v, pattern, return_weights=True, backend=backend, **kwargs)
        torch.testing.assert_close(out, want_out)
        torch.testing.assert_close(weights, want_w)
        torch.testing.assert_close(attend(q, k, v, pattern, backend=backend, **kwargs), want_out)


@pytest.mark.parametrize("backend", FAST[1:])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("pattern, H, W", LARGER, ids=[f"{p}@{H}x{W}" for p, H, W in LARGER])
def test_fast_backends_equal_reference_on_larger_maps(pattern, H, W, dtype, tol, backend):
    q, k, v = qkv(2, 3, H, W, 8, dtype=dtype)
    bias, rel = tables(pattern, 3, H, W, 8, dtype=dtype)
    for kwargs in ({}, {"bias": bias}, {"bias": bias, "rel_emb": rel}):
        want, want_w = attend(q, k, v, pattern, backend="reference", return_weights=True, **kwargs)
        got, got_w = attend(q, k, v, pattern, backend=backend, return_weights=True, **kwargs)
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)
        torch.testing.assert_close(got_w, want_w, atol=tol, rtol=tol)
        torch.testing.assert_close(attend(q, k, v, pattern, **kwargs), want, atol=tol, rtol=tol)


@pytest.mark.parametrize("pattern, H, W", LARGER, ids=[f"{p}@{H}x{W}" for p, H, W in LARGER])
def test_weights_rebuild_the_output(pattern, H, W):
    q, k, v = qkv(2, 2, H, W, 6)
    out, weights = attend(q, k, v, pattern, return_weights=True)
    keys = pattern.keys(H, W)  # [N, K]
    values = torch.nn.functional.pad(v.flatten(2, 3), (0, 0, 0, 1))[:, :, keys.where(keys >= 0, H * W)]  # zero at -1
    torch.testing.assert_close(torch.einsum("bhnk,bhnkd->bhnd", weights.flatten(2, 3), values), out.flatten(2, 3))
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)))
    excluded = (keys < 0) & (not pattern.zero_slots)
    assert (weights.flatten(2, 3)[..., excluded] == 0).all()


GRAD = [
    (Neighborhood((3, 2), dilation=(2, 3)), 6, 7),
    (LocalWindow(3), 4, 5),
    (LocalWindow(3, padding="mask"), 4, 5),
    (Block(2, pad=True), 5, 3),
    (Block((3, 2), shift=(1, 1), pad=True), 5, 3),
    (Grid(2, pad=True), 5, 3),
    (LongDistance(2, pad=True), 3, 5),
    (Global(), 3, 4),
]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("pattern, H, W", GRAD, ids=[f"{p}@{H}x{W}" for p, H, W in GRAD])
def test_gradcheck(pattern, H, W, backend):
    q, k, v = qkv(1, 2, H, W, 4)
    bias, (rel_row, rel_col) = tables(pattern, 2, H, W, 4)
    inputs = tuple(t.requires_grad_() for t in (q, k, v, bias, rel_row, rel_col))

    def out(q, k, v, bias, rel_row, rel_col):
        return attend(q, k, v, pattern, bias=bias, rel_emb=(rel_row, rel_col), backend=backend)

    def weights(q, k, v, bias, rel_row, rel_col):
        return attend(q, k, v, pattern, bias=bias, rel_emb=(rel_row, rel_col), return_weights=True, backend=backend)[1]

    assert torch.autograd.gradcheck(out, inputs, fast_mode=True)
    assert torch.autograd.gradcheck(weights, inputs, fast_mode=True)


HALO_GRAD = [
    (Neighborhood(3), 11, 10),  # two tiles per axis, overlapping: some tile rows are taken by no query
    (Neighborhood(3, dilation=2), 13, 9),  # uneven groups: the short group's tile repeats its last query
    (Neighborhood(3), 5, 7),  # odd, rectangular
    (Neighborhood((5, 3)), 5, 3),  # kernel = map: one tile, the whole map as halo
    (Neighborhood(2, dilation=3), 6, 7),  # k * d = H: dilation at its limit, uneven groups on the columns
    (LocalWindow(3), 4, 5),  # SASA's zero key
    (Block(2, pad=True), 5, 3),
    (Global(), 3, 4),
]


@pytest.mark.parametrize("halo_bytes", [0, tiled.HALO_BYTES], ids=["one slice per chunk", "default chunks"])
@pytest.mark.parametrize("pattern, H, W", HALO_GRAD, ids=[f"{p}@{H}x{W}" for p, H, W in HALO_GRAD])
def test_gradcheck_of_the_halo_kernel(pattern, H, W, halo_bytes, monkeypatch):
    # no learnt terms: the tiled backend's own autograd Function (CPU flash backward), B and heads > 1
    monkeypatch.setattr(tiled, "HALO_BYTES", halo_bytes)
    inputs = tuple(t.requires_grad_() for t in qkv(2, 2, H, W, 4))
    assert torch.autograd.gradcheck(lambda q, k, v: attend(q, k, v, pattern, backend="tiled"), inputs, fast_mode=True)


def test_full_kernel_neighborhood_is_global_attention():
    q, k, v = qkv(2, 2, 7, 9, 8)
    torch.testing.assert_close(attend(q, k, v, Neighborhood((7, 9))), attend(q, k, v, Global()))


@pytest.mark.parametrize("d, H, W", [(2, 14, 15), (3, 13, 17), ((2, 3), 11, 16)])
def test_dilated_equals_plain_on_each_subgrid(d, H, W):
    dh, dw = (d, d) if isinstance(d, int) else d
    q, k, v = qkv(1, 2, H, W, 8)
    out = attend(q, k, v, Neighborhood(3, dilation=d))
    for gh in range(dh):
        for gw in range(dw):
            sub = [t[:, :, gh::dh, gw::dw] for t in (q, k, v)]  # uneven sub-grids when d does not divide
            torch.testing.assert_close(out[:, :, gh::dh, gw::dw], attend(*sub, Neighborhood(3)))


def test_block_equals_grid_when_one_group_is_the_map():
    q, k, v = qkv(1, 2, 6, 6, 8)
    a, b = attend(q, k, v, Block(6)), attend(q, k, v, Grid(6))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, attend(q, k, v, Global()))


def test_long_distance_equals_grid_and_relative_bias_lines_up():
    q, k, v = qkv(1, 2, 12, 8, 8)
    bias, _ = tables(Grid((3, 2)), 2, 12, 8, 8)
    torch.testing.assert_close(attend(q, k, v, LongDistance(4), bias=bias), attend(q, k, v, Grid((3, 2)), bias=bias))


def test_sasa_zero_padding_leaks_mass_at_the_border_and_mask_does_not():
    q, k, v = qkv(1, 1, 6, 6, 4)
    _, w_zero = attend(q, k, v, LocalWindow(3), return_weights=True)
    _, w_mask = attend(q, k, v, LocalWindow(3, padding="mask"), return_weights=True)
    real = LocalWindow(3).keys(6, 6) >= 0
    corner = w_zero[0, 0, 0, 0]
    assert corner[~real[0]].sum() > 0 and corner[real[0]].sum() < 1  # mass on zero keys
    assert w_mask[0, 0, 0, 0][~real[0]].sum() == 0
    torch.testing.assert_close(w_zero[0, 0, 2, 2], w_mask[0, 0, 2, 2])  # interior: the same


def test_bias_modules_feed_attend():
    q, k, v = qkv(1, 2, 9, 9, 8, dtype=torch.float32)
    pattern = Neighborhood(5)
    rpb = RelativePositionBias(2, pattern.extent(9, 9))
    dpb = DynamicPositionBias(2, hidden=8)
    rel = RelativeEmbedding(2, 8, 5)
    for kwargs in ({"bias": rpb()}, {"bias": dpb(pattern.extent(9, 9))}, {"rel_emb": rel()}):
        out = attend(q, k, v, pattern if "bias" in kwargs else LocalWindow(5), **kwargs)
        out.sum().backward()
    assert all(p.grad is not None for m in (rpb, dpb, rel) for p in m.parameters())
    # relative embeddings: only the paper's 2*(k//2)+1 vectors per axis are parameters
    assert rel.row.shape == (2, 5, 4) and rel()[0].shape == (2, 9, 4) and (rel()[0][:, :2] == 0).all()


def test_sasa_relative_embedding_is_split_per_head():
    # changing head 1's row table must not change head 0's output
    q, k, v = qkv(1, 2, 5, 5, 4)
    rel = RelativeEmbedding(2, 4, 3).double()
    before = attend(q, k, v, LocalWindow(3), rel_emb=rel())
    with torch.no_grad():
        rel.row[1, 0] += 1.0  # one offset only: a shift of all offsets would cancel in the softmax
    after = attend(q, k, v, LocalWindow(3), rel_emb=rel())
    torch.testing.assert_close(after[:, 0], before[:, 0])
    assert not torch.allclose(after[:, 1], before[:, 1])


def test_dynamic_position_bias_is_one_function_of_offsets():
    dpb = DynamicPositionBias(3, hidden=8)
    small, large = dpb((3, 3)), dpb((7, 5))
    torch.testing.assert_close(small, large[:, 4:9, 2:7])  # same offsets, same bias


@pytest.mark.parametrize("pattern, H, W", [(Neighborhood(3), 7, 9), (Neighborhood((3, 2), dilation=(2, 3)), 9, 8),
                                           (LocalWindow(5, padding="mask"), 6, 7), (Block(4, shift=(2, 1)), 8, 12)],
                         ids=str)
def test_flex_backend_forward(pattern, H, W):
    q, k, v = qkv(1, 2, H, W, 16, dtype=torch.float32)
    bias, _ = tables(pattern, 2, H, W, 16, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unfused eager FlexAttention on CPU
        got = attend(q, k, v, pattern, bias=bias, backend="flex")
    torch.testing.assert_close(got, attend(q, k, v, pattern, bias=bias, backend="reference"))


def test_memory_of_the_tiled_kernel_grows_with_tokens_times_window():
    from vizattn.backends.tiled import TILE, _plan
    for H in (32, 64):
        plan = _plan(Neighborhood(7), H, H, TILE, torch.device("cpu"))
        assert plan.tile_slot.numel() <= H * H * (TILE + 6) ** 2  # N * halo, not N^2


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda q: attend(q[0], q, q, Global()), r"q must be a tensor \[B, heads, H, W, head_dim\]; got q of shape"),
        (lambda q: attend(q, q[..., :3], q, Global()), "q and k must have the same shape"),
        (lambda q: attend(q, q, q[:, :1], Global()), "v the same"),
        (lambda q: attend(q, q.float(), q, Global()), "must share one floating dtype"),
        (lambda q: attend(q.long(), q.long(), q.long(), Global()), "floating dtype"),
        (lambda q: attend(q, q, q, "global"), "pattern must be a vizattn.patterns pattern"),
        (lambda q: attend(q, q, q, Neighborhood(7)), r"kernel_size \* dilation must not exceed"),
        (lambda q: attend(q, q, q, Block(4)), "multiple of size"),
        (lambda q: attend(q, q, q, Neighborhood(3), bias=torch.zeros(2, 3, 3, dtype=q.dtype)),
         r"bias must have shape \(2, 5, 5\) for Neighborhood\(3\) on a \(6, 5\) map; got \(2, 3, 3\)"),
        (lambda q: attend(q, q, q, Neighborhood(3), bias=torch.zeros(2, 5, 5)), "bias must match q's dtype"),
        (lambda q: attend(q, q, q, LocalWindow(3), rel_emb=torch.zeros(2, 5, 2)), "rel_emb must be a pair"),
        (lambda q: attend(q, q, q, LocalWindow(3), rel_emb=(torch.zeros(2, 5, 2, dtype=q.dtype),) * 2),
         r"rel_emb\[0\] \(row\) must have shape \(2, 5, 4\)"),
        (lambda q: attend(q, q, q, Global(), backend="cuda"), "backend must be one of"),
        (lambda q: attend(q, q, q, LocalWindow(3), backend="flex"), "flex backend supports neither"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    q = qkv(1, 2, 6, 5, 8)[0]
    with pytest.raises(ValueError, match=message):
        call(q)


def test_natten_forward_agrees():
    """NATTEN (the NA/DiNAT reference) agrees on forward; dev.py installs it, CI must have it."""
    if os.environ.get("CI"):
        import natten
    else:
        natten = pytest.importorskip("natten", reason="cross-check needs natten (dev.py installs it)")
    q, k, v = qkv(1, 2, 13, 14, 16, dtype=torch.float32)
    for kernel, dilation in ((5, 1), (3, 2), (4, 3)):
        ours = attend(q, k, v, Neighborhood(kernel, dilation=dilation))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NATTEN's CPU path is unfused FlexAttention
            theirs = natten.na2d(*(t.permute(0, 2, 3, 1, 4) for t in (q, k, v)), kernel_size=kernel, dilation=dilation)
        torch.testing.assert_close(ours, theirs.permute(0, 3, 1, 2, 4), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pattern, H, W", LARGER, ids=[f"{p}@{H}x{W}" for p, H, W in LARGER])
def test_explicit_path_equals_attend(pattern, H, W):
    from vizattn.functional import combine, slot_logits

    q, k, v = qkv(1, 2, H, W, 6)
    bias, rel = tables(pattern, 2, H, W, 6)
    want, want_w = attend(q, k, v, pattern, bias=bias, rel_emb=rel, return_weights=True, backend="reference")
    weights = slot_logits(q, k, pattern, bias=bias, rel_emb=rel).softmax(-1)
    torch.testing.assert_close(weights, want_w)
    torch.testing.assert_close(combine(weights, v, pattern), want)


TRAINING = LARGER[:5] + [(Block(4, shift=2), 12, 16)]


@pytest.mark.parametrize("halo_bytes", [0, tiled.HALO_BYTES], ids=["one slice per chunk", "default chunks"])
@pytest.mark.parametrize("pattern, H, W", TRAINING, ids=[f"{p}@{H}x{W}" for p, H, W in TRAINING])
def test_training_gradients_equal_the_reference(pattern, H, W, halo_bytes, monkeypatch):
    # B * heads = 8 slices; HALO_BYTES = 0 runs them one chunk each, in forward and in backward,
    # and keeps no halo for a learnt bias (which otherwise goes through autograd)
    monkeypatch.setattr(tiled, "HALO_BYTES", halo_bytes)
    monkeypatch.setattr(tiled, "KEPT_HALO_BYTES", halo_bytes and tiled.KEPT_HALO_BYTES)
    calls = []
    forward = tiled._halo_forward
    monkeypatch.setattr(tiled, "_halo_forward", lambda *a: calls.append(1) or forward(*a))
    q, k, v = (t.requires_grad_() for t in qkv(2, 4, H, W, 8))
    bias = tables(pattern, 4, H, W, 8)[0].requires_grad_()
    for kwargs in ({}, {"bias": bias}, {"bias": bias.detach()}):  # CPU flash backward, by hand, flash with a mask
        inputs = (q, k, v, bias) if kwargs.get("bias") is bias else (q, k, v)
        grads = []
        for backend in FAST:
            out = attend(q, k, v, pattern, backend=backend, **kwargs)
            weights = torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape).sin()
            grads.append(torch.autograd.grad((out * weights).sum(), inputs))
        for other in grads[1:]:
            for want, got in zip(grads[0], other):
                torch.testing.assert_close(got, want)
    assert len(calls) == (3 * 8 if halo_bytes == 0 else 2)  # chunks did run
