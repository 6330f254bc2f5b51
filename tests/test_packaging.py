"""pyproject.toml and environment.yml must list the same packages with the same lower bounds, and
the repository must be clean under ruff (configured in pyproject.toml), so that the README's test
command fails on a lint finding.

environment.yml is parsed by hand (PyYAML is not a dependency); pyproject.toml with
tomllib (Python >= 3.11), tomli if it happens to be installed, else a small line parser
that understands the simple string lists this project uses.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PYPROJECT = ROOT / "pyproject.toml"
ENVIRONMENT = ROOT / "environment.yml"

# conda-forge name -> PyPI name (after normalisation)
CONDA_TO_PYPI = {"pytorch": "torch"}
# conda-only entries that are not Python package requirements of vizattn
CONDA_ONLY = {"python", "pip"}

_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")
_LOWER_RE = re.compile(r">=\s*([0-9][^,;\s]*)")


def normalise(name: str) -> str:
    """PEP 503 normalisation plus the conda-forge renames."""
    name = re.sub(r"[-_.]+", "-", name).lower()
    return CONDA_TO_PYPI.get(name, name)


def parse_requirement(spec: str) -> tuple[str, str | None, str | None]:
    """'torch>=2.5' -> ('torch', None, '2.5'); 'vizattn[a,b]' -> ('vizattn', '[a,b]', None)."""
    spec = spec.split(";", 1)[0].strip()  # drop environment markers
    m = _NAME_RE.match(spec)
    if not m:
        raise ValueError(f"cannot parse requirement {spec!r}")
    name, extras, rest = m.groups()
    lower = _LOWER_RE.search(rest)
    return normalise(name), extras, (lower.group(1) if lower else None)


# --- pyproject.toml -------------------------------------------------------------------

def _load_toml(text: str) -> dict | None:
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            return None
    return tomllib.loads(text)


def _mini_pyproject(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """Fallback for Python 3.10 without tomli: string lists in [project] and its extras."""
    section = None
    deps: list[str] = []
    extras: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        code = re.match(r'^((?:[^"#]|"[^"]*")*)', raw).group(1)  # drop a trailing comment
        strings = re.findall(r'"([^"]*)"', code)
        rest = re.sub(r'"[^"]*"', '""', code).strip()
        if current is not None:  # inside a multi-line list
            current.extend(strings)
            if "]" in rest:
                current = None
            continue
        header = re.match(r"^\[([^\[\]]+)\]$", rest)
        if header:
            section = header.group(1).strip()
            continue
        m = re.match(r"^([A-Za-z0-9_-]+)\s*=\s*\[(.*)$", rest)
        if not m:
            continue
        key, tail = m.groups()
        if section == "project" and key == "dependencies":
            target = deps
        elif section == "project.optional-dependencies":
            target = extras.setdefault(key, [])
        else:
            continue
        target.extend(strings)
        if "]" not in tail:
            current = target
    return deps, extras


def pyproject_requirements(text: str) -> dict[str, str | None]:
    data = _load_toml(text)
    if data is not None:
        project = data["project"]
        deps = list(project.get("dependencies", []))
        extras = {k: list(v) for k, v in project.get("optional-dependencies", {}).items()}
    else:
        deps, extras = _mini_pyproject(text)
    out: dict[str, str | None] = {}
    for spec in deps + [s for group in extras.values() for s in group]:
        name, _extras, lower = parse_requirement(spec)
        if name == "vizattn":  # self-reference such as dev = ["vizattn[notebooks,test]"]
            continue
        out[name] = lower
    return out


# --- environment.yml ------------------------------------------------------------------

def environment_requirements(text: str) -> tuple[dict[str, str | None], list[str]]:
    """Top-level conda dependencies (name -> lower bound) and the pip sub-list."""
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
            name, _extras, lower = parse_requirement(value.replace(" ", ""))
            if name in CONDA_ONLY:
                continue
            conda[name] = lower
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
        elif pyproject[name] is None:
            problems.append(f"{name}: no '>=' lower bound in pyproject.toml")
        elif pyproject[name] != conda[name]:
            problems.append(
                f"{name}: lower bound {pyproject[name]} in pyproject.toml "
                f"but {conda[name]} in environment.yml"
            )
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


def test_mini_pyproject_parser_agrees_with_tomllib():
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")
    text = PYPROJECT.read_text(encoding="utf-8")
    data = tomllib.loads(text)["project"]
    deps, extras = _mini_pyproject(text)
    assert deps == data["dependencies"]
    assert extras == data["optional-dependencies"]


def test_checker_reports_differences():
    """The comparison must be able to fail: missing packages and changed bounds."""
    py = pyproject_requirements(
        '[project]\ndependencies = ["torch>=2.5", "numpy>=1.24"]\n'
        '[project.optional-dependencies]\nx = ["plotly>=6"]\ndev = ["vizattn[x]"]\n'
    )
    assert py == {"torch": "2.5", "numpy": "1.24", "plotly": "6"}
    conda, pip = environment_requirements(
        "name: t\nchannels:\n  - conda-forge\ndependencies:\n  - python>=3.10\n  - pip\n"
        "  - pytorch>=2.5\n  - numpy >=1.20\n  - scikit-image>=0.22\n  - pip:\n      - -e .\n"
    )
    assert conda == {"torch": "2.5", "numpy": "1.20", "scikit-image": "0.22"}
    assert pip == ["-e ."]
    problems = mismatches(py, conda)
    assert any(p.startswith("plotly:") and "missing from environment.yml" in p for p in problems)
    assert any(p.startswith("scikit-image:") and "missing from pyproject.toml" in p for p in problems)
    assert any(p.startswith("numpy:") and "1.24" in p and "1.20" in p for p in problems)
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
