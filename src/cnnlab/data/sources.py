"""Where the raw datasets come from, how their files are checked, and how they are decoded.

The published files are trusted only through their checksums: torchvision's tables for the
archives as published, plus (for MNIST and Fashion-MNIST) the md5s of the decompressed files,
because offline mirrors often hold a recompressed copy whose ``.gz`` bytes differ while the
data is identical. Nothing is unpickled (CIFAR batches are pickles) before its md5 matched.

``download`` builds the dataset in a temporary sibling of its destination and renames it into
place only after everything verified, so an interrupted or failed download never leaves a
half-written directory for DVC (or the next stage) to mistake for data.

torchvision costs about two seconds to import, so it is imported inside the functions that
need it; params validation and ``digits`` never pay for it.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import logging
import os
import shutil
import socket
import ssl
import struct
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from cnnlab.data.catalog import DATASETS
from cnnlab.data.options import ResizedOptions
from cnnlab.errors import UserError
from cnnlab.files import replace_directory

if TYPE_CHECKING:
    import torch

__all__ = [
    "DECOMPRESSED_MD5",
    "OVERRIDE_ENV",
    "RETRY",
    "DataError",
    "RawDataset",
    "RetryPolicy",
    "Source",
    "download",
    "load_raw",
    "source",
]

log = logging.getLogger(__name__)


class DataError(UserError, RuntimeError):
    """A dataset could not be fetched, verified or decoded; the message says what to do."""


# --------------------------------------------------------------------------------------------
# Checksums and where the files are published
# --------------------------------------------------------------------------------------------

#: md5 of the *decompressed* IDX files. torchvision only lists the md5 of the published .gz
#: files; these let a recompressed copy (same data, different gzip bytes) be verified too.
DECOMPRESSED_MD5: dict[str, dict[str, str]] = {
    # From the README of the team's offline copy of the originals (shared/datasets); the same
    # values appear in many public MNIST loaders.
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

#: Environment variable naming a JSON file that replaces mirrors and checksums per dataset:
#: ``{"mnist": {"mirrors": [...], "archives": {file: md5}, "contents": {file: md5}}}``.
#: It exists so that tests (including end-to-end runs of the real ``dvc`` CLI, where nothing
#: can be monkeypatched) can serve small files of the real formats, and so that a site with
#: its own repackaged copies can vouch for them. File names cannot change, only md5s and URLs.
OVERRIDE_ENV = "CNNLAB_SOURCES"

Kind = Literal["idx", "cifar", "flowers"]


@dataclass(frozen=True)
class Source:
    """A downloadable dataset: where it is published and the md5 of every file that matters.

    ``archives`` are the files as published (what a mirror serves); ``contents`` are the files
    torchvision decodes from, inside ``folder`` (relative to the download directory), which is
    where torchvision itself leaves them so its dataset classes can read them unchanged.
    """

    name: str
    kind: Kind
    mirrors: tuple[str, ...]
    archives: Mapping[str, str]
    contents: Mapping[str, str]
    folder: str


def _torchvision_source(name: str) -> Source:
    """Build the table from torchvision's class attributes, read at call time (patchable)."""
    from torchvision import datasets as tvd

    if name in ("mnist", "fashion_mnist"):
        cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
        return Source(
            name=name,
            kind="idx",
            mirrors=tuple(cls.mirrors),
            archives=dict(cls.resources),
            contents=dict(DECOMPRESSED_MD5.get(name, {})),
            folder=f"{cls.__name__}/raw",
        )
    if name == "cifar10":
        cls = tvd.CIFAR10
        url: str = cls.url
        base = url[: -len(cls.filename)] if url.endswith(cls.filename) else url.rsplit("/", 1)[0]
        contents = {f: md5 for f, md5 in [*cls.train_list, *cls.test_list]}
        contents[cls.meta["filename"]] = cls.meta["md5"]
        return Source(
            name=name,
            kind="cifar",
            mirrors=(base if base.endswith("/") else base + "/",),
            archives={cls.filename: cls.tgz_md5},
            contents=contents,
            folder=cls.base_folder,
        )
    if name == "flowers102":
        cls = tvd.Flowers102
        # The .tgz and both .mat files are verified as published. The 8,189 JPEGs inside
        # the archive have no md5s of their own: a repacked archive cannot be verified.
        return Source(
            name=name,
            kind="flowers",
            mirrors=(cls._download_url_prefix,),
            archives=dict(cls._file_dict.values()),
            contents={},
            folder="flowers-102",
        )
    raise DataError(f"dataset '{name}' is not downloaded from the network")


