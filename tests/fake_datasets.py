"""Small files in the real dataset formats, and a local HTTP server that can misbehave.

There is no internet on the development and CI machines, so the download path is exercised
against these: IDX files (gzip-compressed or not) like MNIST / Fashion-MNIST, CIFAR-10
pickled batches and their tarball, Oxford Flowers-102's tarball of JPEGs and its two MATLAB
files (written with scipy.io.savemat, as published), served from 127.0.0.1 by
``serve_directory``, which can answer with errors, truncated, endless or trickling bodies,
resets or silence before it serves the real bytes. ``write_image_folder`` makes a folder
dataset of the user's kind.

The fakes have their own md5s, so a test tells ``cnnlab.data.sources`` to expect them with
the ``CNNLAB_SOURCES`` override (``write_sources_override``), which also works for the real
``dvc`` CLI in a subprocess, where nothing can be monkeypatched.

Typical use::

    fake = write_mnist_like(mirror / "mnist", n_train=50, n_test=20)
    with serve_directory(mirror, failures={"mnist/train-*": [status(503, times=2)]}) as url:
        table = write_sources_override(tmp_path / "s.json", mnist=fake.override([url + "/mnist/"]))
        monkeypatch.setenv("CNNLAB_SOURCES", str(table))
        download("mnist", dest)
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import hashlib
import io
import json
import pickle
import socket
import struct
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

T = TypeVar("T")

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TARBALL = "cifar-10-python.tar.gz"
CIFAR_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST_BATCH = "test_batch"
CIFAR_META = "batches.meta"
CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def finishes_within(seconds: float, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, run in a thread so that a regression that blocks (reading a
    FIFO, a device, a stalled socket) fails the test after ``seconds`` instead of hanging it."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn.__name__} still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def md5_file(path: Path) -> str:
    return md5_bytes(Path(path).read_bytes())


@dataclass
class FakeFiles:
    """What a writer produced: the md5 tables and sizes ``cnnlab.data.sources`` checks, and
    the arrays the loader must give back ([N, C, H, W] uint8 images, int64 labels)."""

    archives: dict[str, str]
    contents: dict[str, str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str] | None = None
    #: Byte size of every file written (archives and contents), the fakes' own size limits.
    sizes: dict[str, int] = field(default_factory=dict)

    def override(self, mirrors: Sequence[str] | None = None) -> dict:
        """One dataset's entry for ``CNNLAB_SOURCES``: these md5s and sizes, and optionally
        mirrors."""
        entry: dict = {}
        if mirrors is not None:
            entry["mirrors"] = list(mirrors)
        if self.archives:
            entry["archives"] = dict(self.archives)
        if self.contents:
            entry["contents"] = dict(self.contents)
        if self.sizes:
            entry["sizes"] = dict(self.sizes)
        return entry


def write_sources_override(path: Path, **entries: dict) -> Path:
    """Write a ``CNNLAB_SOURCES`` JSON file (dataset name -> ``FakeFiles.override()``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=2))
    return path


# --------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def gzip_bytes(data: bytes, compresslevel: int = 9, mtime: int = 0) -> bytes:
    """Deterministic gzip (no file name, fixed mtime); other levels give other bytes."""
    return gzip.compress(data, compresslevel=compresslevel, mtime=mtime)


def idx_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random 28x28 images and labels cycling through 0..9 (every class present)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


