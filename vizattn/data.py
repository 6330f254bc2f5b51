"""Small images: real photographs to look at, and a procedural dataset to train on.

``photo`` / ``photos`` give scikit-image's bundled sample photographs (no download) as
``[3, size, size]`` tensors in ``[0, 1]``; ``imagenet_photo`` gives one at 224 x 224 normalised as the
ImageNet models of ``vizattn.checkpoints`` expect, and ``imagenet_classes`` / ``imagenet_top`` name
their 1000 classes (WordNet lemmas, in the standard class order). ``Shapes`` is a deterministic procedural dataset of
filled shapes on a cluttered background, with two tasks: ``"shape"`` (what is the one object?
local evidence suffices) and ``"same"`` (are two far-apart objects the same shape? the answer
depends on both, at least half the image apart).

>>> image, label = Shapes("same")[0]
>>> image.shape, image.dtype, Shapes.classes("same")[label] in ("different", "same")
(torch.Size([3, 64, 64]), torch.float32, True)
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PHOTOS", "TASKS", "SHAPES", "Shapes", "make_loader", "photo", "photos", "imagenet_photo",
           "imagenet_classes", "imagenet_top", "IMAGENET_MEAN", "IMAGENET_STD"]

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")
TASKS = ("shape", "same")
SHAPES = ("circle", "square", "triangle", "cross")
SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_LENGTH = {"train": 20_000, "val": 2_000, "test": 2_000}
_SEED = 2024  # fixes every item's stream of uniforms (see _uniforms)
_CHUNK = 256  # items rendered (and cached) together
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # per RGB channel
_IMAGENET_CLASSES = Path(__file__).parent / "imagenet_classes.txt"  # "<synset>\t<lemmas>" per class


# --- photographs ----------------------------------------------------------------------------

def photo(name: str = "astronaut", size: int = 64) -> torch.Tensor:
    """A bundled scikit-image photograph as a float tensor ``[3, size, size]`` in ``[0, 1]``.

    The image is centre-cropped to a square and resized with antialiased bilinear
    interpolation; grayscale photographs (``camera``) are repeated on 3 channels.
    Needs scikit-image (``pip install vizattn[notebooks]``); works offline.

    >>> x = photo("chelsea", size=32)
    >>> x.shape, bool(x.min() >= 0), bool(x.max() <= 1)
    (torch.Size([3, 32, 32]), True, True)
    """
    if name not in PHOTOS:
        raise ValueError(f"photo name must be one of {', '.join(PHOTOS)}; got name={name!r}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int; got size={size!r}")
    try:
        import skimage.data
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "vizattn.data.photo needs scikit-image: pip install vizattn[notebooks]"
        ) from exc
    array = np.asarray(getattr(skimage.data, name)())           # [h, w] or [h, w, 3], uint8
    image = torch.from_numpy(array).float().div(255)
    image = image.expand(3, *image.shape) if image.ndim == 2 else image.permute(2, 0, 1)
    h, w = image.shape[1:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[None, :, top:top + side, left:left + side]  # [1, 3, side, side]
    out = F.interpolate(square, size=(size, size), mode="bilinear", antialias=True,
                        align_corners=False)
    return out[0].clamp(0, 1)


def photos(size: int = 64) -> dict[str, torch.Tensor]:
    """Every name in ``PHOTOS`` → ``photo(name, size)``.

    >>> sorted(photos(16)) == sorted(PHOTOS)
    True
    """
    return {name: photo(name, size) for name in PHOTOS}


def imagenet_photo(name: str = "chelsea", size: int = 224) -> torch.Tensor:
    """``photo(name, size)`` normalised with the ImageNet mean and std: a ``[1, 3, size, size]`` batch.

    >>> x = imagenet_photo("coffee", size=32)
    >>> x.shape, round(float(x.mean()), 1) != 0.5
    (torch.Size([1, 3, 32, 32]), True)
    """
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((photo(name, size) - mean) / std)[None]


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class-index order (the first lemma of each synset).

    >>> names = imagenet_classes()
    >>> len(names), names[0], names[281]
    (1000, 'tench', 'tabby')
    """
    lines = _IMAGENET_CLASSES.read_text(encoding="utf-8").splitlines()
    return tuple(line.split("\t", 1)[1].split(",")[0].strip() for line in lines)


