"""Oxford Flowers-102: a tarball of 8,189 JPEGs and two MATLAB files (labels, splits), each
verified as published (a repacked tarball cannot be: its JPEGs have no md5s), laid out and
decoded by torchvision's Flowers102, every photo resized once.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnlab.data import archives
from cnnlab.data.fetch import RetryPolicy, fetch_file, first_good, join
from cnnlab.data.raw import DataError, RawDataset, Source, TarLimits, redownload_hint

if TYPE_CHECKING:
    from cnnlab.data.catalog import ResizedOptions

#: Byte size of each published file (see mnist.SIZES).
SIZES: dict[str, dict[str, int]] = {
    "flowers102": {"102flowers.tgz": 344862509, "imagelabels.mat": 502, "setid.mat": 14989},
}

#: What the tarball unpacks to, at most: 8,189 JPEGs in jpg/; JPEGs do not compress, so they
#: hold about as many bytes as the archive, and a quarter more leaves room.
UNPACKED: dict[str, dict[str, TarLimits]] = {
    "flowers102": {
        "102flowers.tgz": TarLimits(
            max_bytes=SIZES["flowers102"]["102flowers.tgz"] * 5 // 4, max_members=8_200
        ),
    },
}


def table(name: str) -> Source:
    """Built from torchvision's class attributes, read at call time."""
    from torchvision import datasets as tvd

    cls = tvd.Flowers102
    return Source(
        name=name,
        mirrors=(cls._download_url_prefix,),
        archives=dict(cls._file_dict.values()),
        contents={},
        folder="flowers-102",
        sizes=dict(SIZES[name]),
        unpacked=dict(UNPACKED[name]),
    )


def build(src: Source, root: str | None, mirror: str | None, out: Path, retry: RetryPolicy) -> None:
    """The three published files, each by its md5, laid out as torchvision's Flowers102
    expects them (``flowers-102/{jpg/, imagelabels.mat, setid.mat}``); the tarball is removed
    once extracted, so DVC stores the images once."""
    folder = out / src.folder
    folder.mkdir()
    first = next(iter(src.archives))  # the example in the error message
    for archive in src.archives:
        if root is None:
            locations = [m + archive for m in src.mirrors]
        else:
            locations = [join(root, archive), join(root, src.folder, archive)]

        def cleanup(target: Path = folder / archive) -> None:
            target.unlink(missing_ok=True)
            shutil.rmtree(folder / "jpg", ignore_errors=True)

        first_good(
            src.name,
            archive,
            [(loc, partial(_fetch, src, loc, folder, archive, retry)) for loc in locations],
            mirror,
            cleanup,
            (first, f"{src.folder}/{first}"),
        )


def _fetch(src: Source, location: str, folder: Path, archive: str, retry: RetryPolicy) -> None:
    target = folder / archive
    fetch_file(location, target, retry, src.sizes[archive])
    archives.check_md5(target, src.archives[archive])
    if archive in src.unpacked:
        archives.extract_tar(target, folder, "jpg", src.unpacked[archive])
        target.unlink()


def load(src: Source, raw_dir: Path, options: ResizedOptions | None) -> RawDataset:
    """The official train / val / test splits (1,020 / 1,020 / 6,149 images) through
    torchvision's Flowers102, every photo resized once to ``options.size``."""
    if options is None:
        raise TypeError("flowers102 needs its options (dataset.flowers102: size, resize)")
    from torchvision import datasets as tvd

    from cnnlab.data import images

    folder = raw_dir / src.folder
    base = tvd.Flowers102
    # torchvision re-checks the .mat files' md5s: give it ours, so an override applies to both.
    verified = type(
        "Flowers102",
        (base,),
        {"_file_dict": {k: (f, src.archives[f]) for k, (f, _) in base._file_dict.items()}},
    )

    def loader(path: str | Path) -> np.ndarray:
        try:
            return images.decode(Path(path).read_bytes(), options.size, options.resize)
        except (images.BadImage, OSError) as exc:
            raise DataError(f"{path}: {exc}; {redownload_hint(src.name)}") from None

    splits = []
    for split in ("train", "val", "test"):
        try:
            ds = verified(str(raw_dir), split=split, loader=loader)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(
                f"torchvision could not read {folder} ({type(exc).__name__}: {exc}); "
                f"{redownload_hint(src.name)}"
            ) from exc
        pairs = [ds[i] for i in range(len(ds))]
        size = options.size
        x = np.stack([p[0] for p in pairs]) if pairs else np.zeros((0, size, size, 3), np.uint8)
        y = np.asarray([p[1] for p in pairs], dtype=np.int64)
        if len(y) and not 0 <= int(y.min()) <= int(y.max()) < len(base.classes):
            raise DataError(
                f"{folder}: labels outside 1..{len(base.classes)}; {redownload_hint(src.name)}"
            )
        splits.append((np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y))
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = splits
    return RawDataset(
        train_x, train_y, test_x, test_y, list(base.classes), val_images=val_x, val_labels=val_y
    )
