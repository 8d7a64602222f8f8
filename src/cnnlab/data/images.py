"""Decode one image file and bring it to a fixed square size, once, in prepare (Flowers-102
and the user's folders), with Pillow. Two things Pillow alone mishandles are dealt with here:
images of more than ``MAX_PIXELS`` are refused from their header, before decoding (a 140 KB
PNG can decode into gigabytes), and high bit depths are scaled to 8 bits instead of clipped
(``_eight_bit``). Refused images raise :class:`BadImage`, like any undecodable file.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from cnnlab.data.catalog import ResizeMode

#: Antialiased by Pillow when shrinking; sharper than bilinear.
RESAMPLE = Image.Resampling.BICUBIC

#: 8192 x 8192 (192 MiB as RGB): a 48-megapixel phone photo fits. JPEGs are measured after
#: the decoder's own downscaling (``draft``), so a large photo still loads cheaply.
MAX_PIXELS = 8192 * 8192


class BadImage(ValueError):
    """A file that is not a decodable image; the message says why, without the path."""


def fit(image: Image.Image, size: int, mode: ResizeMode) -> np.ndarray:
    """An RGB ``size`` x ``size`` uint8 array [H, W, 3] of ``image``, after its EXIF rotation
    (phone photos are not stored on their side); ``mode`` as in ``ResizedOptions``."""
    image = _eight_bit(ImageOps.exif_transpose(image))
    image = image.convert("RGB")
    if mode == "center_crop":
        image = ImageOps.fit(image, (size, size), method=RESAMPLE, centering=(0.5, 0.5))
    else:
        image = ImageOps.pad(image, (size, size), method=RESAMPLE, color=(0, 0, 0))
    return np.asarray(image, dtype=np.uint8)


def _eight_bit(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit grayscale ("L") if its mode holds more than 8 bits per pixel, else
    unchanged. 16-bit is divided by 257; 32-bit integers are read as 16-bit when no value
    exceeds 65535 (how Pillow opens 16-bit PGM), else over the positive 31-bit range; floats
    must be in 0..1: stretching each image by its own range would change its brightness."""
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
    """Decode the bytes of one image file and :func:`fit` it; :class:`BadImage` if Pillow
    cannot read them completely, or this module refuses them."""
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
