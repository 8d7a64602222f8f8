"""Folders of the user's own images as datasets: ``datasets/<name>/<class>/<image>``, as in
torchvision's ImageFolder, optionally split by the user into ``train/``, ``test/`` (and
``val/``) folders that each hold the class folders; else prepare draws the test split.

:func:`scan` (download) lists every file with its class, split and md5 in a manifest that
pins the bytes later stages use; :func:`load` (prepare) decodes the listed files, checked
against their md5s, without ever holding them all. Hidden files are ignored; links, devices,
FIFOs and sockets are never followed nor opened (a link can point anywhere, a FIFO blocks):
they are skipped by name, like files that are not images.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np

from cnnlab.data import images
from cnnlab.data.catalog import FolderOptions
from cnnlab.data.progress import ProgressMode, track
from cnnlab.data.raw import DataError, RawDataset
from cnnlab.files import atomic_directory, write_json

MANIFEST_FILE = "manifest.json"
#: Sub-folders that split a folder dataset; train and test are required together.
SPLIT_FOLDERS = ("train", "val", "test")
#: At most this many bad files are named in an error message (all are counted).
NAMED_IN_ERRORS = 20


def _not_read(entry: os.DirEntry) -> str | None:
    """Why ``entry`` is not read, or None for a regular file or a real folder. Never follows
    a link: ``DirEntry`` answers from ``lstat``."""
    if entry.is_symlink():
        return (
            "a symbolic link, which is not followed (it could point anywhere): copy the "
            "file or folder itself here instead"
        )
    if entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False):
        return None
    mode = entry.stat(follow_symlinks=False).st_mode
    if stat.S_ISFIFO(mode):
        what = "a FIFO (named pipe)"
    elif stat.S_ISSOCK(mode):
        what = "a socket"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        what = "a device file"
    else:
        what = "not a regular file"
    return f"{what}, which is not read: only regular files are"


@dataclass
class _Listing:
    """One folder's visible entries, sorted by name, by what becomes of them."""

    dirs: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    hidden_dirs: list[str] = field(default_factory=list)
    #: Links and special files: (name, reason).
    not_read: list[tuple[str, str]] = field(default_factory=list)


def _children(folder: Path) -> _Listing:
    """The sub-folders, files, hidden sub-folders and unreadable entries of ``folder``."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise DataError(
            f"cannot list {folder}/ ({exc.strerror or exc}): fix its permissions or remove it"
        ) from None
    listing = _Listing()
    for entry in entries:
        reason = _not_read(entry)
        if entry.name.startswith("."):
            if reason is None and entry.is_dir(follow_symlinks=False):
                listing.hidden_dirs.append(entry.name)
        elif reason is not None:
            listing.not_read.append((entry.name, reason))
        elif entry.is_dir(follow_symlinks=False):
            listing.dirs.append(entry.name)
        else:
            listing.files.append(entry.name)
    return listing


def _files_below(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every visible regular file below ``folder`` in os.walk's top-down order (as manifests
    always listed them), and the links and special files met; a stack, not recursion."""
    found: list[Path] = []
    not_read: list[tuple[Path, str]] = []
    stack = [folder]
    while stack:
        current = stack.pop()
        listing = _children(current)
        found += [current / name for name in listing.files]
        not_read += [(current / name, reason) for name, reason in listing.not_read]
        stack += [current / name for name in reversed(listing.dirs)]
    return found, not_read


