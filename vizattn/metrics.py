"""Numbers about attention maps: diagonality, symmetry, LaViT's diagonality-preserving loss, and
measures over captured records (``vizattn.probe``): per-layer DP loss, reuse distance, saturation,
mean attention distance.

Attention maps here are square, ``attn [..., N, N]`` (query token, key token), usually
post-softmax probabilities whose rows sum to 1; leading axes (batch, heads) are kept by the
measures and averaged by the loss. Record measures take ``AttentionRecord``s (their ``dense()``
maps; captured with all queries).
"""

from __future__ import annotations

import torch

__all__ = ["diagonality", "symmetry", "diagonality_preserving_loss", "dp_loss_per_layer", "reuse_distance",
           "vanilla_here", "reuse_chains", "saturation", "mean_attention_distance"]


def _check_square(attn) -> int:
    if not isinstance(attn, torch.Tensor) or attn.dim() < 2 or attn.shape[-1] != attn.shape[-2]:
        got = tuple(attn.shape) if isinstance(attn, torch.Tensor) else type(attn).__name__
        raise ValueError(f"attn must be square maps [..., N, N]; got shape {got}")
    return attn.shape[-1]


def diagonality(attn: torch.Tensor) -> torch.Tensor:
    """Share of the mass on the diagonal, ``trace(A) / sum(A)`` per map: ``[...]``.

    1 for the identity, ``1/N`` for a uniform map.

    >>> import torch
    >>> diagonality(torch.eye(4)).item(), diagonality(torch.full((4, 4), 0.25)).item()
    (1.0, 0.25)
    """
    _check_square(attn)
    return attn.diagonal(dim1=-2, dim2=-1).sum(-1) / attn.sum((-2, -1))


def symmetry(attn: torch.Tensor) -> torch.Tensor:
    """Normalised symmetry *error* ``sum|A - A^T| / (2 sum|A|)`` per map: ``[...]``, in ``[0, 1]``.

    0 for a symmetric map, 1 when no mass has a mirror (e.g. strictly triangular).

    >>> import torch
    >>> symmetry(torch.eye(3)).item(), symmetry(torch.tensor([[0.0, 1.0], [0.0, 0.0]])).item()
    (0.0, 1.0)
    """
    _check_square(attn)
    return (attn - attn.transpose(-1, -2)).abs().sum((-2, -1)) / (2 * attn.abs().sum((-2, -1)))


def diagonality_preserving_loss(attn: torch.Tensor) -> torch.Tensor:
    """LaViT's diagonality-preserving loss of an LA layer's transformed attention (post-softmax).

    Per map ``A [N, N]``::

        L = ( sum_ij |A_ij - A_ji|  +  sum_i [ -(N-1) A_ii + sum_{j != i} A_ij ] ) / N^2

    The first term penalises asymmetry; the second rewards diagonal mass against off-diagonal
    mass, the ``N - 1`` balancing ``N`` diagonal entries against ``N(N-1)`` off-diagonal ones.
    The sign makes minimisation favour the diagonal; the ``1/N^2`` normalisation and the mean over
    leading axes (batch, heads) are [vizattn choices]. For row-stochastic maps the second term is
    ``(N - N trace(A)) / N^2``: the identity scores ``1/N - 1``, a uniform map 0. The training
    loss is ``cross_entropy + lambda * sum over LA layers of L``.

    >>> import torch
    >>> diagonality_preserving_loss(torch.eye(4)).item(), diagonality_preserving_loss(torch.full((4, 4), 0.25)).item()
    (-0.75, 0.0)
    """
    N = _check_square(attn)
    asymmetry = (attn - attn.transpose(-1, -2)).abs().sum((-2, -1))
    diag = attn.diagonal(dim1=-2, dim2=-1).sum(-1)
    off_diagonal = attn.sum((-2, -1)) - diag
    return ((asymmetry - (N - 1) * diag + off_diagonal) / N**2).mean()


