"""benchmarks/gpu.py, the one-command GPU check: its CPU dry run passes and prints every part, the CUDA tests it runs
are all the tests marked ``cuda`` and import nothing a bare GPU machine lacks, and its verdict on test counts."""

import ast
import importlib.util
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu.py"
spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu)


def test_dry_run_on_cpu_runs_every_part_and_passes():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # a dry run on any machine
    # a budget that skips no row: the dry run is small, but this machine may be shared
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--budget", "900"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1000,
    )
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-4000:]
    assert "No CUDA device: dry run" in out and "torch " + torch.__version__ in out
    n = re.search(r"CUDA tests: 0 passed, 0 failed, 0 errors, (\d+) skipped, of (\d+)", out)
    assert n and int(n[1]) == int(n[2]) > 0, out
    for size in gpu.DRY_SIZES:
        for label in gpu.PATTERNS:
            row = re.search(rf"^\| {re.escape(label)} \| {size}² \| (.*) \|$", out, re.M)
            assert row, f"no row for {label} at {size}²"
            cells = row[1].split(" | ")
            assert all(re.fullmatch(r"\d+\.\d\d", c) for c in cells[1:4] + cells[6:8]), cells  # attend, dense
    assert "FAILED" not in out and out.rstrip().endswith("OK")


def test_the_script_runs_every_test_marked_cuda():
    mark = re.compile(r"(?<![\"'])pytest\.mark\.cuda\b")  # the marker in code, not quoted as here
    marked = {f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py") if mark.search(p.read_text())}
    assert marked == set(gpu.CUDA_TESTS)


def test_cuda_tests_need_only_torch_numpy_and_pytest():
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/tests']; import test_cuda; "
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    lacking = {
        "natten",
        "plotly",
        "ipywidgets",
        "anywidget",
        "jupyterlab",
        "IPython",
        "timm",
        "hypothesis",
        "nbval",
        "playwright",
        "skimage",
        "PIL",
    }
    assert not lacking & set(ast.literal_eval(out)), out


COUNTS = dict(tests=10, failures=0, errors=0, skipped=0, passed=10)


@pytest.mark.parametrize(
    "n, returncode, cuda, why",
    [
        (COUNTS, 0, True, None),
        ({**COUNTS, "skipped": 10, "passed": 0}, 0, False, None),
        ({**COUNTS, "skipped": 1, "passed": 9}, 0, True, "1 CUDA tests were skipped on a CUDA machine"),
        (COUNTS, 0, False, "10 tests marked cuda passed without a CUDA device"),
        ({**COUNTS, "failures": 2, "passed": 8}, 1, True, "2 CUDA tests failed and 0 had errors"),
        ({**COUNTS, "tests": 0, "passed": 0}, 5, True, "no CUDA test was collected"),
        (None, None, True, "the CUDA tests did not finish"),
        (COUNTS, 3, True, "pytest exited with 3"),
    ],
)
def test_verdict_on_the_cuda_tests(n, returncode, cuda, why):
    got = gpu.verdict(n, returncode, cuda)
    assert got is None if why is None else got.startswith(why), got
