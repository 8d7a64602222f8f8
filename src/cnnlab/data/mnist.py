"""MNIST and Fashion-MNIST: four gzipped IDX files each, laid out as torchvision leaves them
(``MNIST/raw/``, ``FashionMNIST/raw/``), the .gz kept next to what it decompresses to.

A recompressed copy (as offline mirrors often hold: other gzip bytes, the same data) is
verified through the md5s of the decompressed files (``DECOMPRESSED_MD5``).
"""

from __future__ import annotations

import struct
import zlib
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.data import archives
from cnnlab.data.fetch import Failed, RetryPolicy, fetch_file, first_good, join
from cnnlab.data.raw import DataError, RawDataset, Source, redownload_hint

if TYPE_CHECKING:
    from cnnlab.data.catalog import ResizedOptions

#: torchvision's dataset class of each: its mirrors, file names, md5s and class names.
_TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}

#: md5 of the decompressed IDX files (torchvision lists only those of the .gz files).
DECOMPRESSED_MD5: dict[str, dict[str, str]] = {
    # Checked against the published files after `gunzip`; the same values appear in many
    # public MNIST loaders.
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    # Zalando publishes only the .gz md5s. These values come from public code and docs that
    # agree with each other independently (loaders listing them next to torchvision's .gz
    # md5s, and a tutorial's `md5sum` output after `gunzip` of the published files).
    "fashion_mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}


_IDX_SIZES = {  # header + data: 16 + 60000 * 28 * 28, 8 + 60000, 16 + 10000 * 28 * 28, 8 + 10000
    "train-images-idx3-ubyte": 47040016,
    "train-labels-idx1-ubyte": 60008,
    "t10k-images-idx3-ubyte": 7840016,
    "t10k-labels-idx1-ubyte": 10008,
}

#: Byte size of every published file and of what it decompresses to, as the publishers'
#: servers report them (Content-Length) and public listings agree: no download may grow past
#: the size its checksum belongs to.
SIZES: dict[str, dict[str, int]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": 9912422,
        "train-labels-idx1-ubyte.gz": 28881,
        "t10k-images-idx3-ubyte.gz": 1648877,
        "t10k-labels-idx1-ubyte.gz": 4542,
        **_IDX_SIZES,
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": 26421880,
        "train-labels-idx1-ubyte.gz": 29515,
        "t10k-images-idx3-ubyte.gz": 4422102,
        "t10k-labels-idx1-ubyte.gz": 5148,
        **_IDX_SIZES,
    },
}


def _torchvision_class(name: str) -> Any:
    from torchvision import datasets as tvd

    return getattr(tvd, _TORCHVISION[name])


def table(name: str) -> Source:
    """Built from torchvision's class attributes, read at call time."""
    cls = _torchvision_class(name)
    return Source(
        name=name,
        mirrors=tuple(cls.mirrors),
        archives=dict(cls.resources),
        contents=dict(DECOMPRESSED_MD5.get(name, {})),
        folder=f"{cls.__name__}/raw",
        sizes=dict(SIZES[name]),
        unpacked={},
    )


def content_names(src: Source) -> set[str]:
    """What the .gz files decompress to, whether or not their md5s are known."""
    return {a.removesuffix(".gz") for a in src.archives}


def download_cap(src: Source, archive: str) -> int:
    """The most bytes a download of ``archive`` may have: its published size, or more for a
    recompressed copy, which is verified by its decompressed md5."""
    cap = src.sizes[archive]
    content = archive.removesuffix(".gz")
    if content in src.contents:
        cap = max(cap, archives.compressed_bound(src.sizes[content]))
    return cap


def build(src: Source, root: str | None, mirror: str | None, out: Path, retry: RetryPolicy) -> None:
    """Each .gz verified (or, from a user's mirror, its decompressed file) into
    ``out/<folder>/``; ``root`` is the mirror's folder of this dataset (None: the public
    mirrors), ``mirror`` what data.mirror said."""
    raw = out / src.folder
    raw.mkdir(parents=True)
    counts: dict[str, int] = {}
    first = next(iter(src.archives))  # the example in the error message
    for archive in src.archives:
        content = archive.removesuffix(".gz")
        if root is None:
            tries = [(m + archive, "archive") for m in src.mirrors]
        else:
            laid_out = join(root, *src.folder.split("/"))
            tries = [
                (join(root, archive), "archive"),
                (join(laid_out, archive), "archive"),
                (join(laid_out, content), "content"),
            ]
        counts[content] = first_good(
            src.name,
            archive,
            [(loc, partial(_fetch, src, archive, loc, form, raw, retry)) for loc, form in tries],
            mirror,
            partial(_remove, raw / archive, raw / content),
            (first, f"{src.folder}/{first.removesuffix('.gz')}"),
        )
    _check_pairs(raw, counts)


