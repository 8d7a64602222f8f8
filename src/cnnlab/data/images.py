"""Decode one image file and bring it to a fixed square size, the way prepare stores it.

Shared by Oxford Flowers-102 and the user's image folders: both hold photos of every size,
which are decoded and resized once, in prepare, so training only ever sees uint8 tensors of
one shape. Pillow does the work (its own resampling filters antialias when shrinking).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cnnlab.data.options import ResizeMode

#: Bicubic with Pillow's antialiasing: sharper than bilinear, no ringing worth noticing at
#: these sizes.
RESAMPLE = Image.Resampling.BICUBIC


class BadImage(ValueError):
    """A file that is not a decodable image; the message says why, without the path."""


def fit(image: Image.Image, size: int, mode: ResizeMode) -> np.ndarray:
    """An RGB ``size`` x ``size`` uint8 array [H, W, 3] of ``image``.

    ``center_crop``: the short side scaled to ``size``, the middle square kept.
    ``letterbox``: the long side scaled to ``size``, the rest padded with black, centred.
    The EXIF orientation is applied first, so phone photos are not stored on their side.
    """
    image = ImageOps.exif_transpose(image)
    image = image.convert("RGB")
    if mode == "center_crop":
        image = ImageOps.fit(image, (size, size), method=RESAMPLE, centering=(0.5, 0.5))
    else:
        image = ImageOps.pad(image, (size, size), method=RESAMPLE, color=(0, 0, 0))
    return np.asarray(image, dtype=np.uint8)


def decode(data: bytes, size: int, mode: ResizeMode) -> np.ndarray:
    """Decode the bytes of one image file and :func:`fit` it; :class:`BadImage` if they are
    not an image Pillow can read completely (unknown format, truncated, corrupt)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            # JPEG only: let the decoder scale by 1/2, 1/4 or 1/8 while it decodes, never
            # below the size needed; decoding a large photo is then several times faster.
            image.draft("RGB", (size, size))
            image.load()
            return fit(image, size, mode)
    except Image.UnidentifiedImageError:
        raise BadImage("not an image (Pillow does not recognise its format)") from None
    except Image.DecompressionBombError as exc:
        raise BadImage(f"refused: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise BadImage(f"cannot decode it ({type(exc).__name__}: {exc})") from None


def load(path: Path, size: int, mode: ResizeMode) -> np.ndarray:
    """:func:`decode` a file by path (a loader for torchvision's dataset classes)."""
    return decode(Path(path).read_bytes(), size, mode)
