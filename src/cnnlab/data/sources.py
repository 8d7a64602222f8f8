"""Where the raw datasets come from, how their files are checked, and how they are decoded.

The published files are trusted only through their checksums: torchvision's tables for the
archives as published, plus (for MNIST and Fashion-MNIST) the md5s of the decompressed files,
because offline mirrors often hold a recompressed copy whose ``.gz`` bytes differ while the
data is identical. Nothing is unpickled (CIFAR batches are pickles) before its md5 matched.

``download`` builds the dataset in a temporary sibling of its destination and renames it into
place only after everything verified, so an interrupted or failed download never leaves a
half-written directory for DVC (or the next stage) to mistake for data. A scratch directory
left by a run that was killed outright (SIGKILL, power loss) is removed by the next download
of that dataset; one that a running download still holds (a lock on it) is left alone.

Nothing a server or a mirror sends is trusted to be small or quick: every file is capped at
the size its checksum belongs to (``SIZES``, with a margin only where a recompressed copy can
still be verified), decompression is capped at the decompressed file's size, tar extraction
at the bytes and member count the published archive unpacks to (``UNPACKED``), and each file
has an overall time budget (``RetryPolicy``), not only a timeout per read. Tar archives are
extracted with tarfile's ``data`` filter where this Python has it (3.10.12+, 3.11.4+) and
with the same rules checked here otherwise: regular files and folders only, inside the
expected folder, no links or devices, no special mode bits, no change of owner.

torchvision costs about two seconds to import, so it is imported inside the functions that
need it; params validation and ``digits`` never pay for it.
"""

from __future__ import annotations

import bz2
import contextlib
import copy
import glob
import gzip
import http.client
import io
import json
import logging
import lzma
import os
import shutil
import socket
import ssl
import stat
import struct
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

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
    "SIZES",
    "UNPACKED",
    "DataError",
    "RawDataset",
    "RetryPolicy",
    "Source",
    "TarLimits",
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
#: servers report them (Content-Length) and public listings agree. A download may never grow
#: past the size its checksum belongs to, so a broken or hostile mirror cannot fill the disk
#: before the md5 check rejects the file (``_download_cap`` adds a margin only for copies that
#: are verified another way: a recompressed .gz, a repacked CIFAR-10 tarball).
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
    "flowers102": {"102flowers.tgz": 344862509, "imagelabels.mat": 502, "setid.mat": 14989},
}


@dataclass(frozen=True)
class TarLimits:
    """The most a tar archive may unpack to: the sum of its members' sizes, and their count."""

    max_bytes: int
    max_members: int


#: What each published tarball unpacks to, at most. CIFAR-10: its seven batches and a readme
#: in one folder. Flowers-102: 8,189 JPEGs in jpg/; JPEGs do not compress, so they hold about
#: as many bytes as the archive, and a quarter more leaves room.
UNPACKED: dict[str, dict[str, TarLimits]] = {
    "cifar10": {
        "cifar-10-python.tar.gz": TarLimits(
            max_bytes=sum(v for k, v in SIZES["cifar10"].items() if not k.endswith(".gz"))
            + (64 << 10),
            max_members=16,
        )
    },
    "flowers102": {
        "102flowers.tgz": TarLimits(
            max_bytes=SIZES["flowers102"]["102flowers.tgz"] * 5 // 4, max_members=8_200
        ),
    },
}

#: Environment variable naming a JSON file that replaces mirrors, checksums and size limits
#: per dataset: ``{"mnist": {"mirrors": [...], "archives": {file: md5}, "contents": {file:
#: md5}, "sizes": {file: bytes}, "unpacked": {archive: {"max_bytes": n, "max_members": n}}}}``.
#: It exists so that tests (including end-to-end runs of the real ``dvc`` CLI, where nothing
#: can be monkeypatched) can serve small files of the real formats, and so that a site with
#: its own repackaged copies can vouch for them (with their sizes, where they are larger than
#: the published ones). File names cannot change, only md5s, sizes and URLs.
OVERRIDE_ENV = "CNNLAB_SOURCES"

Kind = Literal["idx", "cifar", "flowers"]