def source(name: str) -> Source:
    """The mirrors and checksums used for ``name``: torchvision's, unless ``OVERRIDE_ENV`` says
    otherwise. Every checksum lookup goes through here, so there is one thing to replace."""
    base = _torchvision_source(name)
    path = os.environ.get(OVERRIDE_ENV)
    if not path:
        return base
    table = _read_override(path)
    entry = table.get(name)
    return base if entry is None else _apply_override(base, entry, path)


def _read_override(path: str) -> dict[str, dict]:
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{OVERRIDE_ENV}={path}: cannot read it as JSON ({exc}). Fix the file or unset "
            f"{OVERRIDE_ENV} to use the published checksums."
        ) from exc
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise DataError(f"{OVERRIDE_ENV}={path}: expected {{dataset: {{...}}}} at the top level")
    return table


def _apply_override(base: Source, entry: dict, path: str) -> Source:
    where = f"{OVERRIDE_ENV}={path}, dataset '{base.name}'"
    unknown = set(entry) - {"mirrors", "archives", "contents"}
    if unknown:
        raise DataError(
            f"{where}: unknown keys {sorted(unknown)}; allowed: mirrors, archives, contents"
        )
    changes: dict = {}
    if "mirrors" in entry:
        mirrors = entry["mirrors"]
        if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
            raise DataError(f"{where}: 'mirrors' must be a list of base URLs")
        changes["mirrors"] = tuple(m if m.endswith("/") else m + "/" for m in mirrors)
    for key, allowed in (("archives", set(base.archives)), ("contents", _content_names(base))):
        if key not in entry:
            continue
        table = entry[key]
        if not isinstance(table, dict) or not all(
            isinstance(v, str) and len(v) == 32 for v in table.values()
        ):
            raise DataError(f"{where}: '{key}' must map file names to 32-digit md5 strings")
        if not set(table) <= allowed:
            raise DataError(
                f"{where}: '{key}' names {sorted(set(table) - allowed)}; "
                f"the file names are fixed: {sorted(allowed)}"
            )
        changes[key] = dict(table)
    if set(changes.get("archives", base.archives)) != set(base.archives):
        raise DataError(f"{where}: 'archives' must list every file: {sorted(base.archives)}")
    if base.kind == "cifar" and set(changes.get("contents", base.contents)) != set(base.contents):
        # Every batch is fetched and checked by this table: a partial one would skip files.
        raise DataError(f"{where}: 'contents' must list every file: {sorted(base.contents)}")
    return replace(base, **changes)


def _content_names(src: Source) -> set[str]:
    if src.kind == "idx":
        return {_strip_gz(a) for a in src.archives}
    if src.kind == "flowers":
        return set()
    return set(_torchvision_source(src.name).contents)


