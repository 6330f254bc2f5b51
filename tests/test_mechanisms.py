"""vizattn.mechanisms, the one table: every row is offered everywhere, and its facts agree with its patterns.

Registry-driven: a new row (or layer kind) is covered by these tests without editing them, and
they fail when an explorer, the cost model, the stacks or the probe does not know it.
"""

import math

import pytest

from vizattn import mechanisms
from vizattn.mechanisms import LAYERS, PARAMETERS, STACKS, TABLE
from vizattn.patterns import Block, Global, Grid, LocalWindow, LongDistance, Neighborhood

NAMES = list(LAYERS)
# the parameters a layer reads, set so that every group size divides a 12 x 12 map
VALUES = dict(kernel=3, dilation=2, stride=2, block=4, grid=3, interval=3)


def keys_per_query(pattern, side):
    """Key slots each query has (every query the same count here), from ``pattern.keys``."""
    keys = pattern.keys(side, side)
    return keys.shape[1]


def test_names_are_unique_and_every_layer_belongs_to_one_row():
    names = [lay.name for row in TABLE for lay in row.layers]
    assert len(names) == len(set(names)) == len(LAYERS)
    rows = [row.name for row in TABLE]
    assert len(rows) == len(set(rows)) and len(STACKS) == len(set(STACKS)) == len(TABLE)
    for row in TABLE:
        assert row.paper and row.layers and mechanisms.mechanism(row.name) is row
        assert set(row.stack) <= set(LAYERS), (row.name, row.stack)
        assert {lay.name for lay in row.layers} <= set(row.stack), f"{row.name}: a layer kind is in no stack"


@pytest.mark.parametrize("name", NAMES)
def test_each_layer_reads_only_known_parameters_and_builds_a_valid_pattern(name):
    lay = LAYERS[name]
    assert set(lay.parameters) <= set(PARAMETERS)
    pattern = lay.pattern(mechanisms.params(**VALUES), 12)
    pattern.check(12, 12)
    assert not getattr(pattern, "pad", False)  # the group sizes divide 12: no padding
    # the smallest value of each parameter still builds a pattern
    smallest = mechanisms.params(**{**VALUES, **lay.parameters})
    lay.pattern(smallest, 12)


@pytest.mark.parametrize("name", NAMES)
def test_attention_entries_are_tokens_times_the_patterns_keys(name):
    """The cost model's memory term is N * K, K counted from the layer's own pattern."""
    lay = LAYERS[name]
    for side in (12, 24):
        pattern = lay.pattern(mechanisms.params(**VALUES), side)
        N = side * side
        _, entries = mechanisms.cost(name, side, **VALUES)
        assert entries == N * keys_per_query(pattern, side), (name, side)


def test_costs_follow_the_formulas():
    """docs/semantics.md §6, written out again: one layer on a 16 x 16 map, C = 32, 4 heads."""
    side, C, h = 16, 32, 4
    N = side * side
    proj = 4 * N * C * C
    want = {
        ("global", ()): (proj + 2 * N * N * C, N * N),
        ("NA", (("kernel", 7),)): (proj + 2 * N * C * 49, N * 49),
        ("DiNAT", (("kernel", 7), ("dilation", 2))): (proj + 2 * N * C * 49, N * 49),
        ("GNA", (("kernel", 5), ("dilation", 2), ("stride", 3))): (proj + 2 * N * C * 25, N * 25),  # stride: same k^2
        ("SASA", (("kernel", 7),)): (proj / h + 2 * N * C * 49, N * 49),
        ("MaxViT block", (("block", 8),)): (proj + 2 * N * C * 64, N * 64),
        ("MaxViT grid", (("grid", 4),)): (proj + 2 * N * C * 16, N * 16),
        ("CrossFormer SDA", (("block", 7),)): (proj + 2 * N * C * 49, N * 49),
        ("CrossFormer LDA", (("interval", 4),)): (proj + 2 * N * C * N / 16, N * N / 16),
        ("Swin W", (("block", 8),)): (proj + 2 * N * C * 64, N * 64),
        ("Swin SW", (("block", 8),)): (proj + 2 * N * C * 64, N * 64),
        ("LaViT LA", ()): (2 * N * C * C + 2 * h * N ** 3 + N * N * C, N * N),
    }
    assert {name for name, _ in want} == set(LAYERS), "a new layer kind needs its formula here"
    for (name, values), expected in want.items():
        assert mechanisms.cost(name, side, C, h, **dict(values)) == expected, name
    # the NAT paper: Swin's (shifted) windows cost what NA does for the same window, P = k
    for side in (14, 16, 56):
        assert mechanisms.cost("Swin SW", side, block=7) == mechanisms.cost("Swin W", side, block=7) \
            == mechanisms.cost("NA", side, kernel=7)
    # LDA with interval I on an I-divisible map costs what MaxViT grid with G = side / I does
    assert mechanisms.cost("CrossFormer LDA", 32, interval=4) == mechanisms.cost("MaxViT grid", 32, grid=8)


