"""The explorers' kernel-free form (``vizattn.widgets.static``) draws what the live explorers draw.

For each explorer, ``static_figure()`` enumerates its states by moving its controls one after the other; a
fresh explorer built with one state's settings (its constructor's arguments, no sweep behind it) must hold
the same figures: every trace property and every layout property equal (arrays to float32 precision: the
page stores float32), and the same captions. A few states per explorer, the last one included (the end of
the sweep, the furthest from the start).
"""

from __future__ import annotations

import numpy as np
import pytest

from vizattn.widgets import (
    AttentionExplorer,
    CostExplorer,
    FlowExplorer,
    LaViTExplorer,
    PartitionExplorer,
    ReceptiveFieldExplorer,
    static,
)


def _numbers(value):
    try:
        a = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    return a if a.ndim else None


def _same(a, b, where: str, out: list) -> None:
    """Record in ``out`` every place where ``a`` and ``b`` differ (a missing key reads as None)."""
    if isinstance(a, dict) or isinstance(b, dict):
        a, b = a or {}, b or {}
        for key in sorted(set(a) | set(b)):
            _same(a.get(key), b.get(key), f"{where}.{key}", out)
        return
    x, y = _numbers(a), _numbers(b)
    if x is not None and y is not None and not isinstance(a, str):
        if x.shape != y.shape or not np.allclose(x, y, rtol=1e-6, atol=1e-7, equal_nan=True):
            out.append(f"{where}: {str(a)[:80]} != {str(b)[:80]}")
        return
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for k, (u, v) in enumerate(zip(a, b)):
            _same(u, v, f"{where}[{k}]", out)
        return
    if a != b:
        out.append(f"{where}: {str(a)[:80]} != {str(b)[:80]}")


def _shown(fig: dict) -> dict:
    """``fig`` with its hidden traces reduced to ``visible: False`` (what they hold is not drawn); a panel that
    explains an invalid choice (``base.explain``) reduced to its explanation (its size is the last picture's)."""
    data = [dict(t, visible=True) if t.get("visible", True) is not False else {"visible": False} for t in fig["data"]]
    if fig["layout"].get("title", {}).get("text") == "nothing to draw":
        return {"data": data, "layout": {"annotations": fig["layout"].get("annotations")}}
    axes = {k: dict(v, visible=v.get("visible", True)) for k, v in fig["layout"].items()
            if k.startswith(("xaxis", "yaxis"))}
    return {"data": data, "layout": dict(fig["layout"], **axes)}


def _live(panel) -> dict:
    """What the live widget holds (without its trace ids), through the same encoding as the page's."""
    return static.decode(static._figure(panel, template=True))


def _check(explorer, make, picks=(0, 1, -1)) -> None:
    """States ``picks`` of ``explorer``'s kernel-free form against ``make(settings)``, a fresh explorer (a
    smaller budget of states than the site's: the same code, a shorter test)."""
    explorer.STATIC_STATES = 100
    spec, controls = explorer.static_figure(), explorer.static_controls()
    sizes = [len(c["options"]) for c in controls]
    assert len(spec["states"]) == int(np.prod(sizes)) >= 2
    for pick in picks:
        s = range(len(spec["states"]))[pick]
        combo = np.unravel_index(s, sizes)
        assert static.state_index(spec, combo) == s
        settings = {}
        for c, i in zip(controls, combo):
            values = c["options"][i][1]
            settings.update(values(explorer) if callable(values) else values)
            if callable(values):  # a query spot: where it lands on the layer chosen before it
                explorer._set(**settings)
                settings.update(values(explorer))
        fresh = make(settings)
        problems = []
        for p, panel in enumerate(fresh.static_panels()):
            _same(_shown(static.decode(static.figure_at(spec, s, p))), _shown(_live(panel)), f"state {s} panel {p}",
                  problems)
        texts = [spec["shown"][t] for t in spec["texts"][s]]
        if texts != [t.value for t in fresh.static_texts()]:
            problems.append(f"state {s}: captions differ")
        assert not problems, "\n".join(problems[:20])


def _partition(start: dict):
    """A fresh ``PartitionExplorer`` at settings: ``start``'s, with those given."""
    def make(settings):
        args = dict(start, **{k: v for k, v in settings.items() if not k.startswith("query")})
        return PartitionExplorer(**args, query=(settings["query_i"], settings["query_j"]))
    return make


def test_partition_explorer_without_a_kernel_draws_what_it_draws_live():
    start = dict(mechanism="NA", compare="DiNAT", size=9, kernel=3, dilation=2)
    _check(PartitionExplorer(**start, query=(0, 0)), _partition(start), picks=(0, 7, 100, -1))


def test_swin_partition_explorer_without_a_kernel():
    start = dict(mechanism="Swin SW", compare="NA", size=8, block=4, kernel=3, rolled=True)
    _check(PartitionExplorer(**start, query=(0, 0)), _partition(start), picks=(0, 30, -1))


def test_attention_explorer_without_a_kernel_draws_what_it_draws_live():
    ex = AttentionExplorer("maxvit", layer="stages.1.0.grid_attn", query=(1, 2))

    def make(settings):  # a head past the layer's last shows its last: moved there as a slider would
        fresh = AttentionExplorer("maxvit", layer=settings["layer"], query=(settings["query_i"], settings["query_j"]))
        fresh._set(head=settings["head"])
        return fresh

    assert [c["label"] for c in ex.static_controls()][:2] == ["layer", "head"]
    _check(ex, make, picks=(0, 5, 77, -1))


def test_cost_receptive_and_lavit_explorers_without_a_kernel():
    cost = CostExplorer(side=32, mechanisms=("global", "NA", "CrossFormer LDA"))  # reads the kernel and interval

    def make_cost(settings):
        fresh = CostExplorer(side=settings["side"], mechanisms=("global", "NA", "CrossFormer LDA"))
        fresh._set(**{k: v for k, v in settings.items() if k != "side"})
        return fresh

    _check(cost, make_cost, picks=(0, 40, -1))
    assert [c["label"] for c in cost.static_controls()] == ["map side", "NA/SASA k", "LDA I"]
    fields = ReceptiveFieldExplorer("NA", size=9, depth=2, kernel=3)
    _check(fields, lambda s: ReceptiveFieldExplorer("NA", size=9, kernel=3, **s), picks=(0, 3, -1))
    lavit = LaViTExplorer(stage=1)
    _check(lavit, lambda s: LaViTExplorer(**s), picks=(0, 2, -1))


def test_flow_explorer_without_a_kernel_draws_what_it_draws_live():
    ex = FlowExplorer("nat", photo="shapes 0", effective=False, depth=2)
    _check(ex, lambda s: FlowExplorer("nat", photo="shapes 0", effective=False, **s), picks=(0, 3, -1))


def test_kernel_free_display_is_the_page_fragment(monkeypatch):
    ex = ReceptiveFieldExplorer("NA", size=9, depth=1, kernel=3)
    assert "text/html" not in ex._repr_mimebundle_()  # JupyterLab: the widgets, unchanged
    monkeypatch.setenv(static.ENV, "1")
    bundle = ex._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    page = bundle["text/html"]
    assert page.count("data-control=") == 1 and page.count("data-panel=") == 2 and "Not precomputed" in page


@pytest.mark.parametrize("values", [[1.5, float("nan")] * 8, np.arange(12).reshape(3, 4), list(range(9))])
def test_arrays_travel_as_typed_arrays(values):
    spec = static._encode(values)
    assert "bdata" in spec
    back = static.decode(spec)
    assert np.allclose(back, np.asarray(values, dtype=float), equal_nan=True)
