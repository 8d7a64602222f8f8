"""CIFAR-10: one tarball of pickled batches, extracted as torchvision leaves it
(``cifar-10-batches-py/``) and decoded by torchvision's CIFAR10 class once every batch
matched its md5: nothing is unpickled before.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnlab.data import archives
from cnnlab.data.fetch import Failed, RetryPolicy, fetch_file, first_good, join
from cnnlab.data.raw import DataError, RawDataset, Source, TarLimits, redownload_hint

if TYPE_CHECKING:
    from cnnlab.data.catalog import ResizedOptions

#: Byte size of the published tarball and of each file in it (see mnist.SIZES).
SIZES: dict[str, dict[str, int]] = {
    "cifar10": {
        "cifar-10-python.tar.gz": 170498071,
        "data_batch_1": 31035704,
        "data_batch_2": 31035320,
        "data_batch_3": 31035999,
        "data_batch_4": 31035696,
        "data_batch_5": 31035623,
        "test_batch": 31035526,
        "batches.meta": 158,
    },
}

#: What the tarball unpacks to, at most: its seven batches and a readme in one folder.
UNPACKED: dict[str, dict[str, TarLimits]] = {
    "cifar10": {
        "cifar-10-python.tar.gz": TarLimits(
            max_bytes=sum(v for k, v in SIZES["cifar10"].items() if not k.endswith(".gz"))
            + (64 << 10),
            max_members=16,
        )
    },
}


def table(name: str) -> Source:
    """Built from torchvision's class attributes, read at call time."""
    from torchvision import datasets as tvd

    cls = tvd.CIFAR10
    url: str = cls.url
    base = url[: -len(cls.filename)] if url.endswith(cls.filename) else url.rsplit("/", 1)[0]
    contents = {f: md5 for f, md5 in [*cls.train_list, *cls.test_list]}
    contents[cls.meta["filename"]] = cls.meta["md5"]
    return Source(
        name=name,
        mirrors=(base if base.endswith("/") else base + "/",),
        archives={cls.filename: cls.tgz_md5},
        contents=contents,
        folder=cls.base_folder,
        sizes=dict(SIZES[name]),
        unpacked=dict(UNPACKED[name]),
    )


def download_cap(src: Source, archive: str) -> int:
    """The most bytes a download of ``archive`` may have: its published size, or more for a
    repacked tarball, which is verified by the md5s of its members."""
    cap = src.sizes[archive]
    if archive in src.unpacked and src.contents:
        cap = max(cap, archives.compressed_bound(archives.tar_bound(src.unpacked[archive])))
    return cap


def build(src: Source, root: str | None, mirror: str | None, out: Path, retry: RetryPolicy) -> None:
    """The tarball, extracted into ``out/<folder>/`` and then removed; from a user's mirror
    (``root``) also torchvision's layout, the batches themselves (see mnist.build)."""
    (archive,) = src.archives
    tarballs = [m + archive for m in src.mirrors] if root is None else [join(root, archive)]
    tries = [(loc, partial(_tarball, src, loc, out, retry)) for loc in tarballs]
    if root is not None:
        laid_out = join(root, *src.folder.split("/"))
        tries.append((laid_out + "/", partial(_batches, src, laid_out, out / src.folder, retry)))

    def cleanup() -> None:
        (out / archive).unlink(missing_ok=True)
        shutil.rmtree(out / src.folder, ignore_errors=True)

    first_good(
        src.name,
        archive,
        tries,
        mirror,
        cleanup,
        (archive, f"{src.folder}/{next(iter(src.contents))}"),
    )


def _tarball(src: Source, location: str, out: Path, retry: RetryPolicy) -> None:
    """Fetch and extract (safely) the tarball, then check every batch's md5: one with other
    bytes than the published one is still accepted if every batch matches (a repacked copy)."""
    ((archive, archive_md5),) = src.archives.items()
    tarball = out / archive
    fetch_file(location, tarball, retry, download_cap(src, archive))
    actual = archives.md5(tarball)
    wrong = archives.mismatch(archive_md5, actual)
    try:
        archives.extract_tar(tarball, out, src.folder, src.unpacked[archive])
    except Failed as failure:
        if actual == archive_md5:
            raise
        raise Failed(f"{wrong}; {failure.reason}", "corrupt") from None
    tarball.unlink()
    try:
        _check_contents(src, out / src.folder)
    except Failed as failure:
        if actual == archive_md5:
            raise
        raise Failed(
            f"{wrong}; its contents do not match either: {failure.reason}", "corrupt"
        ) from None


def _batches(src: Source, location: str, folder: Path, retry: RetryPolicy) -> None:
    """torchvision's layout in a user's mirror: the extracted batches, each by its md5."""
    folder.mkdir()
    for member in src.contents:
        try:
            fetch_file(join(location, member), folder / member, retry, src.sizes[member])
        except Failed as failure:
            raise Failed(f"{member}: {failure.reason}", failure.category) from None
    _check_contents(src, folder)


def _check_contents(src: Source, folder: Path) -> None:
    for member, expected in src.contents.items():
        if not (folder / member).is_file():
            raise Failed(f"{member} is missing", "corrupt")
        try:
            archives.check_md5(folder / member, expected)
        except Failed as failure:
            raise Failed(f"{member}: {failure.reason}", "corrupt") from None


def load(src: Source, raw_dir: Path, options: ResizedOptions | None) -> RawDataset:
    """Both splits through torchvision's CIFAR10, once every batch matched its md5."""
    from torchvision import datasets as tvd

    folder = raw_dir / src.folder
    try:
        _check_contents(src, folder)  # before anything is unpickled
    except Failed as failure:
        raise DataError(f"{folder}: {failure.reason}; {redownload_hint(src.name)}") from None

    base = tvd.CIFAR10
    # torchvision re-checks the md5s it knows; give it ours, so an override applies to both.
    verified = type(
        "CIFAR10",
        (base,),
        {
            "train_list": [[f, src.contents[f]] for f, _ in base.train_list],
            "test_list": [[f, src.contents[f]] for f, _ in base.test_list],
            "meta": {**base.meta, "md5": src.contents[base.meta["filename"]]},
        },
    )
    splits = []
    for train in (True, False):
        try:
            ds = verified(str(raw_dir), train=train, download=False)
        except Exception as exc:
            raise DataError(
                f"torchvision could not decode {folder} ({type(exc).__name__}: "
                f"{exc}); {redownload_hint(src.name)}"
            ) from exc
        data = np.asarray(ds.data)
        if data.dtype != np.uint8 or data.shape[1:] != (32, 32, 3) or len(ds.targets) != len(data):
            raise DataError(
                f"{folder}: unexpected batch contents (images {data.shape} "
                f"{data.dtype}, {len(ds.targets)} labels); "
                f"{redownload_hint(src.name)}"
            )
        images = np.ascontiguousarray(data.transpose(0, 3, 1, 2))
        labels = np.asarray(ds.targets, dtype=np.int64)
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(ds.classes):
            raise DataError(
                f"{folder}: labels outside 0..{len(ds.classes) - 1}; {redownload_hint(src.name)}"
            )
        splits.append((images, labels, list(ds.classes)))
    (train_x, train_y, classes), (test_x, test_y, _) = splits
    return RawDataset(train_x, train_y, test_x, test_y, classes)