@dataclass(frozen=True)
class Source:
    """A downloadable dataset: where it is published and the md5 of every file that matters.

    ``archives`` are the files as published (what a mirror serves); ``contents`` are the files
    torchvision decodes from, inside ``folder`` (relative to the download directory), which is
    where torchvision itself leaves them so its dataset classes can read them unchanged.
    ``sizes`` bounds every one of those files in bytes, ``unpacked`` each tar archive.
    """

    name: str
    kind: Kind
    mirrors: tuple[str, ...]
    archives: Mapping[str, str]
    contents: Mapping[str, str]
    folder: str
    sizes: Mapping[str, int]
    unpacked: Mapping[str, TarLimits]


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
            sizes=dict(SIZES[name]),
            unpacked=dict(UNPACKED.get(name, {})),
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
            sizes=dict(SIZES[name]),
            unpacked=dict(UNPACKED.get(name, {})),
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
            sizes=dict(SIZES[name]),
            unpacked=dict(UNPACKED.get(name, {})),
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
    keys = ("mirrors", "archives", "contents", "sizes", "unpacked")
    unknown = set(entry) - set(keys)
    if unknown:
        raise DataError(f"{where}: unknown keys {sorted(unknown)}; allowed: {', '.join(keys)}")
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
    if "sizes" in entry:
        changes["sizes"] = {**base.sizes, **_sizes_override(entry["sizes"], base, where)}
    if "unpacked" in entry:
        changes["unpacked"] = {
            **base.unpacked,
            **_unpacked_override(entry["unpacked"], base, where),
        }
    if set(changes.get("archives", base.archives)) != set(base.archives):
        raise DataError(f"{where}: 'archives' must list every file: {sorted(base.archives)}")
    if base.kind == "cifar" and set(changes.get("contents", base.contents)) != set(base.contents):
        # Every batch is fetched and checked by this table: a partial one would skip files.
        raise DataError(f"{where}: 'contents' must list every file: {sorted(base.contents)}")
    return replace(base, **changes)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _sizes_override(table: object, base: Source, where: str) -> dict[str, int]:
    allowed = set(base.archives) | _content_names(base)
    if not isinstance(table, dict) or not all(_positive_int(v) for v in table.values()):
        raise DataError(f"{where}: 'sizes' must map file names to sizes in bytes (> 0)")
    if not set(table) <= allowed:
        raise DataError(
            f"{where}: 'sizes' names {sorted(set(table) - allowed)}; "
            f"the file names are fixed: {sorted(allowed)}"
        )
    return dict(table)


def _unpacked_override(table: object, base: Source, where: str) -> dict[str, TarLimits]:
    fields = {"max_bytes", "max_members"}
    if not isinstance(table, dict) or not all(
        isinstance(v, dict) and set(v) == fields and all(map(_positive_int, v.values()))
        for v in table.values()
    ):
        raise DataError(
            f"{where}: 'unpacked' must map archive names to "
            '{"max_bytes": n, "max_members": n} (both > 0)'
        )
    if not set(table) <= set(base.unpacked):
        raise DataError(
            f"{where}: 'unpacked' names {sorted(set(table) - set(base.unpacked))}; "
            f"the tar archives are: {sorted(base.unpacked)}"
        )
    return {name: TarLimits(**limits) for name, limits in table.items()}


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
    ``timeout`` bounds connecting and every single read. A server that sends one byte every
    few seconds never trips that, so each file also has an overall time budget from one URL,
    all attempts and waits together: ``budget`` seconds plus one second per ``min_rate``
    bytes the file may have (its size cap).
    """

    attempts: int = 4
    backoff: float = 1.0
    timeout: float = 60.0
    budget: float = 300.0
    min_rate: float = 50_000.0

    def time_budget(self, cap: int) -> float:
        """Seconds one file of at most ``cap`` bytes may take from one URL."""
        return self.budget + cap / self.min_rate


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


class _OutOfTime(Exception):
    """The file's time budget ran out: no further attempt at this URL."""


def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def _too_big(what: str, cap: int, name: str) -> _Failed:
    """``what`` ("1234 bytes", "the server announces 1234 bytes"...) exceeds ``cap``."""
    return _Failed(
        f"{what}, more than the {cap} bytes {name} can have: this is not the published "
        "file, and nothing past that limit was written",
        "corrupt",
    )


