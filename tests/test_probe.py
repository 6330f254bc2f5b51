"""vizattn.probe: captured weights with their geometry, hooks that never outlive the block, memory options,
LaViT reuse chains. Small maps, float64 where values are compared."""

import gc
import subprocess
import sys
import weakref

import pytest
import torch
from torch import nn

import vizattn
from vizattn.functional import slot_logits
from vizattn.layers import (
    AttentionProbs,
    AttentionStem,
    BlockAttention,
    GlobalAttention,
    GridAttention,
    LessAttention,
    LongShortDistanceAttention,
    NeighborhoodAttention,
    PatternAttention,
    ShiftedWindowAttention,
    StandAloneAttention,
    VanillaAttention,
)
from vizattn.patterns import Block, Global, LocalWindow
from vizattn.probe import AttentionRecord, attention_layers, probe

from conftest import D, all_hooks, randn

DIM, SIDE = 8, 6


class Zoo(nn.Module):
    """One layer of every kind on a 6x6 map, residual-style, then a LaViT VA -> LA -> LA chain."""

    def __init__(self):
        super().__init__()
        self.stages = nn.ModuleList([
            nn.ModuleDict(dict(
                nat=NeighborhoodAttention(DIM, 2, kernel_size=3),
                dinat=NeighborhoodAttention(DIM, 2, kernel_size=3, dilation=2),
                sasa=StandAloneAttention(DIM, 2, kernel_size=3),
                block=BlockAttention(DIM, 2, size=2),
                grid=GridAttention(DIM, 2, size=2),
            )),
            nn.ModuleDict(dict(
                sda=LongShortDistanceAttention(DIM, 2, kind="sda", group=3),
                lda=LongShortDistanceAttention(DIM, 2, kind="lda", interval=2),
                swin=ShiftedWindowAttention(DIM, 2, window=3, shift=1),
                vit=GlobalAttention(DIM, 2),
            )),
        ])
        self.va = VanillaAttention(DIM, 2)
        self.la1 = LessAttention(DIM, 2, tokens=SIDE * SIDE)
        self.la2 = LessAttention(DIM, 2, tokens=SIDE * SIDE)

    def forward(self, x):
        for stage in self.stages:
            for layer in stage.values():
                x = x + layer(x)
        y, s = self.va(x)
        x = x + y
        y, s = self.la1(x, s)
        x = x + y
        y, s = self.la2(x, s)
        return x + y


NAMES = ["stages.0.nat", "stages.0.dinat", "stages.0.sasa", "stages.0.block", "stages.0.grid",
         "stages.1.sda", "stages.1.lda", "stages.1.swin", "stages.1.vit", "va", "la1", "la2"]
KINDS = ["neighborhood", "neighborhood", "sasa", "block", "grid", "sda", "lda", "swin", "global", "vanilla", "less",
         "less"]


def make_zoo(dtype=D, seed=0):
    torch.manual_seed(seed)
    zoo = Zoo().to(dtype)
    with torch.no_grad():  # move LA layers off the identity so they do something of their own
        for la in (zoo.la1, zoo.la2):
            la.theta.weight.add_(0.05 * torch.randn_like(la.theta.weight))
    return zoo


def image(B=2, dtype=D, seed=1):
    return randn(B, SIDE, SIDE, DIM, seed=seed, dtype=dtype)


@pytest.fixture(scope="module")
def captured():
    zoo = make_zoo()
    with probe(zoo, scores=True) as rec:
        zoo(image())
    return zoo, rec


# ---------------------------------------------------------------------------------------------
# what is captured
# ---------------------------------------------------------------------------------------------
def test_records_come_in_call_order_with_kind_pattern_and_size(captured):
    zoo, rec = captured
    assert [r.name for r in rec] == NAMES and [r.kind for r in rec] == KINDS
    assert [r.index for r in rec] == list(range(len(NAMES)))
    assert all(isinstance(r, AttentionRecord) and r.size == (SIDE, SIDE) for r in rec)
    layers = attention_layers(zoo)
    assert [layers[r.name].kind for r in rec] == KINDS  # the probe reads the layer's own kind
    for r in rec:
        if hasattr(layers[r.name], "pattern"):
            assert r.pattern == layers[r.name].pattern(SIDE, SIDE)
    assert rec["stages.1.sda"].pattern == rec["stages.1.sda"].pattern  # lookup by name
    with pytest.raises(KeyError, match="no record of layer 'nope'"):
        rec["nope"]


