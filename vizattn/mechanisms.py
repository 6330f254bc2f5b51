"""The one table of mechanisms: what each is called, its paper, its parameters, its patterns, its cost.

Every list of mechanisms in vizattn reads ``TABLE``: the explorers' menus and sliders
(``vizattn.widgets``), the cost model (``cost``, drawn by ``vizattn.plots.cost_figure``), the
stacks of the receptive-field explorer (``vizattn.receptive.stack_for``), the kind an attention
layer states (``kind_of``: ``vizattn.layers``' ``kind``, the name of the probe's records) and the tests.

A row (``Mechanism``) is one paper's attention: one or more ``Layer`` kinds (MaxViT: block then
grid) and the ``stack`` its networks alternate. A ``Layer`` has the name shown in menus and
accepted by ``cost`` (one name per layer kind), the parameters it reads (``PARAMETERS``, each with
its smallest valid value), how it builds its pattern for a map, and its cost formula
(docs/semantics.md §6). Adding a mechanism is one row in ``TABLE`` plus, if no pattern fits, one
pattern class in ``vizattn.patterns``; the menus, sliders, cost figures, stacks and layer kinds
follow, and ``tests/test_mechanisms.py`` asks for the new cost formula written out by hand. Swin
(W-MSA, then SW-MSA shifted by ``P // 2``, docs/semantics.md §7) is such a row: ``Block(P, shift=s)``,
the cost of ``Block(P)`` (the same as NA's with ``k = P``, as the NAT paper says). So is GNA (NATTEN's
generalized NA): ``Neighborhood(k, dilation, stride)``, whose stride tiles share one window (``stride = k``:
Swin-like windows), the cost of NA (every query still has ``k^2`` keys).

Parameters not listed by a layer are ignored by it.

>>> [layer.name for layer in mechanism("MaxViT").layers]
['MaxViT block', 'MaxViT grid']
>>> layer("CrossFormer LDA").pattern(dict(interval=4), 14), cost("NA", 8, channels=16, kernel=3)
(LongDistance(4, pad=True), (83968.0, 576.0))
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping

from .patterns import Block, Global, Grid, LocalWindow, LongDistance, Neighborhood, Pattern

__all__ = ["Parameter", "PARAMETERS", "Layer", "Mechanism", "TABLE", "LAYERS", "STACKS", "mechanism", "layer",
           "params", "cost", "stack", "kind_of"]


@dataclasses.dataclass(frozen=True)
class Parameter:
    """A parameter a layer may read: slider ``label``, the ``noun`` a sentence uses, the default value."""

    label: str
    noun: str
    default: int


PARAMETERS = {
    "kernel": Parameter("kernel k", "kernel size", 7),
    "dilation": Parameter("dilation d", "dilation", 1),
    "stride": Parameter("stride s", "stride", 1),
    "block": Parameter("block P / SDA G", "block size", 7),
    "grid": Parameter("grid G", "grid size", 7),
    "interval": Parameter("LDA interval I", "interval", 8),
}

Params = Mapping[str, int]
Cost = Callable[[float, float, int, Params], "tuple[float, float]"]


@dataclasses.dataclass(frozen=True)
class Layer:
    """One kind of attention layer.

    ``name``: the menu name, also ``cost``'s. ``parameters``: ``{name: smallest valid value}`` of the
    ``PARAMETERS`` it reads (the first is its window or group size). ``pattern(params, side)``: its
    pattern on a ``side x side`` map (``pad=True`` exactly when a group size does not divide the map).
    ``cost(N, C, heads, params)``: ``(MACs, attention entries per head)`` of one layer on ``N``
    tokens with ``C`` channels. ``kind``: the probe's name of its pattern class. ``odd``: the
    parameters that must be odd (a centred window: SASA's kernel).
    """

    name: str
    parameters: Mapping[str, int]
    pattern: Callable[[Params, int], Pattern]
    cost: Cost
    kind: str
    odd: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Mechanism:
    """A row: a paper's attention, its layer kinds and the ``stack`` (layer names) its networks alternate."""

    name: str
    paper: str
    layers: tuple[Layer, ...]
    stack: tuple[str, ...]
    stack_name: str


def _windowed(size: str) -> Cost:
    """``4NC^2 + 2NC s^2`` and ``N s^2`` for a window or group of ``s x s`` keys (``s = params[size]``)."""
    return lambda N, C, heads, p: (4 * N * C * C + 2 * N * C * p[size] ** 2, N * p[size] ** 2)


def _padded(make, size: str):
    """A partition pattern of group size ``params[size]``, padded exactly when it does not divide the map."""
    return lambda p, side: make(p[size], pad=side % p[size] != 0)


def _shifted(p, side):
    """Swin's SW-MSA: ``Block(P, shift=P // 2)``, padded exactly when P does not divide the map."""
    return Block(p["block"], shift=p["block"] // 2, pad=side % p["block"] != 0)


def _global_cost(N, C, heads, p):
    return 4 * N * C * C + 2 * N * N * C, N * N


def _sasa_cost(N, C, heads, p):  # grouped projections: the 4NC^2 divided by heads
    return 4 * N * C * C / heads + 2 * N * C * p["kernel"] ** 2, N * p["kernel"] ** 2


def _lda_cost(N, C, heads, p):
    return 4 * N * C * C + 2 * N * C * N / p["interval"] ** 2, N * N / p["interval"] ** 2


def _less_cost(N, C, heads, p):  # no Q, K projections; Theta and Psi on N x N maps; A V
    return 2 * N * C * C + 2 * heads * N ** 3 + N * N * C, N * N


_GLOBAL = Layer("global", {}, lambda p, side: Global(), _global_cost, kind="global")
_NA = Layer("NA", {"kernel": 2}, lambda p, side: Neighborhood(p["kernel"]), _windowed("kernel"), kind="neighborhood")

TABLE: tuple[Mechanism, ...] = (
    Mechanism("global", "Dosovitskiy et al. 2021, ViT", (_GLOBAL,), stack=("global",), stack_name="global"),
    Mechanism("SASA", "Ramachandran et al. 2019, Stand-Alone Self-Attention", (
        Layer("SASA", {"kernel": 1}, lambda p, side: LocalWindow(p["kernel"]), _sasa_cost, kind="sasa",
              odd=("kernel",)),
    ), stack=("SASA",), stack_name="SASA"),
    Mechanism("NAT", "Hassani et al. 2023, Neighborhood Attention Transformer", (_NA,), stack=("NA",), stack_name="NA"),
    Mechanism("DiNAT", "Hassani & Shi 2022, Dilated Neighborhood Attention Transformer", (
        Layer("DiNAT", {"kernel": 2, "dilation": 1},
              lambda p, side: Neighborhood(p["kernel"], dilation=p["dilation"]), _windowed("kernel"),
              kind="neighborhood"),
    ), stack=("NA", "DiNAT"), stack_name="NA + DiNAT"),
    Mechanism("MaxViT", "Tu et al. 2022, MaxViT: Multi-Axis Vision Transformer", (
        Layer("MaxViT block", {"block": 1}, _padded(Block, "block"), _windowed("block"), kind="block"),
        Layer("MaxViT grid", {"grid": 1}, _padded(Grid, "grid"), _windowed("grid"), kind="grid"),
    ), stack=("MaxViT block", "MaxViT grid"), stack_name="MaxViT block + grid"),
    Mechanism("CrossFormer", "Wang et al. 2022, CrossFormer", (
        Layer("CrossFormer SDA", {"block": 1}, _padded(Block, "block"), _windowed("block"), kind="sda"),
        Layer("CrossFormer LDA", {"interval": 1}, _padded(LongDistance, "interval"), _lda_cost, kind="lda"),
    ), stack=("CrossFormer SDA", "CrossFormer LDA"), stack_name="CrossFormer SDA + LDA"),
    Mechanism("Swin", "Liu et al. 2021, Swin Transformer", (
        Layer("Swin W", {"block": 1}, _padded(Block, "block"), _windowed("block"), kind="swin"),
        Layer("Swin SW", {"block": 1}, _shifted, _windowed("block"), kind="swin"),
    ), stack=("Swin W", "Swin SW"), stack_name="Swin W + SW"),
    Mechanism("LaViT", "Zhang et al. 2024, You Only Need Less Attention at Each Stage", (
        Layer("LaViT LA", {}, lambda p, side: Global(), _less_cost, kind="less"),
    ), stack=("global", "LaViT LA"), stack_name="LaViT VA + LA"),
    Mechanism("GNA", "Hassani et al. 2025, Generalized Neighborhood Attention (NATTEN's na2d)", (
        Layer("GNA", {"kernel": 2, "dilation": 1, "stride": 1},
              lambda p, side: Neighborhood(p["kernel"], dilation=p["dilation"], stride=p["stride"]),
              _windowed("kernel"), kind="neighborhood"),
    ), stack=("GNA",), stack_name="GNA"),
)

LAYERS: dict[str, Layer] = {lay.name: lay for row in TABLE for lay in row.layers}
STACKS: tuple[str, ...] = tuple(row.stack_name for row in TABLE)


def _one(what: str, name, options):
    if name not in options:
        raise ValueError(f"{what} must be one of {', '.join(options)}; got {what}={name!r}")
    return options[name]


def mechanism(name: str) -> Mechanism:
    """The row called ``name`` (``ValueError`` listing the rows otherwise)."""
    return _one("mechanism", name, {row.name: row for row in TABLE})


def layer(name: str) -> Layer:
    """The layer kind called ``name``, e.g. ``"MaxViT grid"`` (``ValueError`` listing them otherwise)."""
    return _one("mechanism", name, LAYERS)


def params(**values) -> dict[str, int]:
    """Every parameter of ``PARAMETERS``: its default, or the value given (``ValueError`` for an unknown one).

    >>> params(kernel=3)["kernel"], params()["grid"]
    (3, 7)
    """
    unknown = sorted(set(values) - set(PARAMETERS))
    if unknown:
        raise ValueError(f"parameters must be among {', '.join(PARAMETERS)}; got {', '.join(unknown)}")
    return {name: values.get(name, p.default) for name, p in PARAMETERS.items()}


def cost(name: str, side: int, channels: int = 64, heads: int = 4, **values) -> tuple[float, float]:
    """``(MACs, attention entries per head)`` of one ``name`` layer on a ``side x side`` map (docs/semantics.md §6).

    ``values``: the layer's parameters (``PARAMETERS``; defaults there). With ``N = side**2``
    tokens and ``C = channels``: global ``4NC^2 + 2N^2C``; NA/DiNAT/GNA and SASA (k) ``4NC^2 + 2NCk^2``
    (SASA's grouped projections: the 4NC^2 divided by ``heads``); MaxViT block (P) / grid (G) and
    CrossFormer SDA (G) and Swin W / SW (P) ``4NC^2 + 2NCP^2``; LDA (I) ``4NC^2 + 2NC N/I^2``; LaViT LA layer
    ``2NC^2 + 2hN^3 + N^2C``.

    >>> cost("global", 8, channels=16)          # N = 64: 4*64*256 + 2*64*64*16
    (196608.0, 4096.0)
    """
    macs, entries = layer(name).cost(float(side * side), float(channels), heads, params(**values))
    return float(macs), float(entries)


def stack(name: str, depth: int, side: int, **values) -> list[Pattern]:
    """The patterns of ``depth`` layers of the stack ``name`` (``STACKS``) on a ``side x side`` map,
    alternating as the paper stacks them (DiNAT: NA then DiNAT; MaxViT: block then grid).

    >>> stack("MaxViT block + grid", 3, 16, block=4, grid=4)
    [Block(4), Grid(4), Block(4)]
    """
    row = _one("stack", name, {r.stack_name: r for r in TABLE})
    p = params(**values)
    patterns = [LAYERS[n].pattern(p, side) for n in row.stack]
    return [patterns[d % len(patterns)] for d in range(depth)]


@functools.cache
def _kinds() -> dict[type, str]:
    """Pattern class -> the kind of the first layer of the table that builds it (with the default parameters)."""
    kinds: dict[type, str] = {}
    for lay in LAYERS.values():
        kinds.setdefault(type(lay.pattern(params(), 56)), lay.kind)
    return kinds


def kind_of(pattern: Pattern) -> str | None:
    """The probe's name for a pattern's mechanism (``"block"``, ``"lda"``, ...), None for a pattern the table lacks.

    >>> kind_of(Neighborhood(3, dilation=2)), kind_of(Block(2))
    ('neighborhood', 'block')
    """
    return _kinds().get(type(pattern))
