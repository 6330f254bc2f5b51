"""Prove or disprove vizattn's GPU path in one command: the CUDA tests, then ``attend`` timed against its baselines.

    python benchmarks/gpu.py                    # from the repository root; under 6 minutes on an H100
    python benchmarks/gpu.py --budget 200       # a shorter run: the timing rows that do not fit are skipped, saying so

The run keeps to ``--budget`` seconds (default 330): the CUDA tests get at most ``--tests-timeout``, a timing row
starts only while there is time for it, and a watchdog ends a hung run 20 s after the budget, printing where it was.

1. Prints the device, its memory, and the torch, CUDA and Triton versions.
2. Runs the CUDA tests (``pytest -m cuda`` on ``CUDA_TESTS``: every pattern and CUDA backend against the CPU
   reference in three dtypes, the probe, the small models, the published architectures) in a child process and
   prints their counts. They need only torch, numpy and pytest. The child sees the repository on PYTHONPATH (vizattn
   need not be installed) and no C++ compiler (``CXX``): building the native CPU kernel would take a minute of GPU
   time, so the CPU side of the comparisons runs on attend's tiled backend.
3. Times ``attend`` (its default backend) against dense ``scaled_dot_product_attention`` with the pattern's
   ``[N, N]`` boolean mask and against FlexAttention compiled with the pattern's block mask, forward (no grad) and
   forward + backward, for NA k7, DiNAT k7 d2, block 7, grid 7, LDA I8 and global at 56², 96², 128² and 224², in
   bfloat16 with the batch and heads of a training step (``SIZES``), and prints the ratios and the peak GPU memory.
   The three outputs are checked against each other first. A row that would not fit the time budget or the free
   memory is skipped with a line saying so; a contender that runs out of memory is shown as ``OOM``.

It exits 1 on any failure: a failed CUDA test (or a skipped one, on a CUDA machine), contenders that disagree, an
error other than running out of memory. Without a CUDA device it is a dry run of the same code (tests/test_gpu.py
runs it): the CUDA tests are collected and all skipped, and the timings run on tiny CPU maps in float32, with
FlexAttention uncompiled and forward only (PyTorch has no CPU backward for it).
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # vizattn from this checkout, installed or not

from vizattn import attend  # noqa: E402
from vizattn.patterns import Block, Global, Grid, LongDistance, Neighborhood, axis_mask  # noqa: E402

CUDA_TESTS = ("tests/test_cuda.py",)  # every test marked `cuda` lives here (tests/test_gpu.py checks it)
PATTERNS = {
    "NA k7": Neighborhood(7),
    "DiNAT k7 d2": Neighborhood(7, dilation=2),
    "block 7": Block(7, pad=True),
    "grid 7": Grid(7, pad=True),
    "LDA I8": LongDistance(8, pad=True),
    "global": Global(),
}
# map side -> batch, 2 heads of 32: the first stage of NAT-Mini, MaxViT-T and CrossFormer-T. 56² is a 224-pixel
# image with NAT's 128 images per GPU; the larger maps (384 to 896 pixels) keep 260k-400k tokens per step.
SIZES = {56: 128, 96: 32, 128: 16, 224: 8}
DRY_SIZES = {15: 2}  # CPU dry run: a small odd map that every pattern fits, block, grid and LDA padded
HEADS, HEAD_DIM = 2, 32
AGREE = {torch.bfloat16: 3e-2, torch.float32: 1e-4}  # atol = rtol between the contenders' outputs
CONTENDERS = ("attend", "dense", "flex")


# ---------------------------------------------------------------------------------------------
# 1. the machine
# ---------------------------------------------------------------------------------------------
def versions() -> str:
    try:
        triton = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton = "not installed"
    return (
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, Triton {triton}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )


def device_line(device: torch.device) -> str:
    if device.type != "cuda":
        return "device: CPU. No CUDA device: dry run (CUDA tests collected and skipped, timings on tiny CPU maps)"
    p = torch.cuda.get_device_properties(device)
    return f"device: {p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB"


# ---------------------------------------------------------------------------------------------
# 2. the CUDA tests, in a child pytest
# ---------------------------------------------------------------------------------------------
def counts(junit: Path) -> dict[str, int]:
    """``{"tests", "failures", "errors", "skipped", "passed"}`` summed over a JUnit XML report's test suites."""
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    return {**n, "passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"]}


