"""Your model and your photo in ``AttentionExplorer``, headless (no browser, nothing downloaded).

``model=`` an object: a published checkpoint (random weights, 224 x 224, ImageNet-normalised, a DeiT's patch
grid), a small ``vizattn.models`` model (its own size, pictures in [0, 1]) and a stack of vizattn layers of the
test's own; each drawn map is checked against an independent probe run of the same model on the picture
prepared here from the semantics (what the model must have been given), and the input the model received
is caught by a hook. Labels: ImageNet's for 1000 classes, the caller's, the class numbers. Uploads go
through the ``FileUpload`` widget's own value (as a browser sets it): a good picture joins the photo menu
and is drawn; a file that is not an image, is empty, too large or truncated leaves a message, the photo,
the menu and the figure as they were, and the model unrun.
"""

from __future__ import annotations

import datetime
import io

import numpy as np
import pytest

pytest.importorskip("plotly")
pytest.importorskip("ipywidgets")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from vizattn import checkpoints, models, probe  # noqa: E402
from vizattn.data import Shapes, imagenet_classes, photo  # noqa: E402
from vizattn.images import IMAGENET_MEAN, IMAGENET_STD, MAX_FILE_BYTES  # noqa: E402
from vizattn.layers import NeighborhoodAttention  # noqa: E402
from vizattn.widgets import AttentionExplorer  # noqa: E402
from vizattn.widgets.upload import menu_name  # noqa: E402

from conftest import pixels  # noqa: E402


class Patches(nn.Module):
    """``images [B, 3, S, S] -> [B, S/8, S/8, 16]``: a patch embedding in front of vizattn layers."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 16, 8, 8)

    def forward(self, x):
        return self.proj(x).permute(0, 2, 3, 1)


def user_stack(head: int | None = None) -> nn.Module:
    """Patches, neighbourhood attention, dilated neighbourhood attention, and a class head when ``head``."""
    torch.manual_seed(0)
    parts = [Patches(), NeighborhoodAttention(dim=16, heads=2, kernel_size=3),
             NeighborhoodAttention(dim=16, heads=4, kernel_size=3, dilation=2)]
    if head:
        parts.append(nn.Sequential(nn.Flatten(1, 2), nn.Linear(16, head)))  # [B, N, 16] -> [B, N, head]
        parts.append(Mean())
    return nn.Sequential(*parts).eval()


class Mean(nn.Module):
    def forward(self, x):
        return x.mean(1)  # [B, N, classes] -> [B, classes]


def catch_inputs(model):
    """The inputs of each forward call of ``model``, and the hook's handle."""
    seen = []
    return seen, model.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))


