"""vizattn.checkpoints: every published model equals its reference implementation, offline.

For each name the reference is built with seeded random weights (``reference.randomise``: every
parameter random, not the default init), its state dict — in the reference's own key layout — is
loaded through ``checkpoints.load(name, weights=state_dict)``, and logits and attention
probabilities at a few layers are compared. References: timm (DeiT, Swin, MaxViT) and the
transcriptions in ``tests/reference`` (NAT/DiNAT, CrossFormer). Nothing downloads: the
``"imagenet"`` path is tested against a local file and a local HTTP server.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import subprocess
import sys
import threading

import pytest
import torch
from reference import randomise

import vizattn
from vizattn import checkpoints
from vizattn.checkpoints import files

TOLERANCE = dict(rtol=1e-4, atol=1e-4)  # float32, after 12-40 layers of random weights


def timm():
    """timm (tests/reference/timm_models.py); missing: a skip, or a failure under CI (dev.py installs it)."""
    from reference.timm_models import timm as import_timm

    try:
        return import_timm()
    except ModuleNotFoundError as err:
        if os.environ.get("CI"):
            pytest.fail(f"timm is needed for the exactness tests (dev.py installs it): {err}")
        pytest.skip(f"needs timm (python3 dev.py test installs it): {err}")


def images(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# references: (model, forward returning (logits, [probs [B, heads, N, N] per attention call]))
# ---------------------------------------------------------------------------------------------
def recording(model, steps):
    """``run(x) -> (logits, outputs of each module in steps, in call order)``: hooks only during the call."""
    def run(x):
        seen = []
        handles = [s.register_forward_hook(lambda m, i, o: seen.append(o)) for s in steps]
        try:
            with torch.no_grad():
                return model(x), seen
        finally:
            for h in handles:
                h.remove()

    return run


def timm_vit(name):
    model = randomise(timm().create_model(name), std=0.05)
    for block in model.blocks:
        block.attn.fused_attn = False  # the explicit path, whose attn_drop sees the probabilities
    return model, recording(model, [b.attn.attn_drop for b in model.blocks])


def official_nat(name):
    from reference import nat

    model = randomise(getattr(nat, name)(), std=0.05)
    return model, recording(model, [b.attn.attn_drop for level in model.levels for b in level.blocks])


def scatter_groups(probs, ids, N):
    """Per-group probabilities ``[B*groups, heads, n, n]``, token ids ``[groups, n]`` -> dense ``[B, heads, N, N]``."""
    groups, n = ids.shape
    probs = probs.reshape(-1, groups, probs.shape[1], n, n)  # [B, groups, heads, n, n]
    dense = probs.new_zeros(probs.shape[0], probs.shape[2], N, N)
    rows, cols = ids[:, :, None].expand(groups, n, n), ids[:, None, :].expand(groups, n, n)
    dense[:, :, rows, cols] = probs.permute(0, 2, 1, 3, 4)
    return dense


def official_crossformer(name):
    from reference import crossformer

    model = randomise(crossformer.crossformer_tiny(), std=0.05)
    blocks = [b for stage in model.layers for b in stage.blocks]
    run = recording(model, [b.attn.attn_drop for b in blocks])

    def dense(x):
        logits, probs = run(x)
        out = []
        for block, p in zip(blocks, probs):
            H, W = block.input_resolution
            out.append(scatter_groups(p, crossformer.group_ids(H, W, block.group_size, block.lsda_flag), H * W))
        return logits, out

    return model, dense


def timm_maxvit(name):
    model = randomise(timm().create_model(name), std=0.05)
    from timm.models import maxxvit  # after timm(), which may set up the placeholder torchvision

    layers, partitions = [], []
    for i, stage in enumerate(model.stages):
        H = 56 // 2**i
        ids = torch.arange(H * H).reshape(1, H, H, 1)
        for block in stage.blocks:
            for part, split in ((block.attn_block, maxxvit.window_partition),
                                (block.attn_grid, maxxvit.grid_partition)):
                part.attn.fused_attn = False
                layers.append(part.attn.attn_drop)
                partitions.append((split(ids, part.partition_size).reshape(-1, 49), H * H))
    run = recording(model, layers)

    def dense(x):
        logits, probs = run(x)
        return logits, [scatter_groups(p, ids, N) for p, (ids, N) in zip(probs, partitions)]

    return model, dense


def timm_swin(name):
    model = randomise(timm().create_model(name), std=0.05)
    from timm.models import swin_transformer  # after timm(), which may set up the placeholder torchvision

    layers, partitions = [], []
    for i, stage in enumerate(model.layers):
        H = 56 // 2**i
        for block in stage.blocks:
            block.attn.fused_attn = False
            layers.append(block.attn.attn_drop)
            ids = torch.arange(H * H).reshape(1, H, H, 1).roll((-block.shift_size[0], -block.shift_size[1]), (1, 2))
            window = block.window_size
            ids = swin_transformer.window_partition(ids, window).reshape(-1, window[0] * window[1])
            partitions.append((ids, H * H))
    run = recording(model, layers)

    def dense(x):  # masked pairs of SW-MSA get weight exp(-100): zero at float32 tolerance
        logits, probs = run(x)
        return logits, [scatter_groups(p, ids, N) for p, (ids, N) in zip(probs, partitions)]

    return model, dense


REFERENCES = {
    "deit_tiny_patch16_224": timm_vit,
    "deit_small_patch16_224": timm_vit,
    "nat_mini": official_nat,
    "dinat_mini": official_nat,
    "crossformer_tiny": official_crossformer,
    "maxvit_tiny_tf_224": timm_maxvit,
    "swin_tiny_patch4_window7_224": timm_swin,
}
BATCH_ONE = {n for n in REFERENCES if not n.startswith("deit")}  # 56x56 maps: one image keeps them quick
LAYERS = {  # attention calls compared (call order)
    "deit_tiny_patch16_224": (0, 5, 11),
    "deit_small_patch16_224": (0, 11),
    "nat_mini": (0, 3, 17),  # 56x56 corner-shifted windows, 28x28, 7x7 (k = map: global)
    "dinat_mini": (1, 5, 8),  # dilation 8 at 56x56, 4 at 28x28, 2 at 14x14
    "crossformer_tiny": (0, 1, 3, 10),  # SDA 56x56, LDA interval 8, LDA interval 2, one 7x7 group
    "maxvit_tiny_tf_224": (0, 1, 5, 15),  # block and grid at 56x56, grid at 28x28, grid at 7x7 (global)
    "swin_tiny_patch4_window7_224": (0, 1, 3, 11),  # W-MSA and SW-MSA at 56x56, SW-MSA at 28x28, 7x7 (one window)
}


def test_the_smallest_size_of_each_family_has_a_full_reference_test():
    """The other sizes: tests/test_checkpoint_sizes.py (reduced depth, the published widths)."""
    assert set(REFERENCES) == set(LAYERS) <= set(checkpoints.list())


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_checkpoint_equals_the_reference(name):
    reference, run = REFERENCES[name](name)
    model = checkpoints.load(name, weights=reference.state_dict())
    assert not model.training
    x = images(1 if name in BATCH_ONE else 2)
    theirs, their_probs = run(x)
    with torch.no_grad(), vizattn.probe(model) as rec:
        ours = model(x)
    assert ours.shape == (x.shape[0], 1000)
    torch.testing.assert_close(ours, theirs, **TOLERANCE)
    assert len(rec) == len(their_probs)
    for i in LAYERS[name]:
        torch.testing.assert_close(rec[i].dense(), their_probs[i], rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # the fused path (no probe) computes the same logits
        torch.testing.assert_close(model(x), theirs, **TOLERANCE)


# ---------------------------------------------------------------------------------------------
# files: formats, mismatches, the cache, downloads, offline errors
# ---------------------------------------------------------------------------------------------
NAME = "deit_tiny_patch16_224"


@functools.lru_cache(maxsize=1)
def deit_state():
    torch.manual_seed(0)
    return checkpoints.build(NAME).state_dict()


def same_model(a, b):
    return all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_state_dict_path_and_wrapped_file_give_the_same_model(tmp_path):
    state = deit_state()
    torch.save({"model": state, "epoch": 3}, tmp_path / "wrapped.pth")  # as the official training scripts save
    torch.save(state, tmp_path / "bare.pth")
    direct = checkpoints.load(NAME, weights=state)
    for path in (tmp_path / "wrapped.pth", str(tmp_path / "bare.pth")):
        assert same_model(checkpoints.load(NAME, weights=path), direct)


def test_bad_checkpoints_name_the_first_mismatches(tmp_path):
    state = dict(deit_state())
    state.pop("head.bias")
    state["blocks.0.attn.qkv.weight"] = torch.zeros(5, 5)
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys \(1\): head\.bias; unexpected keys \(1\): extra\.weight; "
                                         r"wrong shapes \(1\): blocks\.0\.attn\.qkv\.weight: model \(576, 192\), "
                                         r"checkpoint \(5, 5\)"):
        checkpoints.load(NAME, weights=state)
    with pytest.raises(ValueError, match="not a file"):
        checkpoints.load(NAME, weights=str(tmp_path / "nowhere.pth"))
    with pytest.raises(ValueError, match="name must be one of"):
        checkpoints.load("resnet50", weights=state)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="must hold a state dict"):
        checkpoints.load(NAME, weights=tmp_path / "list.pth")


@contextlib.contextmanager
def serving(folder):
    """A local HTTP server on 127.0.0.1 serving ``folder``; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def with_url(monkeypatch, name, url):
    spec = checkpoints.CHECKPOINTS[name]
    monkeypatch.setitem(checkpoints.CHECKPOINTS, name, type(spec)(**{**spec.__dict__, "url": url}))
    return spec


