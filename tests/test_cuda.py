"""vizattn on a CUDA device, against the CPU: every pattern and CUDA backend of ``attend`` (forward, weights and
gradients in float32, bfloat16 and float16), the probe and one small model of each paper (forward and backward), and
every published architecture (``checkpoints.build``, forward).

Every test here is marked ``cuda`` and skipped where no CUDA device exists. ``benchmarks/gpu.py`` runs this file on
a GPU machine, which has torch, numpy and pytest but maybe nothing else: nothing here needs natten, plotly, ipywidgets
or a C++ compiler (the native backend is CPU only).

Tolerances, stated once (``TOL``): the inputs are rounded to the dtype first and the CPU reference runs in float64
on those rounded values, so only the device's arithmetic is measured. float32 allows TF32 matrix products
(FlexAttention's kernels use them: 11 significant bits, as float16); bfloat16 keeps 8. On the CPU (same
code, the device set to the CPU) the reference and tiled backends need at most a quarter of these tolerances for the
forward and about half for the gradients.
"""

import copy
import functools

import pytest
import torch

from vizattn import attend, checkpoints, probe
from vizattn.models import create, list_models
from vizattn.train import objective

from cases import CASES, LARGER
from conftest import generator

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = torch.device("cuda")
MAPS = [(c[0], c[3], c[4]) for c in CASES] + LARGER  # (pattern, H, W): awkward small maps, then several blocks
BACKENDS = ("auto", "reference", "tiled", "flex")  # attend's CUDA backends; "native" is a CPU kernel
# dtype: (forward, gradients): rtol, and atol as a fraction of the largest expected value
TOL = {torch.float32: (4e-3, 1e-2), torch.bfloat16: (3e-2, 8e-2), torch.float16: (4e-3, 1e-2)}
RUNS = [(b, p, H, W) for p, H, W in MAPS for b in BACKENDS if b != "flex" or not p.zero_slots]  # flex: no zero keys
MODEL_TOL = 1e-2  # relative L2 error of a whole model's logits / gradients, float32 (TF32 convolutions included)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """``|got - want| / |want|`` in the L2 norm, in float64 on the CPU."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    return ((got - want).norm() / want.norm()).item()


def assert_near(got: torch.Tensor, want: torch.Tensor, tol: float, what: str) -> None:
    """Elementwise ``|got - want| <= tol * max|want| + tol * |want|`` (CPU, float64)."""
    want = want.detach().double()
    scale = want.abs().max().item()
    torch.testing.assert_close(
        got.detach().double().cpu(), want, atol=tol * scale, rtol=tol, msg=lambda m: f"{what}: {m}"
    )


def problem(pattern, H, W, dtype, seed=0):
    """q, k, v ``[2, 2, H, W, 32]``, a bias table, a relative embedding pair and an output gradient, in ``dtype``."""
    g = generator(seed)
    kh, kw = pattern.extent(H, W)
    shapes = {
        "q": (2, 2, H, W, 32),
        "k": (2, 2, H, W, 32),
        "v": (2, 2, H, W, 32),
        "bias": (2, 2 * kh - 1, 2 * kw - 1),
        "rel_row": (2, 2 * kh - 1, 16),
        "rel_col": (2, 2 * kw - 1, 16),
        "grad": (2, 2, H, W, 32),
    }
    return {name: torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) for name, shape in shapes.items()}


def run(t, pattern, backend, device, dtype, terms, weights=False):
    """Output (and weights) of ``attend`` on ``device`` in ``dtype``, and the gradients of every input."""
    leaves = {n: t[n].to(device, dtype).requires_grad_() for n in ("q", "k", "v", *terms)}
    kwargs = {"bias": leaves.get("bias"), "backend": backend}
    if "rel_row" in terms:
        kwargs["rel_emb"] = (leaves["rel_row"], leaves["rel_col"])
    out = attend(leaves["q"], leaves["k"], leaves["v"], pattern, **kwargs)
    grads = torch.autograd.grad(out, list(leaves.values()), t["grad"].to(device, dtype))
    w = attend(leaves["q"], leaves["k"], leaves["v"], pattern, return_weights=True, **kwargs)[1] if weights else None
    return out, w, dict(zip(leaves, grads))


