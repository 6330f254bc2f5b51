"""Static rules for the notebook suite (nbval runs the notebooks themselves; see pyproject.toml).

- Every committed notebook (``notebooks/*.ipynb``) carries no outputs, execution counts or widget
  state, and is at most 300 KB: ``python3 dev.py strip`` makes it so.
- The suite's notebooks (``notebooks/[0-9]*.ipynb``) are thin: the first code cell seeds torch, no
  code cell defines a function, class or lambda, at least one cell asserts, at least one builds a
  ``vizattn.widgets`` explorer, the first cell says what you will learn, plotly strings carry no
  LaTeX, and every notebook is linked from the tour and listed in the README.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import platform
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))
SUITE = sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
MAX_BYTES = 300_000
STRIP = "python3 dev.py strip"
EXPECTED = ["00_tour", "01_sasa", "02_neighborhood", "03_maxvit", "04_crossformer", "05_lavit",
            "06_receptive_fields", "07_cost_and_speed", "08_the_papers_models", "09_where_the_network_looks"]


def _dev():
    """dev.py as a module: the strip rule lives there, once."""
    spec = importlib.util.spec_from_file_location("vizattn_dev", ROOT / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _code_cells(nb: dict) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def _tree(source: str, where: str) -> ast.Module:
    # IPython syntax (magics, shell escapes) is not Python: blank those lines before parsing
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError as exc:
        pytest.fail(f"{where}: a code cell does not parse: {exc}")


def _widget_names() -> set[str]:
    import ipywidgets

    from vizattn import widgets

    return {name for name in widgets.__all__
            if isinstance(getattr(widgets, name), type) and issubclass(getattr(widgets, name), ipywidgets.Widget)}


def test_the_suite_is_complete():
    assert [p.stem for p in SUITE] == EXPECTED


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_committed_clean(path):
    """No outputs, execution counts or widget state; small. The fix is one command."""
    text = path.read_bytes()
    assert len(text) <= MAX_BYTES, f"{path.name} is {len(text):,} bytes (limit {MAX_BYTES:,}); run: {STRIP}"
    nb = json.loads(text)
    assert _dev().strip_notebook(nb) == nb, (
        f"{path.name} carries outputs, execution counts or widget state; run: {STRIP} (then commit)")


@pytest.mark.parametrize("path", SUITE, ids=lambda p: p.name)
def test_valid_notebook(path):
    nbformat = pytest.importorskip("nbformat")
    nbformat.validate(nbformat.read(str(path), as_version=4))
    nb = _load(path)
    # ipykernel's own spec: JupyterLab rewrites any other display name on opening (the notebook opens modified)
    assert nb["metadata"]["kernelspec"] == {"display_name": "Python 3 (ipykernel)", "language": "python",
                                            "name": "python3"}, path.name
    ids = [c["id"] for c in nb["cells"]]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate cell ids"


@pytest.mark.parametrize("path", SUITE, ids=lambda p: p.name)
def test_thin(path):
    """The d2l rule: import from vizattn, seed first, define nothing reusable, check yourself."""
    nb = _load(path)
    cells = _code_cells(nb)
    trees = [_tree(src, f"{path.name} cell {n}") for n, src in enumerate(cells)]
    assert cells and "torch.manual_seed(" in cells[0], f"{path.name}: the first code cell must seed (torch.manual_seed)"
    assert any(re.search(r"^\s*(from vizattn\b|import vizattn\b)", src, re.M) for src in cells), \
        f"{path.name}: does not import vizattn"

    defined = [(n, type(node).__name__) for n, tree in enumerate(trees) for node in ast.walk(tree)
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))]
    assert not defined, (f"{path.name}: notebooks are thin and define no functions or classes; found "
                         f"{defined} (code cell, node). Put a reusable helper into the package instead.")

    asserts = sum(isinstance(node, ast.Assert) for tree in trees for node in ast.walk(tree))
    assert asserts >= 1, f"{path.name}: has no assert cell; a notebook checks the claims it teaches"

    called = {node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
              for tree in trees for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert called & _widget_names(), f"{path.name}: builds no vizattn.widgets explorer"

    latex = [node.value for tree in trees for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str)
             and re.search(r"\$|\\\(|\\frac", node.value)]
    assert not latex, f"{path.name}: LaTeX in a code string (plotly labels do not render it offline): {latex}"

    first = "".join(nb["cells"][0]["source"]) if nb["cells"][0]["cell_type"] == "markdown" else ""
    assert first.startswith("# ") and "What you will learn" in first, \
        f"{path.name}: the first cell is a markdown title with 'What you will learn'"


def test_tour_links_every_notebook():
    cells = _load(NOTEBOOKS / "00_tour.ipynb")["cells"]
    text = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    missing = [stem for stem in EXPECTED[1:] if f"]({stem}.ipynb)" not in text]
    assert not missing, f"00_tour does not link to {missing}"


def test_readme_lists_the_notebooks():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## Notebooks" in readme
    section = readme.split("## Notebooks", 1)[1].split("\n## ", 1)[0]
    missing = [stem for stem in EXPECTED if f"{stem}.ipynb" not in section]
    assert not missing, f"README's Notebooks section does not list {missing}"


def test_strip_removes_outputs_and_widget_state(tmp_path):
    dev = _dev()
    nb = {"cells": [{"cell_type": "code", "execution_count": 3, "id": "a", "source": ["1"],
                     "metadata": {"tags": ["keep"], "execution": {"iopub.status.idle": "x"}, "scrolled": True},
                     "outputs": [{"output_type": "execute_result", "data": {"text/plain": ["1"]}, "metadata": {},
                                  "execution_count": 3}]},
                    {"cell_type": "markdown", "id": "b", "metadata": {}, "source": ["# hi"]}],
          "metadata": {"kernelspec": {"name": "python3"},
                       "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}}}},
          "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    dev.cmd_strip([str(path)])
    clean = _load(path)
    code = clean["cells"][0]
    assert code["outputs"] == [] and code["execution_count"] is None and code["metadata"] == {"tags": ["keep"]}
    assert "widgets" not in clean["metadata"] and clean["metadata"]["kernelspec"] == {"name": "python3"}
    assert clean["cells"][1] == nb["cells"][1]
    # language_info as the kernel reports it (JupyterLab rewrites any other on opening): this Python's version
    # when none was recorded, the recorded one kept
    assert clean["metadata"]["language_info"] == dict(dev.LANGUAGE_INFO, version=platform.python_version())
    assert dev.strip_notebook(dict(nb, metadata={"language_info": {"version": "3.10.1"}}))["metadata"] == {
        "language_info": dict(dev.LANGUAGE_INFO, version="3.10.1")}
    before = path.read_text(encoding="utf-8")
    dev.cmd_strip([str(path), "--check"])  # clean: no error, file untouched
    assert path.read_text(encoding="utf-8") == before
    path.write_text(json.dumps(nb), encoding="utf-8")
    with pytest.raises(dev.DevError, match="dev.py strip"):
        dev.cmd_strip(["--check", str(path)])