def _fetch(location: str, target: Path, retry: RetryPolicy, cap: int) -> None:
    """Put the file at ``location`` (URL or path) at ``target``, at most ``cap`` bytes of it,
    or raise ``_Failed``."""
    if _is_url(location):
        _fetch_url(location, target, retry, cap)
        return
    src = Path(location)
    try:
        info = src.stat()  # a link in the user's own mirror is followed: md5s vouch for it
    except (FileNotFoundError, NotADirectoryError):
        raise _Failed("not found", "missing") from None
    except OSError as exc:
        raise _Failed(f"cannot read it ({exc.strerror or exc})", "missing") from exc
    if stat.S_ISDIR(info.st_mode):
        raise _Failed("is a directory, not a file: put the file itself at this path", "missing")
    if not stat.S_ISREG(info.st_mode):
        raise _Failed(
            "is not a regular file (a device, FIFO or socket), so it is not read: put the "
            "file itself at this path",
            "missing",
        )
    if info.st_size > cap:
        raise _too_big(f"{info.st_size} bytes", cap, target.name)
    try:
        shutil.copyfile(src, target)
    except OSError as exc:
        raise _Failed(f"cannot read it ({exc.strerror or exc})", "missing") from exc


def _fetch_url(url: str, target: Path, retry: RetryPolicy, cap: int) -> None:
    """Retry what is likely to pass on a second try (5xx, 429, timeouts, resets, short
    bodies); give up at once on what will not (403/404, unknown host, bad certificate, too
    large a body, the time budget spent), so the caller can move on to the next mirror."""
    budget = retry.time_budget(cap)
    deadline = time.monotonic() + budget
    reason = "no attempt made"
    attempts = max(1, retry.attempts)
    for attempt in range(1, attempts + 1):
        try:
            log.info("fetching %s", url)
            _fetch_url_once(url, target, retry.timeout, cap, deadline)
            return
        except _OutOfTime as exc:
            raise _out_of_time(budget, str(exc)) from None
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
            if time.monotonic() + delay >= deadline:
                raise _out_of_time(budget, f"last attempt: {reason}")
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