def verdict(n: dict[str, int] | None, returncode: int | None, cuda: bool) -> str | None:
    """None when the test run proves what it should, else why not. With CUDA every test must pass (a skip there
    hides a test that never ran); without it every test must be skipped (one that passes did not need the GPU)."""
    if n is None or returncode is None:
        return "the CUDA tests did not finish (timed out, or pytest wrote no report)"
    if n["tests"] == 0:
        return "no CUDA test was collected"
    if n["failures"] or n["errors"]:
        return f"{n['failures']} CUDA tests failed and {n['errors']} had errors"
    if cuda and n["skipped"]:
        return f"{n['skipped']} CUDA tests were skipped on a CUDA machine"
    if not cuda and n["passed"]:
        return f"{n['passed']} tests marked cuda passed without a CUDA device"
    if returncode != 0:
        return f"pytest exited with {returncode}"
    return None


def run_tests(cuda: bool, timeout: float) -> str | None:
    """Run ``CUDA_TESTS`` in a child pytest; print the counts; return why they fail, or None."""
    env = dict(os.environ, CXX="vizattn-gpu-check-no-compiler")  # no native kernel build (see the docstring)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "cuda.xml"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-o",
            "addopts=",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rfEs",
            "--tb=short",
            "-m",
            "cuda",
            f"--junitxml={junit}",
            *CUDA_TESTS,
        ]
        print("$ python " + " ".join(cmd[1:]), flush=True)
        start = time.monotonic()
        child = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
        try:
            returncode = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, 9)  # the child's whole session: pytest and anything it started
            child.wait()
            returncode = None
            print(f"CUDA tests: killed after {timeout:.0f} s (--tests-timeout)")
        n = counts(junit) if junit.exists() else None
    if n is not None:
        print(
            f"CUDA tests: {n['passed']} passed, {n['failures']} failed, {n['errors']} errors, {n['skipped']} "
            f"skipped, of {n['tests']} in {', '.join(CUDA_TESTS)} ({time.monotonic() - start:.0f} s)"
        )
    return verdict(n, returncode, cuda)


