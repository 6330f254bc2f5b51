"""vizattn.exercises: every check accepts its solution, rejects wrong answers, and never raises;
every notebook exercise starts unanswered and is checked by one of them."""

import ast
import json
from pathlib import Path

import pytest

from vizattn import exercises

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

# check -> (the solution, wrong answers: too small, too large, of the wrong kind)
CASES = {
    "na_reach": (16, [15, 2, 17, "16", 1.5]),
    "sasa_padding": (7, [5, 9, 6, 0, True]),
    "dilations": ((1, 3, 9), [(1, 2, 4), (1, 1, 1), (1, 3), (1, 3, 27), "139"]),
    "block_share": (4, [2, 8, 3, 0]),
    "lda_groups": (2, [4, 1, 3, -2]),
    "lavit_channels": (128, [120, 136, 130, 0]),
    "na_depth": (4, [3, 5, 0, 1000]),
    "break_even": (192, [96, 384, 0]),
    "grid_spacing": (8, [7, 4, 16, 0, 8.0]),
    "swin_reach": (4, [3, 5, 0, 7, "4"]),
}


def test_every_check_has_a_case():
    assert set(CASES) == set(exercises.__all__) - {"Verdict"}


@pytest.mark.parametrize("name", CASES)
def test_the_check_accepts_the_solution_and_rejects_wrong_answers(name):
    check = getattr(exercises, name)
    solution, wrong = CASES[name]
    verdict = check(solution)
    assert verdict.correct and repr(verdict).startswith("correct: "), verdict
    for answer in [None, ..., *wrong]:
        verdict = check(answer)
        assert not verdict.correct and repr(verdict).startswith("not yet — "), (answer, verdict)


def _exercise_calls(path):
    """(answer cell source, checks called) of each notebook exercise: the cell after '## Exercise'."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    out = []
    for n, cell in enumerate(cells):
        if cell["cell_type"] == "markdown" and "## Exercise" in "".join(cell["source"]):
            answer, check = ("".join(c["source"]) for c in cells[n + 1:n + 3])
            calls = [node.func.attr for node in ast.walk(ast.parse(check))
                     if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                     and isinstance(node.func.value, ast.Name) and node.func.value.id == "exercises"]
            out.append((answer, calls))
    return out


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("0*.ipynb")), ids=lambda p: p.name)
def test_each_notebook_exercise_starts_unanswered_and_calls_a_check(path):
    found = _exercise_calls(path)
    assert len(found) == 1, f"{path.name}: expected one '## Exercise' cell; found {len(found)}"
    for answer, calls in found:
        tree = ast.parse(answer)
        values = [node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)]
        assert values and all(isinstance(v, ast.Constant) and v.value in (None, ...) for v in values), \
            f"{path.name}: the answer cell must start unanswered (None); got {answer!r}"
        assert len(calls) == 1 and calls[0] in CASES, f"{path.name}: the check cell calls {calls}"


def test_every_check_is_used_by_a_notebook():
    used = {c for path in NOTEBOOKS.glob("0*.ipynb") for _, calls in _exercise_calls(path) for c in calls}
    assert used == set(CASES)