# ---------------------------------------------------------------------------------------------
# measures over captured records (vizattn.probe)
# ---------------------------------------------------------------------------------------------
def _is_record(x) -> bool:
    return all(hasattr(x, a) for a in ("dense", "weights", "size", "kind", "name"))


def _full_map(record, what: str) -> torch.Tensor:
    """``record.dense()`` ``[B, heads, N, N]``; ValueError unless all queries were captured."""
    if not _is_record(record):
        raise ValueError(f"{what} must be an AttentionRecord (from vizattn.probe); got {type(record).__name__}")
    if record.queries is not None:
        raise ValueError(f"{what} needs every query; {record.name!r} was captured for queries={list(record.queries)}")
    return record.dense()


def dp_loss_per_layer(records) -> dict[str, float]:
    """LaViT's diagonality-preserving loss of every less-attention record: ``{layer name: loss}``.

    The loss of ``diagonality_preserving_loss`` on the record's probabilities (``dense()``,
    averaged over captured batch items and heads); a layer recorded several times gets the mean.
    Records of other kinds are skipped; no LA record at all raises ``ValueError``.

    >>> import torch; from vizattn import probe; from vizattn.layers import LessAttention
    >>> la = LessAttention(dim=8, heads=2, tokens=4)
    >>> with probe(la) as rec:
    ...     _ = la(torch.randn(1, 2, 2, 8), 10 * torch.eye(4).expand(1, 2, 4, 4))
    >>> {k: round(v, 3) for k, v in dp_loss_per_layer(rec).items()}   # near-identity maps: close to 1/N - 1
    {'': -0.75}
    """
    records = list(records)
    if not all(_is_record(r) for r in records):
        raise ValueError("records must be AttentionRecords (from vizattn.probe)")
    losses: dict[str, list[float]] = {}
    for r in records:
        if r.kind == "less":
            losses.setdefault(r.name, []).append(float(diagonality_preserving_loss(_full_map(r, "a record"))))
    if not losses:
        raise ValueError(f"no less-attention (LaViT LA) record among the {len(records)} records; kinds: "
                         f"{sorted({r.kind for r in records})}")
    return {name: sum(v) / len(v) for name, v in losses.items()}


def _as_rows(x, what: str) -> torch.Tensor:
    if _is_record(x):
        return _full_map(x, what)
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{what} must be an AttentionRecord or probabilities [B, heads, N, N]; got {got}")
    return x


def reuse_distance(la_record, vanilla_attention, measure: str = "tv") -> torch.Tensor:
    """How far an LA layer's attention is from a vanilla layer's, per head: ``[heads]``.

    Both are row distributions over key tokens: ``la_record`` an ``AttentionRecord``,
    ``vanilla_attention`` a record or probabilities ``[B, heads, N, N]`` of the same shape — what
    a vanilla layer computes at the same depth (e.g. a ``VanillaAttention`` probed on the LA
    layer's input, or the LA layer's ``source`` record: how far reuse has drifted). For every
    query row the distance between the two distributions p, q is

    - ``measure="tv"``: total variation ``1/2 sum_k |p_k - q_k|`` (the share of mass that must
      move), in [0, 1];
    - ``measure="js"``: Jensen-Shannon divergence in bits, ``H((p+q)/2) - (H(p) + H(q))/2``, in [0, 1];

    then averaged over batch items and queries. 0 means the LA layer attends exactly as the
    vanilla one.

    >>> import torch
    >>> p = torch.eye(3).expand(1, 2, 3, 3)
    >>> reuse_distance(p, p).tolist(), [round(d, 4) for d in reuse_distance(p, p.flip(-1), measure="js").tolist()]
    ([0.0, 0.0], [0.6667, 0.6667])
    """
    if measure not in ("tv", "js"):
        raise ValueError(f"measure must be 'tv' or 'js'; got measure={measure!r}")
    p = _as_rows(la_record, "la_record")
    q = _as_rows(vanilla_attention, "vanilla_attention")
    if p.shape != q.shape:
        raise ValueError("both maps must have the same shape [B, heads, N, N]; "
                         f"got {tuple(p.shape)} and {tuple(q.shape)}")
    p, q = p.to(torch.promote_types(p.dtype, torch.float32)), q.to(torch.promote_types(q.dtype, torch.float32))
    if measure == "tv":
        rows = 0.5 * (p - q).abs().sum(-1)
    else:
        def plogp(x):
            return torch.where(x > 0, x * x.clamp(min=torch.finfo(x.dtype).tiny).log2(), torch.zeros_like(x))
        m = 0.5 * (p + q)
        rows = (0.5 * (plogp(p) + plogp(q)) - plogp(m)).sum(-1).clamp(min=0)
    return rows.mean((0, 2))


