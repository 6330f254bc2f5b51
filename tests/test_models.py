"""vizattn.models and vizattn.train: every registered model builds, runs, learns a step, is seeded,
validates its configuration stage by stage, counts its FLOPs by mechanism, and ships weights that
reach the accuracy recorded in vizattn/weights/metrics.json."""

import json
import re
import socket

import pytest
import torch
import torch.nn.functional as F

from vizattn import train as training
from vizattn.data import TASKS, Shapes
from vizattn.layers import attention_layers
from vizattn.metrics import diagonality_preserving_loss
from vizattn.models import WEIGHTS, create, list_models

from conftest import ROOT, generator

NAMES = list_models()
README = ROOT / "README.md"


def seeded(name, seed=0, **kwargs):
    torch.manual_seed(seed)
    return create(name, **kwargs)


def images(batch=2, seed=0):
    return torch.rand(batch, 3, 64, 64, generator=generator(seed))


def test_the_registry_holds_the_six_papers_and_the_baseline():
    assert NAMES == ("vit", "sasa", "nat", "dinat", "maxvit", "crossformer", "lavit", "swin")


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_backward_for_both_tasks(name):
    for task in TASKS:
        model = seeded(name, task=task)
        logits = model(images())
        assert logits.shape == (2, len(Shapes.classes(task)))
        loss, _ = training.objective(model, images(), torch.tensor([0, 1]))
        loss.backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", NAMES)
def test_two_creates_with_one_seed_are_identical(name):
    a, b, c = seeded(name), seeded(name), seeded(name, seed=1)
    assert torch.equal(a(images()), b(images()))
    assert not torch.equal(a(images()), c(images()))


@pytest.mark.parametrize("name", NAMES)
def test_small_enough_to_ship_and_summary_counts_every_parameter(name):
    model = seeded(name)
    summary = model.summary()
    assert summary.params == sum(p.numel() for p in model.parameters())
    assert 2 * summary.params <= 2**20  # float16 weights fit in 1 MB
    assert summary.flops > summary.attention_flops > 0
    assert str(summary).startswith(f"{name}: {summary.params:,} params")
    assert len(str(summary).splitlines()) == 1 + len(model.plan)
    layers = attention_layers(model).values()
    assert layers and all(m.fused and "fused" not in vars(m) for m in layers)  # summary restores the fast path


def test_attention_flops_follow_the_mechanism_not_a_dense_product():
    # one stage at 16 x 16 tokens (N = 256), width C = 32; per layer, logits + weighted sum = 2 * 2 * N * K * C
    N, C = 256, 32
    vit = seeded("vit", patch=4, dim=C, depth=2, heads=2).summary()
    nat = seeded("nat", dims=(C,), depths=(2,), heads=(2,), kernels=(5,)).summary()
    cross = seeded("crossformer", dims=(C,), depths=(2,), heads=(2,), intervals=(4,)).summary()
    assert vit.attention_flops == 2 * 4 * N * N * C
    assert nat.attention_flops == 2 * 4 * N * 25 * C
    dpb = cross.attention_flops - 2 * 4 * N * 16 * C  # Block(4) and LongDistance(4): K = 16 each
    assert 0 < dpb < 0.1 * cross.attention_flops  # the dynamic position bias MLP, a small remainder
    for local in (nat, cross):
        assert local.attention_flops < vit.attention_flops / 4


def test_dinat_alternates_dilation_at_the_largest_fitting_value():
    plan = seeded("dinat").plan
    assert [s.attention for s in plan] == [
        "Neighborhood(5) / Neighborhood(5, dilation=3)", "Neighborhood(3) / Neighborhood(3, dilation=2)",
        "Neighborhood(3)"]
    assert [s.size for s in plan] == [16, 8, 4]


