"""An explorer without a kernel: its states enumerated ahead through its own redraw code, shown by plotly.js.

``static_figure(explorer)`` moves the explorer's controls through a budgeted grid (the explorer's
``static_controls()``: each control a list of ``(label, {trait: value})`` options), redraws it each time
exactly as a slider move in JupyterLab would (``Explorer._set``), and records what its figures
(``static_panels()``) and captions (``static_texts()``) hold: a base figure per panel (the start, the
notebook's own settings) and, per state, the trace and layout properties that differ from it, each
distinct value stored once. ``html(explorer)`` is that as a page fragment: plain HTML controls (range
inputs and menus) and a few lines of JavaScript that look the state up and hand its figure to
``Plotly.react`` (plotly.js comes from the page: the site loads it once). plotly's own sliders cannot
combine two controls (a step is one fixed edit), hence the lookup. Numeric arrays travel as plotly.js
typed-array specs (``{"dtype", "bdata", "shape"}``), floats as float32.

With ``VIZATTN_STATIC=1`` in the kernel's environment (``python3 dev.py site`` sets it), every
explorer displays this fragment instead of its widgets, plotly figures render as HTML that expects
plotly.js on the page, and an ``ipywidgets.HTML`` shows its HTML (``install``).

>>> spec = {"base": [{"data": [{"z": [1]}], "layout": {"title": "a"}}], "values": [[2], "b"],
...         "patches": [[], [[0, "z", 0], [-1, "title", 1]]], "states": [[0], [1]], "texts": [], "shown": []}
>>> figure_at(spec, 1, 0)
{'data': [{'z': [2]}], 'layout': {'title': 'b'}}
"""

from __future__ import annotations

import base64
import html as _html
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np

__all__ = ["ENV", "LIVE", "active", "control", "spread", "options", "state_index", "static_figure", "figure_at",
           "decode", "html", "install"]

ENV = "VIZATTN_STATIC"
LIVE = ("Run the notebook live to use them: locally with <code>python3 dev.py lab</code>, or on Binder / Colab "
        "(see the README).")
_TYPES = {"f": "f4", "i": "i4", "u": "u4", "b": "u1"}


def active() -> bool:
    """Whether explorers and figures render kernel-free (``VIZATTN_STATIC=1``)."""
    return os.environ.get(ENV) == "1"


def options(values, start, name: str, label=str) -> list[tuple[str, dict]]:
    """Options of a control over ``values`` (``start`` among them, sorted, no repeats).

    >>> options([3, 5, 3], 7, "kernel")
    [('3', {'kernel': 3}), ('5', {'kernel': 5}), ('7', {'kernel': 7})]
    """
    return [(label(v), {name: v}) for v in sorted(set(values) | {start})]


def control(explorer, label: str, options: list[tuple[str, dict]]) -> dict:
    """A control of ``static_controls``: ``options`` ``(label, {trait: value})``, starting at the one the
    explorer's state holds (else the first)."""
    start = next((k for k, (_, values) in enumerate(options) if not callable(values)
                  and all(getattr(explorer.state, n) == v for n, v in values.items())), 0)
    return {"label": label, "options": options, "start": start}


def spread(lo: int, hi: int, n: int, step: int = 1) -> list[int]:
    """Up to ``n`` values from ``lo`` to ``hi`` evenly (on ``lo``'s steps), ends included.

    >>> spread(0, 13, 4), spread(1, 13, 3, step=2)
    ([0, 4, 9, 13], [1, 7, 13])
    """
    if hi <= lo:
        return [lo]
    return sorted({lo + round(k * (hi - lo) / (n - 1) / step) * step for k in range(n)})


def _encode(value):
    """JSON-ready ``value``: numeric arrays (8+ items, 1-D or 2-D) as typed-array specs, floats as float32."""
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None  # NaN is no JSON; plotly.js reads null as a gap too
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) >= 8 and not any(isinstance(v, (str, dict, list, tuple)) and not isinstance(v, np.ndarray)
                                       for v in value[:1]) or isinstance(value, np.ndarray) and value.ndim == 2:
            try:
                a = np.asarray(value)
                if a.dtype == object:
                    a = np.asarray(value, dtype=float)  # None: NaN, a gap as before
            except (TypeError, ValueError):
                a = None
            if a is not None and a.dtype.kind in _TYPES and a.ndim in (1, 2) and a.size:
                dtype = _TYPES[a.dtype.kind]
                data = np.ascontiguousarray(a, dtype="<" + dtype if dtype != "u1" else "u1")
                spec = {"dtype": dtype, "bdata": base64.b64encode(data.tobytes()).decode()}
                if a.ndim == 2:
                    spec["shape"] = f"{a.shape[0]}, {a.shape[1]}"
                return spec
        return [_encode(v) for v in value]
    return value


