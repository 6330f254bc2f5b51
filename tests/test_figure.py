"""vizattn.widgets.figure, headless: the module it sends to the browser, the edits its front end
handles, the state a page that loads it later receives (the browser side: test_figure_browser.py), and
plotly's set-up (``setup``: explicit, not a side effect of importing vizattn.widgets)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import plotly
import plotly.graph_objects as go
import pytest
from plotly.basewidget import BaseFigureWidget

from vizattn.widgets.figure import FigureWidget

VIEW = Path(__file__).resolve().parent.parent / "vizattn" / "widgets" / "figure.js"


def test_the_module_is_plotly_js_then_the_view():
    head, rest = FigureWidget._esm.split("\n", 1)
    literal = re.fullmatch(r"const PLOTLY_SOURCE = (.*);", head).group(1)
    shipped = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    assert json.loads(literal) == shipped.read_text(encoding="utf-8")
    assert rest == VIEW.read_text(encoding="utf-8")


def test_the_front_end_applies_every_edit_python_sends():
    sent = {name for name in BaseFigureWidget.class_trait_names() if name.startswith("_py2js_")}
    # plotly sends these two only in answer to the defaults its own front end reports; this one reports none
    answers = {"_py2js_removeLayoutProps", "_py2js_removeTraceProps"}
    applied = set(re.findall(r"^\s*(_py2js_\w+): \(Plotly, el, m\) =>", VIEW.read_text(), flags=re.M))
    assert applied == sent - answers, (applied, sent)


def test_a_page_that_loads_the_figure_later_gets_it_as_python_holds_it():
    figures = [kind(go.Scatter(x=[0, 1], y=[0, 1]), layout=dict(title=dict(text="first")))
               for kind in (go.FigureWidget, FigureWidget)]
    for fig in figures:
        fig.data[0].y = [5, 6]
        fig.update_layout(title_text="edited")
    plotly_state, state = (fig.get_state() for fig in figures)
    assert list(state["_widget_data"][0]["y"]) == [5, 6] and state["_widget_layout"]["title"] == {"text": "edited"}
    # plotly's own widget would send the figure as it was created
    assert list(plotly_state["_widget_data"][0]["y"]) == [0, 1]
    assert plotly_state["_widget_layout"]["title"] == {"text": "first"}
    assert FigureWidget().get_state("_esm").keys() == {"_esm"}  # a single trait asked for: only that one


def test_importing_the_explorers_leaves_plotly_alone_until_the_first_figure_sets_it_up():
    code = """
import sys
import vizattn.widgets as w
print('plotly.basewidget' in sys.modules, 'plotly.io._renderers' in sys.modules)
ex = w.PartitionExplorer("NA", size=8, kernel=3)
from vizattn.widgets import figure
print(isinstance(ex.figures[0], figure.FigureWidget), 'nbformat' in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    # nothing of plotly's widget code at import; the explorer's figure ran setup(): nbformat left for later
    assert out.stdout.split() == ["False", "False", "True", "False"]


def test_a_plotly_without_the_private_names_is_stopped_with_the_range_supported(monkeypatch):
    from vizattn.widgets import figure

    figure.check_plotly()  # the installed plotly has them all
    monkeypatch.setattr(figure, "PRIVATE_TRAITS", (*figure.PRIVATE_TRAITS, "_py2js_vanished"))
    with pytest.raises(ImportError, match=rf"plotly>=7\.1,<7\.2 .*plotly {re.escape(plotly.__version__)} lacks "
                                          r"_py2js_vanished: pip install 'plotly>=7\.1,<7\.2'"):
        figure.check_plotly()
    monkeypatch.undo()
    monkeypatch.setattr(figure, "PLOTLY_TESTED", ((6, 0), (6, 1)))  # names all there, release outside the range
    with pytest.warns(UserWarning, match=f"tested with plotly.*plotly {re.escape(plotly.__version__)} has"):
        figure.check_plotly()