def test_swin_alternates_windows_and_shifted_windows_and_merges_patches():
    model = seeded("swin")
    assert [s.attention for s in model.plan] == ["Block(4) / Block(4, shift=2)"] * 2 + ["Block(4)"]  # 4x4: one window
    assert [(s.size, s.dim) for s in model.plan] == [(16, 32), (8, 64), (4, 96)]
    merges = [m for m in model.modules() if type(m).__name__ == "PatchMerging"]
    assert [(m.norm.normalized_shape[0], m.reduction.out_features) for m in merges] == [(128, 64), (256, 96)]
    # on a 16x16 map the NAT paper's point: windows of P x P cost what a k = P neighbourhood costs
    N, C = 256, 32
    swin = seeded("swin", dims=(C,), depths=(2,), heads=(2,), window=4).summary()
    nat = seeded("nat", dims=(C,), depths=(2,), heads=(2,), kernels=(4,)).summary()
    assert swin.attention_flops == nat.attention_flops == 2 * 4 * N * 16 * C


BAD = [
    ("nat", dict(kernels=(5, 5, 5)), r"^nat stage 3 \(map 4x4\): kernel_size \* dilation .*kernel_size=\(5, 5\)"),
    ("dinat", dict(heads=(2, 3, 6)), r"^dinat stage 2 \(map 8x8\): heads must divide dim; got dim=64, heads=3"),
    ("vit", dict(heads=5), r"^vit stage 1 \(map 8x8\): heads must divide dim; got dim=96, heads=5"),
    ("sasa", dict(kernels=(5, 5, 5)),
     r"^sasa stage 3 \(map 4x4\): .*fit the stage map; got kernel_size=5, map=\(4, 4\)"),
    ("maxvit", dict(window=3), r"^maxvit stage 1 \(map 16x16\): .*multiple of size.*size=\(3, 3\), map=\(16, 16\)"),
    ("crossformer", dict(intervals=(4, 3, 1)), r"^crossformer stage 2 \(map 8x8\): .*interval=\(3, 3\), map=\(8, 8\)"),
    ("crossformer", dict(group=3), r"^crossformer stage 1 \(map 16x16\): .*size=\(3, 3\), map=\(16, 16\)"),
    ("lavit", dict(heads=(4, 2)), r"^lavit stage 2 \(map 4x4\): .*same heads; got heads=\(4, 2\)"),
    ("lavit", dict(vanilla=(4, 1)), r"^lavit stage 1 \(map 8x8\): .*vanilla=4, depth=3"),
    ("lavit", dict(patch=24), r"^lavit: img_size must be a multiple of the total stride 48 .*img_size=64"),
    ("nat", dict(depths=(2, 2)), r"^nat: per-stage settings must be non-empty tuples of one length"),
    ("nat", dict(img_size=60), r"^nat: img_size must be a multiple of the total stride 16 .*img_size=60"),
    ("nat", dict(width=3), r"^nat accepts overrides img_size, dims, .*; got width"),
    ("swin", dict(window=3), r"^swin stage 1 \(map 16x16\): .*multiple of size.*size=\(3, 3\), map=\(16, 16\)"),
    ("swin", dict(window=0), r"^swin stage 1 \(map 16x16\): window must be a positive int; got window=0"),
    ("swin", dict(heads=(2, 3, 6)), r"^swin stage 2 \(map 8x8\): heads must divide dim; got dim=64, heads=3"),
    ("resnet", {}, r"^name must be one of vit, sasa, nat, dinat, maxvit, crossformer, lavit, swin; got name='resnet'"),
    ("nat", dict(task="count"), r"^task must be one of shape, same; got task='count'"),
    ("nat", dict(pretrained=True, dims=(8, 16, 32)), r"^pretrained weights exist for the default configuration only"),
]


def test_every_model_has_a_bad_configuration_in_the_table():
    """A new model fails here until BAD holds a configuration it must reject."""
    assert set(NAMES) - {name for name, _, _ in BAD} == set()


