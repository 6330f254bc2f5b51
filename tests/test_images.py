"""vizattn.data.image (vizattn.images): pictures from outside, checked, and prepared as the bundled photos are.

Good pictures: every accepted way in (path, bytes, PIL image) gives the exact centred square (checked
against slicing by hand on a picture whose size needs no resize), the ImageNet normalisation with the
published constants, the EXIF orientation, and the same tensors as ``data.photo`` / ``imagenet_photo``
for a bundled photo saved as a file. Bad ones: each rule's message, with its values.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from vizattn import data, images

MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])  # ImageNet's published values


def picture(width: int = 90, height: int = 60, seed: int = 0) -> np.ndarray:
    """Random RGB pixels ``[height, width, 3]`` uint8."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encoded(pixels: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def by_hand(pixels: np.ndarray, top: int, left: int, side: int) -> torch.Tensor:
    """The square ``[top:top+side, left:left+side]`` as ``[1, 3, side, side]`` in [0, 1]."""
    return torch.from_numpy(pixels[top:top + side, left:left + side].copy()).permute(2, 0, 1)[None].float() / 255


def test_every_way_in_gives_the_centred_square(tmp_path):
    pixels = picture(90, 60)  # landscape: the centred 60 x 60 square starts at column 15
    path = tmp_path / "upload.png"
    path.write_bytes(encoded(pixels))
    expected = by_hand(pixels, 0, 15, 60)
    for source in (path, str(path), path.read_bytes(), bytearray(path.read_bytes()), Image.fromarray(pixels)):
        torch.testing.assert_close(data.image(source, size=60, normalise=False), expected, rtol=0, atol=1e-6)
    tall = picture(41, 75, seed=1)  # portrait, odd sizes: rows (75 - 41) // 2 = 17 onwards; crop 0.5 keeps 20 (41/2)
    torch.testing.assert_close(data.image(encoded(tall), size=41, normalise=False), by_hand(tall, 17, 0, 41),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(data.image(encoded(tall), size=20, normalise=False, crop=0.5),
                               by_hand(tall, 27, 10, 20), rtol=0, atol=1e-6)
    normalised = data.image(path, size=60)
    torch.testing.assert_close(normalised, (expected - MEAN[:, None, None]) / STD[:, None, None])
    assert data.image(path).shape == (1, 3, 224, 224)  # the checkpoints' default size


def test_other_formats_alpha_grey_and_exif_orientation():
    pixels = picture(30, 20, seed=2)
    for fmt in ("GIF", "BMP", "WEBP", "JPEG"):  # lossy ones: only the shape and the range
        x = data.image(encoded(pixels, fmt), size=16, normalise=False)
        assert x.shape == (1, 3, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1, fmt
    rgba = np.dstack([pixels, np.full(pixels.shape[:2], 7, np.uint8)])  # alpha is dropped
    torch.testing.assert_close(data.image(encoded(rgba), size=20, normalise=False), by_hand(pixels, 0, 5, 20))
    grey = pixels[..., 0]
    x = data.image(Image.fromarray(grey), size=20, normalise=False)
    torch.testing.assert_close(x, torch.from_numpy(grey[:, 5:25].copy()).float().div(255).expand(1, 3, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: shown turned 90 degrees clockwise
    turned = data.image(encoded(pixels, exif=exif), size=20, normalise=False)
    upright = np.ascontiguousarray(np.rot90(pixels, k=-1))  # [30, 20, 3]
    torch.testing.assert_close(turned, by_hand(upright, 5, 0, 20))


@pytest.mark.parametrize("name", ["chelsea", "camera"])
def test_a_bundled_photo_saved_as_a_file_comes_back_as_data_photo_gives_it(name, tmp_path):
    import skimage.data

    path = tmp_path / f"{name}.png"
    Image.fromarray(np.asarray(getattr(skimage.data, name)())).save(path)
    torch.testing.assert_close(data.image(path), data.imagenet_photo(name), rtol=0, atol=0)
    torch.testing.assert_close(data.image(path, size=64, normalise=False), data.photo(name, 64)[None], rtol=0, atol=0)


def png_header(width: int, height: int) -> bytes:
    """A valid, tiny PNG whose header declares ``width x height`` (its pixel data is one empty row)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))


def test_bad_uploads_get_a_message_naming_the_rule_and_values(tmp_path):
    good = encoded(picture(64, 48))
    noise = encoded(picture(256, 256, seed=3), "JPEG", quality=90)
    cases = [
        (b"hello, I am a text file", r"the image bytes: not an image: pillow finds none of the accepted formats "
                                     r"\(PNG, JPEG, GIF, BMP, WEBP\)"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image"),  # EPS: never handed to pillow
        (encoded(picture(8, 8), "TIFF"), "not an image"),  # a real image, in a format not accepted
        (b"", r"the image bytes is empty \(0 bytes\)"),
        (good[: len(good) // 2], r"broken image data \(truncated or corrupt\)"),
        (noise[: len(noise) // 2], r"broken image data \(truncated or corrupt\): OSError: image file is truncated"),
        (png_header(100_000, 100_000), r"refused as a decompression bomb by pillow \(Image.MAX_IMAGE_PIXELS = "),
        (png_header(10_000, 10_000), "refused as a decompression bomb by pillow"),  # pillow's warning counts
        (png_header(8_000, 4_000), "is 8000 x 4000 = 32,000,000 pixels; images may have at most "
                                   "MAX_PIXELS = 25,000,000 pixels"),
        (b"\x89PNG" + bytes(images.MAX_FILE_BYTES), r"is 20,971,524 bytes; images may be at most "
                                                   r"MAX_FILE_BYTES = 20,971,520 bytes"),
        (123, "an image must be a file path, the bytes of an image file or a PIL image; got int"),
        (tmp_path / "missing.png", "an image path must name an existing file"),
    ]
    for source, message in cases:
        with pytest.raises(ValueError, match=message):
            data.image(source)
    big = tmp_path / "big.png"
    with big.open("wb") as f:
        f.truncate(images.MAX_FILE_BYTES + 1)  # sparse: refused by its size before a byte is read
    with pytest.raises(ValueError, match=rf"the image file '{big}' is 20,971,521 bytes; images may be at most"):
        data.image(big)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.png' is empty \(0 bytes\)"):
        data.image(empty)
    with pytest.raises(ValueError, match=r"crop must be in \(0, 1\]"):
        data.image(good, crop=1.5)
    with pytest.raises(ValueError, match="size must be a positive int"):
        data.image(good, size=0)
