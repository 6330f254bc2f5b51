import math
import sys
import time

import pytest
import torch

from vizattn.data import PHOTOS, SHAPES, TASKS, Shapes, make_loader, photo, photos


def stack(data, n):
    images, labels = zip(*(data[i] for i in range(n)))
    return torch.stack(images), torch.tensor(labels)


# --- photographs ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PHOTOS)
def test_photo_loads_offline_as_a_square_rgb_tensor(name):
    x = photo(name, size=48)
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and x.std() > 0.05  # a real picture, not a flat fill


def test_grayscale_photo_is_repeated_on_three_channels_and_photos_has_every_name():
    assert torch.equal(photo("camera", 16)[0], photo("camera", 16)[2])
    assert not torch.equal(photo("astronaut", 16)[0], photo("astronaut", 16)[2])
    assert sorted(photos(8)) == sorted(PHOTOS)


def test_photo_rejects_unknown_names_and_lists_the_known_ones():
    with pytest.raises(ValueError, match="astronaut.*camera.*got name='lena'"):
        photo("lena")


def test_photo_without_scikit_image_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # makes `import skimage...` fail
    with pytest.raises(ModuleNotFoundError, match=r"pip install vizattn\[notebooks\]"):
        photo("coffee")


# --- procedural dataset -------------------------------------------------------------------------

@pytest.mark.parametrize("task", TASKS)
def test_items_are_float_images_in_unit_range_with_valid_labels(task):
    images, labels = stack(Shapes(task, split="test", length=300), 300)
    assert images.shape == (300, 3, 64, 64) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert set(labels.tolist()) == set(range(len(Shapes.classes(task))))


@pytest.mark.parametrize("task", TASKS)
def test_items_are_deterministic_and_splits_differ(task):
    # item 700 is rendered in a batch of 256 items in one dataset and of 189 in the other
    a, b = Shapes(task, length=1000)[700], Shapes(task, length=701)[700]
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    train, val = stack(Shapes(task, "train", length=20), 20), stack(Shapes(task, "val", length=20), 20)
    assert all(not torch.equal(x, y) for x, y in zip(train[0], val[0]))


@pytest.mark.parametrize("task", TASKS)
def test_labels_are_balanced(task):
    data = Shapes(task, length=2000)
    labels = torch.tensor([data.layout(i)["label"] for i in range(2000)])
    k = len(Shapes.classes(task))
    counts = torch.bincount(labels, minlength=k).float() / 2000
    assert (counts - 1 / k).abs().max() <= 0.05, counts
    assert labels[:256].tolist() == stack(data, 256)[1].tolist()  # layout agrees with items


def test_same_task_objects_are_far_apart_inside_the_image_and_define_the_label():
    data = Shapes("same", length=2000)
    for i in range(2000):
        lay = data.layout(i)
        (a, b) = lay["objects"]
        assert math.dist(a["center"], b["center"]) >= 32
        for obj in (a, b):
            assert all(12 <= c <= 63 - 12 for c in obj["center"])
            assert 5 <= obj["size"] <= 7.5
        assert lay["label"] == (a["shape"] == b["shape"])


@pytest.mark.parametrize("task", TASKS)
def test_layout_matches_the_pixels(task):
    data = Shapes(task, split="val", length=100)
    for i in range(100):
        image, _ = data[i]
        for obj in data.layout(i)["objects"]:
            y, x = (round(c) for c in obj["center"])  # the centroid pixel is fully covered
            assert torch.allclose(image[:, y, x], torch.tensor(obj["colour"]), atol=1 / 255)


def test_shape_task_is_learnable_from_pixels():
    """Nearest centroid on translation-invariant features (|FFT| of the gray image)."""
    images, labels = stack(Shapes("shape", split="val", length=2000), 2000)
    gray = images.mean(1) - images.mean((1, 2, 3))[:, None, None]
    spectrum = torch.fft.rfft2(gray).abs()[:, :, :16]
    feats = torch.cat([spectrum[:, :16], spectrum[:, -16:]], 1).flatten(1).log1p()
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    train, test = slice(0, 1500), slice(1500, None)
    centroids = torch.stack([feats[train][labels[train] == k].mean(0) for k in range(4)])
    accuracy = (torch.cdist(feats[test], centroids).argmin(1) == labels[test]).float().mean()
    assert accuracy > 0.6, accuracy  # chance is 0.25


def test_generating_ten_thousand_items_is_fast():
    data = Shapes("same", length=10_000)
    start = time.perf_counter()
    for i in range(10_000):
        data[i]
    assert time.perf_counter() - start < 15


def test_classes_and_validation():
    assert Shapes.classes("shape") == SHAPES and Shapes.classes("same") == ("different", "same")
    with pytest.raises(ValueError, match="task must be one of shape, same; got task='colour'"):
        Shapes("colour")
    with pytest.raises(ValueError, match="split must be one of train, val, test"):
        Shapes("shape", split="dev")
    with pytest.raises(IndexError):
        Shapes("shape", length=10)[10]


def test_make_loader_shuffles_train_by_seed_and_keeps_other_splits_in_order():
    def first_labels(split, seed):
        return next(iter(make_loader("shape", split, batch_size=32, seed=seed, length=256)))[1]

    assert torch.equal(first_labels("train", 0), first_labels("train", 0))
    assert not torch.equal(first_labels("train", 0), first_labels("train", 1))
    assert first_labels("val", 0).tolist() == [Shapes("shape", "val")[i][1] for i in range(32)]