def imagenet_top(logits: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable classes of each row of ``logits [B, 1000]``: ``(name, probability)`` pairs.

    >>> logits = torch.zeros(1, 1000); logits[0, 281] = 10.0
    >>> [(name, round(p, 3)) for name, p in imagenet_top(logits, k=2)[0]]
    [('tabby', 0.957), ('tench', 0.0)]
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[1] != 1000:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be [B, 1000] (ImageNet-1k classes); got shape {got}")
    probs, index = logits.float().softmax(-1).topk(k, dim=-1)
    names = imagenet_classes()
    return [[(names[i], float(p)) for p, i in zip(row_p, row_i)]
            for row_p, row_i in zip(probs.tolist(), index.tolist())]


# --- procedural dataset -----------------------------------------------------------------------

class Shapes(torch.utils.data.Dataset):
    """Filled shapes on a cluttered background; item ``i`` is ``(image, label)``.

    ``image`` is ``float32 [3, size, size]`` in ``[0, 1]`` (quantised to multiples of 1/255),
    ``label`` an int indexing ``Shapes.classes(task)``. Item ``i`` of a split is drawn from its
    own stream of uniforms, a hash of ``(split, i)`` (split 0/1/2 for train/val/test), so it
    does not depend on the length, on which other items were asked for, or on batching, and
    the splits never share a stream. Items are rendered (vectorised) in cached chunks of 256.

    Generation rules (lengths in pixels for ``size=64``; they scale with ``size``):

    - background: a dark, slightly tinted grey (level in [0.05, 0.35], tint ±0.05 per channel),
      gaussian pixel noise (std 0.04; a random window of one fixed noise field four times
      the image's side), and 3 distractor strokes: 1.5 px wide segments of
      length 8-24 at a random place and angle, colour value (max channel) in [0.25, 0.55].
    - an object: one of ``SHAPES`` (circle, axis-aligned square, upward equilateral triangle,
      plus-shaped cross with arms 1/3 as wide as long), filled with a random colour of value
      in [0.65, 1], with antialiased edges, drawn over the strokes. Its size r is uniform in
      [5, 7.5] and every shape has the area of a disc of radius r, so area says nothing about
      the shape. Its centre (the centroid) stays >= 12 px from every border.
    - ``task="shape"``: one object; uniform shape; label = its shape
      (``classes = SHAPES``).
    - ``task="same"``: two objects whose centres are 32-39 px apart (at least half the
      image side), in a uniform direction; label 1 ("same") with probability 1/2, and then the
      second shape equals the first, else it is uniform among the other three
      (``classes = ("different", "same")``). Colours and sizes are drawn independently for
      each object, so only the shapes tell the label.

    ``layout(i)`` returns the drawn placement of item ``i`` (no rendering).

    >>> data = Shapes("shape", split="val", length=100)
    >>> len(data), Shapes.classes("shape")
    (100, ('circle', 'square', 'triangle', 'cross'))
    >>> image, label = data[3]
    >>> data.layout(3)["objects"][0]["shape"] == SHAPES[label]
    True
    """

    def __init__(self, task: str, split: str = "train", size: int = 64, length: int | None = None):
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}; got task={task!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}; got split={split!r}")
        if not isinstance(size, int) or size < 32:
            raise ValueError(f"size must be an int of at least 32; got size={size!r}")
        length = DEFAULT_LENGTH[split] if length is None else length
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be a positive int; got length={length!r}")
        self.task, self.split, self.size, self.length = task, split, size, length
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # chunk -> rendered

    @staticmethod
    def classes(task: str) -> tuple[str, ...]:
        """Class names of a task, in label order.

        >>> Shapes.classes("same")
        ('different', 'same')
        """
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}; got task={task!r}")
        return SHAPES if task == "shape" else ("different", "same")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index must be in [-{self.length}, {self.length}); got {index}")
        index %= self.length
        chunk = index // _CHUNK
        if chunk not in self._cache:
            self._cache[chunk] = self._render(chunk)
        images, labels = self._cache[chunk]
        return images[index % _CHUNK].float().div(255), int(labels[index % _CHUNK])

    def layout(self, index: int) -> dict:
        """The label and the objects of item ``index``: shape, centre ``(y, x)``, size r, colour.

        >>> lay = Shapes("same").layout(0)
        >>> len(lay["objects"]), sorted(lay["objects"][0])
        (2, ['center', 'colour', 'shape', 'size'])
        """
        p = {k: v[0] for k, v in self._draw(np.array([index % self.length])).items()}
        objects = [
            {"shape": SHAPES[s], "center": (float(c[0]), float(c[1])), "size": float(r),
             "colour": tuple(float(v) for v in col)}
            for s, c, r, col in zip(p["shape"], p["center"], p["radius"], p["colour"])
        ]
        return {"label": int(p["label"]), "objects": objects}

    def masks(self, index: int) -> torch.Tensor:
        """``BoolTensor [objects, size, size]``: the pixels each object of item ``index`` covers (any
        antialiased coverage), from the same signed distances the rendering uses.

        >>> data = Shapes("same", split="test")
        >>> m = data.masks(0)
        >>> m.shape, bool(m[0].any() and m[1].any()), bool((m[0] & m[1]).any())
        (torch.Size([2, 64, 64]), True, False)
        """
        p = {k: v[0] for k, v in self._draw(np.array([index % self.length])).items()}
        y = np.arange(self.size, dtype=np.float64)[:, None]
        x = np.arange(self.size, dtype=np.float64)[None, :]
        out = [_SDF[s](y - c[0], x - c[1], r) < 0.5 for s, c, r in zip(p["shape"], p["center"], p["radius"])]
        return torch.from_numpy(np.stack(out))

    # -- generation ------------------------------------------------------------------------
    def _draw(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """Every random choice of items ``index [n]`` as arrays ``[n, ...]`` (lengths in pixels).

        Item i reads its own stream of uniforms ``_uniforms(split, i)``, so its draws do not
        depend on which other items are drawn with it. Rendering uses nothing else.
        """
        stream = iter(_uniforms(SPLITS[self.split], index).T)                   # columns [n]
        n, S, unit = len(index), self.size, self.size / 64
        margin = 12 * unit

        def uniform(low, high, *shape):  # [n, *shape], one stream column per value
            cols = [next(stream) for _ in range(math.prod(shape))]
            return low + (high - low) * np.stack(cols, axis=-1).reshape(n, *shape)

        def integers(high):  # [n] uniform in {0, ..., high - 1}
            return np.floor(uniform(0, high)).astype(np.int64)

        if self.task == "shape":
            label = integers(4)
            shape = label[:, None]                                                  # [n, 1]
            center = uniform(margin, S - 1 - margin, 1, 2)                          # [n, 1, 2]
        else:
            label, first, other = integers(2), integers(4), integers(3)
            shape = np.stack([first, np.where(label == 1, first, (first + 1 + other) % 4)], 1)
            # a distance <= S - 1 - 2 margin fits inside the margins in every direction
            dist = uniform(S / 2, min(S / 2 + 7 * unit, S - 1 - 2 * margin))
            half = _polar(dist / 2, uniform(0, 2 * math.pi))                       # [n, 2]
            mid = margin + np.abs(half) + uniform(0, 1, 2) * (S - 1 - 2 * margin - 2 * np.abs(half))
            center = np.stack([mid - half, mid + half], 1)                          # [n, 2, 2]
        m = shape.shape[1]
        return {
            "label": label, "shape": shape, "center": center,
            "radius": uniform(5 * unit, 7.5 * unit, m),
            "colour": _colours(uniform(0, 1, m, 3), uniform(0.65, 1.0, m)),
            "background": uniform(0.05, 0.35, 1) + uniform(-0.05, 0.05, 3),
            "stroke_start": uniform(0, S - 1, 3, 2),
            "stroke_vec": _polar(uniform(8 * unit, 24 * unit, 3), uniform(0, 2 * math.pi, 3)),
            "stroke_colour": _colours(uniform(0, 1, 3, 3), uniform(0.25, 0.55, 3)),
            "noise_offset": np.floor(uniform(0, 3 * S + 1, 2)).astype(np.int64),
        }

    def _render(self, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Items ``[chunk * _CHUNK, ...)`` → uint8 images ``[n, 3, S, S]`` and labels ``[n]``."""
        d = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in
             self._draw(np.arange(chunk * _CHUNK, min((chunk + 1) * _CHUNK, self.length))).items()}
        S = self.size
        y = np.arange(S, dtype=np.float32)[:, None]                            # [S, 1]
        x = np.arange(S, dtype=np.float32)[None, :]                            # [1, S]
        field = _noise_field(S)
        image = np.stack([field[:, oy:oy + S, ox:ox + S] for oy, ox in d["noise_offset"]])
        image += d["background"][:, :, None, None]                              # [n, 3, S, S]
        # strokes: segments a -> a + v; alpha from the distance to the segment
        a, v = d["stroke_start"][..., None, None], d["stroke_vec"][..., None, None]
        py, px = y - a[:, :, 0], x - a[:, :, 1]                 # p - a: [n, 3, S, 1], [n, 3, 1, S]
        vy, vx = v[:, :, 0], v[:, :, 1]
        t = np.clip((py * vy + px * vx) / (vy * vy + vx * vx), 0, 1)           # [n, 3, S, S]
        alpha = np.clip(1.25 - np.hypot(py - t * vy, px - t * vx), 0, 1)
        _paint(image, alpha, d["stroke_colour"])
        # objects: coverage = 0.5 - signed distance, clamped (1 px antialiasing)
        center, radius = d["center"][..., None, None], d["radius"][..., None, None]
        dy, dx = y - center[:, :, 0], x - center[:, :, 1]             # [n, m, S, 1], [n, m, 1, S]
        dist = np.empty(d["shape"].shape + (S, S), np.float32)                 # [n, m, S, S]
        for s, sdf in enumerate(_SDF):
            pick = d["shape"] == s
            dist[pick] = sdf(dy[pick], dx[pick], radius[pick])
        _paint(image, np.clip(0.5 - dist, 0, 1), d["colour"])
        image = np.clip(image, 0, 1) * 255 + 0.5
        return torch.from_numpy(image.astype(np.uint8)), torch.from_numpy(d["label"])


def _uniforms(split: int, index: np.ndarray) -> np.ndarray:
    """The stream of item ``index [n]``: 64 uniforms in [0, 1) each, ``[n, 64]``.

    Number k is splitmix64 of the counter ``((_SEED * 4 + split) * 2**32 + index) * 64 + k``
    (distinct for every split, index < 2**32 and k; it fits in 64 bits).
    """
    counter = (((_SEED * 4 + split) << 32) + index.astype(np.uint64)[:, None]) * np.uint64(64)
    z = (counter + np.arange(64, dtype=np.uint64)) * np.uint64(0x9E3779B97F4A7C15)  # wraps
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


@functools.lru_cache(maxsize=None)
def _noise_field(size: int) -> np.ndarray:
    """Fixed gaussian pixel noise (std 0.04), ``[3, 4 size, 4 size]``; items use windows of it."""
    return np.random.default_rng(_SEED).normal(0, 0.04, (3, 4 * size, 4 * size)).astype(np.float32)


def _colours(rgb: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Colours ``[..., 3]`` with the hue of ``rgb [..., 3]`` and largest channel ``value [...]``."""
    return rgb / rgb.max(axis=-1, keepdims=True) * value[..., None]


def _polar(length: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """``(dy, dx)`` vectors ``[..., 2]`` of the given lengths and angles ``[...]``."""
    return np.stack([length * np.sin(angle), length * np.cos(angle)], axis=-1)


def _paint(image: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Paint layers over ``image [n, 3, S, S]`` in place, in order: ``alpha [n, L, S, S]``,
    ``colour [n, L, 3]``."""
    for layer in range(alpha.shape[1]):
        image += alpha[:, layer, None] * (colour[:, layer, :, None, None] - image)


# Signed distance (negative inside) to each of SHAPES with the area of a disc of radius r,
# centred on its centroid. dy: [k, S, 1], dx: [k, 1, S], r: [k, 1, 1] -> [k, S, S]. Exact
# inside the shape, a close bound outside near corners: enough for 1 px antialiasing.
_TRIANGLE = math.sqrt(4 * math.pi / (3 * math.sqrt(3)))  # circumradius / r
_ARM = math.sqrt(9 * math.pi / 20)                       # cross arm half-length / r (width: 1/3)
_SIN60 = math.sqrt(3) / 2
_SDF = (
    lambda dy, dx, r: np.sqrt(dy * dy + dx * dx) - r,                             # circle
    lambda dy, dx, r: np.maximum(np.abs(dy), np.abs(dx)) - r * math.sqrt(math.pi) / 2,  # square
    lambda dy, dx, r: np.maximum(np.maximum(dy, -dy / 2 + _SIN60 * dx),          # triangle
                                 -dy / 2 - _SIN60 * dx) - _TRIANGLE * r / 2,
    lambda dy, dx, r: np.minimum(                                                 # cross
        np.maximum(np.abs(dx) - _ARM * r, np.abs(dy) - _ARM * r / 3),
        np.maximum(np.abs(dx) - _ARM * r / 3, np.abs(dy) - _ARM * r)),
)


def make_loader(task: str, split: str = "train", batch_size: int = 64, seed: int = 0,
                **dataset_kwargs) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over ``Shapes(task, split, **dataset_kwargs)``.

    The training split is shuffled with a generator seeded by ``seed``; other splits keep
    their order. Single process: the data is rendered and cached in this process.

    >>> images, labels = next(iter(make_loader("shape", "test", batch_size=8)))
    >>> images.shape, labels.shape
    (torch.Size([8, 3, 64, 64]), torch.Size([8]))
    """
    return torch.utils.data.DataLoader(
        Shapes(task, split, **dataset_kwargs), batch_size=batch_size, shuffle=split == "train",
        generator=torch.Generator().manual_seed(seed))