def test_a_layer_states_its_kind_even_where_its_pattern_would_say_otherwise():
    small_sda = LongShortDistanceAttention(DIM, 2, kind="sda", group=8)  # global on a 6x6 map
    rule = PatternAttention(DIM, 2, lambda H, W: Block(2))  # a rule of the map size names no mechanism
    stem = AttentionStem(3, DIM, 2, kernel_size=3)
    for layer, x, kind in [(small_sda, image(), "sda"), (rule, image(), "patternattention"),
                           (stem, randn(1, SIDE, SIDE, 3, dtype=D), "sasa")]:
        layer = layer.to(D)
        with probe(layer) as rec:
            layer(x)
        assert layer.kind == rec[0].kind == kind
    assert isinstance(rec[0].pattern, LocalWindow) and small_sda.pattern(SIDE, SIDE) == Global()


def test_weights_are_detached_rows_summing_to_one(captured):
    _, rec = captured
    for r in rec:
        K = r.pattern.keys(SIDE, SIDE).shape[1]
        assert r.weights.shape == (2, 2, SIDE, SIDE, K) and not r.weights.requires_grad
        torch.testing.assert_close(r.weights.sum(-1), torch.ones(2, 2, SIDE, SIDE, dtype=D), rtol=0, atol=1e-12)
        assert torch.equal(r.keys, r.pattern.keys(SIDE, SIDE))


def test_query_map_is_nan_exactly_where_the_query_cannot_look(captured):
    _, rec = captured
    for r in rec:
        keys = r.pattern.keys(SIDE, SIDE)
        for i, j in [(0, 0), (0, 5), (2, 3), (5, 5), (3, 0)]:
            for head in (None, 1):
                m = r.query_map(i, j, head=head, batch=1)
                seen = torch.zeros(SIDE * SIDE, dtype=torch.bool)
                real = keys[i * SIDE + j]
                seen[real[real >= 0]] = True
                assert torch.equal(~m.isnan(), seen.reshape(SIDE, SIDE)), (r.name, i, j)
                total = m.nansum() + r.outside_mass(i, j, head=head, batch=1)
                assert abs(total.item() - 1) < 1e-12
    sasa = rec["stages.0.sasa"]
    assert sasa.outside_mass(0, 0) > 0.0 and sasa.outside_mass(2, 2) == 0.0  # zero padding leaks at the corner
    assert rec["stages.0.nat"].outside_mass(0, 0) == 0.0


def test_query_map_places_each_weight_on_its_key(captured):
    _, rec = captured
    r = rec["stages.0.dinat"]
    keys = r.pattern.keys(SIDE, SIDE)[4 * SIDE + 1]
    m = r.query_map(4, 1, head=0, batch=0).reshape(-1)
    torch.testing.assert_close(m[keys], r.weights[0, 0, 4, 1])


def test_dense_rows_are_zero_exactly_outside_the_mask(captured):
    _, rec = captured
    for r in rec:
        d = r.dense()
        assert d.shape == (2, 2, SIDE * SIDE, SIDE * SIDE)
        mask = r.pattern.mask(SIDE, SIDE)
        assert torch.equal(d != 0, mask.expand_as(d)), r.name
        if not r.pattern.zero_slots:
            torch.testing.assert_close(d.sum(-1), torch.ones_like(d[..., 0]), rtol=0, atol=1e-12)


def test_scores_are_the_true_pre_softmax_logits(captured):
    zoo, rec = captured
    for r in rec:
        assert r.scores.shape == r.weights.shape
        torch.testing.assert_close(r.scores.softmax(-1), r.weights, rtol=0, atol=1e-12)
    # by hand for NA: q . k * scale + relative position bias, on the layer's input
    x = image()
    layer = zoo.stages[0]["nat"]
    with torch.no_grad():
        q, k, _ = layer.qkv(x).reshape(2, SIDE, SIDE, 3, 2, DIM // 2).permute(3, 0, 4, 1, 2, 5)
        want = slot_logits(q, k, layer.pattern(SIDE, SIDE), layer.bias(SIDE, SIDE))
        torch.testing.assert_close(rec["stages.0.nat"].scores, want)
        assert not torch.allclose(rec["stages.0.nat"].scores, rec["stages.0.nat"].weights.log())  # not log-probs
    # LaViT layers return their scores: the record holds the same numbers
    with probe(zoo, ["va", "la*"], scores=True) as again:
        zoo.eval()
        seen = {}
        hooks = [zoo.get_submodule(n).register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, o[1]))
                 for n in ("va", "la1", "la2")]
        zoo(x)
        for h in hooks:
            h.remove()
    for r in again:
        torch.testing.assert_close(r.scores.reshape(2, 2, SIDE * SIDE, -1), seen[r.name].detach())