def _open_regular(path: Path) -> int:
    """A descriptor for ``path`` if it is still a regular file: ``O_NOFOLLOW`` refuses a link
    put in its place since it was listed, ``O_NONBLOCK`` keeps a FIFO from blocking."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # what O_NOFOLLOW answers for a link
            raise OSError("it is now a symbolic link, which is not followed") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError("it is no longer a regular file")
    return fd


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with os.fdopen(_open_regular(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _layout(folder: Path, dirs: list[str]) -> list[str | None]:
    """The splits the user made (``[None]``: none, prepare draws the test split)."""
    named = [d for d in dirs if d in SPLIT_FOLDERS]
    if not named:
        return [None]
    others = sorted(set(dirs) - set(SPLIT_FOLDERS))
    if "train" not in named or "test" not in named or others:
        raise DataError(
            f"{folder} mixes split folders and class folders (found "
            f"{', '.join(d + '/' for d in dirs)}). Either every class folder goes under "
            "train/ and test/ (and optionally val/), each holding the same class folders, or "
            f"none does and the test split is drawn by seed (dataset.<name>.test_fraction)."
        )
    return [s for s in SPLIT_FOLDERS if s in named]


def scan(name: str, folder: Path, dest: Path, *, progress: ProgressMode = None) -> dict[str, Any]:
    """Write ``dest/manifest.json``: every file of the folder dataset, with class, split and
    md5. Layout mistakes stop here, before any file is read; whether a file is a readable
    image is prepare's business."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"{folder} does not exist or is not a folder. Put the images of dataset '{name}' "
            f"in {folder}/<class>/<image> (one sub-folder per class), or remove '{name}' "
            "from `datasets` in params.yaml."
        )
    ignored: list[str] = []  # files and hidden folders where class folders belong
    skipped: list[dict[str, str]] = []

    def level(root: Path, prefix: str) -> _Listing:
        listing = _children(root)
        ignored.extend(prefix + f for f in listing.files)
        ignored.extend(f"{prefix}{d}/" for d in listing.hidden_dirs)
        skipped.extend({"path": prefix + n, "reason": r} for n, r in listing.not_read)
        return listing

    top = level(folder, "")
    listed: list[tuple[Path, str | None, str]] = []
    classes_of: dict[str | None, list[str]] = {}
    for split in _layout(folder, top.dirs):
        root = folder if split is None else folder / split
        class_dirs = top.dirs if split is None else level(root, f"{split}/").dirs
        if not class_dirs:
            raise DataError(
                f"{root}/ has no class folders: expected {root}/<class>/<image>, "
                "one sub-folder per class, named after it"
            )
        classes_of[split] = class_dirs
        for cls in class_dirs:
            found, not_read = _files_below(root / cls)
            skipped += [
                {"path": path.relative_to(folder).as_posix(), "reason": reason}
                for path, reason in not_read
            ]
            if not found:
                links = (
                    f" ({len(not_read)} link(s) or special file(s), not read)" if not_read else ""
                )
                raise DataError(
                    f"class folder {root / cls}/ holds no regular files{links}: add images "
                    f"of '{cls}' or remove the folder"
                )
            listed += [(path, split, cls) for path in found]
    classes = classes_of.get("train", classes_of.get(None, []))
    for split, names in classes_of.items():
        extra = sorted(set(names) - set(classes))
        if extra:
            raise DataError(
                f"{folder}/{split}/ has class folders that train/ lacks: {', '.join(extra)}. "
                "A model cannot learn a class it never sees: add its training images under "
                "train/ or remove it."
            )
    if len(classes) < 2:
        raise DataError(
            f"{folder} has {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); a "
            "classifier needs at least two: one sub-folder per class"
        )
    files: list[dict[str, Any]] = []
    with track(progress, len(listed), f"{name}: md5 of the files", "files") as bar:
        for path, split, cls in listed:
            try:
                md5 = _md5(path)
            except OSError as exc:
                raise DataError(
                    f"cannot read {path} ({exc.strerror or exc}): fix its permissions, or "
                    "if the folder was changing, run the download stage again"
                ) from None
            files.append(
                {
                    "path": path.relative_to(folder).as_posix(),
                    "split": split,
                    "class": cls,
                    "md5": md5,
                }
            )
            bar.update()
    manifest = {
        "dataset": name,
        "folder": folder.as_posix(),
        "classes": classes,
        "splits": [s for s in classes_of if s is not None] or None,
        "files": files,
        "ignored": ignored,
        "skipped": skipped,
    }
    with atomic_directory(dest) as tmp:
        write_json(tmp / MANIFEST_FILE, manifest)
    return manifest


@dataclass
class FolderDataset:
    """A decoded folder dataset, and the files left out of it: ``{"path", "reason"}``."""

    raw: RawDataset
    skipped: list[dict[str, str]]