def test_one_name_per_mechanism_and_clear_errors():
    for wrong in ("NA / DiNAT", "Swin", "Swin V2", "na"):
        with pytest.raises(ValueError, match="mechanism must be one of global, SASA, NA"):
            mechanisms.cost(wrong, 8)
    with pytest.raises(ValueError, match="parameters must be among kernel.*got group"):
        mechanisms.cost("global", 8, group=4)
    with pytest.raises(ValueError, match="stack must be one of"):
        mechanisms.stack("NA / DiNAT", 2, 8)


@pytest.mark.parametrize("row", TABLE, ids=lambda r: r.name)
def test_stacks_alternate_the_rows_layers(row):
    p = mechanisms.params(**VALUES)
    want = [LAYERS[n].pattern(p, 12) for n in row.stack]
    got = mechanisms.stack(row.stack_name, 5, 12, **VALUES)
    assert got == [want[d % len(want)] for d in range(5)]


def test_the_table_knows_every_pattern_class_and_its_probe_kind():
    kinds = {Global(): "global", LocalWindow(3): "sasa", Neighborhood(3, dilation=2): "neighborhood",
             Block(2): "block", Grid(2): "grid", LongDistance(2): "lda"}
    assert {type(p) for p in kinds} == {type(lay.pattern(mechanisms.params(), 56)) for lay in LAYERS.values()}
    for pattern, kind in kinds.items():
        assert mechanisms.kind_of(pattern) == kind


# ---------------------------------------------------------------------------------------------
# every explorer that lists mechanisms offers every row
# ---------------------------------------------------------------------------------------------
def test_every_layer_is_in_the_explorers_menus():
    pytest.importorskip("ipywidgets")
    pytest.importorskip("plotly")
    from vizattn import plots, receptive
    from vizattn.widgets import CostExplorer, PartitionExplorer, PartitionState, ReceptiveFieldExplorer
    from vizattn.widgets.partition import PARAMETERS as SLIDERS_READ

    partition = PartitionExplorer()
    assert tuple(partition.mechanism_menu.options) == tuple(LAYERS)
    assert set(partition.compare_menu.options) >= set(LAYERS)
    assert {n: set(ps) for n, ps in SLIDERS_READ.items()} == {n: set(lay.parameters) for n, lay in LAYERS.items()}
    assert set(PARAMETERS) <= set(PartitionState.class_trait_names()), "a new parameter needs a PartitionState trait"
    assert set(PARAMETERS) <= set(partition.sliders)
    cost = CostExplorer()
    assert tuple(cost.toggles.options) == tuple(LAYERS) == plots.COST_MECHANISMS
    assert {t.name for t in cost.figure.data} == set(LAYERS)
    assert receptive.STACKS == STACKS
    field = ReceptiveFieldExplorer(effective=False, size=8, depth=1)
    assert tuple(field.menu.options) == STACKS


@pytest.mark.parametrize("name", NAMES)
def test_the_partition_explorer_draws_each_layer_with_its_own_sliders(name):
    pytest.importorskip("ipywidgets")
    pytest.importorskip("plotly")
    from vizattn import plots
    from vizattn.widgets import PartitionExplorer, pattern_for

    ex = PartitionExplorer(name, size=12, query=(0, 0), **VALUES)
    assert pattern_for(ex.state) == LAYERS[name].pattern(mechanisms.params(**VALUES), 12)
    shown = {n for n, s in ex.sliders.items() if s.layout.display != "none"}
    assert shown & set(PARAMETERS) == set(LAYERS[name].parameters)
    keys = pattern_for(ex.state).keys(12, 12)[0]
    assert len(plots.cells(ex.figures[0].data[plots.TRACES.index("keys")])) == int((keys >= 0).sum())
    assert not math.isnan(mechanisms.cost(name, 12)[0])
