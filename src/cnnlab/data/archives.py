"""Checking and unpacking fetched files: md5s, gunzip capped at the decompressed size, and
tar extraction capped at what the published archive unpacks to (``TarLimits``), with
tarfile's "data" filter where this Python has it (3.10.12+, 3.11.4+) and the same rules
checked here in any case. Torch-free: tests/test_downloads_hostile.py runs without torch.
"""

from __future__ import annotations

import bz2
import contextlib
import copy
import gzip
import lzma
import os
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from cnnlab.data.fetch import Failed
from cnnlab.data.raw import TarLimits


def md5(path: Path) -> str:
    """torchvision's ``calculate_md5``, imported on use (~2 s)."""
    from torchvision.datasets.utils import calculate_md5

    return calculate_md5(path)


def mismatch(expected: str, actual: str) -> str:
    return f"checksum mismatch: expected md5 {expected}, got {actual}"


def check_md5(path: Path, expected: str) -> None:
    actual = md5(path)
    if actual != expected:
        raise Failed(mismatch(expected, actual), "corrupt")


def compressed_bound(size: int) -> int:
    """The most bytes gzip (or bz2, xz) can take to store ``size`` bytes, with room for a
    header: deflate's stored blocks add 5 bytes per 64 KiB, so 0.1% is plenty."""
    return size + size // 1000 + (16 << 10)


def tar_bound(limits: TarLimits) -> int:
    """The most bytes a tar stream of these members can have: a header block or two (pax)
    and padding per member, the end-of-archive blocks and a last record's padding."""
    return limits.max_bytes + 2048 * limits.max_members + (20 << 10)


def gunzip(packed: Path, out: Path, cap: int) -> None:
    """Decompress ``packed`` into ``out``, stopping past ``cap`` bytes: torchvision's
    extract_archive has no limit, so a small gzip bomb would fill the disk first."""
    written = 0
    with gzip.open(packed, "rb") as source, open(out, "wb") as target:
        while chunk := source.read(1 << 20):
            written += len(chunk)
            if written > cap:
                raise Failed(
                    f"decompresses to more than the {cap} bytes {out.name} has: this is not "
                    "the published file (decompression stopped there)",
                    "corrupt",
                )
            target.write(chunk)


#: Told apart by their first bytes, not by the file name as torchvision's extract_archive does.
_DECOMPRESSORS: dict[bytes, Any] = {
    b"\x1f\x8b": gzip.GzipFile,
    b"BZh": bz2.BZ2File,
    b"\xfd7zXZ\x00": lzma.LZMAFile,
}


class _Capped:
    """A read-only stream that fails once more than ``cap`` bytes were read from it: bounds
    what tarfile reads (headers included), whatever the members claim."""

    def __init__(self, stream: Any, cap: int) -> None:
        self._stream, self._cap, self._read = stream, cap, 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._read += len(data)
        if self._read > self._cap:
            raise Failed(
                f"refusing to extract: more than {self._cap} bytes of tar data (headers "
                "included), more than the published archive has",
                "corrupt",
            )
        return data


def _checked_members(
    tar: tarfile.TarFile, folder: str, limits: TarLimits, filtered: bool
) -> Iterator[tarfile.TarInfo]:
    """Each member once it passed the checks (extraction stops at the first bad one before
    anything of it is written), made :func:`_plain` unless tarfile will ``filter`` it."""
    total = 0
    for count, member in enumerate(tar, start=1):
        if count > limits.max_members:
            raise Failed(
                f"refusing to extract: more than {limits.max_members} members (the published "
                "archive has fewer)",
                "corrupt",
            )
        parts = PurePosixPath(member.name).parts
        if member.name.startswith("/") or ".." in parts or not parts or parts[0] != folder:
            raise Failed(
                f"refusing to extract: member '{member.name}' lies outside '{folder}/'",
                "corrupt",
            )
        if not (member.isfile() or member.isdir()):
            raise Failed(
                f"refusing to extract: member '{member.name}' is a link or a special file",
                "corrupt",
            )
        total += member.size
        if total > limits.max_bytes:
            raise Failed(
                f"refusing to extract: its members hold more than {limits.max_bytes} bytes "
                f"(at '{member.name}'; the published archive holds fewer)",
                "corrupt",
            )
        yield member if filtered else _plain(member)


def _plain(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """What the "data" filter makes of a plain file or folder: no setuid, setgid or sticky
    bit, no write for others, read-write for its owner, owned by whoever extracts it (as
    root, tarfile would otherwise chown to the archive's ids)."""
    member = copy.copy(member)
    owner = 0o700 if member.isdir() else 0o600
    member.mode = (member.mode & 0o755) | owner
    member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
    return member


# Not torchvision's extract_archive: it has no size or member limits and no member checks.
def extract_tar(tarball: Path, into: Path, folder: str, limits: TarLimits) -> None:
    """Extract the plain files and folders of ``tarball`` under ``into/folder/``, or refuse
    the archive: nothing may be written outside ``into``, nor more than ``limits``."""
    filtered = hasattr(tarfile, "data_filter")
    extra = {"filter": "data"} if filtered else {}
    try:
        with open(tarball, "rb") as raw, contextlib.ExitStack() as stack:
            magic = raw.read(6)
            raw.seek(0)
            opener = next((o for m, o in _DECOMPRESSORS.items() if magic.startswith(m)), None)
            stream = stack.enter_context(opener(fileobj=raw)) if opener else raw
            # Stream mode ("r|"): one forward pass, so every byte tarfile reads is counted.
            capped = _Capped(stream, tar_bound(limits))
            tar = stack.enter_context(tarfile.open(fileobj=capped, mode="r|"))
            tar.extractall(into, members=_checked_members(tar, folder, limits, filtered), **extra)
    except tarfile.TarError as exc:  # includes the filter's refusals
        raise Failed(f"cannot extract the archive safely ({exc})", "corrupt") from exc
    except (EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise Failed(f"damaged archive ({exc})", "corrupt") from exc
