"""vizattn.widgets.cost and the cost figure (vizattn.plots.costs), headless: the curves are the table's
cost formulas, and the explorer follows its controls."""


import pytest

pytest.importorskip("plotly")
pytest.importorskip("ipywidgets")


from vizattn import plots  # noqa: E402


def test_cost_figure_is_log_log_with_one_line_per_mechanism():
    fig = plots.cost_figure([8, 16, 32, 64], mark=32)
    assert len(fig.data) == 2 * len(plots.COST_MECHANISMS)
    assert fig.layout.xaxis.type == fig.layout.yaxis.type == fig.layout.yaxis2.type == "log"
    glob = [t for t in fig.data if t.name == "global"]
    assert list(glob[1].y) == [float(s ** 4) for s in (8, 16, 32, 64)]


def test_every_cost_curve_has_a_style_of_its_own_that_stays_whatever_else_is_shown():
    styles = {(t.line.color, t.line.dash) for t in plots.cost_figure([8, 16]).data}
    assert len(styles) == len(plots.COST_MECHANISMS)  # no two mechanisms look alike
    alone = plots.cost_figure([8, 16], mechanisms=("LaViT LA", "NA")).data
    full = {t.name: (t.line.color, t.line.dash) for t in plots.cost_figure([8, 16]).data}
    assert {t.name: (t.line.color, t.line.dash) for t in alone} == {n: full[n] for n in ("LaViT LA", "NA")}
    assert full["MaxViT block"][0] == full["MaxViT grid"][0] != full["NA"][0]  # a colour per paper


def test_cost_explorer_follows_its_sliders_and_toggles():
    from vizattn.widgets import CostExplorer
    ex = CostExplorer(side=32)
    names = [t.name for t in ex.figure.data]
    assert all(ex.figure.data[k].visible for k in range(len(names)))
    ex.state.mechanisms = ("global", "CrossFormer LDA")
    assert {t.name for t in ex.figure.data if t.visible} == {"global", "CrossFormer LDA"}
    assert ex.toggles.value == ("global", "CrossFormer LDA")
    ex.sliders["interval"].value = 4
    lda = [t for t in ex.figure.data if t.name == "CrossFormer LDA"]
    sides = list(lda[1].x)
    assert list(lda[1].y) == [plots.cost("CrossFormer LDA", s, interval=4)[1] for s in sides]
    ex.sliders["side"].value = 64
    assert ex.figure.layout.shapes[0].x0 == 64 and "64x64" in ex.table.value
    assert "CrossFormer LDA" in ex.table.value and "MaxViT grid" not in ex.table.value


def test_cost_explorer_hides_the_sliders_no_shown_mechanism_reads():
    from vizattn.widgets import CostExplorer
    ex = CostExplorer(side=32, mechanisms=("global", "LaViT LA"))
    shown = {n for n, sl in ex.sliders.items() if sl.layout.display != "none"}
    assert shown == {"side", "channels", "heads"}  # LaViT LA's 2hN^3 reads the heads
    ex.state.mechanisms = ("global", "SASA", "MaxViT grid")
    shown = {n for n, sl in ex.sliders.items() if sl.layout.display != "none"}
    assert shown == {"side", "channels", "heads", "kernel", "window"}