def _read_manifest(name: str, raw_dir: Path) -> dict[str, Any]:
    path = Path(raw_dir) / MANIFEST_FILE
    hint = f"run `dvc repro download@{name}` (it lists the folder again)"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} is missing: {hint}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read it ({exc}); {hint}") from None
    if not isinstance(manifest, dict) or not {"classes", "files"} <= set(manifest):
        raise DataError(f"{path}: not a folder manifest; {hint}")
    return manifest


def listed_files(name: str, raw_dir: Path) -> int:
    """How many files download@<name> listed."""
    return len(_read_manifest(name, raw_dir)["files"])


def _test_draw(labels: np.ndarray, n_classes: int, fraction: float, seed: int) -> np.ndarray:
    """A test mask holding ``fraction`` of every class (at least one image of any class
    that has two), drawn by ``seed``: small folders keep every class in both splits."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for cls in range(n_classes):
        members = np.flatnonzero(labels == cls)
        if len(members) < 2:
            continue
        n_test = min(len(members) - 1, max(1, round(len(members) * fraction)))
        test[rng.permutation(members)[:n_test]] = True
    return test


def _decode_entry(
    name: str, folder: Path, options: FolderOptions, entry: dict[str, Any]
) -> np.ndarray:
    """One listed file, read (checked against its md5) and decoded to [3, H, W]; raises
    BadImage."""
    path = folder / entry["path"]
    try:
        with os.fdopen(_open_regular(path), "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DataError(
            f"{path}: cannot read it ({exc.strerror or exc}); the folder changed since "
            f"download@{name} listed it: run `dvc repro` (or `dvc repro download@{name}`)"
        ) from None
    if hashlib.md5(data).hexdigest() != entry["md5"]:
        raise DataError(
            f"{path} changed since download@{name} listed it: run `dvc repro` so the "
            "download stage records the folder's current content first"
        )
    return images.decode(data, options.size, options.resize).transpose(2, 0, 1)


class FolderImages:
    """Some images of a folder, fetched one by one by ``image(item)`` only when indexed
    (``images[index]``, as prepare's split takes them): a folder is never held whole.
    With ``bad`` (a subsample, nothing decoded yet), :meth:`usable` checks a drawn file."""

    def __init__(
        self,
        items: list[Any],
        size: int,
        image: Callable[[Any], np.ndarray],
        bad: Callable[[Any, str], None] | None = None,
    ) -> None:
        self.items, self.size, self.image, self.bad = items, size, image, bad

    def usable(self, row: int) -> bool:
        """Whether item ``row`` decodes; a file that does not goes to ``bad``, once."""
        if self.bad is None:
            return True
        try:
            self.image(self.items[row])
        except images.BadImage as exc:
            self.bad(self.items[row], str(exc))
            return False
        return True

    def __len__(self) -> int:
        return len(self.items)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.items), 3, self.size, self.size)

    def subset(self, mask: np.ndarray) -> FolderImages:
        kept = [item for item, keep in zip(self.items, mask.tolist(), strict=True) if keep]
        return FolderImages(kept, self.size, self.image, self.bad)

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), 3, self.size, self.size), dtype=np.uint8)
        for k, row in enumerate(np.asarray(index).tolist()):
            out[k] = self.image(self.items[row])
        return out


def _bad_files(name: str, folder: Path, skipped: list[dict[str, str]]) -> DataError:
    """The error of ``on_bad_file: error``, naming the first bad files."""
    shown = "\n".join(f"  {folder / s['path']}: {s['reason']}" for s in skipped[:NAMED_IN_ERRORS])
    more = len(skipped) - NAMED_IN_ERRORS
    return DataError(
        f"{len(skipped)} file(s) in {folder} cannot be used as images:\n{shown}"
        f"{f'{chr(10)}  ... and {more} more' if more > 0 else ''}\nFix or remove them, or set "
        f"dataset.{name}.on_bad_file: skip to leave them out (they are then listed in the "
        "prepared data's meta.json)."
    )


def _scratch_row(scratch: IO[bytes], size: int, row: int) -> np.ndarray:
    """Row ``row`` of a scratch file of decoded images, uint8 [3, size, size] each."""
    data = os.pread(scratch.fileno(), 3 * size * size, row * 3 * size * size)
    return np.frombuffer(data, dtype=np.uint8).reshape(3, size, size)


def load(
    name: str,
    raw_dir: Path,
    folder: Path,
    options: FolderOptions,
    *,
    seed: int,
    lazy: bool = False,
    scratch_dir: Path | None = None,
    progress: ProgressMode = None,
) -> FolderDataset:
    """Decode and resize every file ``raw_dir``'s manifest lists (read from ``folder``).

    The splits are :class:`~cnnlab.data.prepare.Rows`, which ``save_prepared`` reads a chunk
    at a time: each image decoded once to a scratch file in ``scratch_dir`` (unnamed: the
    system removes it when the last reader is gone). With ``lazy`` (a subsample) nothing is
    decoded here: ``split_dataset`` draws from every listed file and checks each drawn one
    (:meth:`FolderImages.usable`), a bad one replaced by the next of the draw, and the chosen
    ones are decoded again while written.
    """
    manifest = _read_manifest(name, raw_dir)
    folder = Path(folder)
    classes: list[str] = list(manifest["classes"])
    index = {c: i for i, c in enumerate(classes)}
    kept: dict[str | None, list[Any]] = defaultdict(list)  # entries (lazy), else scratch rows
    labels: dict[str | None, list[int]] = defaultdict(list)
    skipped: list[dict[str, str]] = list(manifest.get("skipped", []))
    decode = partial(_decode_entry, name, folder, options)
    if lazy:
        if skipped and options.on_bad_file == "error":  # links and special files
            raise _bad_files(name, folder, skipped)
        for entry in manifest["files"]:
            kept[entry["split"]].append(entry)
            labels[entry["split"]].append(index[entry["class"]])

        def bad(entry: dict[str, Any], reason: str) -> None:
            skipped.append({"path": entry["path"], "reason": reason})
            if options.on_bad_file == "error":
                raise _bad_files(name, folder, skipped)

        fetch, on_bad = decode, bad
    else:
        scratch = tempfile.TemporaryFile(dir=scratch_dir, prefix=f".{name}-")  # noqa: SIM115
        written = 0
        with track(progress, len(manifest["files"]), f"{name}: decode", "files") as bar:
            for entry in manifest["files"]:
                bar.update()
                try:
                    image = decode(entry)
                except images.BadImage as exc:
                    skipped.append({"path": entry["path"], "reason": str(exc)})
                    continue
                kept[entry["split"]].append(written)
                labels[entry["split"]].append(index[entry["class"]])
                scratch.write(np.ascontiguousarray(image).data)
                written += 1
        scratch.flush()
        if skipped and options.on_bad_file == "error":
            raise _bad_files(name, folder, skipped)
        fetch, on_bad = partial(_scratch_row, scratch, options.size), None

    def stack(split: str | None) -> tuple[FolderImages, np.ndarray]:
        y = np.asarray(labels[split], dtype=np.int64)
        return FolderImages(kept[split], options.size, fetch, on_bad), y

    splits = manifest.get("splits")
    if splits:
        train_x, train_y = stack("train")
        test_x, test_y = stack("test")
        val = stack("val") if "val" in splits else None
    else:
        all_x, all_y = stack(None)
        test = _test_draw(all_y, len(classes), options.test_fraction, seed)
        test_x, train_x = all_x.subset(test), all_x.subset(~test)
        test_y, train_y = all_y[test], all_y[~test]
        val = None
    counts = np.bincount(train_y, minlength=len(classes)).tolist()
    empty = [c for c, n in zip(classes, counts, strict=True) if n == 0]
    if empty:
        raise DataError(
            f"class(es) {', '.join(empty)} of {folder} have no readable training images"
            f"{' (all were skipped as bad files)' if skipped else ''}: add images or remove "
            "the class folder"
        )
    if len(test_y) == 0:
        raise DataError(
            f"{folder}: no test images (every class has a single image, or test/ holds no "
            "readable image): add images"
        )
    raw = RawDataset(
        train_images=train_x,
        train_labels=train_y,
        test_images=test_x,
        test_labels=test_y,
        classes=classes,
        val_images=val[0] if val else None,
        val_labels=val[1] if val else None,
    )
    return FolderDataset(raw, skipped)
