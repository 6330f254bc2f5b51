"""The native backend (vizattn/backends/native.py, vizattn/csrc/slot_attention.cpp) against the reference.

test_attend.py runs it through the brute-force cases and gradcheck with head_dim 4 (the kernel's
plain loops); here the register paths (rows of 16 float32 or 8 float64 values), threads, and
what happens without a compiler or without a build. In CI (CI=true) the kernel must build: nothing is skipped there.
"""

import os

import pytest
import torch

from vizattn import attend, backends
from vizattn.backends import native
from vizattn.patterns import Block, Global, Grid, LocalWindow, LongDistance, Neighborhood

from conftest import generator

if not os.environ.get("CI") and native.unavailable() is not None:
    pytest.skip(f"the native kernel cannot be built here: {native.unavailable()}", allow_module_level=True)

PATTERNS = [
    (Neighborhood(3), 7, 9),
    (Neighborhood((5, 3), dilation=(2, 3)), 11, 10),  # uneven dilation groups
    (Neighborhood(3, dilation=3), 9, 10),  # dilation at its limit on rows
    (Neighborhood((7, 5)), 7, 5),  # kernel = map
    (LocalWindow(3), 5, 6),  # SASA's zero slots
    (LocalWindow((5, 3)), 4, 7),  # window taller than the map: rows of zero slots
    (LocalWindow(3, padding="mask"), 5, 6),
    (Block((2, 3), pad=True), 5, 7),
    (Block(3, shift=1), 6, 9),
    (Grid(2, pad=True), 5, 7),
    (LongDistance(3, pad=True), 7, 8),
    (Global(), 3, 5),
]
IDS = [f"{p}@{H}x{W}" for p, H, W in PATTERNS]


