"""Atomic file writing: a killed stage leaves the previous complete file or none, never half.

A write goes to a scratch file or folder beside its destination, ``flock``-ed by its writer.
A writer killed outright leaves its scratch but the kernel drops its lock, so the next write
of the same destination removes every unlocked scratch of it (:func:`remove_stale_scratch`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cnnlab.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


def try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive lock on ``path`` (a file or a directory), or
    None if another process holds one; the lock follows the file through renames."""
    fd = os.open(path, os.O_RDONLY)
    if fcntl is None:  # pragma: no cover - not POSIX: no lock, and no cleanup either
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _scratch_name(dest: Path, suffix: str) -> Path:
    return dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def _is_scratch_of(name: str, dest: Path) -> bool:
    """The names :func:`_scratch_name` and :func:`replace_directory` give (and earlier
    downloads' ``mkdtemp`` names), nothing else a user might keep there."""
    rest = r"(\d+\.[0-9a-f]{8}\.(tmp|partial)|[0-9a-f]{8}\.old|[A-Za-z0-9_]+\.partial)"
    return re.fullmatch(rf"\.{re.escape(dest.name)}\.{rest}", name) is not None


def remove_stale_scratch(dest: Path) -> None:
    """Remove the scratch files and folders beside ``dest`` that no live writer holds locked."""
    if fcntl is None or not dest.parent.is_dir():  # pragma: no cover - not POSIX
        return
    for stale in dest.parent.iterdir():
        if stale.is_symlink() or not _is_scratch_of(stale.name, dest):
            continue
        try:
            fd = try_lock(stale)
        except FileNotFoundError:  # its writer finished meanwhile
            continue
        if fd is None:
            continue
        try:
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (one file system: ``os.replace`` is atomic),
    renamed over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(path)
    tmp = _scratch_name(path, ".tmp")
    # 0o666 lets the umask decide the permissions, as a plain open() would (mkstemp gives 0o600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        if fcntl is not None:  # held while the file is written: not stale
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield tmp
        os.replace(tmp, path)
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty directory beside ``path`` (same filesystem, so the final rename is
    atomic), locked while in use, that replaces ``path`` only if the block succeeds: readers
    see the old directory or the new one, never a mix. Removed whatever happens, Ctrl-C too."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(dest)
    scratch = _scratch_name(dest, ".tmp")
    scratch.mkdir()
    fd = try_lock(scratch)
    try:
        yield scratch
        replace_directory(scratch, dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if fd is not None:
            os.close(fd)


def replace_directory(built: Path, dest: Path) -> None:
    """Swap ``built`` in for ``dest``; an old ``dest`` stays until the new one is in place."""
    old: Path | None = None
    fd: int | None = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.old")
        if dest.is_dir() and not dest.is_symlink():
            fd = try_lock(dest)  # a kill before the rmtree below leaves it unlocked: stale
        dest.rename(old)
    try:
        try:
            built.rename(dest)
        except BaseException:
            if old is not None:
                old.rename(dest)
            raise
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    finally:
        if fd is not None:
            os.close(fd)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON with a stable layout (sorted keys off: callers order keys for readers)."""
    write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_torch(path: str | Path, obj: Any) -> None:
    """torch.save into the open temporary file: given a path, torch would name the archive's
    records after the file, and the random scratch name would make every checkpoint differ."""
    import torch

    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        torch.save(obj, handle)


def load_torch(path: str | Path) -> Any:
    """Load a checkpoint without unpickling arbitrary objects (``weights_only=True``)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


#: Left in every folder a command writes with --out, so that it replaces only its own folders.
OUTPUT_MARK = ".written-by-cnnlab"


def check_output_folder(path: Path) -> None:
    """``--out`` replaces its folder as a whole: refuse a non-empty one this tool did not write."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise UserError(f"--out {path}: exists and is not a folder; give a new or empty folder")
    if any(path.iterdir()) and not (path / OUTPUT_MARK).is_file():
        raise UserError(
            f"--out {path}: holds files this command did not write, and it replaces "
            "the folder as a whole; give a new or empty folder (or remove this one yourself)"
        )


def mark_output_folder(path: Path) -> None:
    (path / OUTPUT_MARK).write_text("written by a cnnlab command; --out may replace it\n")


def shortened(names: Sequence[str], sep: str = ", ", shown: int = 8) -> str:
    """A list for one line of output: the first ``shown`` names and how many more."""
    text = sep.join(names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")