def _strip_gz(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


# --------------------------------------------------------------------------------------------
# Fetching one file, from a URL (with retries) or a local path
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one URL before moving on: servers and networks fail transiently.

    ``attempts`` includes the first try; the waits between tries are backoff, 2*backoff, ...
    ``timeout`` bounds connecting and every single read, so a stalled server cannot hang a
    pipeline forever.
    """

    attempts: int = 4
    backoff: float = 1.0
    timeout: float = 60.0


#: The default policy; tests pass a faster one to ``download(..., retry=...)``.
RETRY = RetryPolicy()

Category = Literal["missing", "network", "corrupt"]


class _Failed(Exception):
    """One location did not give a good file; ``category`` decides the advice given."""

    def __init__(self, reason: str, category: Category) -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category


class _Transient(Exception):
    pass


def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def _fetch(location: str, target: Path, retry: RetryPolicy) -> None:
    """Put the file at ``location`` (URL or path) at ``target``, or raise ``_Failed``."""
    if _is_url(location):
        _fetch_url(location, target, retry)
        return
    src = Path(location)
    if not src.is_file():
        raise _Failed("not found", "missing")
    try:
        shutil.copyfile(src, target)
    except OSError as exc:
        raise _Failed(f"cannot read it ({exc.strerror or exc})", "missing") from exc


def _fetch_url(url: str, target: Path, retry: RetryPolicy) -> None:
    """Retry what is likely to pass on a second try (5xx, 429, timeouts, resets, short
    bodies); give up at once on what will not (403/404, unknown host, bad certificate), so
    the caller can move on to the next mirror quickly."""
    reason = "no attempt made"
    attempts = max(1, retry.attempts)
    for attempt in range(1, attempts + 1):
        try:
            log.info("fetching %s", url)
            _fetch_url_once(url, target, retry.timeout)
            return
        except urllib.error.HTTPError as exc:
            exc.close()
            reason = f"HTTP {exc.code} {exc.reason}"
            if not (exc.code >= 500 or exc.code in (408, 425, 429)):
                category: Category = "missing" if exc.code in (401, 403, 404, 410) else "network"
                raise _Failed(reason, category) from None
        except urllib.error.URLError as exc:
            reason = f"{exc.reason}"
            if isinstance(exc.reason, socket.gaierror):
                raise _Failed(f"cannot resolve the host name ({reason})", "network") from None
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                raise _Failed(f"TLS certificate not trusted ({reason})", "network") from None
        except _Transient as exc:
            reason = str(exc)
        except (TimeoutError, ConnectionError, http.client.HTTPException, ssl.SSLError) as exc:
            reason = _describe(exc)
        if attempt < attempts:
            delay = retry.backoff * 2 ** (attempt - 1)
            log.warning(
                "%s: %s; retrying in %.3g s (attempt %d of %d)",
                url,
                reason,
                delay,
                attempt + 1,
                attempts,
            )
            time.sleep(delay)
    raise _Failed(f"{reason} (gave up after {attempts} attempts)", "network")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "server closed the connection without a response"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    return f"{type(exc).__name__}: {exc}"


def _fetch_url_once(url: str, target: Path, timeout: float) -> None:
    part = target.with_name(target.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "cnnlab (dataset download)"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp, open(part, "wb") as out:
            length = resp.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            received = 0
            while True:
                try:
                    chunk = resp.read(1 << 20)
                except http.client.IncompleteRead as exc:
                    received += len(exc.partial)
                    chunk = b""
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
        if expected is not None and received != expected:
            raise _Transient(
                f"truncated body: received {received} of {expected} bytes "
                "announced by Content-Length"
            )
        part.replace(target)
    finally:
        part.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Where to look: the public mirrors, or a user's mirror (local folder or URL)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    """One place a file may be: ``form`` says whether it is the published file (archive) or
    already decompressed/extracted the way torchvision leaves it (content)."""

    location: str
    form: Literal["archive", "content"]


def _join(base: str, *parts: str) -> str:
    if _is_url(base):
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base, *parts))


def _mirror_root(name: str, mirror: str | os.PathLike | None) -> str | None:
    """Resolve ``data.mirror`` to the folder (or URL) of this dataset, failing early and
    clearly on a local path that is not there rather than after trying every file."""
    if mirror is None:
        return None
    text = os.fspath(mirror).strip()
    if text.startswith("file://"):
        text = text[len("file://") :]
    if _is_url(text):
        return _join(text, name)
    root = Path(text).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data.mirror is '{mirror}', which is not a directory. Set data.mirror in "
            "params.yaml to a local directory or an http(s) URL that holds one folder per "
            f"dataset (e.g. {name}/), or to null to use the public mirrors."
        )
    folder = root / name
    if not folder.is_dir():
        raise DataError(
            f"the mirror {root} has no '{name}/' folder. Put the published files of "
            f"{DATASETS[name].title} in {folder}/ (or torchvision's layout), or change "
            "data.mirror in params.yaml."
        )
    return str(folder)


def _layout_hint(src: Source) -> str:
    first = next(iter(src.archives))
    published = f"{src.name}/{first}"
    if src.kind == "idx":
        laid_out = f"{src.name}/{src.folder}/{_strip_gz(first)}"
    elif src.kind == "flowers":
        laid_out = f"{src.name}/{src.folder}/{first}"
    else:
        laid_out = f"{src.name}/{src.folder}/{next(iter(src.contents))}"
    return f"the published files (e.g. {published}) or torchvision's layout (e.g. {laid_out})"


def _unavailable(
    src: Source, what: str, tried: list[tuple[str, _Failed]], mirror: str | None
) -> DataError:
    lines = [f"could not get a verified copy of {what} for {DATASETS[src.name].title}. Tried:"]
    lines += [f"  - {location}: {failure.reason}" for location, failure in tried]
    categories = {failure.category for _, failure in tried}
    lines.append("What to do:")
    if "corrupt" in categories:
        lines.append(
            "  - a file above is damaged or is not the published version: replace it "
            "with the published file (or point data.mirror at a good copy) and rerun"
        )
    if mirror is None:
        lines.append("  - if the network or the server is having trouble, retry later")
        lines.append(
            "  - on a machine without internet access, set data.mirror in params.yaml "
            "to a local directory or an http(s) URL holding a "
            f"'{src.name}/' folder with {_layout_hint(src)}"
        )
    else:
        if "network" in categories:
            lines.append(f"  - the mirror {mirror} did not answer properly: retry later")
        lines.append(
            f"  - check data.mirror in params.yaml ({mirror}): it should hold a "
            f"'{src.name}/' folder with {_layout_hint(src)}"
        )
    return DataError("\n".join(lines))


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


def _md5(path: Path) -> str:
    from torchvision.datasets.utils import calculate_md5

    return calculate_md5(path)


def _mismatch(expected: str, actual: str) -> str:
    return f"checksum mismatch: expected md5 {expected}, got {actual}"


_IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}  # uint8 data, 3 or 1 dimensions
_IMAGE_HW = (28, 28)


def _idx_role(filename: str) -> Literal["images", "labels"]:
    return "images" if "images" in filename else "labels"


def _idx_count(path: Path) -> int:
    """Check an IDX file's header against its size and return its item count.

    torchvision's reader asserts or reshapes its way into obscure errors on a damaged file;
    this says which file is wrong and how. Raises ``_Failed`` (category "corrupt").
    """
    role = _idx_role(path.name)
    ndim = 3 if role == "images" else 1
    header_size = 4 + 4 * ndim
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(header_size)
    if len(header) < 4:
        raise _Failed(f"truncated IDX file: only {size} bytes", "corrupt")
    magic = int.from_bytes(header[:4], "big")
    if magic != _IDX_MAGIC[role]:
        raise _Failed(
            f"not an IDX {role} file: magic number 0x{magic:08x}, expected "
            f"0x{_IDX_MAGIC[role]:08x} (unsigned bytes, {ndim}-d)",
            "corrupt",
        )
    if len(header) < header_size:
        raise _Failed(f"truncated IDX file: {size} bytes, shorter than its header", "corrupt")
    dims = struct.unpack(f">{ndim}I", header[4:])
    if role == "images" and dims[1:] != _IMAGE_HW:
        raise _Failed(
            f"wrong image shape {dims[1]}x{dims[2]}, expected {_IMAGE_HW[0]}x{_IMAGE_HW[1]}",
            "corrupt",
        )
    expected = header_size + int(np.prod(dims, dtype=np.int64))
    if size < expected:
        raise _Failed(
            f"truncated IDX file: {size} bytes, the header announces {expected}", "corrupt"
        )
    if size > expected:
        raise _Failed(
            f"IDX file has {size - expected} bytes after the {expected} its header announces",
            "corrupt",
        )
    if role == "labels" and dims[0]:
        labels = np.fromfile(path, dtype=np.uint8, offset=header_size)
        if int(labels.max()) > 9:
            raise _Failed(f"label {int(labels.max())} outside 0..9", "corrupt")
    return dims[0]


def _verify_idx(src: Source, archive: str, fetched: Path, form: str) -> None:
    """Accept the published .gz by its md5, or any file whose decompressed bytes have the
    published md5 (a recompressed copy); leave the decompressed file next to it."""
    from torchvision.datasets.utils import extract_archive

    content = _strip_gz(archive)
    decoded = fetched.with_name(content)
    expected_content = src.contents.get(content)
    if form == "archive":
        actual = _md5(fetched)
        archive_ok = actual == src.archives[archive]
        if not archive_ok and expected_content is None:
            raise _Failed(
                f"{_mismatch(src.archives[archive], actual)}; if this is a recompressed copy "
                f"it cannot be verified, because no md5 of the decompressed {content} is "
                "known: use the published .gz file",
                "corrupt",
            )
        try:
            extract_archive(str(fetched), str(fetched.parent))
        except (OSError, EOFError, ValueError) as exc:  # gzip.BadGzipFile, zlib.error
            prefix = "" if archive_ok else f"{_mismatch(src.archives[archive], actual)}; "
            raise _Failed(f"{prefix}not a valid gzip file ({exc})", "corrupt") from exc
        if not archive_ok:
            actual_content = _md5(decoded)
            if actual_content != expected_content:
                raise _Failed(
                    f"{_mismatch(src.archives[archive], actual)}; decompressed, "
                    f"{_mismatch(expected_content, actual_content)}",
                    "corrupt",
                )
    else:
        if expected_content is None:
            raise _Failed(
                f"no md5 of the decompressed {content} is known, so this copy "
                f"cannot be verified: provide the published {archive}",
                "corrupt",
            )
        actual_content = _md5(decoded)
        if actual_content != expected_content:
            raise _Failed(_mismatch(expected_content, actual_content), "corrupt")
    _idx_count(decoded)


# --------------------------------------------------------------------------------------------
# Building each kind of dataset in a scratch directory
# --------------------------------------------------------------------------------------------


def _build_idx(
    src: Source, root: str | None, mirror: str | None, out: Path, retry: RetryPolicy
) -> None:
    raw = out / src.folder
    raw.mkdir(parents=True)
    for archive in src.archives:
        content = _strip_gz(archive)
        if root is None:
            candidates = [_Candidate(m + archive, "archive") for m in src.mirrors]
        else:
            candidates = [
                _Candidate(_join(root, archive), "archive"),
                _Candidate(_join(root, *src.folder.split("/"), archive), "archive"),
                _Candidate(_join(root, *src.folder.split("/"), content), "content"),
            ]
        tried: list[tuple[str, _Failed]] = []
        for cand in candidates:
            target = raw / (archive if cand.form == "archive" else content)
            try:
                _fetch(cand.location, target, retry)
                _verify_idx(src, archive, target, cand.form)
                break
            except _Failed as failure:
                tried.append((cand.location, failure))
                (raw / archive).unlink(missing_ok=True)
                (raw / content).unlink(missing_ok=True)
                if root is not None and failure.category == "network":
                    raise _unavailable(src, archive, tried, mirror) from None
        else:
            raise _unavailable(src, archive, tried, mirror)
    _check_idx_pairs(raw)


def _check_idx_pairs(raw: Path) -> None:
    """Images and labels must describe the same samples; a mismatch means mixed-up files."""
    for split in ("train", "t10k"):
        images = raw / f"{split}-images-idx3-ubyte"
        labels = raw / f"{split}-labels-idx1-ubyte"
        try:
            n_images, n_labels = _idx_count(images), _idx_count(labels)
        except _Failed as failure:  # pragma: no cover - verified just before
            raise DataError(f"{images.parent}: {failure.reason}") from None
        if n_images != n_labels:
            raise DataError(
                f"{images} holds {n_images} images but {labels} holds {n_labels} labels: the "
                "files do not belong together. Replace them with the published files."
            )


def _build_cifar(
    src: Source, root: str | None, mirror: str | None, out: Path, retry: RetryPolicy
) -> None:
    ((archive, archive_md5),) = src.archives.items()
    tried: list[tuple[str, _Failed]] = []
    tarballs = [m + archive for m in src.mirrors] if root is None else [_join(root, archive)]
    for location in tarballs:
        target = out / archive
        try:
            _fetch(location, target, retry)
            _unpack_cifar(src, target, archive_md5, out)
            return
        except _Failed as failure:
            tried.append((location, failure))
            target.unlink(missing_ok=True)
            shutil.rmtree(out / src.folder, ignore_errors=True)
    if root is not None and tried[-1][1].category != "network":
        # torchvision's layout: the extracted batches themselves.
        folder = out / src.folder
        folder.mkdir()
        location = _join(root, *src.folder.split("/"))
        try:
            for member in src.contents:
                try:
                    _fetch(_join(location, member), folder / member, retry)
                except _Failed as failure:
                    raise _Failed(f"{member}: {failure.reason}", failure.category) from None
            _check_contents(src, folder)
            return
        except _Failed as failure:
            tried.append((location + "/", failure))
            shutil.rmtree(folder, ignore_errors=True)
    raise _unavailable(src, archive, tried, mirror)


def _unpack_cifar(src: Source, tarball: Path, archive_md5: str, out: Path) -> None:
    """Extract (safely) and check every batch's md5. A tarball with other bytes than the
    published one is still accepted if every extracted file matches (a repacked copy)."""
    actual = _md5(tarball)
    try:
        _extract_tar(tarball, out, src.folder)
    except _Failed as failure:
        if actual == archive_md5:
            raise
        raise _Failed(f"{_mismatch(archive_md5, actual)}; {failure.reason}", "corrupt") from None
    tarball.unlink()
    try:
        _check_contents(src, out / src.folder)
    except _Failed as failure:
        if actual == archive_md5:
            raise
        raise _Failed(
            f"{_mismatch(archive_md5, actual)}; its contents do not match either: {failure.reason}",
            "corrupt",
        ) from None


def _check_contents(src: Source, folder: Path) -> None:
    for member, expected in src.contents.items():
        path = folder / member
        if not path.is_file():
            raise _Failed(f"{member} is missing", "corrupt")
        actual = _md5(path)
        if actual != expected:
            raise _Failed(f"{member}: {_mismatch(expected, actual)}", "corrupt")


def _extract_tar(tarball: Path, into: Path, folder: str) -> None:
    """Refuse anything but plain files and folders under ``folder/``, then let tarfile's
    "data" filter enforce the same again: an archive must never write outside ``into``."""
    if not hasattr(tarfile, "data_filter"):  # pragma: no cover - Python < 3.10.12 / 3.11.4
        raise DataError(
            "this Python's tarfile has no extraction filters; use Python "
            ">= 3.11.4 (or 3.10.12) so archives can be extracted safely"
        )
    try:
        with tarfile.open(tarball, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                parts = PurePosixPath(member.name).parts
                if member.name.startswith("/") or ".." in parts or not parts or parts[0] != folder:
                    raise _Failed(
                        f"refusing to extract: member '{member.name}' lies outside '{folder}/'",
                        "corrupt",
                    )
                if not (member.isfile() or member.isdir()):
                    raise _Failed(
                        f"refusing to extract: member '{member.name}' is a link or a special file",
                        "corrupt",
                    )
            tar.extractall(into, members=members, filter="data")
    except tarfile.TarError as exc:  # includes the filter's refusals
        raise _Failed(f"cannot extract the archive safely ({exc})", "corrupt") from exc
    except (EOFError, OSError) as exc:
        raise _Failed(f"damaged archive ({exc})", "corrupt") from exc


def _build_flowers(
    src: Source, root: str | None, mirror: str | None, out: Path, retry: RetryPolicy
) -> None:
    """The three published files, each by its md5, laid out as torchvision's Flowers102
    expects them (``flowers-102/{jpg/, imagelabels.mat, setid.mat}``); the tarball is removed
    once extracted, so DVC stores the images once."""
    folder = out / src.folder
    folder.mkdir()
    for archive, expected in src.archives.items():
        if root is None:
            locations = [m + archive for m in src.mirrors]
        else:
            locations = [_join(root, archive), _join(root, src.folder, archive)]
        tried: list[tuple[str, _Failed]] = []
        for location in locations:
            target = folder / archive
            try:
                _fetch(location, target, retry)
                actual = _md5(target)
                if actual != expected:
                    raise _Failed(_mismatch(expected, actual), "corrupt")
                if archive.endswith((".tgz", ".tar.gz")):
                    _extract_tar(target, folder, "jpg")
                    target.unlink()
                break
            except _Failed as failure:
                tried.append((location, failure))
                target.unlink(missing_ok=True)
                shutil.rmtree(folder / "jpg", ignore_errors=True)
                if root is not None and failure.category == "network":
                    raise _unavailable(src, archive, tried, mirror) from None
        else:
            raise _unavailable(src, archive, tried, mirror)


def _build_digits(out: Path) -> None:
    """scikit-learn ships the 8x8 digits, so no network; pixels go from 0..16 to 0..255 so
    every dataset is uint8 on the same scale. The .npz is written byte-for-byte the same
    on every run (no zip timestamps), so DVC sees an unchanged output."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    with zipfile.ZipFile(out / DIGITS_FILE, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, array in (("images", images), ("labels", labels)):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buffer.getvalue())


DIGITS_FILE = "digits.npz"
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
DIGITS_SIZE = 32


# --------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------


def _known(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; known datasets: {', '.join(DATASETS)}")


@contextlib.contextmanager
def _scratch_sibling(dest: Path) -> Iterator[Path]:
    """A scratch directory on the same filesystem as ``dest`` (so the final rename is
    atomic), removed whatever happens, including Ctrl-C."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def download(
    name: str,
    dest: Path,
    mirror: str | os.PathLike[str] | None = None,
    *,
    retry: RetryPolicy | None = None,
) -> None:
    """Fetch dataset ``name`` into directory ``dest``, verified, laid out as torchvision
    leaves it (``dest/MNIST/raw/...``, ``dest/cifar-10-batches-py/...``; ``dest/digits.npz``).

    ``mirror`` (``data.mirror`` in params.yaml) replaces the public mirrors: a local directory
    or an http(s) base URL holding ``<dataset>/`` folders, each with the published files or
    torchvision's layout. ``dest`` is replaced atomically; on failure it is left as it was
    (absent, if it was absent) and no scratch directory remains.
    """
    _known(name)
    dest = Path(dest)
    retry = retry or RETRY
    with _scratch_sibling(dest) as scratch:
        built = scratch / "out"
        built.mkdir()
        if name == "digits":
            _build_digits(built)
        else:
            src = source(name)
            root = _mirror_root(name, mirror)
            label = None if mirror is None else os.fspath(mirror)
            if src.kind == "idx":
                _build_idx(src, root, label, built, retry)
            elif src.kind == "flowers":
                _build_flowers(src, root, label, built, retry)
            else:
                _build_cifar(src, root, label, built, retry)
        replace_directory(built, dest)


# --------------------------------------------------------------------------------------------
# load_raw
# --------------------------------------------------------------------------------------------


@dataclass
class RawDataset:
    """The dataset as published: its own train/test split, uint8 pixels, int64 labels."""

    train_images: torch.Tensor  # uint8, [N, C, H, W]
    train_labels: torch.Tensor  # int64, [N]
    test_images: torch.Tensor  # uint8, [M, C, H, W]
    test_labels: torch.Tensor  # int64, [M]
    classes: list[str]
    #: The dataset's own validation split, where it has one (Flowers-102, a folder with
    #: val/); otherwise prepare draws it from the training split.
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None


def _redownload_hint(name: str) -> str:
    return f"run the download of '{name}' again (it rebuilds the raw folder from verified files)"


def load_raw(name: str, raw_dir: Path, options: ResizedOptions | None = None) -> RawDataset:
    """Decode what ``download`` left in ``raw_dir`` with torchvision's own dataset classes.

    Damaged files get a message naming the file instead of torchvision's assertion or
    reshape errors; CIFAR batches are checked against their md5 before they are unpickled.
    ``options`` (``dataset.<name>``) says the size Flowers-102's photos are resized to.
    """
    _known(name)
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir} does not exist: {_redownload_hint(name)}")
    if name == "digits":
        return _load_digits(raw_dir)
    src = source(name)
    if src.kind == "idx":
        return _load_idx(src, raw_dir)
    if src.kind == "flowers":
        return _load_flowers(src, raw_dir, options or ResizedOptions())
    return _load_cifar(src, raw_dir)


def _load_idx(src: Source, raw_dir: Path) -> RawDataset:
    import torch
    from torchvision import datasets as tvd

    cls = tvd.MNIST if src.name == "mnist" else tvd.FashionMNIST
    folder = raw_dir / src.folder
    for content in sorted(_content_names(src)):
        path = folder / content
        if not path.is_file():
            raise DataError(f"{path} is missing: {_redownload_hint(src.name)}")
        try:
            _idx_count(path)
        except _Failed as failure:
            raise DataError(f"{path}: {failure.reason}; {_redownload_hint(src.name)}") from None
    _check_idx_pairs(folder)
    splits = []
    for train in (True, False):
        ds = _decode(cls, raw_dir, train, folder, src)
        splits.append((ds.data.unsqueeze(1).contiguous(), ds.targets.to(torch.int64)))
    (train_x, train_y), (test_x, test_y) = splits
    return RawDataset(train_x, train_y, test_x, test_y, list(cls.classes))


def _decode(cls: Any, raw_dir: Path, train: bool, folder: Path, src: Source) -> Any:
    """One split through torchvision's own dataset class, its failures as a DataError."""
    try:
        return cls(str(raw_dir), train=train, download=False)
    except Exception as exc:
        raise DataError(
            f"torchvision could not decode {folder} ({type(exc).__name__}: "
            f"{exc}); {_redownload_hint(src.name)}"
        ) from exc


def _load_cifar(src: Source, raw_dir: Path) -> RawDataset:
    import torch
    from torchvision import datasets as tvd

    folder = raw_dir / src.folder
    try:
        _check_contents(src, folder)  # before anything is unpickled
    except _Failed as failure:
        raise DataError(f"{folder}: {failure.reason}; {_redownload_hint(src.name)}") from None

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
                f"{_redownload_hint(src.name)}"
            )
        images = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
        labels = torch.as_tensor(ds.targets, dtype=torch.int64)
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(ds.classes):
            raise DataError(
                f"{folder}: labels outside 0..{len(ds.classes) - 1}; {_redownload_hint(src.name)}"
            )
        splits.append((images, labels, list(ds.classes)))
    (train_x, train_y, classes), (test_x, test_y, _) = splits
    return RawDataset(train_x, train_y, test_x, test_y, classes)


def _load_flowers(src: Source, raw_dir: Path, options: ResizedOptions) -> RawDataset:
    """The official train / val / test splits (1,020 / 1,020 / 6,149 images) through
    torchvision's Flowers102, every photo resized once to ``options.size``."""
    import torch
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
            return images.load(Path(path), options.size, options.resize)
        except (images.BadImage, OSError) as exc:
            raise DataError(f"{path}: {exc}; {_redownload_hint(src.name)}") from None

    splits = []
    for split in ("train", "val", "test"):
        try:
            ds = verified(str(raw_dir), split=split, loader=loader)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(
                f"torchvision could not read {folder} ({type(exc).__name__}: {exc}); "
                f"{_redownload_hint(src.name)}"
            ) from exc
        pairs = [ds[i] for i in range(len(ds))]
        size = options.size
        x = np.stack([p[0] for p in pairs]) if pairs else np.zeros((0, size, size, 3), np.uint8)
        y = torch.as_tensor([p[1] for p in pairs], dtype=torch.int64)
        if len(y) and not 0 <= int(y.min()) <= int(y.max()) < len(base.classes):
            raise DataError(
                f"{folder}: labels outside 1..{len(base.classes)}; {_redownload_hint(src.name)}"
            )
        splits.append((torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), y))
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = splits
    return RawDataset(
        train_x, train_y, test_x, test_y, list(base.classes), val_images=val_x, val_labels=val_y
    )