def picture_file(fmt: str = "PNG", size=(90, 60)) -> bytes:
    """A picture unlike any bundled photo: a horizontal colour ramp over vertical stripes."""
    w, h = size
    x = np.arange(w)[None, :, None]
    y = np.arange(h)[:, None, None]
    rgb = np.concatenate([np.broadcast_to(x * 255 // w, (h, w, 1)), np.broadcast_to((x // 6 % 2) * 200, (h, w, 1)),
                          np.broadcast_to(y * 255 // h, (h, w, 1))], axis=2).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, fmt)
    return out.getvalue()


def prepared(data: bytes, size: int) -> torch.Tensor:
    """What an upload must become, from the semantics: the centred square, resized (antialiased bilinear)
    to ``size``, in [0, 1] ``[3, size, size]``."""
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    h, w = rgb.shape[:2]
    side = min(h, w)
    cut = torch.from_numpy(rgb[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side].copy())
    cut = cut.permute(2, 0, 1).float()[None] / 255
    return torch.nn.functional.interpolate(cut, size=(size, size), mode="bilinear", antialias=True)[0].clamp(0, 1)


def normalised(x: torch.Tensor) -> torch.Tensor:
    return ((x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None])[None]


def choose(ex, data: bytes, name: str) -> None:
    """What a browser does: the FileUpload widget's value set to one file."""
    ex.upload.button.value = ({"name": name, "type": "", "size": len(data), "content": memoryview(data),
                               "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


def probe_maps(model, x) -> dict:
    with torch.no_grad(), probe(model) as rec:
        model(x)
    return {r.name: r for r in rec}


def assert_draws(ex, theirs, layers=None) -> None:
    """The explorer's map of a few queries of each layer is the independent record's."""
    for layer in layers or theirs:
        ex.state.layer = layer
        H, W = theirs[layer].size
        for head, (i, j) in [(0, (0, 0)), (len(theirs[layer].heads) - 1, (H - 1, W // 2))]:
            ex.state.head = head
            ex.set_query(i, j)
            want = theirs[layer].query_map(i, j, head=head).numpy()
            np.testing.assert_allclose(np.asarray(ex.figure.data[1].z, dtype=float), want, rtol=1e-5, atol=1e-7)


# -- model= ----------------------------------------------------------------------------------------
def test_a_checkpoint_object_runs_at_224_imagenet_normalised_with_imagenet_labels():
    torch.manual_seed(0)
    model = checkpoints.build("deit_tiny_patch16_224")
    seen, handle = catch_inputs(model)
    try:
        ex = AttentionExplorer(model=model, photo="coffee")
    finally:
        handle.remove()
    assert (ex.size, ex.normalise) == (224, True) and len(seen) == 1
    torch.testing.assert_close(seen[0], normalised(photo("coffee", 224)), rtol=0, atol=1e-6)
    assert {r.size for r in ex.records.values()} == {(14, 14)}  # the patch grid, the class token apart
    assert pixels(ex.figure.data[0]).shape == (224, 224, 3)
    with torch.no_grad():
        logits = model(seen[0])[0].softmax(-1)
    best = logits.argsort(descending=True)[:5].tolist()
    assert [n for n, _ in ex.top5] == [imagenet_classes()[k] for k in best]
    banner = ex.banner.value
    assert "Your model (VisionTransformer): pictures 224x224, ImageNet-normalised; 12 attention layers" in banner
    assert f"{imagenet_classes()[best[0]]} {float(logits[best[0]]):.0%}" in banner
    assert ex.figure.layout.title.text.startswith("VisionTransformer: ")
    assert ex.get_state()["_model_name"] == "VBoxModel"  # what the browser builds it as (no attribute shadows it)


def test_a_small_model_runs_at_its_configured_size_in_0_1_with_labels():
    torch.manual_seed(0)
    model = models.create("nat", img_size=96).eval()
    ex = AttentionExplorer(model=model, photo="rocket", labels=Shapes.classes("shape"))
    assert (ex.size, ex.normalise) == (96, False)
    theirs = probe_maps(model, photo("rocket", 96)[None])
    assert list(ex.records) == list(theirs)
    assert {r.size for r in ex.records.values()} == {(24, 24), (12, 12), (6, 6)}
    assert_draws(ex, theirs, list(theirs)[:2])
    assert [n for n, _ in ex.top5] == [Shapes.classes("shape")[k] for k in
                                         model(photo("rocket", 96)[None])[0].argsort(descending=True).tolist()]
    unnamed = AttentionExplorer(model=model, photo="rocket")
    assert sorted(n for n, _ in unnamed.top5) == ["class 0", "class 1", "class 2", "class 3"]
    assert "Your model (nat): pictures 96x96, in [0, 1]" in unnamed.banner.value
    with pytest.raises(ValueError, match=r"labels must name every class of the output: 2 labels for an output \[1, 4"):
        AttentionExplorer(model=model, labels=["a", "b"])


def test_a_stack_of_vizattn_layers_of_your_own():
    model = user_stack()
    seen, handle = catch_inputs(model)
    try:
        ex = AttentionExplorer(model=model, photo="chelsea")  # no stated size: 224
        small = AttentionExplorer(model=model, photo="chelsea", size=56, normalise=False)
    finally:
        handle.remove()
    assert (ex.size, ex.normalise, small.size, small.normalise) == (224, True, 56, False)
    torch.testing.assert_close(seen[0], normalised(photo("chelsea", 224)), rtol=0, atol=1e-6)
    torch.testing.assert_close(seen[1], photo("chelsea", 56)[None], rtol=0, atol=0)
    assert list(ex.records) == ["1", "2"] and {r.size for r in ex.records.values()} == {(28, 28)}
    theirs = probe_maps(model, photo("chelsea", 56)[None])
    assert {r.size for r in small.records.values()} == {(7, 7)} and small.record.pattern == theirs["1"].pattern
    assert_draws(small, theirs)
    assert ex.top5 is None and "Its output ([1, 28, 28, 16]) holds no class scores" in ex.banner.value
    headed = AttentionExplorer(model=user_stack(head=3), size=56, labels=("red", "green", "blue"))
    assert sorted(n for n, _ in headed.top5) == ["blue", "green", "red"]
    with pytest.raises(ValueError, match=r"3 labels for an output \[1, 7, 7, 16\]"):
        AttentionExplorer(model=model, size=56, labels=("red", "green", "blue"))


@pytest.mark.parametrize("kwargs, match", [
    (dict(model=nn.Sequential(nn.Conv2d(3, 8, 4, 4))), "model must hold vizattn attention layers .*got a Sequential"),
    (dict(model=3), "model must be a model name or a torch.nn.Module; got int"),
    (dict(model=nn.Sequential(NeighborhoodAttention(8, 2, 3)), size=16),
     r"the model did not run on images \[1, 3, 16, 16\]: ValueError: NeighborhoodAttention expects a channels-last"),
    (dict(model=user_stack(), size=0), "size must be a positive int"),
    (dict(model=user_stack(), normalise="yes"), "normalise must be True, False or None"),
    (dict(model=user_stack(), checkpoint="nat_mini"), "give a model object or checkpoint=name, not both"),
    (dict(model="nat", labels=("a",)), "labels, size and normalise apply to a model object"),
    (dict(model=user_stack(), labels="abc"), "labels must be a sequence of class names"),
])
def test_a_model_that_does_not_fit_is_refused_with_the_rule(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttentionExplorer(**kwargs)


# -- your photo ------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["small", "checkpoint"])
def test_an_upload_joins_the_photo_menu_and_is_drawn_as_the_model_takes_it(how):
    torch.manual_seed(0)
    ex = (AttentionExplorer("nat", photo="astronaut") if how == "small"
          else AttentionExplorer(checkpoint="nat_mini", weights="random", photo="astronaut"))
    S = 64 if how == "small" else 224
    data = picture_file("JPEG", (120, 80))
    seen, handle = catch_inputs(ex.model)
    try:
        choose(ex, data, "my holiday picture.jpg")
    finally:
        handle.remove()
    key = "my holid…ure.jpg"
    assert ex.state.photo == key and ex.menus["photo"].value == key and ex.forwards == 2 and len(seen) == 1
    assert ex.menus["photo"].options == (*ex.state.photos,) and ex.state.photos[-1] == key
    assert "showing my holiday picture.jpg" in ex.upload.message.value and ex.upload.button.value == ()
    want = prepared(data, S)
    torch.testing.assert_close(seen[0], normalised(want) if how == "checkpoint" else want[None], rtol=0, atol=2e-6)
    drawn = pixels(ex.figure.data[0])
    luma = (torch.tensor([0.299, 0.587, 0.114])[:, None, None] * want).sum(0) * 255  # drawn in grey (Rec. 601 luma)
    assert drawn.shape == (S, S, 3) and np.abs(drawn[..., 0] - luma.numpy()).max() <= 0.5 + 1e-3
    theirs = probe_maps(ex.model, seen[0])
    assert_draws(ex, theirs, list(theirs)[:1])
    # back to a bundled photo and to the upload: still there
    ex.menus["photo"].value = "coffee"
    ex.menus["photo"].value = key
    assert ex.forwards == 4 and np.array_equal(pixels(ex.figure.data[0]), drawn)
    choose(ex, data, "my holiday picture.jpg")  # the same name again: a second entry
    assert ex.state.photo == key + " (2)" and ex.state.photos == ("astronaut", "coffee", "chelsea", "rocket", "camera",
                                                                 key, key + " (2)")


def bad_files():
    good = picture_file("PNG")
    jpeg = picture_file("JPEG", (200, 150))
    return [("notes.txt", b"these are notes, not a picture\n", "not an image: pillow finds none of the accepted"),
            ("empty.png", b"", r"is empty \(0 bytes\)"),
            ("huge.png", good + bytes(MAX_FILE_BYTES), f"images may be at most MAX_FILE_BYTES = {MAX_FILE_BYTES:,}"),
            ("cut.png", good[:len(good) // 2], "broken image data|not an image"),
            ("cut.jpg", jpeg[:len(jpeg) // 2], "broken image data|not an image"),
            ("fake.png", b"\x89PNG\r\n\x1a\n" + bytes(100), "broken image data|not an image")]


@pytest.mark.parametrize("name, data, match", bad_files(), ids=[f[0] for f in bad_files()])
def test_a_bad_file_leaves_a_message_and_the_photo(name, data, match):
    import re

    ex = AttentionExplorer("nat", photo="chelsea")
    choose(ex, picture_file("PNG"), "first.png")  # the photo on show is an upload of its own
    def view():
        return (ex.state.photo, ex.state.photos, ex.menus["photo"].options, ex.forwards, ex.figure.data[0].source,
                ex.figure.layout.title.text, np.asarray(ex.figure.data[1].z, dtype=float).tobytes())

    before = view()
    choose(ex, data, name)  # raises nothing: the message is the answer
    assert view() == before and ex.state.photo == "first.png"
    message = ex.upload.message.value
    assert f"{name} was not used:" in message and "The photo on show is unchanged." in message
    assert re.search(match, message), message
    assert not re.search(r"Traceback|\w+Error\b|Exception", message) and ex.upload.button.value == ()
    assert ex.upload.load(data, name) is False  # the entry point says so too
    choose(ex, picture_file("PNG", (64, 64)), "second.png")  # and the next good file is used
    assert ex.state.photo == "second.png" and "showing second.png" in ex.upload.message.value


def test_menu_names_are_short_and_unique():
    assert menu_name("a" * 40 + ".png", ()) == "aaaaaaaa…aaa.png"
    assert menu_name("  two   words.png ", ()) == "two words.png"
    assert menu_name("", ()) == "your photo"
    assert menu_name("astronaut", ("astronaut", "astronaut (2)")) == "astronaut (3)"
    assert all(len(menu_name(n, ())) <= 16 for n in ("x" * 17, "IMG_0001.JPEG", "a.b.c.d.e.f.g.h.i.png"))


def test_a_large_jpeg_is_decoded_scaled_down_and_close_to_a_full_decode(monkeypatch):
    """A 12 MP photo: pillow's reduced-scale JPEG decoding (to no less than twice the output side) stays
    within JPEG noise of the full decode resized from the semantics (``prepared``)."""
    from PIL import JpegImagePlugin

    from vizattn.images import DRAFT_MARGIN, image

    decoded = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        out = draft(self, mode, size)
        decoded.append(self.size)
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    data = picture_file("JPEG", (4000, 3000))
    for size in (64, 224):
        decoded.clear()
        x = image(data, size=size, normalise=False)[0]
        want = prepared(data, size)
        assert len(decoded) == 1 and min(decoded[0]) >= DRAFT_MARGIN * size and decoded[0][0] < 4000
        assert float((x - want).abs().mean()) < 0.01 and float((x - want).abs().max()) < 0.1
    decoded.clear()
    image(picture_file("JPEG", (300, 200)), size=224)  # no larger than needed: decoded in full
    assert decoded == []