def test_imagenet_downloads_into_the_cache_then_reuses_it(tmp_path, monkeypatch):
    served, cache = tmp_path / "served", tmp_path / "cache"
    served.mkdir()
    spec = checkpoints.CHECKPOINTS[NAME]
    torch.save({"model": deit_state()}, served / spec.file)  # the official format
    monkeypatch.setenv("VIZATTN_CHECKPOINTS", str(cache))
    assert files.cache_dir() == cache
    with serving(served) as base:
        with_url(monkeypatch, NAME, f"{base}/{spec.file}")
        model = checkpoints.load(NAME)
    assert (cache / spec.file).is_file()
    assert same_model(model, checkpoints.load(NAME, weights=deit_state()))
    with_url(monkeypatch, NAME, "http://127.0.0.1:9/unreachable.pth")  # the cached file is used, no download
    assert same_model(checkpoints.load(NAME), model)


def test_offline_imagenet_says_which_file_where_from_and_how_to_pass_a_path(tmp_path, monkeypatch):
    monkeypatch.setenv("VIZATTN_CHECKPOINTS", str(tmp_path))
    spec = with_url(monkeypatch, NAME, "http://127.0.0.1:9/deit.pth")  # port 9: nothing listens
    with pytest.raises(RuntimeError) as err:
        checkpoints.load(NAME)
    text = str(err.value)
    assert spec.file in text and "127.0.0.1:9" in text and "weights=" in text and str(tmp_path) in text
    with_url(monkeypatch, NAME, None)  # no direct download (CrossFormer's Google Drive files)
    with pytest.raises(RuntimeError, match=rf"{spec.file}.*no direct download URL.*facebookresearch/deit.*weights="):
        checkpoints.load(NAME)