def write_mnist_like(
    directory: Path,
    n_train: int,
    n_test: int,
    gz: bool = True,
    seed: int = 0,
    compresslevel: int = 9,
) -> FakeFiles:
    """Write the four MNIST files into ``directory``: ``*.gz`` as published (``gz=True``) or
    decompressed as torchvision leaves them in ``MNIST/raw`` (``gz=False``).

    ``archives`` always holds the md5 of the .gz bytes (as if published with
    ``compresslevel``), ``contents`` the md5 of the decompressed files.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    train_x, train_y = idx_arrays(n_train, seed)
    test_x, test_y = idx_arrays(n_test, seed + 1)
    arrays = {
        "train_images": train_x,
        "train_labels": train_y,
        "test_images": test_x,
        "test_labels": test_y,
    }
    archives: dict[str, str] = {}
    contents: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for key, name in IDX_FILES.items():
        raw = idx_bytes(arrays[key])
        packed = gzip_bytes(raw, compresslevel)
        archives[f"{name}.gz"] = md5_bytes(packed)
        contents[name] = md5_bytes(raw)
        sizes[f"{name}.gz"], sizes[name] = len(packed), len(raw)
        if gz:
            (directory / f"{name}.gz").write_bytes(packed)
        else:
            (directory / name).write_bytes(raw)
    return FakeFiles(
        archives=archives,
        contents=contents,
        train_images=train_x[:, None],
        train_labels=train_y.astype(np.int64),
        test_images=test_x[:, None],
        test_labels=test_y.astype(np.int64),
        sizes=sizes,
    )


def recompress(path: Path, compresslevel: int = 1, mtime: int = 1) -> str:
    """Rewrite a .gz file with other gzip bytes but the same content; return the new md5."""
    path = Path(path)
    packed = gzip_bytes(gzip.decompress(path.read_bytes()), compresslevel, mtime)
    path.write_bytes(packed)
    return md5_bytes(packed)


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------


def _cifar_pickles(n_per_batch: int, seed: int) -> tuple[dict[str, bytes], FakeFiles]:
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    images: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    for name in [*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH]:
        x = rng.integers(0, 256, size=(n_per_batch, 3, 32, 32), dtype=np.uint8)
        y = (np.arange(n_per_batch) + len(files)) % 10
        entry = {
            "batch_label": f"fake {name}",
            "labels": [int(v) for v in y],
            "data": x.reshape(n_per_batch, 3 * 32 * 32),  # R plane, G plane, B plane per row
            "filenames": [f"fake_{name}_{i}.png" for i in range(n_per_batch)],
        }
        files[name] = pickle.dumps(entry, protocol=2)
        images[name], labels[name] = x, y.astype(np.int64)
    meta = {"label_names": CIFAR_CLASSES, "num_cases_per_batch": n_per_batch, "num_vis": 3072}
    files[CIFAR_META] = pickle.dumps(meta, protocol=2)
    fake = FakeFiles(
        archives={},
        contents={name: md5_bytes(data) for name, data in files.items()},
        train_images=np.concatenate([images[b] for b in CIFAR_TRAIN_BATCHES]),
        train_labels=np.concatenate([labels[b] for b in CIFAR_TRAIN_BATCHES]),
        test_images=images[CIFAR_TEST_BATCH],
        test_labels=labels[CIFAR_TEST_BATCH],
        classes=list(CIFAR_CLASSES),
        sizes={name: len(data) for name, data in files.items()},
    )
    return files, fake


def write_cifar10_batches(directory: Path, n_per_batch: int, seed: int = 0) -> FakeFiles:
    """Write ``directory/cifar-10-batches-py/`` as torchvision leaves it after extraction."""
    files, fake = _cifar_pickles(n_per_batch, seed)
    folder = Path(directory) / CIFAR_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return fake


def write_cifar10_tarball(
    path: Path,
    n_per_batch: int,
    seed: int = 0,
    extra_members: Mapping[str, bytes] | None = None,
    mode: int = 0o644,
    uid: int = 0,
) -> FakeFiles:
    """Write a ``cifar-10-python.tar.gz`` like the published one (members under
    ``cifar-10-batches-py/``), plus ``extra_members`` by raw name (e.g. ``{"../evil": b""}``
    to check that extraction refuses it); every file member has ``mode`` and owner ``uid``.
    ``archives`` is keyed by ``path.name``."""
    files, fake = _cifar_pickles(n_per_batch, seed)
    members = {f"{CIFAR_FOLDER}/{name}": data for name, data in files.items()}
    members[f"{CIFAR_FOLDER}/readme.html"] = b"<html>fake CIFAR-10</html>\n"
    members.update(extra_members or {})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folder = tarfile.TarInfo(CIFAR_FOLDER)
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), mode, uid, uid
            tar.addfile(info, io.BytesIO(data))
    packed = gzip_bytes(buffer.getvalue())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(packed)
    fake.archives = {path.name: md5_bytes(packed)}
    fake.sizes[path.name] = len(packed)
    return fake


# --------------------------------------------------------------------------------------------
# Images: Oxford Flowers-102 and folders of the user's own photos
# --------------------------------------------------------------------------------------------

FLOWERS_TARBALL = "102flowers.tgz"
FLOWERS_LABELS = "imagelabels.mat"
FLOWERS_SETID = "setid.mat"


def image_bytes(
    colour: tuple[int, int, int], size: tuple[int, int], fmt: str = "PNG", seed: int = 0
) -> bytes:
    """An image of ``size`` (width, height) in ``fmt``: a flat ``colour`` with a little noise
    (so JPEG has something to compress), and a white bar across the top third so that the
    orientation and crop of the decoded image can be checked."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    pixels = np.clip(np.asarray(colour, dtype=np.int16) + rng.integers(-8, 9, (h, w, 3)), 0, 255)
    pixels[: max(1, h // 3)] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that announces ``width`` x ``height`` 8-bit gray pixels but holds one row: what
    a decoder sees before decoding (a 12000 x 12000 PNG of zeros is 140 KB), in 100 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(width + 1)))
        + chunk(b"IEND", b"")
    )