def _remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _fetch(
    src: Source, archive: str, location: str, form: str, raw: Path, retry: RetryPolicy
) -> int:
    """Fetch the published .gz (``form`` "archive"), accepted by its md5 or by that of its
    decompressed bytes (a recompressed copy), or what it decompresses to ("content"); then
    read the decompressed file as IDX (which checks it) and return its item count. Not
    torchvision's check_integrity nor extract_archive: they know only the .gz md5, and
    decompress without a limit."""
    content = archive.removesuffix(".gz")
    decoded = raw / content
    expected_content = src.contents.get(content)
    if form == "content":
        fetch_file(location, decoded, retry, src.sizes[content])
        if expected_content is None:
            raise Failed(
                f"no md5 of the decompressed {content} is known, so this copy "
                f"cannot be verified: provide the published {archive}",
                "corrupt",
            )
        archives.check_md5(decoded, expected_content)
        return len(read_idx(decoded))
    fetched = raw / archive
    fetch_file(location, fetched, retry, download_cap(src, archive))
    actual = archives.md5(fetched)
    archive_ok = actual == src.archives[archive]
    wrong = archives.mismatch(src.archives[archive], actual)
    prefix = "" if archive_ok else f"{wrong}; "
    if not archive_ok and expected_content is None:
        raise Failed(
            f"{wrong}; if this is a recompressed copy "
            f"it cannot be verified, because no md5 of the decompressed {content} is "
            "known: use the published .gz file",
            "corrupt",
        )
    try:
        archives.gunzip(fetched, decoded, src.sizes[content])
    except Failed as failure:
        raise Failed(prefix + failure.reason, failure.category) from None
    except (OSError, EOFError, ValueError, zlib.error) as exc:  # gzip.BadGzipFile...
        raise Failed(f"{prefix}not a valid gzip file ({exc})", "corrupt") from exc
    if not archive_ok:
        try:
            archives.check_md5(decoded, expected_content)
        except Failed as failure:
            raise Failed(f"{wrong}; decompressed, {failure.reason}", "corrupt") from None
    return len(read_idx(decoded))


def _check_pairs(raw: Path, counts: dict[str, int]) -> None:
    """Images and labels must describe the same samples; a mismatch means mixed-up files."""
    for split in ("train", "t10k"):
        images = raw / f"{split}-images-idx3-ubyte"
        labels = raw / f"{split}-labels-idx1-ubyte"
        n_images, n_labels = counts[images.name], counts[labels.name]
        if n_images != n_labels:
            raise DataError(
                f"{images} holds {n_images} images but {labels} holds {n_labels} labels: the "
                "files do not belong together. Replace them with the published files."
            )


MAGIC = {"images": 0x00000803, "labels": 0x00000801}  # uint8 data, 3 or 1 dimensions
IMAGE_HW = (28, 28)


def read_idx(path: Path) -> np.ndarray:
    """The data of the IDX file at ``path``: uint8 images ``[n, 28, 28]`` or labels ``[n]``
    in 0..9 (which of the two, its name says), once its header matched its size; else
    ``Failed`` naming what is wrong. It verifies a fetched file and loads it, so what was
    verified is what is decoded. Not torchvision's ``read_sn3_pascalvincent_tensor``, which
    asserts or reshapes its way into obscure errors on a damaged file."""
    kind = "images" if "images" in path.name else "labels"
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


def load(src: Source, raw_dir: Path, options: ResizedOptions | None) -> RawDataset:
    """Both splits, each file read by the reader that verified it at download (torchvision's
    MNIST class would parse them a second time)."""
    folder = raw_dir / src.folder
    data: dict[str, np.ndarray] = {}
    for content in sorted(content_names(src)):
        path = folder / content
        if not path.is_file():
            raise DataError(f"{path} is missing: {redownload_hint(src.name)}")
        try:
            data[content] = read_idx(path)
        except Failed as failure:
            raise DataError(f"{path}: {failure.reason}; {redownload_hint(src.name)}") from None
    _check_pairs(folder, {name: len(array) for name, array in data.items()})
    splits = []
    for split in ("train", "t10k"):
        images = data[f"{split}-images-idx3-ubyte"][:, None]
        labels = data[f"{split}-labels-idx1-ubyte"].astype(np.int64)
        splits.append((np.ascontiguousarray(images), labels))
    (train_x, train_y), (test_x, test_y) = splits
    classes = list(_torchvision_class(src.name).classes)
    return RawDataset(train_x, train_y, test_x, test_y, classes)