def test_import_vizattn_pulls_in_neither_timm_nor_torchvision():
    code = ("import sys, vizattn, vizattn.checkpoints; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('timm', 'torchvision')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_conv2d_same_pads_as_timms_tf_same_padding():
    timm()
    from timm.layers import create_conv2d

    from vizattn.layers.maxvit import Conv2dSame

    for size, k, s in ((7, 3, 2), (8, 3, 2), (9, 5, 2), (10, 3, 3), (6, 3, 1)):
        theirs = create_conv2d(2, 3, k, stride=s, padding="same")
        ours = Conv2dSame(2, 3, k, stride=s, bias=False)
        ours.load_state_dict(theirs.state_dict())
        x = torch.randn(1, 2, size, size + 1)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), theirs(x))


# ---------------------------------------------------------------------------------------------
# images and class names for the real weights
# ---------------------------------------------------------------------------------------------
def test_imagenet_classes_follow_timms_synset_order():
    from vizattn.data import _IMAGENET_CLASSES, imagenet_classes

    timm()
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    ours = [line.split("\t") for line in _IMAGENET_CLASSES.read_text(encoding="utf-8").splitlines()]
    assert [s for s, _ in ours] == [info.index_to_label_name(i) for i in range(1000)]
    assert [d for _, d in ours] == [info.index_to_description(i) for i in range(1000)]
    assert imagenet_classes()[:3] == ("tench", "goldfish", "great white shark") and len(set(imagenet_classes())) > 990


def test_imagenet_photo_is_the_photo_normalised_and_top_checks_its_input():
    from vizattn.data import IMAGENET_MEAN, IMAGENET_STD, imagenet_photo, imagenet_top, photo

    x = imagenet_photo("astronaut")
    assert x.shape == (1, 3, 224, 224)
    back = x[0] * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    torch.testing.assert_close(back, photo("astronaut", 224))
    top = imagenet_top(torch.randn(2, 1000), k=5)
    assert len(top) == 2 and all(len(row) == 5 and row[0][1] >= row[-1][1] for row in top)
    with pytest.raises(ValueError, match=r"logits must be \[B, 1000\]"):
        imagenet_top(torch.zeros(1000))


