"""The explorers' figure: plotly's ``FigureWidget`` with a browser side that applies edits as sent.

plotly's own front end adds a marker to every edit from Python (so that plotly.js does not report
it back), and plotly.js answers that unknown attribute with a full replot of the figure: moving two
outline shapes costs a redraw of every trace. ``FigureWidget`` here keeps plotly's Python side
whole (``fig.data``, ``fig.layout``, ``batch_update``, ``on_click``, the same messages) and replaces
only the browser module (``figure.js``), which hands each edit to plotly.js unmarked and tells its
own edits from the user's (zoom, legend clicks) by keeping count of those still being applied.
Reported back to Python: clicks (``on_click``), zoom and pan (``plotly_relayout``), legend toggles
(``plotly_restyle``); hover and selection events are not sent, so a mouse moving over a figure
costs the kernel nothing.

The module carries plotly.js (``plotly.min.js``, the build plotly's Python package ships), as
plotly's own widget carries its bundle; the page evaluates it once, however many figures arrive.

>>> fig = FigureWidget(layout=dict(width=300))
>>> isinstance(fig, go.FigureWidget), "PLOTLY_SOURCE" in fig._esm
(True, True)
"""

from __future__ import annotations

import json
import pathlib

import plotly
import plotly.graph_objects as go

__all__ = ["FigureWidget"]


def _module() -> str:
    """The anywidget module: plotly.js as a string constant, then ``figure.js``."""
    plotly_js = pathlib.Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    view = pathlib.Path(__file__).with_name("figure.js").read_text(encoding="utf-8")
    return f"const PLOTLY_SOURCE = {json.dumps(plotly_js.read_text(encoding='utf-8'))};\n{view}"


class FigureWidget(go.FigureWidget):
    """A plotly ``FigureWidget`` whose edits cost the browser what they change, not a full redraw."""

    _esm = _module()

    def get_state(self, key=None, drop_defaults=False):
        """The widget's state, with the figure as it is now: a page that loads the figure later
        (reopened while the kernel runs) draws what Python holds, not the figure as first sent."""
        state = super().get_state(key, drop_defaults)
        for name, now in (("_widget_data", "_data"), ("_widget_layout", "_layout")):
            if name in state and hasattr(self, now):  # (not while plotly's constructor opens the widget)
                state[name] = self.trait_metadata(name, "to_json")(getattr(self, now), self)
        return state
