"""Getting one file from a URL or a local mirror, trying each place it may be, and the error
that lists them all. Not torchvision's ``download_url``: it has neither a size cap nor an
overall deadline, and nothing a server sends is trusted to be small or quick.
Torch-free: tests/test_downloads_hostile.py runs without torch.
"""

from __future__ import annotations

import http.client
import io
import logging
import os
import shutil
import socket
import ssl
import stat
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from cnnlab.data.catalog import DATASETS
from cnnlab.data.raw import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one URL before moving on. ``timeout`` bounds connecting and every read;
    a server sending a byte every few seconds never trips it, so each file also has an overall
    budget from one URL, attempts and waits (backoff, 2*backoff, ...) together: ``budget``
    seconds plus one per ``min_rate`` bytes of its size cap."""

    attempts: int = 4
    backoff: float = 1.0
    timeout: float = 60.0
    budget: float = 300.0
    min_rate: float = 50_000.0


RETRY = RetryPolicy()

Category = Literal["missing", "network", "corrupt"]


class Failed(Exception):
    """One location did not give a good file; ``category`` decides the advice given."""

    def __init__(self, reason: str, category: Category) -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category


class _Transient(Exception):
    pass


class _OutOfTime(Exception):
    """The file's time budget ran out: no further attempt at this URL."""


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def _too_big(what: str, cap: int, name: str) -> Failed:
    """``what`` ("1234 bytes", "the server announces 1234 bytes"...) exceeds ``cap``."""
    return Failed(
        f"{what}, more than the {cap} bytes {name} can have: this is not the published "
        "file, and nothing past that limit was written",
        "corrupt",
    )


def fetch_file(location: str, target: Path, retry: RetryPolicy, cap: int) -> None:
    """Put the file at ``location`` (URL or path) at ``target``, at most ``cap`` bytes of it."""
    if is_url(location):
        _fetch_url(location, target, retry, cap)
        return
    src = Path(location)
    try:
        info = src.stat()  # a link in the user's own mirror is followed: md5s vouch for it
    except (FileNotFoundError, NotADirectoryError):
        raise Failed("not found", "missing") from None
    except OSError as exc:
        raise Failed(f"cannot read it ({exc.strerror or exc})", "missing") from exc
    if stat.S_ISDIR(info.st_mode):
        raise Failed("is a directory, not a file: put the file itself at this path", "missing")
    if not stat.S_ISREG(info.st_mode):
        raise Failed(
            "is not a regular file (a device, FIFO or socket), so it is not read: put the "
            "file itself at this path",
            "missing",
        )
    if info.st_size > cap:
        raise _too_big(f"{info.st_size} bytes", cap, target.name)
    try:
        shutil.copyfile(src, target)
    except OSError as exc:
        raise Failed(f"cannot read it ({exc.strerror or exc})", "missing") from exc


def _fetch_url(url: str, target: Path, retry: RetryPolicy, cap: int) -> None:
    """Retry what is likely to pass on a second try (5xx, 429, timeouts, resets, short
    bodies); give up at once on what will not (403/404, unknown host, bad certificate, too
    large a body, the time budget spent), so the caller can move on to the next mirror."""
    budget = retry.budget + cap / retry.min_rate
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
                raise Failed(reason, category) from None
        except urllib.error.URLError as exc:
            reason = f"{exc.reason}"
            if isinstance(exc.reason, socket.gaierror):
                raise Failed(f"cannot resolve the host name ({reason})", "network") from None
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                raise Failed(f"TLS certificate not trusted ({reason})", "network") from None
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
    raise Failed(f"{reason} (gave up after {attempts} attempts)", "network")


def _out_of_time(budget: float, detail: str) -> Failed:
    return Failed(
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
    """One attempt, in a worker thread, so that the wait can end at ``deadline`` whatever the
    socket does; the worker writes only to a descriptor opened here (an abandoned attempt
    leaves no file) and ends at its next read once ``cancel`` is set."""
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
    """The body of one attempt, in the worker thread: at most ``cap`` bytes."""
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


def join(base: str, *parts: str) -> str:
    if is_url(base):
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base, *parts))


def mirror_root(name: str, mirror: str | os.PathLike | None) -> str | None:
    """Resolve ``data.mirror`` to the folder (or URL) of this dataset, failing early and
    clearly on a local path that is not there rather than after trying every file."""
    if mirror is None:
        return None
    text = os.fspath(mirror).strip()
    if text.startswith("file://"):
        text = text[len("file://") :]
    if is_url(text):
        return join(text, name)
    root = Path(text).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data.mirror is '{mirror}', which is not a directory. Set data.mirror in "
            "params.yaml to a local directory or an http(s) URL that holds one folder per "
            f"dataset (e.g. {name}/), or to null to use the public mirrors."
        )
    folder = root / name
    if not folder.is_dir() and root.name == name:
        raise DataError(
            f"data.mirror is {root}, the '{name}/' folder itself: set data.mirror in "
            f"params.yaml to the folder that holds it, {root.parent} (one folder per dataset)"
        )
    if not folder.is_dir():
        raise DataError(
            f"the mirror {root} has no '{name}/' folder. Put the published files of "
            f"{DATASETS[name].title} in {folder}/ (or torchvision's layout), or change "
            "data.mirror in params.yaml."
        )
    return str(folder)


T = TypeVar("T")


def first_good(
    name: str,
    what: str,
    tries: Iterable[tuple[str, Callable[[], T]]],
    mirror: str | None,
    cleanup: Callable[[], None],
    example: tuple[str, str],
) -> T:
    """The result of the first ``(location, attempt)`` that gives a verified ``what``, else an
    error listing every location and why, then what to do (``mirror``: data.mirror, None for
    the public mirrors; ``example``: one file as published and where torchvision keeps it).
    ``cleanup`` runs after each failure. A user's mirror that fails on the network is not
    probed for its other layouts: they are on the same server."""
    tried: list[tuple[str, Failed]] = []
    for location, attempt in tries:
        try:
            return attempt()
        except Failed as failure:
            tried.append((location, failure))
            cleanup()
            if mirror is not None and failure.category == "network":
                break
    layout = (
        f"the published files (e.g. {name}/{example[0]}) or torchvision's layout "
        f"(e.g. {name}/{example[1]})"
    )
    lines = [f"could not get a verified copy of {what} for {DATASETS[name].title}. Tried:"]
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
            f"'{name}/' folder with {layout}"
        )
    else:
        if "network" in categories:
            lines.append(f"  - the mirror {mirror} did not answer properly: retry later")
        lines.append(
            f"  - check data.mirror in params.yaml ({mirror}): it should hold a "
            f"'{name}/' folder with {layout}"
        )
    lines.append(
        "  - or train without any download: scikit-learn's bundled digits, the default "
        "(`dvc exp run -S 'datasets=[digits]'`, or `make baseline`)"
    )
    raise DataError("\n".join(lines))
