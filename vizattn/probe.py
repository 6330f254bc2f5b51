"""Capture attention maps together with their geometry: ``with vizattn.probe(model) as rec: model(x)``.

``probe`` finds the attention layers of a model (modules with an ``attn_probs`` step, an
``AttentionProbs``, and a ``fused`` switch), turns their explicit path on for the duration of
the block (``vizattn.layers.explicit``; both paths compute the same numbers), listens at ``attn_probs`` and
gives back one ``AttentionRecord`` per layer call, in call order. Every hook and every switch
is put back when the block ends, also when it raises, so nothing outlives the ``with``.

A record holds the probabilities ``weights [B, heads, H, W, K]`` aligned with the pattern's key
slots ``keys = pattern.keys(H, W)`` (``-1``: no token there), the pattern itself, and helpers
that turn slots into pictures: ``query_map(i, j)`` (where one query looks, NaN where it cannot)
and ``dense()`` (the ``[N, N]`` matrix). Glossary as in ``vizattn.patterns``: ``N = H * W``,
flat token ``t = h * W + w``.

>>> import torch
>>> from vizattn.layers import NeighborhoodAttention
>>> layer = NeighborhoodAttention(dim=8, heads=2, kernel_size=3)
>>> with probe(layer) as rec:
...     _ = layer(torch.randn(1, 5, 5, 8))
>>> r = rec[0]
>>> r.kind, r.pattern, r.size, tuple(r.weights.shape)
('neighborhood', Neighborhood(3), (5, 5), (1, 2, 5, 5, 9))
>>> r.query_map(0, 0).isnan().sum().item()        # the corner query sees 9 of 25 tokens
16
>>> layer.fused, len(layer.attn_probs._forward_hooks)   # everything put back
(True, 0)
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import math
from collections.abc import Sequence

import torch
from torch import nn

from .checks import check_bool, check_query, indices, name_patterns, query_list
from .layers.common import attention_layers, explicit
from .patterns import Pattern

__all__ = ["probe", "AttentionRecord", "Recorder", "attention_layers", "layer_kind"]

_STAGE_WORDS = ("stages", "stage", "layers", "levels")


# ---------------------------------------------------------------------------------------------
# finding and naming attention layers
# ---------------------------------------------------------------------------------------------
def layer_kind(layer: nn.Module) -> str:
    """A layer's mechanism: its own ``kind`` (``vizattn.layers.AttentionLayer.kind``: ``"neighborhood"``,
    ``"sasa"``, ``"block"``, ``"grid"``, ``"sda"``, ``"lda"``, ``"swin"``, ``"global"``, ``"vanilla"``,
    ``"less"``); a module that only looks like an attention layer (``attention_layers``): its class name
    in lower case.

    >>> from vizattn.layers import GridAttention, LongShortDistanceAttention
    >>> layer_kind(GridAttention(dim=8, heads=2, size=2)), layer_kind(LongShortDistanceAttention(8, 2, "sda", group=4))
    ('grid', 'sda')
    """
    return getattr(layer, "kind", None) or type(layer).__name__.lower()


def _stage_of(name: str) -> int | None:
    """The integer right after the first component called ``stages``/``stage``/``layers``/``levels``."""
    parts = name.split(".")
    for word, nxt in zip(parts, parts[1:]):
        if word in _STAGE_WORDS and nxt.isdigit():
            return int(nxt)
    return None


def _positions(names: list[str]) -> dict[str, tuple[int | None, int, int]]:
    """name -> (stage, layer within the stage, depth among all attention layers)."""
    out, seen = {}, {}
    for depth, name in enumerate(names):
        stage = _stage_of(name)
        out[name] = (stage, seen.get(stage, 0), depth)
        seen[stage] = seen.get(stage, 0) + 1
    return out


# ---------------------------------------------------------------------------------------------
# one captured call
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False, repr=False)
class AttentionRecord:
    """The attention of one layer call, with its geometry.

    Attributes:
        name: the layer's qualified name in the model; ``kind``: its mechanism (the layer's ``kind``).
        pattern: the pattern it attended over; ``size = (H, W)``: the map it ran on.
        weights: post-softmax probabilities, detached, ``[B, heads, H, W, K]`` aligned with
            ``keys`` (``[B, heads, Q, K]`` when ``queries`` were chosen); only the captured
            ``batch_items`` and ``heads`` (original indices, in the order given).
        scores: the pre-softmax logits in the same layout (``-inf`` at excluded slots) when the
            probe was asked for them, else None.
        stage: the integer after the first name component ``stages``/``stage``/``layers``/
            ``levels`` (``"stages.1.0.attn"`` -> 1), None if there is none. layer: the layer's
            position among the model's attention layers of the same stage, registration order.
            depth: its position among all attention layers of the model.
        index: position in the recorder; call: which forward pass of the probed model (0, 1, ...).
        previous: name of the attention layer called just before in the same forward (None for
            the first). source: for a LaViT less-attention layer (``kind == "less"``), the
            vanilla layer whose scores it transforms, transitively; else None.
        input: the layer call's input (its first argument, detached, every batch item) when the
            probe was asked for it (``inputs=True``), else None.
    """

    name: str
    kind: str
    pattern: Pattern
    size: tuple[int, int]
    weights: torch.Tensor
    scores: torch.Tensor | None
    batch_items: tuple[int, ...]
    heads: tuple[int, ...]
    queries: tuple[tuple[int, int], ...] | None
    stage: int | None
    layer: int
    depth: int
    index: int
    call: int
    previous: str | None = None
    source: str | None = None
    input: torch.Tensor | None = None

    # -- geometry --------------------------------------------------------------------------------
    @functools.cached_property
    def keys(self) -> torch.Tensor:
        """``LongTensor [N, K]`` = ``pattern.keys(H, W)`` (rows of the chosen queries: ``[Q, K]``); computed
        once per record (a widget reads it on every move): treat it as read-only."""
        keys = self.pattern.keys(*self.size)
        if self.queries is not None:
            W = self.size[1]
            keys = keys[torch.tensor([i * W + j for i, j in self.queries], dtype=torch.long)]
        return keys

    def _slot(self, i: int, j: int) -> int:
        """Row of query (i, j) in ``keys`` / on the query axes of ``weights``."""
        H, W = self.size
        check_query((i, j), H, W)
        if self.queries is None:
            return i * W + j
        if (i, j) not in self.queries:
            raise ValueError(f"query ({i}, {j}) was not captured; captured queries={list(self.queries)}")
        return self.queries.index((i, j))

    def _rows(self) -> torch.Tensor:
        """``weights`` as ``[B, heads, rows, K]``."""
        B, heads = self.weights.shape[:2]
        return self.weights.reshape(B, heads, -1, self.weights.shape[-1])

    def _query_weights(self, i, j, head, batch) -> torch.Tensor:
        if batch not in self.batch_items:
            raise ValueError(f"batch item {batch!r} was not captured; captured batch_items={list(self.batch_items)}")
        w = self._rows()[self.batch_items.index(batch), :, self._slot(i, j)]  # [heads, K]
        if head is None:
            return w.mean(0)
        if head not in self.heads:
            raise ValueError(f"head {head!r} was not captured; captured heads={list(self.heads)}")
        return w[self.heads.index(head)]

    # -- pictures --------------------------------------------------------------------------------
    def query_map(self, i: int, j: int, head: int | None = None, batch: int = 0) -> torch.Tensor:
        """``[H, W]``: the weight query ``(i, j)`` gives each token, NaN where it cannot look.

        ``head=None`` averages the captured heads; ``head`` and ``batch`` are original indices.
        Slots with no token (SASA's zero padding) fall outside the map: see ``outside_mass``.

        >>> import torch; from vizattn.layers import StandAloneAttention
        >>> layer = StandAloneAttention(dim=8, heads=2, kernel_size=3)
        >>> with probe(layer) as rec:
        ...     _ = layer(torch.randn(1, 4, 4, 8))
        >>> m = rec[0].query_map(0, 0)
        >>> m.isnan().sum().item(), round(m.nansum().item() + rec[0].outside_mass(0, 0), 6)
        (12, 1.0)
        """
        w = self._query_weights(i, j, head, batch)
        w = w if w.is_floating_point() and w.dtype != torch.float16 and w.dtype != torch.bfloat16 else w.float()
        keys = self.keys[self._slot(i, j)].to(w.device)
        real = keys >= 0
        H, W = self.size
        out = torch.full((H * W,), math.nan, dtype=w.dtype, device=w.device)
        out[keys[real]] = 0
        out.index_add_(0, keys[real], w[real])
        return out.reshape(H, W)

    def outside_mass(self, i: int, j: int, head: int | None = None, batch: int = 0) -> float:
        """The weight query ``(i, j)`` gives slots with no token (SASA's zero padding); 0 otherwise.

        >>> import torch; from vizattn.layers import BlockAttention
        >>> layer = BlockAttention(dim=8, heads=2, size=2)
        >>> with probe(layer) as rec:
        ...     _ = layer(torch.randn(1, 4, 4, 8))
        >>> rec[0].outside_mass(0, 0)
        0.0
        """
        w = self._query_weights(i, j, head, batch)
        keys = self.keys[self._slot(i, j)].to(w.device)
        return float(w[keys < 0].sum())

    def dense(self) -> torch.Tensor:
        """``[B, heads, N, N]`` (``[B, heads, Q, N]`` for chosen queries): weight of key token per query row.

        Zero where the pattern gives no slot; slots with no token (SASA's zero padding) are left
        out, so such rows sum to less than 1.

        >>> import torch; from vizattn.layers import BlockAttention; from vizattn.patterns import Block
        >>> layer = BlockAttention(dim=8, heads=2, size=2)
        >>> with probe(layer) as rec:
        ...     _ = layer(torch.randn(1, 4, 4, 8))
        >>> d = rec[0].dense()
        >>> tuple(d.shape), torch.equal(d[0, 0] > 0, Block(2).mask(4, 4))
        ((1, 2, 16, 16), True)
        """
        w = self._rows()  # [B, heads, rows, K]
        N = self.size[0] * self.size[1]
        keys = self.keys.to(w.device)
        index = keys.where(keys >= 0, N).expand(*w.shape)
        out = w.new_zeros(*w.shape[:-1], N + 1).scatter_add_(-1, index, w)
        return out[..., :N]

    def __repr__(self) -> str:
        extra = f", source={self.source!r}" if self.source is not None else ""
        return (f"AttentionRecord({self.name!r}, kind={self.kind!r}, pattern={self.pattern}, size={self.size}, "
                f"weights={tuple(self.weights.shape)}{extra})")


# ---------------------------------------------------------------------------------------------
# the recorder: a sequence of records, filled by hooks while the probe is open
# ---------------------------------------------------------------------------------------------
class Recorder(Sequence):
    """The records of a probe, in call order: ``rec[0]``, ``len(rec)``, ``for r in rec``.

    ``rec["stages.0.0.attn"]`` is the most recent record of that layer, ``rec.all(name)`` every
    one of them; ``rec.names`` are the probed layers; ``rec.chain(record)`` is a LaViT reuse chain.
    """

    def __init__(self, names, kinds, positions, batch_items, heads, queries, scores, inputs=False):
        self.names: tuple[str, ...] = tuple(names)
        self.records: list[AttentionRecord] = []
        self._kinds, self._positions = kinds, positions
        self._batch_items, self._heads, self._queries, self._want_scores = batch_items, heads, queries, scores
        self._call, self._last, self._current = -1, None, {}
        self._want_inputs, self._inputs = inputs, {}

    # -- sequence ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key):
        if isinstance(key, str):
            for record in reversed(self.records):
                if record.name == key:
                    return record
            raise KeyError(f"no record of layer {key!r}; recorded layers: {sorted({r.name for r in self.records})}")
        return self.records[key]

    def all(self, name: str) -> list[AttentionRecord]:
        """Every record of layer ``name``, in call order."""
        return [r for r in self.records if r.name == name]

    def chain(self, record: AttentionRecord) -> list[AttentionRecord]:
        """LaViT reuse chain ending at ``record``: the captured records from its ``source`` (the vanilla
        layer) through each ``previous`` layer to ``record``, within the same forward pass."""
        chain = [record]
        while chain[0].kind == "less" and chain[0].previous is not None:
            earlier = [r for r in self.records[: chain[0].index]
                       if r.call == record.call and r.name == chain[0].previous]
            if not earlier:
                break
            chain.insert(0, earlier[-1])
        return chain

    def clear(self) -> None:
        """Drop every record (the probe keeps recording into the emptied list)."""
        self.records.clear()

    def __repr__(self) -> str:
        return f"Recorder({len(self.records)} records of {len(self.names)} layers)"

    # -- hooks (only while the probe is open) -----------------------------------------------------
    def _start_forward(self, module, args):
        self._call, self._last = self._call + 1, None

    def _enter(self, name, module, args):
        """Pre-hook on every attention layer: remember the call order for previous/source."""
        previous, source = self._last, None
        if self._kinds[name] == "less" and previous is not None:
            prev_kind, prev_source = self._current.get(previous, (None, None))[:2]
            source = previous if prev_kind == "vanilla" else prev_source
        self._current[name] = (self._kinds[name], source, previous)
        self._last = name
        if self._want_inputs and args and isinstance(args[0], torch.Tensor):
            self._inputs[name] = args[0].detach()

    def _capture(self, name, module, args, kwargs, output):
        pattern = args[1] if len(args) > 1 else kwargs["pattern"]
        scores = kwargs.get("scores") if self._want_scores else None
        B, heads, H, W, K = output.shape
        items = _select("batch_items", self._batch_items, B)
        heads_kept = _select("heads", self._heads, heads)
        for query in self._queries or ():
            check_query(query, H, W, where=f"map of {name!r}")
        weights = _take(output, self._batch_items, self._heads, self._queries)
        scores = None if scores is None else _take(scores, self._batch_items, self._heads, self._queries)
        kind, source, previous = self._current.get(name, (self._kinds[name], None, None))
        stage, position, depth = self._positions[name]
        self.records.append(AttentionRecord(
            name=name, kind=kind, pattern=pattern, size=(H, W), weights=weights, scores=scores,
            batch_items=items, heads=heads_kept, queries=self._queries, stage=stage, layer=position, depth=depth,
            index=len(self.records), call=max(self._call, 0), previous=previous, source=source,
            input=self._inputs.get(name),
        ))


def _select(what: str, chosen, count: int) -> tuple[int, ...]:
    if chosen is None:
        return tuple(range(count))
    bad = [c for c in chosen if not 0 <= c < count]
    if bad:
        raise ValueError(f"{what} must be indices below {count}; got {what}={list(chosen)}")
    return tuple(chosen)


def _take(x: torch.Tensor, batch_items, heads, queries) -> torch.Tensor:
    """Detached ``[B, heads, H, W, K]`` restricted to the chosen items, heads and queries (copies)."""
    x = x.detach()
    if batch_items is not None:
        x = x[list(batch_items)]
    if heads is not None:
        x = x[:, list(heads)]
    if queries is not None:
        rows = torch.tensor([i for i, _ in queries], device=x.device)
        cols = torch.tensor([j for _, j in queries], device=x.device)
        x = x[:, :, rows, cols]  # [B, heads, Q, K]
    return x


# ---------------------------------------------------------------------------------------------
# the context manager
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def probe(model: nn.Module, names="*", *, batch_items=None, heads=None, queries=None, scores: bool = False,
          inputs: bool = False):
    """Record the attention of ``model``'s attention layers while the ``with`` block runs.

    Args:
        model: any ``nn.Module``; its attention layers are those of ``attention_layers``.
        names: shell-style pattern(s) (``fnmatch``, case-sensitive) on qualified layer names, a
            string or a list; each must match at least one layer (else ``ValueError`` listing them).
        batch_items, heads: keep only these batch items / heads (lists of indices) to save memory.
        queries: keep only these ``(i, j)`` queries: ``weights [B, heads, Q, K]``.
        scores: also keep the pre-softmax scores (``AttentionRecord.scores``).
        inputs: also keep each layer call's input (``AttentionRecord.input``), e.g. to run another
            layer on it (``vizattn.metrics.vanilla_here``).

    Yields a ``Recorder``: one ``AttentionRecord`` per call of a matched layer, in call order.
    Matched layers run their explicit path (``fused=False``) inside the block, which computes the
    same outputs; previous ``fused`` values and every hook are restored on exit, also on error.

    >>> import torch; from vizattn.layers import MaxViTBlock
    >>> block = MaxViTBlock(dim_in=8, dim=8, heads=2, size=2).eval()
    >>> with probe(block, "grid*", heads=[1], queries=[(0, 0)]) as rec:
    ...     _ = block(torch.randn(2, 4, 4, 8))
    >>> [(r.name, r.kind, tuple(r.weights.shape)) for r in rec]
    [('grid_attn', 'grid', (2, 1, 1, 4))]
    >>> with probe(block, "attn*"):
    ...     pass
    Traceback (most recent call last):
    ...
    ValueError: names pattern 'attn*' matches no attention layer; available: 'block_attn', 'grid_attn'
    """
    layers = attention_layers(model)
    patterns = name_patterns(names)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no attention layers (modules with an AttentionProbs "
                         "'attn_probs' child and a 'fused' switch)")
    available = ", ".join(repr(n) for n in layers)
    for p in patterns:
        if not any(fnmatch.fnmatchcase(n, p) for n in layers):
            raise ValueError(f"names pattern {p!r} matches no attention layer; available: {available}")
    matched = {n: m for n, m in layers.items() if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
    check_bool("scores", scores)
    check_bool("inputs", inputs)
    recorder = Recorder(
        matched, {n: layer_kind(m) for n, m in layers.items()}, _positions(list(layers)),
        indices("batch_items", batch_items), indices("heads", heads), query_list(queries), scores, inputs,
    )
    handles = []
    try:
        handles.append(model.register_forward_pre_hook(recorder._start_forward))
        for name, layer in layers.items():
            handles.append(layer.register_forward_pre_hook(functools.partial(recorder._enter, name)))
        for name, layer in matched.items():
            handles.append(layer.attn_probs.register_forward_hook(
                functools.partial(recorder._capture, name), with_kwargs=True))
        with explicit(*matched.values()):
            yield recorder
    finally:
        for handle in handles:
            handle.remove()