def test_stage_and_layer_come_from_the_name(captured):
    _, rec = captured
    assert [(r.stage, r.layer) for r in rec][:8] == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 0), (1, 1), (1, 2)]
    assert (rec["va"].stage, rec["la2"].stage, rec["la2"].layer) == (None, None, 2)
    assert [r.depth for r in rec] == list(range(len(NAMES)))


# ---------------------------------------------------------------------------------------------
# the model is left as it was
# ---------------------------------------------------------------------------------------------
# float32: the probe's explicit path and the fused kernel (native: its own summation order) agree to a few ulps
@pytest.mark.parametrize("dtype, atol, rtol", [(D, 1e-12, 0), (torch.float32, 1e-6, 1e-6)])
def test_output_is_unchanged_under_the_probe(dtype, atol, rtol):
    zoo, x = make_zoo(dtype), image(dtype=dtype)
    plain = zoo(x)
    with probe(zoo) as rec:
        probed = zoo(x)
    assert len(rec) == len(NAMES)
    torch.testing.assert_close(probed, plain, rtol=rtol, atol=atol)
    torch.testing.assert_close(zoo(x), plain, rtol=0, atol=0)


def test_hooks_and_fused_flags_are_restored_on_exit_and_on_error():
    zoo, x = make_zoo(), image()
    zoo.stages[0]["block"].fused = False  # a layer the user had switched already keeps its switch
    before_hooks, before = all_hooks(zoo), {n: (m.fused, "fused" in vars(m)) for n, m in attention_layers(zoo).items()}
    with probe(zoo, "stages.*") as rec:
        assert all(m.fused is False for n, m in attention_layers(zoo).items() if n.startswith("stages."))
        assert all_hooks(zoo) > before_hooks
        zoo(x)
    assert all_hooks(zoo) == before_hooks
    assert {n: (m.fused, "fused" in vars(m)) for n, m in attention_layers(zoo).items()} == before
    with pytest.raises(RuntimeError, match="boom"):
        with probe(zoo):
            zoo(x)
            raise RuntimeError("boom")
    assert all_hooks(zoo) == before_hooks
    assert {n: (m.fused, "fused" in vars(m)) for n, m in attention_layers(zoo).items()} == before
    # an error inside a hook
    with pytest.raises(ValueError, match=r"query must lie on the 6x6 map of 'stages.0.nat'; got query=\(7, 0\)"):
        with probe(zoo, queries=[(7, 0)]):
            zoo(x)
    assert all_hooks(zoo) == before_hooks and len(rec) == 9


def test_repeated_captures_do_not_leak():
    torch.manual_seed(0)
    layer, x = NeighborhoodAttention(DIM, 2, kernel_size=3), torch.randn(1, 4, 4, DIM)
    hooks = all_hooks(layer)

    def records_alive():
        gc.collect()
        return sum(type(o) is AttentionRecord for o in gc.get_objects())

    baseline, refs = records_alive(), []
    for _ in range(100):
        with probe(layer) as rec:
            layer(x)
        assert len(rec) == 1
        refs.append(weakref.ref(rec))
        del rec
    assert records_alive() == baseline
    gc.collect()
    assert all(r() is None for r in refs)
    assert all_hooks(layer) == hooks and len(layer.attn_probs._forward_hooks) == 0 and layer.fused is True


# ---------------------------------------------------------------------------------------------
# choosing layers and what to keep
# ---------------------------------------------------------------------------------------------
def test_names_select_layers_and_a_pattern_matching_nothing_lists_them():
    zoo, x = make_zoo(), image()
    with probe(zoo, ["stages.0.*", "la?"]) as rec:
        zoo(x)
    assert [r.name for r in rec] == NAMES[:5] + ["la1", "la2"]
    assert all(zoo.get_submodule(n).fused for n in NAMES)  # restored
    with pytest.raises(ValueError, match=r"names pattern 'stage\.\*' matches no attention layer; available: "
                                         r"'stages\.0\.nat', 'stages\.0\.dinat'.*'la2'"):
        with probe(zoo, "stage.*"):
            pass
    with pytest.raises(ValueError, match="has no attention layers"):
        with probe(nn.Linear(2, 2)):
            pass
    for bad in (dict(names=3), dict(batch_items=[-1]), dict(heads="0"), dict(queries=[(0,)]), dict(scores=1)):
        with pytest.raises(ValueError):
            with probe(zoo, **bad):
                pass
    assert all_hooks(zoo) == 0