def _load_digits(raw_dir: Path) -> RawDataset:
    """Upsample 8x8 to 32x32 (bilinear, then rounded) so the same models fit every dataset,
    and hold out a fixed 20% as the test set: scikit-learn ships no split of its own."""
    import torch
    import torch.nn.functional as F

    path = raw_dir / DIGITS_FILE
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read it ({exc}); {_redownload_hint('digits')}") from exc
    if (
        images.dtype != np.uint8
        or images.ndim != 3
        or images.shape[1:] != (8, 8)
        or labels.shape != images.shape[:1]
        or labels.min() < 0
        or labels.max() > 9
    ):
        raise DataError(
            f"{path}: unexpected contents (images {images.shape} {images.dtype}, "
            f"labels {labels.shape}); {_redownload_hint('digits')}"
        )
    n = len(images)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(n)
    n_test = round(n * DIGITS_TEST_FRACTION)
    test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])

    x = torch.from_numpy(images).unsqueeze(1).to(torch.float32)
    x = F.interpolate(x, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8)
    y = torch.from_numpy(labels.astype(np.int64))
    train_t, test_t = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return RawDataset(
        train_images=x[train_t].contiguous(),
        train_labels=y[train_t].contiguous(),
        test_images=x[test_t].contiguous(),
        test_labels=y[test_t].contiguous(),
        classes=[str(i) for i in range(10)],
    )