#: Class colours of the generated folders: a model can tell them apart after one epoch.
FOLDER_COLOURS = {"apple": (200, 30, 30), "leaf": (30, 160, 40), "sky": (40, 60, 200)}


def write_image_folder(
    root: Path,
    per_class: int = 6,
    classes: Mapping[str, tuple[int, int, int]] = FOLDER_COLOURS,
    bad_files: bool = True,
) -> dict[str, list[str]]:
    """A folder dataset: ``root/<class>/`` with PNGs and JPEGs of varied sizes and shapes,
    plus (``bad_files``) one truncated JPEG and one text file posing as an image.
    Returns the relative paths written, per class (the bad ones under ``"bad"``)."""
    root = Path(root)
    written: dict[str, list[str]] = {}
    for c, (name, colour) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            fmt, ext = ("PNG", "png") if i % 2 == 0 else ("JPEG", "jpg")
            size = (40 + 13 * i, 30 + 7 * ((i + c) % 4))  # wide, tall and square images
            if i % 3 == 2:
                size = size[::-1]
            path = folder / f"{name}_{i:02d}.{ext}"
            path.write_bytes(image_bytes(colour, size, fmt, seed=10 * c + i))
            written.setdefault(name, []).append(path.relative_to(root).as_posix())
    if bad_files:
        first = next(iter(classes))
        truncated = image_bytes(classes[first], (60, 50), "JPEG", seed=99)
        (root / first / "corrupt.jpg").write_bytes(truncated[: len(truncated) // 3])
        (root / first / "notes.png").write_text("not an image, despite the name\n")
        written["bad"] = [f"{first}/corrupt.jpg", f"{first}/notes.png"]
    return written


def flowers_tarball(n_images: int, seed: int = 0) -> bytes:
    """The bytes of a ``102flowers.tgz``: ``jpg/image_00001.jpg``... of varied colours."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folder = tarfile.TarInfo("jpg")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for i in range(1, n_images + 1):
            colour = tuple(int(v) for v in np.random.default_rng(seed + i).integers(0, 256, 3))
            data = image_bytes(colour, (50 + i, 40 + 2 * i), "JPEG", seed=seed + i)
            info = tarfile.TarInfo(f"jpg/image_{i:05d}.jpg")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip_bytes(buffer.getvalue())


def write_flowers102(
    directory: Path, n_images: int = 12, labels: Sequence[int] | None = None, seed: int = 0
) -> FakeFiles:
    """Write ``102flowers.tgz`` (``jpg/image_00001.jpg``...), ``imagelabels.mat`` (``labels``,
    1-based, shape 1xN) and ``setid.mat`` (``trnid``/``valid``/``tstid``, 1-based image
    ids, shape 1xK) into ``directory``, as published. Images cycle through train, val, test.
    ``archives`` holds their md5s; the arrays are left empty (the images are resized)."""
    from scipy.io import savemat

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    labels = list(labels) if labels is not None else [1 + (i % 4) * 30 for i in range(n_images)]
    (directory / FLOWERS_TARBALL).write_bytes(flowers_tarball(n_images, seed))
    ids = np.arange(1, n_images + 1)
    savemat(directory / FLOWERS_LABELS, {"labels": np.asarray([labels], dtype=np.uint8)})
    savemat(
        directory / FLOWERS_SETID,
        {
            "trnid": ids[0::3][None].astype(np.uint16),
            "valid": ids[1::3][None].astype(np.uint16),
            "tstid": ids[2::3][None].astype(np.uint16),
        },
    )
    labels_array = np.asarray(labels, dtype=np.int64) - 1
    names = (FLOWERS_TARBALL, FLOWERS_LABELS, FLOWERS_SETID)
    return FakeFiles(
        archives={name: md5_file(directory / name) for name in names},
        contents={},
        train_images=np.empty(0),
        train_labels=labels_array[0::3],
        test_images=np.empty(0),
        test_labels=labels_array[2::3],
        sizes={name: (directory / name).stat().st_size for name in names},
    )


# --------------------------------------------------------------------------------------------
# A local HTTP server with injectable failures
# --------------------------------------------------------------------------------------------


@dataclass
class Failure:
    """One misbehaviour, applied to the next ``times`` matching requests (None: all of them).

    kind: "status" (answer ``status`` with a short body), "truncate" (200 with the full
    Content-Length but only half the body, then close), "hang" (read the request, then say
    nothing for ``seconds`` or until the server stops), "reset" (close with a TCP reset),
    "endless" (200 without Content-Length, then zeros until the client hangs up), "drip"
    (200 without Content-Length, then one byte every ``seconds``: no read ever times out).
    """

    kind: Literal["status", "truncate", "hang", "reset", "endless", "drip"]
    times: int | None = 1
    status: int = 503
    seconds: float = 30.0


def status(code: int, times: int | None = 1) -> Failure:
    return Failure("status", times=times, status=code)


def truncate(times: int | None = 1) -> Failure:
    return Failure("truncate", times=times)


def hang(times: int | None = 1, seconds: float = 30.0) -> Failure:
    return Failure("hang", times=times, seconds=seconds)


def reset(times: int | None = 1) -> Failure:
    return Failure("reset", times=times)


def endless(times: int | None = 1) -> Failure:
    return Failure("endless", times=times)


def drip(times: int | None = 1, seconds: float = 0.1) -> Failure:
    return Failure("drip", times=times, seconds=seconds)


class ServedURL(str):
    """The server's base URL (``http://127.0.0.1:<port>``, no trailing slash), which also
    records every request as ``(path, outcome)``: outcome "200", "404", "503", "truncated",
    "hang", "reset"..."""

    requests: list[tuple[str, str]]

    def outcomes(self, pattern: str = "*") -> list[str]:
        """Outcomes of the requests whose path (no leading slash) matches ``pattern``."""
        return [outcome for path, outcome in self.requests if fnmatch.fnmatch(path, pattern)]


class _Handler(SimpleHTTPRequestHandler):
    plan: dict[str, list[Failure]]
    lock: threading.Lock
    stop: threading.Event
    log_to: list[tuple[str, str]]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _record(self, outcome: str) -> None:
        with self.lock:
            self.log_to.append((self.path.split("?", 1)[0].lstrip("/"), outcome))

    def _next_failure(self) -> Failure | None:
        path = self.path.split("?", 1)[0].lstrip("/")
        with self.lock:
            for pattern, failures in self.plan.items():
                if not fnmatch.fnmatch(path, pattern):
                    continue
                for failure in failures:
                    if failure.times is None:
                        return failure
                    if failure.times > 0:
                        failure.times -= 1
                        return failure
        return None

    def do_GET(self) -> None:
        failure = self._next_failure()
        if failure is None:
            file = Path(self.translate_path(self.path))
            self._record("200" if file.is_file() else "404")
            super().do_GET()
        elif failure.kind == "status":
            self._record(str(failure.status))
            self.send_error(failure.status)
        elif failure.kind == "truncate":
            self._record("truncated")
            data = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif failure.kind == "hang":
            self._record("hang")
            self.stop.wait(failure.seconds)
            self.close_connection = True
        elif failure.kind in ("endless", "drip"):
            self._record(failure.kind)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()  # no Content-Length: the body ends when the connection does
            with contextlib.suppress(OSError):  # the client hung up: what it should do
                if failure.kind == "endless":
                    chunk = bytes(64 << 10)
                    while not self.stop.is_set():
                        self.wfile.write(chunk)
                else:
                    while not self.stop.wait(failure.seconds):
                        self.wfile.write(b"\0")
            self.close_connection = True
        else:
            self._record("reset")
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # resets and hangs make handlers fail on purpose; keep test output clean


@contextlib.contextmanager
def serve_directory(
    path: Path,
    failures: Mapping[str, Failure | Sequence[Failure]] | None = None,
) -> Iterator[ServedURL]:
    """Serve ``path`` over HTTP on 127.0.0.1 (a free port) while the block runs.

    ``failures`` maps a glob on the request path (relative, e.g. ``"mnist/train-*"`` or
    ``"*"``) to the misbehaviours to apply, in order, before the file is served normally.
    Counts are shared by all requests matching a pattern: ``{"mnist/*": [status(503,
    times=2)]}`` answers the first two requests under mnist/ with 503, then serves files;
    ``times=None`` means "always". The first matching pattern wins.
    """
    plan = {
        pattern: [f] if isinstance(f, Failure) else list(f)
        for pattern, f in (failures or {}).items()
    }
    # Copies, so that a caller's Failure objects are not used up by the server.
    plan = {
        p: [Failure(f.kind, f.times, f.status, f.seconds) for f in fs] for p, fs in plan.items()
    }
    log: list[tuple[str, str]] = []
    stop = threading.Event()
    handler = type(
        "Handler",
        (_Handler,),
        {
            "plan": plan,
            "lock": threading.Lock(),
            "stop": stop,
            "log_to": log,
        },
    )

    def make_handler(*args: object) -> _Handler:
        return handler(*args, directory=str(path))

    server = _Server(("127.0.0.1", 0), make_handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    url = ServedURL(f"http://127.0.0.1:{server.server_address[1]}")
    url.requests = log
    try:
        yield url
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
