"""CIFAR-10: one tarball of pickled batches, extracted as torchvision leaves it
(``cifar-10-batches-py/``) and decoded by torchvision's CIFAR10 class.

Each batch is checked against its md5 before anything unpickles it, so a tarball other than
the published one (a repacked copy) is accepted when every batch in it matches.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.data import archives
from cnnlab.data.fetch import Failed, RetryPolicy, fetch_file, join, layout_hint, unavailable
from cnnlab.data.raw import DataError, RawDataset, Source, TarLimits, redownload_hint

if TYPE_CHECKING:
    from cnnlab.data.options import ResizedOptions

__all__ = [
    "CONTENTS_REQUIRED",
    "SIZES",
    "UNPACKED",
    "build",
    "content_names",
    "download_cap",
    "load",
    "table",
]

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

#: Every batch is fetched and checked by this table: a partial one would skip files.
CONTENTS_REQUIRED = True


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


def content_names(src: Source) -> set[str]:
    """The batches and the meta file: every one has an md5 (``CONTENTS_REQUIRED``)."""
    return set(src.contents)


def download_cap(src: Source, archive: str) -> int:
    """The most bytes a download of ``archive`` may have: its published size, or more for a
    repacked tarball, which is verified by the md5s of its members."""
    cap = src.sizes[archive]
    if archive in src.unpacked and src.contents:
        cap = max(cap, archives.compressed_bound(archives.tar_bound(src.unpacked[archive])))
    return cap


def _layout(src: Source) -> str:
    return layout_hint(
        src.name, next(iter(src.archives)), f"{src.folder}/{next(iter(src.contents))}"
    )


def build(src: Source, root: str | None, mirror: str | None, out: Path, retry: RetryPolicy) -> None:
    """The tarball, extracted into ``out/<folder>/`` and then removed; from a user's mirror
    (``root``) also torchvision's layout, the batches themselves (see mnist.build)."""
    ((archive, archive_md5),) = src.archives.items()
    tried: list[tuple[str, Failed]] = []
    tarballs = [m + archive for m in src.mirrors] if root is None else [join(root, archive)]
    for location in tarballs:
        target = out / archive
        try:
            fetch_file(location, target, retry, download_cap(src, archive))
            _unpack(src, target, archive, archive_md5, out)
            return
        except Failed as failure:
            tried.append((location, failure))
            target.unlink(missing_ok=True)
            shutil.rmtree(out / src.folder, ignore_errors=True)
    if root is not None and tried[-1][1].category != "network":
        # torchvision's layout: the extracted batches themselves.
        folder = out / src.folder
        folder.mkdir()
        location = join(root, *src.folder.split("/"))
        try:
            for member in src.contents:
                try:
                    fetch_file(join(location, member), folder / member, retry, src.sizes[member])
                except Failed as failure:
                    raise Failed(f"{member}: {failure.reason}", failure.category) from None
            _check_contents(src, folder)
            return
        except Failed as failure:
            tried.append((location + "/", failure))
            shutil.rmtree(folder, ignore_errors=True)
    raise unavailable(src.name, archive, tried, mirror, _layout(src))


def _unpack(src: Source, tarball: Path, archive: str, archive_md5: str, out: Path) -> None:
    """Extract (safely) and check every batch's md5. A tarball with other bytes than the
    published one is still accepted if every extracted file matches (a repacked copy)."""
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


def _check_contents(src: Source, folder: Path) -> None:
    for member, expected in src.contents.items():
        path = folder / member
        if not path.is_file():
            raise Failed(f"{member} is missing", "corrupt")
        actual = archives.md5(path)
        if actual != expected:
            raise Failed(f"{member}: {archives.mismatch(expected, actual)}", "corrupt")


def load(src: Source, raw_dir: Path, options: ResizedOptions | None) -> RawDataset:
    """Both splits through torchvision's CIFAR10, once every batch matched its md5."""
    import torch
    from torchvision import datasets as tvd

    folder = raw_dir / src.folder
    try:
        _check_contents(src, folder)  # before anything is unpickled
    except Failed as failure:
        raise DataError(f"{folder}: {failure.reason}; {redownload_hint(src.name)}") from None

    base = tvd.CIFAR10
    meta = dict(base.meta)
    meta["md5"] = src.contents[meta["filename"]]
    # torchvision re-checks the md5s it knows; give it ours, so an override applies to both.
    verified = type(
        "CIFAR10",
        (base,),
        {
            "train_list": [[f, src.contents[f]] for f, _ in base.train_list],
            "test_list": [[f, src.contents[f]] for f, _ in base.test_list],
            "meta": meta,
        },
    )
    splits = []
    for train in (True, False):
        ds = _decode(verified, raw_dir, train, folder, src)
        data = np.asarray(ds.data)
        if data.dtype != np.uint8 or data.shape[1:] != (32, 32, 3) or len(ds.targets) != len(data):
            raise DataError(
                f"{folder}: unexpected batch contents (images {data.shape} "
                f"{data.dtype}, {len(ds.targets)} labels); "
                f"{redownload_hint(src.name)}"
            )
        images = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
        labels = torch.as_tensor(ds.targets, dtype=torch.int64)
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(ds.classes):
            raise DataError(
                f"{folder}: labels outside 0..{len(ds.classes) - 1}; {redownload_hint(src.name)}"
            )
        splits.append((images, labels, list(ds.classes)))
    (train_x, train_y, classes), (test_x, test_y, _) = splits
    return RawDataset(train_x, train_y, test_x, test_y, classes)


def _decode(cls: Any, raw_dir: Path, train: bool, folder: Path, src: Source) -> Any:
    """One split through torchvision's own dataset class, its failures as a DataError."""
    try:
        return cls(str(raw_dir), train=train, download=False)
    except Exception as exc:
        raise DataError(
            f"torchvision could not decode {folder} ({type(exc).__name__}: "
            f"{exc}); {redownload_hint(src.name)}"
        ) from exc
