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

It speaks plotly's private widget protocol: the ``_py2js_*`` edit messages and ``_js2py_*``
reports of ``plotly.basewidget.BaseFigureWidget``, its ``_widget_data`` / ``_widget_layout`` /
``_config`` traits, anywidget's ``_esm`` (overridden) and ``get_state`` (overridden). Those can
change in any plotly release, so the notebooks extra pins the range tested (``PLOTLY_RANGE``,
also in pyproject.toml and environment.yml) and ``check_plotly`` stops with a clear message when
the installed plotly lacks a name. The class is built on first use (``FigureWidget``), after
``setup()``: importing this module imports no plotly widget code.

>>> from vizattn.widgets.figure import FigureWidget
>>> fig = FigureWidget(layout=dict(width=300))
>>> isinstance(fig, go.FigureWidget), "PLOTLY_SOURCE" in fig._esm
(True, True)
"""

from __future__ import annotations

import functools
import json
import pathlib
import re
import warnings

import plotly
import plotly.graph_objects as go

from ..plotly_startup import defer_nbformat

__all__ = ["FigureWidget", "setup", "check_plotly", "PLOTLY_RANGE"]  # noqa: F822 (FigureWidget: __getattr__)

# the plotly releases whose private widget protocol this module is tested against: >= first, < last
PLOTLY_TESTED = ((7, 1), (7, 2))
PLOTLY_RANGE = ">={}.{},<{}.{}".format(*PLOTLY_TESTED[0], *PLOTLY_TESTED[1])
# the traits of plotly's FigureWidget that figure.js reads and writes (message names as basewidget.py has them)
PRIVATE_TRAITS = ("_widget_data", "_widget_layout", "_config", "_py2js_update", "_py2js_restyle", "_py2js_relayout",
                  "_py2js_addTraces", "_py2js_deleteTraces", "_py2js_moveTraces", "_py2js_animate",
                  "_js2py_pointsCallback", "_js2py_relayout", "_js2py_restyle")
PLOTLY_JS = pathlib.Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def _version(text: str) -> tuple[int, ...]:
    """``"7.1.0"`` -> ``(7, 1)``: the leading digits of the first two parts."""
    return tuple(int(re.match(r"\d*", part).group() or 0) for part in text.split(".")[:2])


def check_plotly() -> None:
    """Stop with ``ImportError`` if plotly lacks a private name this module speaks; warn outside ``PLOTLY_RANGE``.

    >>> check_plotly()   # the plotly installed with the notebooks extra
    """
    from plotly.basewidget import BaseFigureWidget

    missing = [name for name in PRIVATE_TRAITS if name not in BaseFigureWidget.class_trait_names()]
    missing += [name for name in ("_esm", "get_state") if not hasattr(BaseFigureWidget, name)]
    missing += [] if PLOTLY_JS.is_file() else ["package_data/plotly.min.js"]
    if missing:
        raise ImportError(f"vizattn's explorers need plotly{PLOTLY_RANGE} (their figure speaks the private widget "
                          f"protocol of those releases); plotly {plotly.__version__} lacks {', '.join(missing)}: "
                          f"pip install 'plotly{PLOTLY_RANGE}'")
    if not PLOTLY_TESTED[0] <= _version(plotly.__version__) < PLOTLY_TESTED[1]:
        warnings.warn(f"vizattn's explorers are tested with plotly{PLOTLY_RANGE}; plotly {plotly.__version__} has "
                      "the private names they use, but its widget messages may differ", stacklevel=2)


def _module() -> str:
    """The anywidget module: plotly.js as a string constant, then ``figure.js``."""
    view = pathlib.Path(__file__).with_name("figure.js").read_text(encoding="utf-8")
    return f"const PLOTLY_SOURCE = {json.dumps(PLOTLY_JS.read_text(encoding='utf-8'))};\n{view}"


@functools.cache
def setup() -> None:
    """Prepare plotly for the explorers, once per process: before plotly's widget code is first imported,
    defer its import of nbformat (``vizattn.plotly_startup``: seconds of a notebook's start-up), then
    ``check_plotly``. The first ``FigureWidget`` (an explorer's constructor) calls it; a notebook may call
    ``vizattn.widgets.setup()`` in its first cell to learn early that its plotly will not do.

    >>> setup(); setup()   # the second call does nothing
    """
    defer_nbformat()
    check_plotly()


@functools.cache
def _figure_widget() -> type:
    setup()

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

    FigureWidget.__module__, FigureWidget.__qualname__ = __name__, "FigureWidget"
    return FigureWidget


def __getattr__(name: str):
    """``FigureWidget``: the class, built on first use after ``setup()`` (PEP 562)."""
    if name == "FigureWidget":
        return _figure_widget()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
