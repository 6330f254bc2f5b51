"""Pictures into model inputs: a centred square at the model's size, ImageNet-normalised or in [0, 1].

``image(source, size)`` takes a picture from outside (a file path, the bytes of a file, e.g. an
upload, or a PIL image) and accepts images only: at most ``MAX_FILE_BYTES`` bytes and ``MAX_PIXELS``
pixels, in one of ``FORMATS`` (no other pillow decoder is tried), decoded by pillow with its
decompression-bomb check on (a warning counts as a refusal) and fully verified. Anything else raises
a ``ValueError`` that names the rule and the values; nothing is saved or run. ``square`` and
``imagenet_normalise`` are the preparation that ``vizattn.data``'s bundled photos go through too.

>>> import io; from PIL import Image
>>> upload = io.BytesIO(); Image.new("RGB", (90, 60), (255, 0, 0)).save(upload, "PNG")
>>> image(upload.getvalue(), size=32).shape
torch.Size([1, 3, 32, 32])
>>> image(b"GIF89a, or so it says")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: the image bytes: not an image: pillow finds none of the accepted formats ...
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["image", "square", "imagenet_normalise", "IMAGENET_MEAN", "IMAGENET_STD", "MAX_FILE_BYTES",
           "MAX_PIXELS", "FORMATS"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # per RGB channel
MAX_FILE_BYTES = 20 * 2**20  # 20 MiB: a camera's JPEG, a screenshot's PNG
MAX_PIXELS = 25_000_000  # 25 megapixels (e.g. 6000 x 4000): a float copy of its square is at most 300 MB
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")  # the only pillow decoders ever tried
DRAFT_MARGIN = 2  # a large JPEG is decoded scaled down to at least twice the output side: a 12 MP photo
#                   in 0.1 s instead of 0.9 s (one thread); the antialiased resize does the rest


def square(pixels: np.ndarray, size: int, crop: float = 1.0) -> torch.Tensor:
    """``pixels [h, w]`` or ``[h, w, 3]`` (uint8) -> ``[3, size, size]`` float in ``[0, 1]``.

    Keeps the centred square whose side is ``crop`` times the shorter side (``crop=0.875``: timm's
    evaluation crop, the shorter side resized to ``size / 0.875`` then ``size`` cut from its centre)
    and resizes it with antialiased bilinear interpolation; grey pixels are repeated on 3 channels.

    >>> square(np.zeros((30, 50), np.uint8), 8, crop=0.5).shape
    torch.Size([3, 8, 8])
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int; got size={size!r}")
    if not 0 < crop <= 1:
        raise ValueError(f"crop must be in (0, 1] (the kept fraction of the shorter side); got crop={crop!r}")
    h, w = pixels.shape[:2]
    side = max(1, round(min(h, w) * crop))
    top, left = (h - side) // 2, (w - side) // 2
    cut = torch.from_numpy(np.array(pixels[top:top + side, left:left + side])).float().div(255)  # a writable copy
    cut = cut.expand(3, side, side) if cut.ndim == 2 else cut.permute(2, 0, 1)  # [3, side, side]
    out = F.interpolate(cut[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out[0].clamp(0, 1)


def imagenet_normalise(x: torch.Tensor) -> torch.Tensor:
    """``x [3, H, W]`` in ``[0, 1]`` -> ``[1, 3, H, W]`` normalised with the ImageNet mean and std per channel.

    >>> imagenet_normalise(torch.full((3, 1, 1), 0.485))[0, 0].item()
    0.0
    """
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((x - mean) / std)[None]


def image(source, size: int = 224, normalise: bool = True, crop: float = 1.0) -> torch.Tensor:
    """A picture from a file path, the bytes of an image file or a PIL image -> ``[1, 3, size, size]``.

    ``square(pixels, size, crop)`` of its RGB pixels (upright as its EXIF orientation says; alpha
    dropped; the first frame of an animation), then ``imagenet_normalise`` (``normalise=True``: what the
    ``vizattn.checkpoints`` models take, at ``size=224``) or left in ``[0, 1]`` (``normalise=False``: what
    the small ``vizattn.models`` take, at ``size=64``): the preparation of ``data.imagenet_photo`` and
    ``data.photo``. A source that is not an accepted image raises ``ValueError`` (see the module).
    A JPEG file more than ``DRAFT_MARGIN`` times larger than needed is decoded by pillow at 1/2, 1/4 or 1/8
    scale, still at least that many times the output (a 12 MP photo at 64 differs from a full decode by
    0.004 on average, 0.06 at most). Needs pillow (``pip install vizattn[notebooks]``).
    """
    from PIL import Image, ImageOps  # pillow only when a picture comes in

    if isinstance(source, Image.Image):
        name, picture = "the PIL image", source
    else:
        name, data = _file(source)
        with _pillow_errors(name):
            with Image.open(io.BytesIO(data), formats=FORMATS) as opened:
                opened.verify()  # reads the whole file: structure, checksums (PNG), truncation
            picture = Image.open(io.BytesIO(data), formats=FORMATS)  # verify() spends an image: open it again
    width, height = picture.size  # from the header: nothing decoded yet
    if width * height > MAX_PIXELS:
        raise ValueError(f"{name} is {width} x {height} = {width * height:,} pixels; images may have at most "
                         f"MAX_PIXELS = {MAX_PIXELS:,} pixels")
    with _pillow_errors(name):
        scale = DRAFT_MARGIN * size / (min(width, height) * crop)  # output side / kept side, with a margin
        if scale < 1 and picture is not source:  # a file we opened, not the caller's image; no-op unless JPEG
            picture.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))
        rgb = ImageOps.exif_transpose(picture).convert("RGB")  # decodes every pixel
    x = square(np.asarray(rgb), size, crop)
    return imagenet_normalise(x) if normalise else x[None]


def _file(source) -> tuple[str, bytes]:
    """``(name for messages, the file's bytes)`` of a path or bytes-like ``source``, within ``MAX_FILE_BYTES``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return _within_limit("the image bytes", len(data)), data
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"an image path must name an existing file; got {str(path)!r}, which is not a file")
        return _within_limit(f"the image file {str(path)!r}", path.stat().st_size), path.read_bytes()
    raise ValueError(f"an image must be a file path, the bytes of an image file or a PIL image; "
                     f"got {type(source).__name__}")


def _within_limit(name: str, n: int) -> str:
    """``name`` if a file of ``n`` bytes may be read, else ValueError."""
    if n == 0:
        raise ValueError(f"{name} is empty (0 bytes); an image file is needed")
    if n > MAX_FILE_BYTES:
        raise ValueError(f"{name} is {n:,} bytes; images may be at most MAX_FILE_BYTES = {MAX_FILE_BYTES:,} bytes")
    return name


@contextlib.contextmanager
def _pillow_errors(name: str):
    """Pillow's refusals inside the block -> ValueError naming ``name``; its decompression-bomb warning counts."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ValueError(f"{name}: refused as a decompression bomb by pillow "
                             f"(Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}): {err}") from None
        except UnidentifiedImageError:
            raise ValueError(f"{name}: not an image: pillow finds none of the accepted formats "
                             f"({', '.join(FORMATS)}) in it") from None
        except Exception as err:  # any decoder failure on a user's file: truncated or corrupt data
            raise ValueError(f"{name}: broken image data (truncated or corrupt): "
                             f"{type(err).__name__}: {err}") from None