# ---------------------------------------------------------------------------------------------
# 3. timings
# ---------------------------------------------------------------------------------------------
def flex_api():
    """``(flex_attention, create_block_mask)``, or None for a torch without FlexAttention."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:
        return None
    return flex_attention, create_block_mask


def block_mask(pattern, H: int, W: int, device: torch.device):
    """The pattern as a FlexAttention block mask, from its per-axis membership (every pattern is separable)."""
    rows, cols = (axis_mask(rule).to(device) for rule in pattern.axes(H, W))  # [H, H], [W, W]

    def mask_mod(b, h, q_idx, kv_idx):
        return rows[q_idx // W, kv_idx // W] & cols[q_idx % W, kv_idx % W]

    create = flex_api()[1]
    # eager, the mask is evaluated on [N, N] index tensors (224²: tens of GB); compiled (one more compilation), on
    # one block at a time
    big = device.type == "cuda" and (H * W) ** 2 > 2**30
    try:
        return create(mask_mod, None, None, H * W, H * W, device=str(device), _compile=big)
    except TypeError:  # a torch whose create_block_mask has no _compile
        return create(mask_mod, None, None, H * W, H * W, device=str(device))


def prepare(name: str, pattern, H: int, W: int, device: torch.device, kernels: dict):
    """``fn(q, k, v) -> out``, all ``[B, heads, H, W, d]``, for one contender; builds what it keeps (masks)."""
    if name == "attend":
        return lambda q, k, v: attend(q, k, v, pattern)
    flat = lambda t: t.flatten(2, 3)  # noqa: E731 - [B, heads, N, d]
    if name == "dense":
        mask = None if isinstance(pattern, Global) else pattern.mask(H, W).to(device)  # [N, N]
        return lambda q, k, v: F.scaled_dot_product_attention(flat(q), flat(k), flat(v), attn_mask=mask).unflatten(
            2, (H, W)
        )
    blocks = block_mask(pattern, H, W, device)
    return lambda q, k, v: kernels["flex"](flat(q), flat(k), flat(v), block_mask=blocks).unflatten(2, (H, W))


def out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def clock(fn, sync, min_seconds, min_runs, max_runs=25) -> float:
    """Median seconds of ``fn()``, run at least ``min_runs`` times and until ``min_seconds`` (warm it up first)."""
    times = []
    while len(times) < min_runs or (sum(times) < min_seconds and len(times) < max_runs):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name, pattern, H, W, inputs, device, kernels) -> dict:
    """One contender on one map: ``{"fwd", "f+b"}`` seconds (None: not run), ``"peak"`` bytes, ``"out"``."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else lambda: None
    repeat = (0.1, 3) if cuda else (0, 1)  # (seconds, runs) at least; the CPU dry run only exercises the code
    q, k, v, grad = inputs
    detached = [t.detach() for t in (q, k, v)]  # FlexAttention refuses CPU inputs that require grad, even in no_grad
    base = torch.cuda.memory_allocated() if cuda else 0
    fn = prepare(name, pattern, H, W, device, kernels)

    def forward():
        with torch.no_grad():
            return fn(*detached)

    def step():
        torch.autograd.grad(fn(q, k, v), (q, k, v), grad)

    result = {"out": forward(), "f+b": None, "peak": None}  # the first call warms up (compiles on CUDA)
    result["fwd"] = clock(forward, sync, *repeat)
    if name == "flex" and not cuda:
        return result  # FlexAttention has no CPU backward
    step()
    if cuda:
        sync()
        torch.cuda.reset_peak_memory_stats()
        step()
        sync()
        result["peak"] = torch.cuda.max_memory_allocated() - base  # one forward + backward, with what fn keeps
    result["f+b"] = clock(step, sync, *repeat)
    return result