def vanilla_here(model: torch.nn.Module, la_record) -> torch.Tensor:
    """What a vanilla layer would attend at a LaViT less-attention layer: ``[B, heads, N, N]``.

    The LA layer's ``source`` (its stage's VA layer, a submodule of ``model``) run on the LA layer's
    own input, ``softmax(Q'K'^T / sqrt(d))`` with that VA layer's query and key projections, no
    attention residual. The record must come from ``vizattn.probe(model, inputs=True)``.

    >>> import torch; from vizattn import probe; from vizattn.layers import LessAttention, VanillaAttention
    >>> class Two(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.va, self.la = VanillaAttention(8, 2), LessAttention(8, 2, tokens=9)
    ...     def forward(self, x):
    ...         return self.la(x, self.va(x)[1])[0]
    >>> model, x = Two(), torch.randn(1, 3, 3, 8)
    >>> with probe(model, inputs=True) as rec:
    ...     _ = model(x)
    >>> torch.allclose(vanilla_here(model, rec["la"]), rec["va"].dense())   # the same input as the VA layer
    True
    """
    if not _is_record(la_record) or la_record.kind != "less" or la_record.source is None:
        raise ValueError("la_record must be the AttentionRecord of a less-attention layer with a source; got "
                         f"{getattr(la_record, 'kind', type(la_record).__name__)!r}")
    if la_record.input is None:
        raise ValueError(f"the record of {la_record.name!r} has no input: probe the model with inputs=True")
    with torch.no_grad():
        return model.get_submodule(la_record.source)(la_record.input)[1].softmax(-1)


def reuse_chains(model: torch.nn.Module, records) -> list[list[dict]]:
    """LaViT's reuse chain of every stage, each layer measured, with what a vanilla layer would do there.

    ``records``: the ``Recorder`` of ``vizattn.probe(model, inputs=True)`` around one forward of a
    LaViT ``model``. One list per stage (in order), one dict per layer of the chain ending at the
    stage's last layer (VA, LA, LA, ...), of batch item 0: ``name``, ``kind``, ``stage``, ``used``
    (the probabilities the layer uses, ``[heads, N, N]``), ``diagonality`` and ``symmetry`` (means
    of heads); each LA layer also ``vanilla`` (``vanilla_here``, ``[heads, N, N]``), ``distance``
    (``reuse_distance`` to it, ``[heads]``), ``vanilla_diagonality`` and ``vanilla_symmetry``.
    """
    last = {}
    for r in records:
        last[r.stage] = r
    chains = []
    for stage in sorted(last, key=lambda s: (s is None, s)):
        rows = []
        for r in records.chain(last[stage]):
            used = _full_map(r, "every record")[0]  # [heads, N, N]
            row = dict(name=r.name, kind=r.kind, stage=r.stage, used=used,
                       diagonality=float(diagonality(used).mean()), symmetry=float(symmetry(used).mean()))
            if r.kind == "less":
                vanilla = vanilla_here(model, r)  # [B, heads, N, N]
                row.update(vanilla=vanilla[0], distance=reuse_distance(r, vanilla),
                           vanilla_diagonality=float(diagonality(vanilla[0]).mean()),
                           vanilla_symmetry=float(symmetry(vanilla[0]).mean()))
            rows.append(row)
        chains.append(rows)
    return chains