@functools.lru_cache(maxsize=None)
def reference(pattern, H, W, dtype, terms):
    """``run`` with the reference backend in float64 on the CPU, on the inputs rounded to ``dtype`` (shared by the
    backends)."""
    return run(problem(pattern, H, W, dtype), pattern, "reference", "cpu", torch.float64, terms, weights=True)


@pytest.mark.parametrize("dtype", TOL, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("backend, pattern, H, W", RUNS, ids=[f"{b}-{p}@{H}x{W}" for b, p, H, W in RUNS])
def test_backend_on_cuda_equals_the_cpu_reference(backend, pattern, H, W, dtype):
    tol, grad_tol = TOL[dtype]
    t = problem(pattern, H, W, dtype)
    weights = backend != "flex"  # FlexAttention returns no weights
    # no learnt terms (auto: FlexAttention without a score_mod for NA), a bias, and SASA's embedding where allowed
    for terms in ((), ("bias",)) + ((("bias", "rel_row", "rel_col"),) if backend in ("reference", "tiled") else ()):
        want, want_w, want_grads = reference(pattern, H, W, dtype, terms)
        got, got_w, got_grads = run(t, pattern, backend, CUDA, dtype, terms, weights)
        assert got.device.type == CUDA.type and got.dtype == dtype
        assert_near(got, want, tol, f"output with {terms}")
        if weights:
            assert_near(got_w, want_w, tol, f"weights with {terms}")
        for name, grad in want_grads.items():
            assert_near(got_grads[name], grad, grad_tol, f"gradient of {name} with {terms}")


def images(batch=2, size=64, seed=0):
    return torch.rand(batch, 3, size, size, generator=generator(seed))


def on_both(module):
    """``(cpu, cuda)``: ``module`` and a copy of it on the CUDA device."""
    return module, copy.deepcopy(module).to(CUDA)


@pytest.mark.parametrize("name", list_models())
def test_model_trains_on_cuda_as_on_cpu(name):
    torch.manual_seed(0)
    results = []
    for model in on_both(create(name)):
        device = next(model.parameters()).device
        loss, logits = objective(model, images().to(device), torch.tensor([0, 1], device=device))
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        results.append((logits, torch.cat([g.flatten() for g in grads])))
    (cpu_logits, cpu_grads), (cuda_logits, cuda_grads) = results
    assert cuda_logits.device.type == CUDA.type
    assert relative_error(cuda_logits, cpu_logits) < MODEL_TOL
    assert relative_error(cuda_grads, cpu_grads) < MODEL_TOL


@pytest.mark.parametrize("name", list_models())
def test_probe_records_the_same_attention_on_cuda(name):
    torch.manual_seed(0)
    records = []
    for model in on_both(create(name).eval()):
        device = next(model.parameters()).device
        with torch.no_grad(), probe(model, heads=[0]) as rec:
            model(images().to(device))
        records.append(list(rec))
    cpu, cuda = records
    assert [r.name for r in cuda] == [r.name for r in cpu] and cpu
    for a, b in zip(cpu, cuda):
        assert b.weights.device.type == CUDA.type
        torch.testing.assert_close(b.weights.cpu(), a.weights, atol=5e-3, rtol=0, msg=lambda m, n=a.name: f"{n}: {m}")


@pytest.mark.parametrize("name", checkpoints.list())
def test_published_architecture_runs_on_cuda_as_on_cpu(name):
    torch.manual_seed(0)
    cpu, cuda = on_both(checkpoints.build(name))
    size = checkpoints.CHECKPOINTS[name].size  # 224, or 384
    with torch.no_grad():
        want = cpu(images(1, size))
        got = cuda(images(1, size).to(CUDA))
    assert got.device.type == CUDA.type and torch.isfinite(got).all()
    assert relative_error(got, want) < MODEL_TOL
