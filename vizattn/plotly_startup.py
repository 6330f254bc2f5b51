"""Plotly's first FigureWidget without its eager import of nbformat (notebook start-up time).

``plotly.io._renderers``, imported with the first ``FigureWidget``, imports ``nbformat`` at once,
which imports ``jsonschema`` and its format checkers (``rfc3987_syntax`` builds a grammar): seconds
before an explorer can draw, for a module only plotly's static mime renderers use. Calling
``defer_nbformat()`` before plotly's widgets are imported leaves ``nbformat`` to be imported when
those renderers first ask for it (``nbformat.__version__``), so a static ``go.Figure`` still shows.
``vizattn.widgets.setup()`` calls it before the explorers' first figure; importing this module
changes nothing. A plotly without the internals it relies on is imported as usual.
"""

from __future__ import annotations

import importlib
import sys
import types

__all__ = ["defer_nbformat"]


class _Deferred(types.ModuleType):
    """Stands for a module and imports it on first attribute access."""

    def __getattr__(self, name):
        return getattr(importlib.import_module(self.__name__), name)


def defer_nbformat() -> None:
    """Import ``plotly.io._renderers`` with ``nbformat`` deferred (no-op once it is imported).

    >>> defer_nbformat(); import plotly.io._renderers as r
    >>> r.nbformat.__version__ >= "4.2"   # imported here, on first use
    True
    """
    if "plotly.io._renderers" in sys.modules:
        return
    from _plotly_utils import optional_imports

    not_importable = getattr(optional_imports, "_not_importable", None)
    if not isinstance(not_importable, set):  # another plotly: import it as it is
        return
    skipped = "nbformat" not in not_importable
    not_importable.add("nbformat")  # plotly's get_module then returns None
    try:
        renderers = importlib.import_module("plotly.io._renderers")
    finally:
        if skipped:
            not_importable.discard("nbformat")
    if renderers.nbformat is None:
        renderers.nbformat = _Deferred("nbformat")
