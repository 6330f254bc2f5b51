"""pyproject.toml and environment.yml must list the same packages with the same version bounds, and
the repository must be clean under ruff (configured in pyproject.toml), so that the README's test
command fails on a lint finding.

environment.yml is parsed by hand (PyYAML is not a dependency); pyproject.toml with tomllib (Python
>= 3.11) or, on Python 3.10, tomli (the test extra installs it there).
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from conftest import ROOT

PYPROJECT = ROOT / "pyproject.toml"
ENVIRONMENT = ROOT / "environment.yml"

# conda-forge name -> PyPI name (after normalisation)
CONDA_TO_PYPI = {"pytorch": "torch"}
# conda-only entries that are not Python package requirements of vizattn
CONDA_ONLY = {"python", "pip"}

_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")



def normalise(name: str) -> str:
    """PEP 503 normalisation plus the conda-forge renames."""
    name = re.sub(r"[-_.]+", "-", name).lower()
    return CONDA_TO_PYPI.get(name, name)


def parse_requirement(spec: str) -> tuple[str, str | None, str | None]:
    """'torch>=2.5' -> ('torch', None, '>=2.5'); 'plotly>=7.1,<7.2' -> ('plotly', None, '<7.2,>=7.1') (bounds
    sorted, spaces dropped); 'vizattn[a,b]' -> ('vizattn', '[a,b]', None)."""
    spec = spec.split(";", 1)[0].strip()  # drop environment markers
    m = _NAME_RE.match(spec)
    if not m:
        raise ValueError(f"cannot parse requirement {spec!r}")
    name, extras, rest = m.groups()
    bounds = ",".join(sorted(part.replace(" ", "") for part in rest.split(",") if part.strip()))
    return normalise(name), extras, bounds or None


# --- pyproject.toml -------------------------------------------------------------------

def pyproject_requirements(text: str) -> dict[str, str | None]:
    project = tomllib.loads(text)["project"]
    specs = list(project.get("dependencies", [])) + [
        spec for group in project.get("optional-dependencies", {}).values() for spec in group]
    out: dict[str, str | None] = {}
    for spec in specs:
        name, _extras, bounds = parse_requirement(spec)
        if name == "vizattn":  # self-reference such as dev = ["vizattn[notebooks,test]"]
            continue
        out[name] = bounds
    return out


# --- environment.yml ------------------------------------------------------------------

def environment_requirements(text: str) -> tuple[dict[str, str | None], list[str]]:
    """Top-level conda dependencies (name -> version bounds) and the pip sub-list."""
    conda: dict[str, str | None] = {}
    pip: list[str] = []
    in_deps = False
    dep_indent = None
    in_pip = False
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        line = raw.split(" #", 1)[0].rstrip()
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            in_deps = line.strip() == "dependencies:"
            in_pip = False
            continue
        if not in_deps:
            continue
        item = re.match(r"^(\s*)-\s*(.*)$", line)
        if not item:
            continue
        item_indent, value = len(item.group(1)), item.group(2).strip()
        if dep_indent is None:
            dep_indent = item_indent
        if item_indent == dep_indent:
            in_pip = False
            if value == "pip:":
                in_pip = True
                continue
            # conda match specs allow "name >=1.0" and "name>=1.0"
            name, _extras, bounds = parse_requirement(value.replace(" ", ""))
            if name in CONDA_ONLY:
                continue
            conda[name] = bounds
        elif in_pip:
            pip.append(value)
    return conda, pip


# --- tests ----------------------------------------------------------------------------

def mismatches(pyproject: dict[str, str | None], conda: dict[str, str | None]) -> list[str]:
    problems = []
    for name in sorted(set(pyproject) | set(conda)):
        if name not in conda:
            problems.append(f"{name}: in pyproject.toml but missing from environment.yml")
        elif name not in pyproject:
            problems.append(f"{name}: in environment.yml but missing from pyproject.toml")
        elif pyproject[name] is None or ">=" not in pyproject[name]:
            problems.append(f"{name}: no '>=' lower bound in pyproject.toml")
        elif pyproject[name] != conda[name]:
            problems.append(f"{name}: bounds {pyproject[name]} in pyproject.toml but {conda[name]} in environment.yml")
    return problems


def test_pyproject_and_environment_list_the_same_packages():
    py = pyproject_requirements(PYPROJECT.read_text(encoding="utf-8"))
    conda, _pip = environment_requirements(ENVIRONMENT.read_text(encoding="utf-8"))
    assert {"torch", "numpy", "jupyterlab", "pytest"} <= set(py), py
    problems = mismatches(py, conda)
    assert not problems, "pyproject.toml and environment.yml disagree:\n" + "\n".join(problems)


def test_environment_installs_the_package_itself():
    _conda, pip = environment_requirements(ENVIRONMENT.read_text(encoding="utf-8"))
    assert "-e ." in pip


def test_plotly_is_pinned_to_the_range_the_explorers_figure_is_tested_with():
    from vizattn.widgets import figure

    py = pyproject_requirements(PYPROJECT.read_text(encoding="utf-8"))
    assert py["plotly"] == parse_requirement("plotly" + figure.PLOTLY_RANGE)[2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the installed plotly is in the range and has every private name
        figure.check_plotly()


def test_checker_reports_differences():
    """The comparison must be able to fail: missing packages and changed bounds."""
    py = pyproject_requirements(
        '[project]\ndependencies = ["torch>=2.5", "numpy>=1.24", "ninja>=1.11,<2"]\n'
        '[project.optional-dependencies]\nx = ["plotly>=6"]\ndev = ["vizattn[x]"]\n'
    )
    assert py == {"torch": ">=2.5", "numpy": ">=1.24", "ninja": "<2,>=1.11", "plotly": ">=6"}
    conda, pip = environment_requirements(
        "name: t\nchannels:\n  - conda-forge\ndependencies:\n  - python>=3.10\n  - pip\n"
        "  - pytorch>=2.5\n  - numpy >=1.20\n  - ninja>=1.11\n  - scikit-image>=0.22\n  - pip:\n      - -e .\n"
    )
    assert conda == {"torch": ">=2.5", "numpy": ">=1.20", "ninja": ">=1.11", "scikit-image": ">=0.22"}
    assert pip == ["-e ."]
    problems = mismatches(py, conda)
    assert any(p.startswith("plotly:") and "missing from environment.yml" in p for p in problems)
    assert any(p.startswith("scikit-image:") and "missing from pyproject.toml" in p for p in problems)
    assert any(p.startswith("numpy:") and "1.24" in p and "1.20" in p for p in problems)
    assert any(p.startswith("ninja:") and "<2" in p for p in problems)  # an upper bound counts too
    assert not any(p.startswith("torch:") for p in problems)


# --- lint -----------------------------------------------------------------------------

def ruff(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``ruff check`` with this repository's configuration (ruff is a test dependency)."""
    cmd = [sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(PYPROJECT), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing():
    done = ruff(str(ROOT))
    assert "No module named ruff" not in done.stderr, "ruff is missing: pip install -e '.[test]'"
    assert done.returncode == 0, f"ruff check found problems (fix them, or run `ruff check --fix`):\n{done.stdout}"


def test_ruff_reports_a_finding(tmp_path):
    """The lint test must be able to fail: an unused import and an unsorted import block."""
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n\nprint(os.sep)\n")
    done = ruff(str(bad), cwd=tmp_path)
    assert done.returncode == 1 and "F401" in done.stdout and "I001" in done.stdout, done.stdout + done.stderr
def test_dev_py_installs_the_reference_extra_without_dependencies():
    """dev.py installs [reference] (timm) with --no-deps: its list must be the extra's."""
    import ast

    tree = ast.parse((ROOT / "dev.py").read_text(encoding="utf-8"))
    listed = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                  and any(getattr(t, "id", None) == "REFERENCE" for t in node.targets))
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")
    extra = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["optional-dependencies"]["reference"]
    assert listed == extra
    assert "reference" not in str(tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
                                  ["optional-dependencies"]["dev"])  # pip would pull torchvision


def test_every_data_file_of_the_package_is_in_its_package_data():
    """A file the code reads at run time (weights, the class list, the kernel's source, the figure's
    browser module) must ship in the wheel: each tracked non-Python file under vizattn/ matches a
    ``[tool.setuptools.package-data]`` pattern (setuptools' globs: ``**/`` also matches no folder)."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")
    patterns = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]["vizattn"]
    tracked = subprocess.run(["git", "ls-files", "vizattn"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    data = [Path(f).relative_to("vizattn").as_posix() for f in tracked if not f.endswith(".py")]
    assert "widgets/figure.js" in data

    def shipped(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/")) for p in patterns)

    assert [f for f in data if not shipped(f)] == []