def test_memory_options_reduce_the_shapes_and_keep_the_same_numbers(captured):
    zoo, full = captured
    queries = [(0, 0), (2, 3), (5, 1)]
    with probe(zoo, batch_items=[1], heads=[1], queries=queries, scores=True) as rec:
        zoo(image())
    for small, big in zip(rec, full):
        K = big.weights.shape[-1]
        assert small.weights.shape == (1, 1, 3, K) and small.scores.shape == (1, 1, 3, K)
        assert (small.batch_items, small.heads, small.queries) == ((1,), (1,), tuple(queries))
        rows, cols = torch.tensor([0, 2, 5]), torch.tensor([0, 3, 1])
        torch.testing.assert_close(small.weights[0, 0], big.weights[1, 1, rows, cols])
        assert torch.equal(small.keys, big.keys[rows * SIDE + cols])
        torch.testing.assert_close(small.query_map(2, 3, head=1, batch=1), big.query_map(2, 3, head=1, batch=1),
                                   equal_nan=True)
        assert small.dense().shape == (1, 1, 3, SIDE * SIDE)
        with pytest.raises(ValueError, match=r"query \(1, 1\) was not captured"):
            small.query_map(1, 1, batch=1)
        with pytest.raises(ValueError, match="head 0 was not captured"):
            small.query_map(0, 0, head=0, batch=1)
        with pytest.raises(ValueError, match="batch item 0 was not captured"):
            small.query_map(0, 0)
    with probe(zoo, heads=[0, 1], batch_items=0) as rec:
        zoo(image())
    assert rec[0].weights.shape == (1, 2, SIDE, SIDE, 9)


# ---------------------------------------------------------------------------------------------
# LaViT reuse chains
# ---------------------------------------------------------------------------------------------
def test_inputs_are_recorded_only_when_asked_and_are_what_each_layer_received(captured):
    _, rec = captured
    assert all(r.input is None for r in rec)
    zoo, x = make_zoo(), image()
    seen = {}
    for name in NAMES:  # an independent record of each layer's input
        zoo.get_submodule(name).register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, args[0]))
    with torch.no_grad(), probe(zoo, inputs=True, batch_items=[1]) as with_inputs:
        zoo(x)
    assert [r.name for r in with_inputs] == NAMES
    for r in with_inputs:
        assert torch.equal(r.input, seen[r.name]) and not r.input.requires_grad, r.name
        assert r.input.shape == (2, SIDE, SIDE, DIM)  # every batch item, whatever batch_items keeps
    assert torch.equal(with_inputs[0].input, x)
    with pytest.raises(ValueError, match="inputs must be True or False"):
        with probe(zoo, inputs="yes"):
            pass


def test_less_attention_records_name_their_source_and_previous_layer():
    zoo, x = make_zoo(), image()
    with probe(zoo) as rec:
        zoo(x)
        zoo(x[:1])
    first, second = rec[: len(NAMES)], rec[len(NAMES):]
    assert [r.call for r in first] == [0] * len(NAMES) and [r.call for r in second] == [1] * len(NAMES)
    by_name = {r.name: r for r in first}
    assert (by_name["la1"].source, by_name["la1"].previous) == ("va", "va")
    assert (by_name["la2"].source, by_name["la2"].previous) == ("va", "la1")
    assert by_name["va"].source is None and by_name["va"].previous == "stages.1.vit"
    assert first[0].previous is None and second[0].previous is None  # a new forward starts a new chain
    assert [r.name for r in rec.chain(rec["la2"])] == ["va", "la1", "la2"]
    assert all(r.call == 1 for r in rec.chain(rec["la2"]))
    # probing only the LA layers still names the (uncaptured) vanilla source
    with probe(zoo, "la2") as only:
        zoo(x)
    assert (only[0].source, only[0].previous) == ("va", "la1") and only.chain(only[0]) == [only[0]]


def test_import_vizattn_stays_light_and_exports_probe():
    code = ("import sys, vizattn; from vizattn.probe import AttentionRecord; m = sys.modules['vizattn.probe']; "
            "heavy = [n for n in ('plotly', 'ipywidgets', 'timm', 'skimage', 'vizattn.models', 'vizattn.data', "
            "'vizattn.receptive') if n in sys.modules]; "
            "assert not heavy, heavy; assert callable(vizattn.probe) and vizattn.probe is m.probe; "
            "assert 'probe' in vizattn.__all__")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_probs_step_without_scores_still_works():
    step, seen = AttentionProbs(), []
    handle = step.register_forward_hook(lambda m, inputs, out: seen.append(len(inputs)))
    step(torch.ones(1, 1, 2, 2, 4) / 4, Global())
    handle.remove()
    assert seen == [2]
    assert vizattn.probe is probe