# ---------------------------------------------------------------------------------------------
# vizattn's analysis on the published architectures (random weights: structure, not ImageNet)
# ---------------------------------------------------------------------------------------------
MAPS = {  # attention calls and the maps they run on
    "deit_tiny_patch16_224": (12, {(1, 197)}),
    "deit_small_patch16_224": (12, {(1, 197)}),
    "nat_mini": (18, {(56, 56), (28, 28), (14, 14), (7, 7)}),
    "dinat_mini": (18, {(56, 56), (28, 28), (14, 14), (7, 7)}),
    "crossformer_tiny": (16, {(56, 56), (28, 28), (14, 14), (7, 7)}),
    "maxvit_tiny_tf_224": (22, {(56, 56), (28, 28), (14, 14), (7, 7)}),
    "swin_tiny_patch4_window7_224": (12, {(56, 56), (28, 28), (14, 14), (7, 7)}),
}


@pytest.mark.parametrize("name", sorted(MAPS))
def test_probe_metrics_and_receptive_fields_work_on_every_checkpoint(name):
    from vizattn import metrics, receptive

    torch.manual_seed(0)
    model = checkpoints.build(name)
    x = images(1)
    with torch.no_grad(), vizattn.probe(model) as rec:
        model(x)
    calls, sizes = MAPS[name]
    assert len(rec) == calls and {r.size for r in rec} == sizes
    for r in rec:  # every query's weights sum to one over its keys
        torch.testing.assert_close(r.weights.sum(-1), torch.ones_like(r.weights.sum(-1)))
    sat = metrics.saturation(rec)
    same = torch.tensor([a.size == b.size for a, b in zip(list(rec), list(rec)[1:])])
    assert sat.shape == (calls - 1,) and bool(sat[same].isfinite().all()) and bool(sat[~same].isnan().all())
    first = rec[0].name
    field = receptive.theoretical(model, size=224, layer=first)
    erf = receptive.effective(model, x, layer=first)
    assert field.input.shape == erf.map.shape == (224, 224)
    assert abs(float(erf.map.sum()) - 1) < 1e-4
    assert bool(field.input[erf.map > 0].all())  # the gradient never reaches outside the theoretical field
    # ViT: global attention from the first layer; MaxViT: the MBConv's squeeze-excite pools the whole map
    # before the first block attention; NAT, DiNAT, CrossFormer: local at the first layer
    global_first = name.startswith(("deit", "maxvit"))
    assert bool(field.input.all()) == global_first


def test_swin_loads_the_official_repositorys_layout_too():
    """microsoft/Swin-Transformer saves downsampling at the end of a stage, ``head.weight`` and the index buffers."""
    name = "swin_tiny_patch4_window7_224"
    torch.manual_seed(0)
    timm_layout = {k: v for k, v in timm().create_model(name).state_dict().items()}
    official = {}
    for key, value in timm_layout.items():
        parts = key.split(".")
        if key.startswith("layers.") and parts[2] == "downsample":
            key = ".".join(["layers", str(int(parts[1]) - 1)] + parts[2:])
        if key.startswith("head.fc."):
            key = "head." + parts[-1]
        official[key] = value
        if key.endswith("relative_position_bias_table"):
            official[key.replace("bias_table", "index")] = torch.zeros(49, 49, dtype=torch.long)
    official["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    a, b = checkpoints.load(name, weights=timm_layout), checkpoints.load(name, weights={"model": official})
    assert same_model(a, b)


def test_patch_query_splits_a_deit_row_into_the_class_tokens_share_and_a_14x14_picture():
    from vizattn.checkpoints.vit import patch_query

    reference, run = timm_vit(NAME)
    model = checkpoints.load(NAME, weights=reference.state_dict())
    x = images(1)
    _, probs = run(x)
    with torch.no_grad(), vizattn.probe(model) as rec:
        model(x)
    share, picture = patch_query(rec[4], model.grid, 3, 5, head=1)
    row = probs[4][0, 1, 1 + 3 * 14 + 5]  # timm's [B, heads, 197, 197]
    assert abs(share - float(row[0])) < 1e-5
    torch.testing.assert_close(picture, row[1:].reshape(14, 14), rtol=1e-4, atol=1e-5)
    share, picture = patch_query(rec[4], model.grid, -1, 0, head=1)  # the class token's own row
    torch.testing.assert_close(picture, probs[4][0, 1, 0, 1:].reshape(14, 14), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="must lie on the 14x14 grid"):
        patch_query(rec[4], model.grid, 14, 0)
