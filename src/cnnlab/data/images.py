"""Decode one image file and bring it to a fixed square size, the way prepare stores it.

Shared by Oxford Flowers-102 and the user's image folders: both hold photos of every size,
which are decoded and resized once, in prepare, so training only ever sees uint8 tensors of
one shape. Pillow does the work (its own resampling filters antialias when shrinking).

Two kinds of image are not what a photo folder usually holds, and Pillow alone mishandles
them:

- Images of more than ``MAX_PIXELS`` pixels (8192 x 8192) are refused from their header,
  before anything is decoded: a 12000 x 12000 PNG of 140 KB would otherwise decode into
  hundreds of MB with only a warning. JPEGs are measured after the decoder's own
  downscaling (``draft``), so a large phone photo still loads at a fraction of its size.
- High bit depths are scaled to 8 bits, where ``convert("RGB")`` would clip them (a 16-bit
  ramp comes out nearly all white, a 0..1 float image all black): 16-bit (Pillow's
  ``I;16`` modes) is divided by 257, so 65535 becomes 255; 32-bit integers (``I``) are read
  as 16-bit when no value exceeds 65535 (Pillow opens 16-bit PGM/PPM files that way) and
  over the positive 31-bit range otherwise, negative values refused; floats (``F``) are
  scaled from 0..1 and refused in any other range, since a float image says nothing of its
  scale and stretching each image by its own minimum and maximum would change brightness
  from one image to the next.

Refused images raise :class:`BadImage`, which the callers treat like any undecodable file.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cnnlab.data.options import ResizeMode

#: Bicubic with Pillow's antialiasing: sharper than bilinear, no ringing worth noticing at
#: these sizes.
RESAMPLE = Image.Resampling.BICUBIC

#: The most pixels an image may have once decoded: 8192 x 8192 (192 MiB as RGB, before the
#: copies resizing makes). A 48-megapixel phone photo (8000 x 6000) fits, and Flowers-102's
#: photos are about 500 x 700. Below Pillow's own warning threshold (89 million pixels).
MAX_PIXELS = 8192 * 8192


class BadImage(ValueError):
    """A file that is not a decodable image; the message says why, without the path."""


def fit(image: Image.Image, size: int, mode: ResizeMode) -> np.ndarray:
    """An RGB ``size`` x ``size`` uint8 array [H, W, 3] of ``image``.

    ``center_crop``: the short side scaled to ``size``, the middle square kept.
    ``letterbox``: the long side scaled to ``size``, the rest padded with black, centred.
    The EXIF orientation is applied first, so phone photos are not stored on their side;
    high bit depths are scaled to 8 bits (:class:`BadImage` where that is not defined).
    """
    image = _eight_bit(ImageOps.exif_transpose(image))
    image = image.convert("RGB")
    if mode == "center_crop":
        image = ImageOps.fit(image, (size, size), method=RESAMPLE, centering=(0.5, 0.5))
    else:
        image = ImageOps.pad(image, (size, size), method=RESAMPLE, color=(0, 0, 0))
    return np.asarray(image, dtype=np.uint8)


def _eight_bit(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit grayscale ("L") if its mode holds more than 8 bits per pixel,
    scaled as the module docstring says; any other mode unchanged."""
    if not (image.mode.startswith("I;16") or image.mode in ("I", "F")):
        return image
    values = np.asarray(image)
    if values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise BadImage(
                "a floating-point image with NaN or infinite pixels: save it as an 8- or "
                "16-bit image"
            )
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 1.0:
            raise BadImage(
                f"a floating-point image with values from {low:g} to {high:g}: only 0..1 "
                "(black to white) is understood; save it as an 8- or 16-bit image"
            )
        eight = np.rint(values * 255.0)
    else:
        wide = values.astype(np.int64)
        if wide.min() < 0:
            raise BadImage(
                f"a 32-bit image with negative values (down to {int(wide.min())}): save it "
                "as an 8- or 16-bit image"
            )
        sixteen_bit = wide.max() <= 0xFFFF
        # rounded: 65535 -> 255, 257 -> 1; or the positive 31-bit range
        eight = (wide + 128) // 257 if sixteen_bit else np.rint(wide * (255.0 / 0x7FFFFFFF))
    return Image.fromarray(eight.astype(np.uint8))  # 2-d uint8: mode "L"


def _check_size(image: Image.Image) -> None:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise BadImage(
            f"refused: {width}x{height} pixels ({width * height / 1e6:.0f} million) is more "
            f"than the {MAX_PIXELS / 1e6:.0f} million (8192x8192) an image may have here; "
            "shrink it, or leave it out"
        )


def decode(data: bytes, size: int, mode: ResizeMode) -> np.ndarray:
    """Decode the bytes of one image file and :func:`fit` it; :class:`BadImage` if they are
    not an image Pillow can read completely (unknown format, truncated, corrupt), or one
    this module refuses (too many pixels, a bit depth it cannot scale)."""
    try:
        with warnings.catch_warnings():
            # MAX_PIXELS is checked below and is stricter than Pillow's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))  # reads the header only
        with opened as image:
            # JPEG only: let the decoder scale by 1/2, 1/4 or 1/8 while it decodes, never
            # below the size needed; decoding a large photo is then several times faster.
            image.draft("RGB", (size, size))
            _check_size(image)  # the size that would be decoded, before decoding it
            image.load()
            return fit(image, size, mode)
    except BadImage:
        raise
    except Image.UnidentifiedImageError:
        raise BadImage("not an image (Pillow does not recognise its format)") from None
    except Image.DecompressionBombError as exc:
        raise BadImage(
            f"refused: more than the {MAX_PIXELS / 1e6:.0f} million pixels (8192x8192) an "
            f"image may have here ({exc})"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise BadImage(f"cannot decode it ({type(exc).__name__}: {exc})") from None


def load(path: Path, size: int, mode: ResizeMode) -> np.ndarray:
    """:func:`decode` a file by path (a loader for torchvision's dataset classes)."""
    return decode(Path(path).read_bytes(), size, mode)
