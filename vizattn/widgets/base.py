"""What every explorer shares: the ``Explorer`` base class (one redraw per change of its state),
the helpers that edit a ``FigureWidget`` in place, and the shared cache of pretrained models.

>>> fig = blank_figure("nothing here")
>>> fig.layout.title.text, fig.layout.annotations[0].text
('nothing to draw', 'nothing here')
"""

from __future__ import annotations

import contextlib
import functools
import html

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch

from ..models import create
from . import static

__all__ = ["Explorer", "set_range", "side_by_side", "send", "replace", "explain", "blank_figure", "note_html",
           "one_thread", "pretrained"]


def set_range(slider, lo: int, hi: int) -> None:
    """Move a slider's bounds without ever passing through min > max (the value is clamped)."""
    if hi < slider.min:
        slider.min, slider.max = lo, hi
    else:
        slider.max, slider.min = hi, lo


class Explorer(widgets.VBox):
    """What the explorers share: a change of ``state`` calls ``_changed``, which redraws once
    through ``_update``; changes made while it runs (clamping, bounds) are absorbed, since
    ``_update`` reads the whole state anyway."""

    _busy = False

    def _changed(self, change=None) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            self._update()
        finally:
            self._busy = False

    def _set(self, **values) -> None:
        """Set several traits of ``state`` with one redraw."""
        self._busy = True
        try:
            for name, value in values.items():
                setattr(self.state, name, value)
        finally:
            self._busy = False
        self._changed()

    # -- without a kernel (vizattn.widgets.static) ------------------------------------------------
    def static_controls(self) -> list[dict]:
        """The controls the kernel-free form keeps: ``[{"label", "options": [(label, {trait: value} or
        explorer -> {trait: value})], "start"}]``, set in this order (``static.control`` builds one)."""
        raise NotImplementedError

    def static_panels(self) -> list:
        """The figures the kernel-free form draws, in the order of ``static_layout``'s rows."""
        return [self.figure]

    def static_layout(self) -> list[list[int]]:
        """Rows of panel indices (a row wraps when the page is narrow)."""
        return [list(range(len(self.static_panels())))]

    def static_texts(self) -> list:
        """The captions (``ipywidgets.HTML``) the kernel-free form shows under the figures."""
        return [self.message]

    def static_note(self) -> str:
        """HTML: what the kernel-free form keeps and what it cannot (``static.LIVE`` says how to run live)."""
        raise NotImplementedError

    def static_figure(self) -> dict:
        """Every state of ``static_controls`` as drawn by this explorer (``static.static_figure``)."""
        return static.static_figure(self)

    def _repr_mimebundle_(self, **kwargs):
        if static.active():  # a page without a kernel: the precomputed explorer instead of the widgets
            return {"text/plain": f"{type(self).__name__} (kernel-free)", "text/html": static.html(self)}
        return super()._repr_mimebundle_(**kwargs)


def side_by_side(panels) -> widgets.HBox:
    """Panels in a row that wraps onto the next line when the notebook is too narrow (not clipped)."""
    return widgets.HBox(list(panels), layout=widgets.Layout(flex_flow="row wrap"))


def _paths(properties: dict, prefix: str = "") -> dict:
    """Nested properties as plotly key paths, ``{"marker": {"size": 3}}`` -> ``{"marker.size": 3}``:
    what ``.update`` sets (lists and arrays are values)."""
    flat = {}
    for key, value in properties.items():
        if hasattr(value, "to_plotly_json"):
            value = value.to_plotly_json()
        if isinstance(value, dict) and value:
            flat.update(_paths(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


MATRICES = ("z", "customdata")  # trace properties that hold numeric matrices (heatmaps' values, hover data)


def _rows(value):
    """A numeric matrix (NaN or None in its gaps) as a list of float rows, else ``value`` itself.

    plotly's widget sends a 1-D numeric numpy array as a binary buffer, but turns any other array
    into nested JSON lists: rows go as binary (about half the bytes of the JSON), and plotly.js reads
    a list of typed rows as a matrix (NaN is a gap there).
    """
    if isinstance(value, (str, dict)) or not hasattr(value, "__len__") or not len(value):
        return value
    try:
        m = np.asarray(value, dtype=float)
    except (TypeError, ValueError):  # text, or ragged rows
        return value
    return list(np.ascontiguousarray(m)) if m.ndim == 2 else value


def _same(old, new) -> bool:
    """Whether a trace property already holds ``new`` (then plotly would not send it)."""
    if old is None or new is None:
        return old is new
    if isinstance(old, str) or isinstance(new, str):
        return isinstance(old, str) and isinstance(new, str) and old == new
    try:
        a, b = np.asarray(old), np.asarray(new)
        if a.dtype.kind in "fiub" and b.dtype.kind in "fiub":
            return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))
        return a.shape == b.shape and bool(np.array_equal(a, b))
    except (TypeError, ValueError):
        return False


