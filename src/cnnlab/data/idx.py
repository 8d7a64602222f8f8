"""The IDX format of MNIST and Fashion-MNIST: one reader, used both to verify a fetched file
and to load it. Not torchvision's (``read_sn3_pascalvincent_tensor``), which asserts or
reshapes its way into obscure errors on a damaged file. Torch-free.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Literal

import numpy as np

from cnnlab.data.fetch import Failed

MAGIC = {"images": 0x00000803, "labels": 0x00000801}  # uint8 data, 3 or 1 dimensions
IMAGE_HW = (28, 28)


def role(filename: str) -> Literal["images", "labels"]:
    return "images" if "images" in filename else "labels"


def read(path: Path) -> np.ndarray:
    """The data of the IDX file at ``path``: uint8 images ``[n, 28, 28]`` or labels ``[n]``
    in 0..9 (which of the two, its name says), once its header matched its size.

    Raises ``Failed`` (category "corrupt") naming what is wrong.
    """
    kind = role(path.name)
    ndim = 3 if kind == "images" else 1
    header_size = 4 + 4 * ndim
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(header_size)
        if len(header) < 4:
            raise Failed(f"truncated IDX file: only {size} bytes", "corrupt")
        magic = int.from_bytes(header[:4], "big")
        if magic != MAGIC[kind]:
            raise Failed(
                f"not an IDX {kind} file: magic number 0x{magic:08x}, expected "
                f"0x{MAGIC[kind]:08x} (unsigned bytes, {ndim}-d)",
                "corrupt",
            )
        if len(header) < header_size:
            raise Failed(f"truncated IDX file: {size} bytes, shorter than its header", "corrupt")
        dims = struct.unpack(f">{ndim}I", header[4:])
        if kind == "images" and dims[1:] != IMAGE_HW:
            raise Failed(
                f"wrong image shape {dims[1]}x{dims[2]}, expected {IMAGE_HW[0]}x{IMAGE_HW[1]}",
                "corrupt",
            )
        expected = header_size + int(np.prod(dims, dtype=np.int64))
        if size < expected:
            raise Failed(
                f"truncated IDX file: {size} bytes, the header announces {expected}", "corrupt"
            )
        if size > expected:
            raise Failed(
                f"IDX file has {size - expected} bytes after the {expected} its header announces",
                "corrupt",
            )
        data = np.fromfile(f, dtype=np.uint8, count=expected - header_size)
    if len(data) != expected - header_size:  # shrunk since its size was read
        raise Failed(f"truncated IDX file: the header announces {expected} bytes", "corrupt")
    if kind == "labels" and dims[0] and int(data.max()) > 9:
        raise Failed(f"label {int(data.max())} outside 0..9", "corrupt")
    return data.reshape(dims)