def saturation(records) -> torch.Tensor:
    """Similarity of consecutive layers' attention: ``[len(records) - 1]``, the LaViT motivation.

    For each consecutive pair of records, the cosine similarity of their head-averaged dense maps
    (``[N, N]`` per batch item, flattened), averaged over batch items (heads of different layers
    are not aligned, so they are averaged first). NaN where the two maps differ in size (a stage
    boundary). Near 1: the later layer attends as the earlier one did (attention saturation).

    >>> import torch; from vizattn import probe; from vizattn.layers import PatternAttention
    >>> from vizattn.patterns import Global
    >>> class Two(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b = PatternAttention(8, 2, Global()), PatternAttention(8, 2, Global())
    ...     def forward(self, x):
    ...         return self.b(self.a(x))
    >>> model = Two(); model.b.load_state_dict(model.a.state_dict())
    <All keys matched successfully>
    >>> with probe(model) as rec:
    ...     _ = model(torch.randn(1, 3, 3, 8))
    >>> tuple(saturation(rec).shape), bool(saturation(rec) > 0)
    ((1,), True)
    """
    records = list(records)
    if len(records) < 2:
        raise ValueError(f"saturation compares consecutive layers: it needs at least 2 records; got {len(records)}")
    maps = [_full_map(r, "every record").mean(1) for r in records]  # [B, N, N]
    out = []
    for a, b in zip(maps, maps[1:]):
        if a.shape != b.shape:
            out.append(float("nan"))
            continue
        a, b = a.flatten(1).double(), b.flatten(1).double()
        out.append(float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean()))
    return torch.tensor(out)


def mean_attention_distance(record, pixel_size: float = 1.0) -> torch.Tensor:
    """Mean attention distance per head: ``[heads]`` (captured heads).

    For every query, ``sum_k weight_k * |pos_query - pos_key|`` (Euclidean, in map positions,
    times ``pixel_size``, e.g. ``input_side / H`` for input pixels), averaged over queries and
    batch items. Slots with no token (SASA's zero padding) read nothing and are left out (their
    mass is not redistributed). Works with a ``queries`` subset too.

    >>> import torch; from vizattn import probe; from vizattn.layers import BlockAttention
    >>> layer = BlockAttention(dim=8, heads=2, size=2, rel_pos_bias=False)
    >>> with torch.no_grad():
    ...     _ = layer.qkv.weight.zero_(), layer.qkv.bias.zero_()    # uniform weights in each 2x2 block
    >>> with probe(layer) as rec:
    ...     _ = layer(torch.randn(1, 4, 4, 8))
    >>> [round(d, 4) for d in mean_attention_distance(rec[0]).tolist()]   # (0 + 1 + 1 + sqrt 2) / 4
    [0.8536, 0.8536]
    """
    if not _is_record(record):
        raise ValueError(f"record must be an AttentionRecord (from vizattn.probe); got {type(record).__name__}")
    if not isinstance(pixel_size, (int, float)) or pixel_size <= 0:
        raise ValueError(f"pixel_size must be a positive number; got pixel_size={pixel_size!r}")
    H, W = record.size
    keys = record.keys  # [rows, K]
    w = record._rows()  # [B, heads, rows, K]
    rows = torch.arange(H * W) if record.queries is None else torch.tensor([i * W + j for i, j in record.queries])
    qh, qw = (rows // W)[:, None], (rows % W)[:, None]
    kh, kw = keys.clamp(min=0) // W, keys.clamp(min=0) % W
    dist = ((qh - kh).double() ** 2 + (qw - kw).double() ** 2).sqrt().where(keys >= 0, 0.0)  # [rows, K]
    dist = dist.to(device=w.device, dtype=torch.promote_types(w.dtype, torch.float32))
    return (w * dist).sum(-1).mean((0, 2)) * pixel_size