def dense_bytes(N: int, dtype: torch.dtype) -> int:
    """What dense SDPA keeps besides the inputs: the boolean [N, N] mask and the additive one it becomes."""
    return N * N * (1 + torch.finfo(dtype).bits // 8)


def row(label, pattern, size, batch, dtype, device, kernels) -> tuple[list[str], list[str]]:
    """The table cells of one pattern at one map size, and the failures found there."""
    H = W = size
    g = torch.Generator().manual_seed(0)
    shape = (batch, HEADS, H, W, HEAD_DIM)
    q, k, v = (torch.randn(shape, generator=g).to(device, dtype).requires_grad_() for _ in range(3))
    inputs = (q, k, v, torch.randn(shape, generator=g).to(device, dtype))
    results, failures = {}, []
    for name in CONTENDERS:
        if name == "flex" and kernels["flex"] is None:
            print(f"  {label} {size}²: flex skipped, this torch has no FlexAttention")
            continue
        if name == "dense" and device.type == "cuda" and not isinstance(pattern, Global):
            need, free = dense_bytes(H * W, dtype), torch.cuda.mem_get_info()[0]
            if need > 0.8 * free:
                print(
                    f"  {label} {size}²: dense skipped, its masks need {need / 2**30:.1f} GiB of "
                    f"{free / 2**30:.1f} GiB free"
                )
                results[name] = "OOM"
                continue
        try:
            results[name] = measure(name, pattern, H, W, inputs, device, kernels)
        except Exception as error:  # every contender's failure is reported, the run goes on
            if not out_of_memory(error):
                failures.append(f"{label} {size}² {name}: {type(error).__name__}: {str(error).splitlines()[0]}")
                print(f"  FAILED {failures[-1]}")
            else:
                print(f"  {label} {size}²: {name} ran out of GPU memory")
            results[name] = "OOM" if out_of_memory(error) else "error"
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    done = {n: r for n, r in results.items() if isinstance(r, dict)}
    if "attend" in done:
        for name, r in done.items():
            if name != "attend" and not torch.allclose(r["out"], done["attend"]["out"], AGREE[dtype], AGREE[dtype]):
                diff = (r["out"].float() - done["attend"]["out"].float()).abs().max().item()
                failures.append(f"{label} {size}²: {name} and attend disagree (max difference {diff:.2e})")
                print(f"  FAILED {failures[-1]}")
    return cells(label, size, batch, results), failures


def cells(label, size, batch, results) -> list[str]:
    def get(name, key):
        r = results.get(name)
        return r if isinstance(r, str) else "-" if r is None or r[key] is None else r[key]

    ms = lambda x: x if isinstance(x, str) else f"{x * 1e3:.2f}"  # noqa: E731
    mib = lambda x: x if isinstance(x, str) else f"{x / 2**20:.0f}"  # noqa: E731
    ratio = lambda a, b: "-" if isinstance(a, str) or isinstance(b, str) else f"{a / b:.2f}"  # noqa: E731
    out = [label, f"{size}²", f"{batch}×{HEADS}"]
    for step in ("fwd", "f+b"):
        out += [ms(get(n, step)) for n in CONTENDERS]
        out += [ratio(get("attend", step), get(n, step)) for n in CONTENDERS[1:]]
    return out + [mib(get(n, "peak")) for n in CONTENDERS]


HEADER = (
    "| pattern | map | B×heads | attend fwd | dense fwd | flex fwd | ÷dense | ÷flex "
    "| attend f+b | dense f+b | flex f+b | ÷dense | ÷flex | peak attend | peak dense | peak flex |"
)


def run_timings(device: torch.device, deadline: float) -> list[str]:
    """Print the timing table; return the failures."""
    cuda = device.type == "cuda"
    sizes, dtype = (SIZES, torch.bfloat16) if cuda else (DRY_SIZES, torch.float32)
    api = flex_api()
    kernels = {"flex": None if api is None else torch.compile(api[0], dynamic=False) if cuda else api[0]}
    if cuda:  # attend's FlexAttention and ours share torch.compile's cache: 4 entries a map (theirs and ours, with
        # and without grad; a mask_mod is matched by its code), 16 in all, over the default limit of 8
        for knob in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, knob):
                setattr(torch._dynamo.config, knob, 128)
                print(f"torch._dynamo.config.{knob} = 128: every timed shape stays compiled")
                break
    print(
        f"\n{dtype}, head_dim {HEAD_DIM}. Times in ms: the median of at least 3 runs and 0.1 s after a warm-up run "
        "(CPU: one run). ÷: attend's time divided by the baseline's (below 1: attend is faster). Peak: MiB of GPU "
        "memory one forward + backward adds to the inputs, what a contender keeps (masks) included. -: not run "
        "(CPU: no peak; no FlexAttention backward).\n"
    )
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1), flush=True)
    failures = []
    for size, batch in sizes.items():
        for label, pattern in PATTERNS.items():
            if time.monotonic() > deadline:
                print(f"  {label} {size}²: skipped, the time budget (--budget) is spent")
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # eager FlexAttention on the CPU; the tiled fallback's notice
                line, found = row(label, pattern, size, batch, dtype, device, kernels)
            failures += found
            print("| " + " | ".join(line) + " |", flush=True)
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=330, help="seconds for the whole run (default 330)")
    parser.add_argument("--tests-timeout", type=float, default=200, help="seconds for the CUDA tests (default 200)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    faulthandler.dump_traceback_later(args.budget + 20, exit=True)  # a hung step: print where, exit 1
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    print(device_line(device))
    print(versions(), flush=True)
    failures = []
    why = run_tests(cuda, min(args.tests_timeout, args.budget))
    if why:
        failures.append(why)
    # a row may take ~45 s on CUDA (its first forward and backward compile): none starts later than that
    failures += run_timings(device, start + args.budget - (45 if cuda else 0))
    faulthandler.cancel_dump_traceback_later()
    print(f"\n{time.monotonic() - start:.0f} s in all")
    if failures:
        print(f"FAILED ({len(failures)}):\n  " + "\n  ".join(failures))
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