def decode(value):
    """``_encode``'s typed-array specs back to numpy arrays (what plotly.js reads)."""
    if isinstance(value, dict) and "bdata" in value:
        dtype = {"u1": np.uint8}.get(value["dtype"], "<" + value["dtype"])
        a = np.frombuffer(base64.b64decode(value["bdata"]), dtype=dtype)
        return a.reshape([int(n) for n in value["shape"].split(",")]) if "shape" in value else a
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def _figure(widget, template: bool = False) -> dict:
    """A FigureWidget's figure as ``_encode``d data, read from what plotly holds (no copy); its template
    (the same in every state) only with ``template``; without the widget's trace ids (``uid``)."""
    layout = {k: v for k, v in widget._layout.items() if template or k != "template"}
    data = [{k: v for k, v in t.items() if k != "uid"} for t in widget._data]  # the widget's own trace ids
    return {"data": [_encode(t) for t in data], "layout": _encode(layout)}


def static_figure(explorer) -> dict:
    """Every state of ``explorer.static_controls()`` drawn by the explorer itself, as plain data.

    ``controls``: ``[{"label", "options": [labels], "start"}]``; ``base``: each panel's figure at the
    start; ``states[s]``: a patch index per panel (``s`` counts the controls' option indices, the last
    control fastest); ``patches``: ``[[trace, property, value index]]`` (trace -1: the layout);
    ``values``: the distinct values; ``texts[s]``: a value index per caption; ``shown``: the caption
    values; ``seconds``: how long it took. The explorer ends where it started.
    """
    controls = explorer.static_controls()
    panels, captions = explorer.static_panels(), explorer.static_texts()
    start = [c["start"] for c in controls]

    def go_to(combo, previous):
        for k, (i, c) in enumerate(zip(combo, controls)):
            if previous is None or previous[k] != i or any(p != q for p, q in zip(previous[:k], combo[:k])):
                values = c["options"][i][1]
                explorer._set(**(values(explorer) if callable(values) else values))  # in order: a layer, its query

    began = time.monotonic()
    go_to(start, None)
    base = [_figure(p, template=True) for p in panels]
    keys = [[(t, k, json.dumps(v, sort_keys=True)) for t, tr in enumerate(b["data"]) for k, v in tr.items()]
            + [(-1, k, json.dumps(v, sort_keys=True)) for k, v in b["layout"].items() if k != "template"]
            for b in base]
    known = [{(t, k): s for t, k, s in ks} for ks in keys]
    values, value_ids, patches, patch_ids, states, texts, shown, shown_ids = [], {}, [], {}, [], [], [], {}

    def value_id(text):
        if text not in value_ids:
            value_ids[text] = len(values)
            values.append(json.loads(text))
        return value_ids[text]

    previous = start
    for combo in itertools.product(*(range(len(c["options"])) for c in controls)):
        go_to(combo, previous)
        previous = combo
        row = []
        for p, panel in enumerate(panels):
            fig = _figure(panel)
            items = [(t, k, json.dumps(v, sort_keys=True)) for t, tr in enumerate(fig["data"]) for k, v in tr.items()]
            items += [(-1, k, json.dumps(v, sort_keys=True)) for k, v in fig["layout"].items()]
            gone = set(known[p]) - {(t, k) for t, k, _ in items}
            patch = tuple((t, k, value_id(s)) for t, k, s in items if known[p].get((t, k)) != s)
            patch += tuple((t, k, value_id("null")) for t, k in sorted(gone, key=str))
            row.append(patch_ids.setdefault(patch, len(patch_ids)))
            if row[-1] == len(patches):
                patches.append([list(x) for x in patch])
        states.append(row)
        text_row = []
        for caption in captions:
            text_row.append(shown_ids.setdefault(caption.value, len(shown_ids)))
            if text_row[-1] == len(shown):
                shown.append(caption.value)
        texts.append(text_row)
    go_to(start, previous)
    return {"controls": [{"label": c["label"], "options": [o[0] for o in c["options"]], "start": c["start"]}
                         for c in controls],
            "base": base, "values": values, "patches": patches, "states": states, "texts": texts, "shown": shown,
            "note": explorer.static_note(), "seconds": round(time.monotonic() - began, 1)}