def inputs(pattern, B, heads, H, W, d, dtype, seed=0):
    g = generator(seed)
    q, k, v = (torch.randn(B, heads, H, W, d, generator=g, dtype=dtype) for _ in range(3))
    kh, kw = pattern.extent(H, W)
    bias = torch.randn(heads, 2 * kh - 1, 2 * kw - 1, generator=g, dtype=dtype)
    rel = (torch.randn(heads, 2 * kh - 1, d // 2, generator=g, dtype=dtype),
           torch.randn(heads, 2 * kw - 1, d - d // 2, generator=g, dtype=dtype))
    return q, k, v, bias, rel


@pytest.mark.parametrize("dtype, d, tol", [(torch.float32, 16, 2e-5), (torch.float32, 32, 2e-5),
                                           (torch.float64, 8, 1e-10), (torch.float64, 24, 1e-10)])
@pytest.mark.parametrize("pattern, H, W", PATTERNS, ids=IDS)
def test_register_paths_equal_the_reference(pattern, H, W, dtype, d, tol):
    q, k, v, bias, rel = inputs(pattern, 2, 3, H, W, d, dtype)
    for kwargs in ({}, {"bias": bias}, {"bias": bias, "rel_emb": rel, "scale": 0.3}):
        want, want_w = attend(q, k, v, pattern, backend="reference", return_weights=True, **kwargs)
        got, got_w = attend(q, k, v, pattern, backend="native", return_weights=True, **kwargs)
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)
        torch.testing.assert_close(got_w, want_w, atol=tol, rtol=tol)


@pytest.mark.parametrize("pattern, H, W", PATTERNS[:8], ids=IDS[:8])
def test_gradcheck_on_the_register_path(pattern, H, W):
    # float64 rows of 8: the vector path; bias and rel_emb reach the kernel as terms; weights too
    q, k, v, bias, (row, col) = inputs(pattern, 2, 2, H, W, 8, torch.float64)
    tensors = tuple(t.requires_grad_() for t in (q, k, v, bias, row, col))

    def both(q, k, v, bias, row, col):
        return attend(q, k, v, pattern, bias=bias, rel_emb=(row, col), return_weights=True, backend="native")

    assert torch.autograd.gradcheck(both, tensors, fast_mode=True)


def test_gradients_equal_the_reference_with_a_batched_term():
    # terms [B, heads, N, K] (rel_emb) and [1, heads, N, K] (bias) summed back to their shapes
    pattern, H, W = LocalWindow(5), 9, 8
    q, k, v, bias, rel = inputs(pattern, 2, 4, H, W, 16, torch.float32)
    tensors = [t.requires_grad_() for t in (q, k, v, bias, *rel)]
    grads = []
    for backend in ("reference", "native"):
        out, w = attend(q, k, v, pattern, bias=bias, rel_emb=rel, return_weights=True, backend=backend)
        loss = (out * out.detach().sin()).sum() + (w * w.detach().cos()).sum()
        grads.append(torch.autograd.grad(loss, tensors))
    for want, got in zip(*grads):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)


def test_results_do_not_depend_on_the_thread_count():
    # dk and dv are summed per key from the inverse table in a fixed order: a racing scatter
    # (or any order that follows the threads) would change the bits. The bias gradient is summed
    # by torch's own (threaded) index backward: close, not bitwise.
    pattern, H, W = Neighborhood(7, dilation=2), 23, 19
    q, k, v, bias, _ = inputs(pattern, 2, 3, H, W, 32, torch.float32)
    tensors = [t.requires_grad_() for t in (q, k, v, bias)]
    runs, threads = [], torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            out = attend(q, k, v, pattern, bias=bias, backend="native")
            runs.append((out, *torch.autograd.grad((out * out.detach().cos()).sum(), tensors)))
    finally:
        torch.set_num_threads(threads)
    for run in runs[1:]:
        for want, got in zip(runs[0][:4], run[:4]):  # out, dq, dk, dv
            assert torch.equal(got, want)
        torch.testing.assert_close(run[4], runs[0][4])


def test_auto_picks_native_on_cpu_for_small_windows_and_groups():
    q = torch.zeros(1, 1, 64, 64, 16)
    for pattern in (Neighborhood(7), Neighborhood(16), LocalWindow(7), Block(7, pad=True), Grid(7, pad=True),
                    LongDistance(10, pad=True)):  # K = 49, 256, 49, 49, 49 (LDA: groups of ceil(64 / 10)^2)
        assert backends.choose(q, pattern, None, False).NAME == "native", pattern
    for pattern in (Global(), Neighborhood(17), Block(8), LongDistance(8)):  # K = 4096, 289, 64, 64
        assert backends.choose(q, pattern, None, False).NAME == "tiled", pattern
    assert backends.choose(q.half(), Neighborhood(3), None, False).NAME == "tiled"


def test_without_a_compiler_explicit_native_raises_and_auto_falls_back(monkeypatch):
    why = "no C++ compiler: 'c++' is not on PATH (install g++, or set CXX)"
    monkeypatch.setattr(native, "_extension", lambda: why)
    native._warn_once.cache_clear()
    q = torch.randn(1, 2, 6, 5, 8)
    with pytest.raises(ValueError, match="no C.. compiler"):
        attend(q, q, q, Neighborhood(3), backend="native")
    with pytest.warns(UserWarning, match="using the tiled backend: no C.. compiler"):
        out = attend(q, q, q, Neighborhood(3))
    torch.testing.assert_close(out, attend(q, q, q, Neighborhood(3), backend="reference"))
    native._warn_once.cache_clear()


def test_attend_never_compiles_it_falls_back_and_says_once_how_to_build(monkeypatch, tmp_path):
    import warnings

    import torch.utils.cpp_extension

    def compile_(*args, **kwargs):
        raise AssertionError("attend compiled the kernel")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", compile_)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # a cold cache
    native._extension.cache_clear()
    native._warn_once.cache_clear()
    try:
        q = torch.randn(1, 2, 6, 5, 8)
        with pytest.warns(UserWarning, match=r"not built .*build it once with `python -m vizattn.native build`"):
            out = attend(q, q, q, Neighborhood(3))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once per process
            again = attend(q, q, q, Neighborhood(3))
        torch.testing.assert_close(out, attend(q, q, q, Neighborhood(3), backend="tiled"))
        assert torch.equal(again, out)
        with pytest.raises(ValueError, match=r"not built .*python -m vizattn.native build"):
            attend(q, q, q, Neighborhood(3), backend="native")
        assert list(tmp_path.iterdir()) == []  # nothing was built
    finally:
        native._extension.cache_clear()
        native._warn_once.cache_clear()


def test_the_build_command_finds_the_build(capsys):
    from vizattn.native import main

    assert main(["build"]) == 0  # built (this module runs only then): nothing compiled, it says where it is
    assert str(native.build_directory()) in capsys.readouterr().out
    assert main([]) == 2


def test_native_refuses_other_dtypes():
    q = torch.randn(1, 2, 6, 5, 8).half()
    with pytest.raises(ValueError, match="float32 or float64 CPU tensors; got torch.float16"):
        attend(q, q, q, Neighborhood(3), backend="native")


def test_build_name_follows_the_instruction_set(monkeypatch):
    for capability in ("AVX512", "AVX2", "DEFAULT"):
        monkeypatch.setattr(native, "_capability", lambda c=capability: c)
        assert native.build_name().endswith("_" + capability.lower())
    assert set(native.ISA_FLAGS) == {"AVX512", "AVX2"}  # DEFAULT builds without -m flags


def test_the_package_ships_the_kernel_source_and_dev_py_builds_it():
    import fnmatch

    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")
    root = native.SOURCE.parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]
    relative = native.SOURCE.relative_to(root / "vizattn").as_posix()
    assert any(fnmatch.fnmatch(relative, glob) for glob in data["vizattn"]), (relative, data)
    assert f'"vizattn" / "csrc" / "{native.SOURCE.name}"' in (root / "dev.py").read_text(encoding="utf-8")