@pytest.mark.parametrize("name, kwargs, message", BAD, ids=[f"{n}-{'-'.join(k)}" for n, k, _ in BAD])
def test_bad_configurations_fail_at_construction_naming_the_stage_and_values(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        create(name, **kwargs)


def test_lavit_aux_loss_is_the_weighted_dp_loss_of_its_la_layers_and_part_of_the_objective():
    model = seeded("lavit")
    labels = torch.tensor([0, 3])
    loss, logits = training.objective(model, images(), labels)
    maps = [a for stage in model.stages for a in stage.la_maps]
    assert [a.shape for a in maps] == [(2, 4, 64, 64)] * 2 + [(2, 4, 16, 16)] * 2
    aux = model.aux_loss()
    expected = model.config["dp_lambda"] * sum(diagonality_preserving_loss(a) for a in maps)
    assert torch.allclose(aux, expected) and aux.requires_grad
    assert torch.allclose(loss, F.cross_entropy(logits, labels) + aux)
    # the DP term alone reaches the LA transforms (and nothing downstream of the LA layers)
    aux.backward()
    theta = model.stages[0].attns[2].theta.weight
    assert theta.grad is not None and theta.grad.abs().sum() > 0
    assert model.head.weight.grad is None
    # and the weighting is lambda
    half = seeded("lavit", dp_lambda=0.05)
    half(images())
    assert torch.allclose(half.aux_loss(), aux / 2)
    assert seeded("nat").aux_loss().item() == 0.0


def test_training_is_deterministic_from_the_seed_and_save_records_the_run(tmp_path, monkeypatch):
    run = dict(epochs=1, train_items=64, batch_size=32, eval_items=32, progress=None)
    a, result = training.train("lavit", seed=3, **run)
    b, _ = training.train("lavit", seed=3, **run)
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), key
    assert torch.equal(a.stages[1].attns[1].theta.weight, a.stages[1].attns[1].theta.weight.half().float())
    monkeypatch.setattr(training, "WEIGHTS", tmp_path)
    monkeypatch.setattr(training, "METRICS", tmp_path / "metrics.json")
    training.save(a, "lavit", "same", result)
    state = torch.load(tmp_path / "lavit-same.pt", weights_only=True)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    recorded = json.loads((tmp_path / "metrics.json").read_text())["lavit"]["same"]
    assert recorded["test_acc"] == result["test_acc"] and recorded["seed"] == 3
    assert "| lavit |" in training.table(json.loads((tmp_path / "metrics.json").read_text()))


def test_same_starts_from_the_shipped_shape_weights_except_the_head():
    model, result = training.train("nat", "same", lr=0.0, train_items=16, batch_size=16, eval_items=16, progress=None)
    shape = create("nat", pretrained=True, task="shape").state_dict()
    assert result["init"] == "shape"
    for key, value in model.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(value, shape[key]), key
    assert model.head.weight.shape[0] == 2
    with pytest.raises(ValueError, match="init must be"):
        training.train("nat", "same", init="same", train_items=16, progress=None)


def test_the_command_line_prints_the_final_line(capsys):
    training.main(["sasa", "--task", "same", "--epochs", "1", "--train-items", "32", "--batch-size", "16",
                   "--eval-items", "16"])
    final = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"final: model=sasa task=same test_acc=[01]\.\d{3} params=\d+ train_time=\d+\.\ds", final)


# ---------------------------------------------------------------------------------------------
# the shipped weights
# ---------------------------------------------------------------------------------------------
METRICS = json.loads((WEIGHTS / "metrics.json").read_text())


def test_every_model_and_task_is_shipped_and_the_readme_table_is_generated_from_the_metrics():
    assert sorted(METRICS) == sorted(NAMES)
    for name in NAMES:
        assert sorted(METRICS[name]) == sorted(TASKS)
        for task in TASKS:
            assert (WEIGHTS / f"{name}-{task}.pt").stat().st_size <= 2**20
            assert METRICS[name][task]["params"] == sum(p.numel() for p in create(name, task=task).parameters())
    readme = README.read_text()
    assert training.table(METRICS) in readme


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_weights_load_offline_and_reach_the_recorded_accuracy(name, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("pretrained weights must load offline")

    monkeypatch.setattr(socket, "socket", no_network)
    for task in TASKS:
        recorded = METRICS[name][task]
        model = create(name, pretrained=True, task=task)
        assert not model.training and model.head.weight.dtype == torch.float32
        accuracy = training.evaluate(model, task, items=recorded["eval_items"])
        assert abs(accuracy - recorded["test_acc"]) <= 0.02, (task, accuracy, recorded["test_acc"])


def test_every_model_learns_the_local_task():
    assert all(METRICS[name]["shape"]["test_acc"] >= 0.9 for name in NAMES), training.table(METRICS)
