"""vizattn.widgets.figure, headless: the module it sends to the browser, the edits its front end
handles, and the state a page that loads it later receives (the browser side: test_figure_browser.py)."""

import json
import re
from pathlib import Path

import plotly
import plotly.graph_objects as go
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