def _out_of_time(budget: float, detail: str) -> _Failed:
    return _Failed(
        f"no complete file within its time budget of {budget:.3g} s ({detail}): the server "
        "is too slow or has stalled. Retry later, or fetch the file some other way and set "
        "data.mirror in params.yaml to a folder that holds it",
        "network",
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "server closed the connection without a response"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    return f"{type(exc).__name__}: {exc}"


@dataclass
class _Transfer:
    """What the receiving thread reports back: bytes so far, and how it ended."""

    received: int = 0
    error: BaseException | None = None


def _fetch_url_once(url: str, target: Path, timeout: float, cap: int, deadline: float) -> None:
    """One attempt, received in a worker thread so that the caller can stop waiting at
    ``deadline`` whatever the socket does (a trickle keeps every single read under
    ``timeout``). The worker writes only to a file descriptor opened here, so an abandoned
    attempt cannot leave a file behind; it notices ``cancel`` at its next read and ends."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    part = Path(name)
    transfer = _Transfer()
    cancel = threading.Event()
    worker = threading.Thread(
        target=_receive,
        args=(url, os.fdopen(fd, "wb"), timeout, cap, target.name, cancel, transfer),
        name=f"download {url}",
        daemon=True,
    )
    try:
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            cancel.set()
            raise _OutOfTime(f"{transfer.received} bytes received")
        if transfer.error is not None:
            raise transfer.error
        part.replace(target)
    finally:
        cancel.set()
        part.unlink(missing_ok=True)


def _receive(
    url: str,
    out: io.BufferedWriter,
    timeout: float,
    cap: int,
    name: str,
    cancel: threading.Event,
    transfer: _Transfer,
) -> None:
    """The body of one attempt (runs in the worker thread): at most ``cap`` bytes."""
    request = urllib.request.Request(url, headers={"User-Agent": "cnnlab (dataset download)"})
    try:
        with out, urllib.request.urlopen(request, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            if expected is not None and expected > cap:
                raise _too_big(f"the server announces {expected} bytes", cap, name)
            while not cancel.is_set():
                try:
                    chunk = resp.read1(1 << 20)  # whatever has arrived: read() would wait
                except http.client.IncompleteRead as exc:
                    transfer.received += len(exc.partial)
                    chunk = b""
                if not chunk:
                    break
                if transfer.received + len(chunk) > cap:
                    raise _too_big("the server kept sending", cap, name)
                out.write(chunk)
                transfer.received += len(chunk)
        if not cancel.is_set() and expected is not None and transfer.received != expected:
            raise _Transient(
                f"truncated body: received {transfer.received} of {expected} bytes "
                "announced by Content-Length"
            )
    except Exception as exc:  # handed to the caller's thread, which decides what it means
        transfer.error = exc


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
    lines.append(
        "  - or train without any download: scikit-learn's bundled digits, the default "
        "(`dvc exp run -S 'datasets=[digits]'`, or `git checkout params.yaml`)"
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


def _compressed_bound(size: int) -> int:
    """The most bytes gzip (or bz2, xz) can take to store ``size`` bytes, with room for a
    header: deflate's stored blocks add 5 bytes per 64 KiB, so 0.1% is plenty."""
    return size + size // 1000 + (16 << 10)


def _tar_bound(limits: TarLimits) -> int:
    """The most bytes a tar stream of these members can have: a header block or two (pax)
    and padding per member, the end-of-archive blocks and a last record's padding."""
    return limits.max_bytes + 2048 * limits.max_members + (20 << 10)


def _download_cap(src: Source, archive: str) -> int:
    """The most bytes a download of ``archive`` may have: its published size, or more for
    copies that are verified another way (a recompressed .gz by its decompressed md5, a
    repacked tarball by the md5s of its members)."""
    cap = src.sizes[archive]
    content = _strip_gz(archive)
    if src.kind == "idx" and content in src.contents:
        cap = max(cap, _compressed_bound(src.sizes[content]))
    elif archive in src.unpacked and src.contents:
        cap = max(cap, _compressed_bound(_tar_bound(src.unpacked[archive])))
    return cap


def _gunzip(packed: Path, out: Path, cap: int) -> None:
    """Decompress ``packed`` into ``out``, stopping past ``cap`` bytes: torchvision's
    extract_archive has no limit, so a small gzip bomb would fill the disk first."""
    written = 0
    with gzip.open(packed, "rb") as source, open(out, "wb") as target:
        while chunk := source.read(1 << 20):
            written += len(chunk)
            if written > cap:
                raise _Failed(
                    f"decompresses to more than the {cap} bytes {out.name} has: this is not "
                    "the published file (decompression stopped there)",
                    "corrupt",
                )
            target.write(chunk)


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
            _gunzip(fetched, decoded, src.sizes[content])
        except _Failed as failure:
            prefix = "" if archive_ok else f"{_mismatch(src.archives[archive], actual)}; "
            raise _Failed(prefix + failure.reason, failure.category) from None
        except (OSError, EOFError, ValueError, zlib.error) as exc:  # gzip.BadGzipFile...
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
            cap = _download_cap(src, archive) if cand.form == "archive" else src.sizes[content]
            try:
                _fetch(cand.location, target, retry, cap)
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
            _fetch(location, target, retry, _download_cap(src, archive))
            _unpack_cifar(src, target, archive, archive_md5, out)
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
                    _fetch(_join(location, member), folder / member, retry, src.sizes[member])
                except _Failed as failure:
                    raise _Failed(f"{member}: {failure.reason}", failure.category) from None
            _check_contents(src, folder)
            return
        except _Failed as failure:
            tried.append((location + "/", failure))
            shutil.rmtree(folder, ignore_errors=True)
    raise _unavailable(src, archive, tried, mirror)


def _unpack_cifar(src: Source, tarball: Path, archive: str, archive_md5: str, out: Path) -> None:
    """Extract (safely) and check every batch's md5. A tarball with other bytes than the
    published one is still accepted if every extracted file matches (a repacked copy)."""
    actual = _md5(tarball)
    try:
        _extract_tar(tarball, out, src.folder, src.unpacked[archive])
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
            raise _Failed(
                f"refusing to extract: more than {self._cap} bytes of tar data (headers "
                "included), more than the published archive has",
                "corrupt",
            )
        return data


def _checked_members(
    tar: tarfile.TarFile, folder: str, limits: TarLimits, filtered: bool
) -> Iterator[tarfile.TarInfo]:
    """Each member, once it passed the checks, so that extraction stops at the first bad one
    before anything of it is written; made :func:`_plain` unless tarfile will ``filter``."""
    total = 0
    for count, member in enumerate(tar, start=1):
        if count > limits.max_members:
            raise _Failed(
                f"refusing to extract: more than {limits.max_members} members (the published "
                "archive has fewer)",
                "corrupt",
            )
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
        total += member.size
        if total > limits.max_bytes:
            raise _Failed(
                f"refusing to extract: its members hold more than {limits.max_bytes} bytes "
                f"(at '{member.name}'; the published archive holds fewer)",
                "corrupt",
            )
        yield member if filtered else _plain(member)


def _plain(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """What the "data" filter would make of a plain file or folder: no setuid, setgid or
    sticky bit, no write access for others, readable and writable by its owner, and owned by
    whoever extracts it (run as root, tarfile would otherwise chown to the archive's ids)."""
    member = copy.copy(member)
    owner = 0o700 if member.isdir() else 0o600
    member.mode = (member.mode & 0o755) | owner
    member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
    return member


def _extract_tar(tarball: Path, into: Path, folder: str, limits: TarLimits) -> None:
    """Extract the plain files and folders of ``tarball`` under ``into/folder/``, or refuse
    the archive: nothing may be written outside ``into``, nor more than ``limits``. Where
    this Python has tarfile's "data" filter it enforces the same rules a second time."""
    # tarfile's extraction filters exist from 3.10.12 and 3.11.4 on; without them the same
    # rules are applied by _checked_members and _plain alone.
    filtered = hasattr(tarfile, "data_filter")
    extra = {"filter": "data"} if filtered else {}
    try:
        with open(tarball, "rb") as raw, contextlib.ExitStack() as stack:
            magic = raw.read(6)
            raw.seek(0)
            opener = next((o for m, o in _DECOMPRESSORS.items() if magic.startswith(m)), None)
            stream = stack.enter_context(opener(fileobj=raw)) if opener else raw
            # Stream mode ("r|"): one forward pass, so every byte tarfile reads is counted.
            capped = _Capped(stream, _tar_bound(limits))
            tar = stack.enter_context(tarfile.open(fileobj=capped, mode="r|"))
            tar.extractall(into, members=_checked_members(tar, folder, limits, filtered), **extra)
    except tarfile.TarError as exc:  # includes the filter's refusals
        raise _Failed(f"cannot extract the archive safely ({exc})", "corrupt") from exc
    except (EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
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
                _fetch(location, target, retry, src.sizes[archive])
                actual = _md5(target)
                if actual != expected:
                    raise _Failed(_mismatch(expected, actual), "corrupt")
                if archive in src.unpacked:
                    _extract_tar(target, folder, "jpg", src.unpacked[archive])
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


def _lock(directory: Path) -> int | None:
    """An open descriptor holding an exclusive lock on ``directory``, or None if another
    process holds one. The kernel drops the lock when its holder dies, however it dies."""
    fd = os.open(directory, os.O_RDONLY)
    if fcntl is None:  # pragma: no cover - not POSIX: no lock, and no cleanup either
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _remove_stale_scratch(dest: Path) -> None:
    """Remove what a killed download of ``dest`` left next to it (a scratch directory it
    could not clean up, with its ``.part`` files); one still locked is a download running
    right now, in another process, and is left alone."""
    if fcntl is None or not dest.parent.is_dir():  # pragma: no cover - not POSIX
        return
    for stale in dest.parent.glob(glob.escape(f".{dest.name}.") + "*.partial"):
        if stale.is_symlink() or not stale.is_dir():
            continue
        fd = _lock(stale)
        if fd is None:
            continue
        try:
            log.info("removing %s, left by an interrupted download", stale)
            shutil.rmtree(stale, ignore_errors=True)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _scratch_sibling(dest: Path) -> Iterator[Path]:
    """A scratch directory on the same filesystem as ``dest`` (so the final rename is
    atomic), locked while in use, removed whatever happens, including Ctrl-C (and by the
    next download if this process is killed outright)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_scratch(dest)
    scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    fd = _lock(scratch)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if fd is not None:
            os.close(fd)


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