def send(fig: go.FigureWidget, traces: dict[int, dict], layout: dict | None = None, arrays: dict | None = None):
    """Apply edits to a FigureWidget: ``traces`` ``{index: properties}``, ``layout`` properties
    (merged), ``arrays`` layout arrays such as ``shapes`` (replaced).

    As few messages as it safely takes: properties a trace already holds are dropped (also arrays
    equal to the figure's), traces that change the same properties share one ``plotly_update``, the
    layout rides with the first, and so do ``arrays`` of the length the figure has; arrays of
    another length follow in one more. Each message is one plotly.js call in the browser (one full
    redraw with plotly's own front end, which marks every edit; only what changed with the
    explorers' ``figure.FigureWidget``). Traces that change different properties never share one:
    plotly pads an update's properties that a trace leaves unchanged with ``undefined``, which
    plotly's own front end stores as null, erasing them (a marker's x and y, say).

    Numeric matrices (``MATRICES``) go as rows of floats, which the widget sends as binary buffers
    (``_rows``). ``plotly_update`` takes values as plotly.js would, unchecked: the explorers send figures plotly
    checked once, or their plain data in the same form (``plots.partition_spec``; tests compare
    the two), so a move does not build and check plotly objects again, which would be most of its
    time in the kernel.
    """
    groups: dict[tuple, dict] = {}
    for index, properties in traces.items():
        trace = fig.data[index]
        wired = {k: _rows(v) if k.rsplit(".", 1)[-1] in MATRICES else v for k, v in _paths(properties).items()}
        changed = {k: v for k, v in wired.items() if not _same(trace[k], v)}
        if changed:
            groups.setdefault(tuple(sorted(changed)), {})[index] = changed
    relayout = _paths(layout or {})
    arrays = {name: [item.to_plotly_json() if hasattr(item, "to_plotly_json") else item for item in value]
              for name, value in (arrays or {}).items()}
    now = {name: [item.to_plotly_json() for item in fig.layout[name]] for name in arrays}
    arrays = {name: value for name, value in arrays.items() if value != now[name]}
    # an array as long as the figure's rides with the update (plotly's cached items read the new one by index)
    relayout.update({name: arrays.pop(name) for name in list(arrays) if len(arrays[name]) == len(now[name])})
    for n, (keys, batch) in enumerate(groups.items() or [((), {})]):
        if batch or (relayout and n == 0):
            indexes = list(batch)
            fig.plotly_update(restyle_data={k: [batch[i][k] for i in indexes] for k in keys},
                              relayout_data=relayout if n == 0 else None, trace_indexes=indexes)
    if arrays:  # another length: through plotly's setters, which keep fig.layout.shapes (its items) in step
        with fig.batch_update():
            for name, value in arrays.items():
                fig.layout[name] = value


def replace(fig: go.FigureWidget, new: go.Figure | dict, keep=()) -> None:
    """Make ``fig`` show ``new``, a figure or its plain data ``{"data": [...], "layout": {...}}``
    (same trace types in the same order): every trace and the layout sent, ``shapes`` and
    ``annotations`` replaced rather than merged, axes made visible again (after ``explain``), the
    widget's own template kept. Traces whose index is in ``keep`` are not sent (they are known to
    be unchanged, e.g. a photo)."""
    if isinstance(new, go.Figure):  # per part: the figure's own to_plotly_json packs arrays as base64
        new = {"data": [t.to_plotly_json() for t in new.data], "layout": new.layout.to_plotly_json()}
    layout = dict(new.get("layout", {}))
    arrays = {key: layout.pop(key, ()) for key in ("shapes", "annotations")}
    layout.pop("template", None)
    for key, axis in layout.items():
        if key.startswith(("xaxis", "yaxis")):
            layout[key] = {"visible": True, **axis}
    send(fig, {t: {**data, "visible": True} for t, data in enumerate(new["data"]) if t not in keep},
         layout=layout, arrays=arrays)


def explain(fig, text: str) -> None:
    """Turn a panel into an explanation: traces hidden, ``text`` in the middle, no shapes."""
    note = dict(text=html.escape(text), showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    send(fig, {t: {"visible": False} for t in range(len(fig.data))},
          layout={"title": {"text": "nothing to draw"}, "xaxis": {"visible": False}, "yaxis": {"visible": False}},
          arrays={"shapes": (), "annotations": (note,)})


def blank_figure(text: str) -> go.Figure:
    """A figure with only ``text``: what ``to_figure`` gives for an invalid choice."""
    fig = go.Figure()
    fig.update_layout(title=dict(text="nothing to draw", x=0.5), plot_bgcolor="white",
                      annotations=[dict(text=html.escape(text), showarrow=False, xref="paper", yref="paper",
                                        x=0.5, y=0.5)],
                      xaxis=dict(visible=False), yaxis=dict(visible=False))
    return fig


def note_html(text: str) -> str:
    """``text`` escaped, in the explorers' caption style (13 px)."""
    return f"<span style='font-size: 13px'>{html.escape(text)}</span>"


@contextlib.contextmanager
def one_thread():
    """Run torch on one thread inside: the explorers' forward passes are small, and two threads
    contending for a shared CPU (a notebook server, other jobs) are several times slower.

    >>> with one_thread():
    ...     torch.get_num_threads()
    1
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def pretrained(name: str, task: str):
    """``create(name, pretrained=True, task=task)``, built once per process, shared by the explorers."""
    return create(name, pretrained=True, task=task)
