"""Atomic file writing: a killed stage leaves the previous complete file or none, never half."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    The temporary file is in the same directory so the final ``os.replace`` is a rename on one
    file system, which POSIX makes atomic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # 0o666 lets the umask decide the permissions, as a plain open() would (mkstemp gives 0o600)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces ``path`` only if the block succeeds.

    For outputs made of several files that are only meaningful together (tensors + metadata):
    readers see the old directory or the new one, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        replace_directory(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_directory(built: Path, dest: Path) -> None:
    """Swap ``built`` in for ``dest``; an old ``dest`` stays until the new one is in place."""
    old: Path | None = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.old")
        dest.rename(old)
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


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON with a stable layout (sorted keys off: callers order keys for readers)."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_torch(path: str | Path, obj: Any) -> None:
    """torch.save through a buffer: given a path, torch names the archive's records after the
    file, and the temporary file's random name would make every checkpoint's bytes differ."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getbuffer())


def load_torch(path: str | Path) -> Any:
    """Load a checkpoint without unpickling arbitrary objects (``weights_only=True``)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)