def figure_at(spec: dict, state: int, panel: int) -> dict:
    """Panel ``panel``'s figure in state ``state`` of a ``static_figure``: what the page draws (typed arrays
    still encoded; ``decode`` reads them). A property set to null is left out, as plotly.js would."""
    base = spec["base"][panel]
    data, layout = [dict(t) for t in base["data"]], dict(base["layout"])
    for t, key, v in spec["patches"][spec["states"][state][panel]]:
        (layout if t < 0 else data[t])[key] = spec["values"][v]
    for part in data + [layout]:
        for key in [k for k, v in part.items() if v is None]:
            del part[key]
    return {"data": data, "layout": layout}


def state_index(spec: dict, combo) -> int:
    """The state number of option indices ``combo`` (one per control).

    >>> state_index({"controls": [{"options": [0, 1, 2]}, {"options": [0, 1]}]}, (2, 1))
    5
    """
    s = 0
    for c, i in zip(spec["controls"], combo):
        s = s * len(c["options"]) + i
    return s


# controls in rows that wrap, each label beside its input; panels side by side, wrapping when the page is narrow
_CSS = (".vizattn-static-controls{display:flex;flex-wrap:wrap;gap:4px 18px;font-size:13px;margin:4px 0}"
        ".vizattn-static-controls label{display:flex;align-items:center;gap:6px;white-space:nowrap}"
        ".vizattn-static-controls output{min-width:2.5em}.vizattn-static-row{display:flex;flex-wrap:wrap}"
        ".vizattn-static-text,.vizattn-static-note{font-size:13px;max-width:960px}")
_RUNTIME = (Path(__file__).with_name("static.js")).read_text(encoding="utf-8")


def html(explorer) -> str:
    """The explorer as a kernel-free page fragment (needs plotly.js on the page, as ``Plotly``)."""
    spec = static_figure(explorer)
    kinds = explorer.static_layout()
    parts = ["<div class='vizattn-static'>", f"<style>{_CSS}</style>", "<div class='vizattn-static-controls'>"]
    for k, c in enumerate(spec["controls"]):
        label = _html.escape(c["label"])
        if len(c["options"]) < 2:
            continue
        if all(o.lstrip("-").isdigit() for o in c["options"]) or c.get("slider"):
            parts.append(f"<label>{label} <input type='range' data-control='{k}' min='0' "
                         f"max='{len(c['options']) - 1}' step='1' value='{c['start']}'> "
                         f"<output>{_html.escape(c['options'][c['start']])}</output></label>")
        else:
            opts = "".join(f"<option value='{i}'{' selected' if i == c['start'] else ''}>{_html.escape(o)}</option>"
                           for i, o in enumerate(c["options"]))
            parts.append(f"<label>{label} <select data-control='{k}'>{opts}</select></label>")
    parts.append("</div><div class='vizattn-static-panels'>")
    for row in kinds:
        parts.append("<div class='vizattn-static-row'>" + "".join(
            f"<div class='vizattn-static-panel' data-panel='{p}'></div>" for p in row) + "</div>")
    parts.append("</div>")
    parts += [f"<div class='vizattn-static-text' data-text='{t}'></div>" for t in range(len(spec["texts"][0]))]
    parts.append(f"<p class='vizattn-static-note'>{spec.pop('note')}</p>")
    data = json.dumps(spec, separators=(",", ":")).replace("</", "<\\/")
    parts.append(f"<script type='application/json'>{data}</script>")
    parts.append(f"<script>{_RUNTIME}</script></div>")
    return "".join(parts)


def install() -> None:
    """In a kernel with ``VIZATTN_STATIC=1``: an ``ipywidgets.HTML`` also shows as its HTML (a page
    without a widget manager draws it), and plotly figures render as HTML that uses the page's plotly.js."""
    import ipywidgets as widgets
    import plotly.io as pio
    from plotly.io.base_renderers import MimetypeRenderer

    class SiteRenderer(MimetypeRenderer):
        def to_mimebundle(self, fig_dict):
            return {"text/html": pio.to_html(fig_dict, include_plotlyjs=False, full_html=False, validate=False)}

    pio.renderers["vizattn_site"] = SiteRenderer()
    pio.renderers.default = "vizattn_site"
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["text/html"].for_type(widgets.HTML, lambda w: w.value)
