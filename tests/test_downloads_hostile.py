"""Downloads and archives that try to do harm: bombs, endless or trickling servers, archive
members that escape, mirror entries that are not files, and the scratch left by a killed run.

Torch-free on purpose, so that CI also runs it under a Python whose tarfile has no
extraction filters (Debian 12's 3.11.2, see .ci/run) in a small environment without torch:
torchvision's tables of file names are replaced by the same names here (test_sources.py
checks the real ones), and md5s are computed with hashlib. The fakes' md5s and sizes come
through the ``CNNLAB_SOURCES`` override, as in test_sources.py.
"""

from __future__ import annotations

import fcntl
import gzip
import io
import os
import stat
import tarfile
import time
from pathlib import Path

import pytest
from fake_datasets import (
    CIFAR_FOLDER,
    CIFAR_META,
    CIFAR_TARBALL,
    CIFAR_TEST_BATCH,
    CIFAR_TRAIN_BATCHES,
    FLOWERS_LABELS,
    FLOWERS_SETID,
    FLOWERS_TARBALL,
    IDX_FILES,
    drip,
    endless,
    finishes_within,
    flowers_tarball,
    gzip_bytes,
    md5_file,
    serve_directory,
    write_cifar10_tarball,
    write_mnist_like,
    write_sources_override,
)

from cnnlab.data import archives, cifar, flowers, mnist, sources
from cnnlab.data.sources import OVERRIDE_ENV, DataError, RetryPolicy, Source, download

FAST = RetryPolicy(attempts=3, backoff=0.01, timeout=2.0)
NOWHERE = ("http://127.0.0.1:9/never-used/",)


def _table(name: str) -> Source:
    """torchvision's file names and folders for ``name``; md5s come from the override."""
    unknown = "0" * 32
    if name == "mnist":
        published = {f"{n}.gz": unknown for n in IDX_FILES.values()}
        contents = {n: unknown for n in IDX_FILES.values()}
        family, folder = mnist, "MNIST/raw"
    elif name == "cifar10":
        published = {CIFAR_TARBALL: unknown}
        contents = {n: unknown for n in [*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH, CIFAR_META]}
        family, folder = cifar, CIFAR_FOLDER
    elif name == "flowers102":
        published = {n: unknown for n in (FLOWERS_TARBALL, FLOWERS_LABELS, FLOWERS_SETID)}
        contents, family, folder = {}, flowers, "flowers-102"
    else:
        raise AssertionError(f"no table for {name}")
    unpacked = getattr(family, "UNPACKED", {}).get(name, {})
    return Source(name, NOWHERE, published, contents, folder, family.SIZES[name], unpacked)


@pytest.fixture(autouse=True)
def without_torchvision(monkeypatch):
    monkeypatch.setattr(sources, "_torchvision_source", _table)
    monkeypatch.setattr(archives, "md5", md5_file)


@pytest.fixture
def expect(tmp_path, monkeypatch):
    """Make ``sources`` expect the given fakes: ``expect(mnist=fake.override([...]))``."""

    def install(**entries: dict) -> None:
        table = write_sources_override(tmp_path / "sources.json", **entries)
        monkeypatch.setenv(OVERRIDE_ENV, str(table))

    return install


@pytest.fixture(params=["data filter", "own checks"])
def tar_rules(request, monkeypatch) -> str:
    """Each extraction test twice: with tarfile's "data" filter, and with the checks used
    where tarfile has none (Python < 3.10.12 / 3.11.4), filters monkeypatched away."""
    if request.param == "data filter" and not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python's tarfile has no extraction filters")
    if request.param == "own checks":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return request.param


def leftovers(dest: Path) -> list[str]:
    """Anything download() leaves next to dest besides dest itself (scratch dirs, .part)."""
    return sorted(p.name for p in dest.parent.iterdir() if p.name != dest.name)


def tarball(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes]) -> str:
    """Write a .tar.gz of ``members`` (file contents from ``data``); return its md5."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            body = data.get(member.name)
            if body is not None:
                member.size = len(body)
            tar.addfile(member, io.BytesIO(body) if body is not None else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip_bytes(buffer.getvalue()))
    return md5_file(path)


def member(name: str, kind: bytes = tarfile.REGTYPE, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


# --------------------------------------------------------------------------------------------
# Tar archives, with and without tarfile's extraction filters
# --------------------------------------------------------------------------------------------


def test_cifar10_tarball_is_extracted_with_plain_modes_and_owner(tmp_path, expect, tar_rules):
    mirror = tmp_path / "mirror"
    fake = write_cifar10_tarball(
        mirror / "cifar10" / CIFAR_TARBALL, n_per_batch=3, mode=0o6777, uid=4242
    )
    expect(cifar10=fake.override())
    dest = tmp_path / "raw" / "cifar10"
    download("cifar10", dest, mirror=mirror, retry=FAST)
    assert sorted(p.name for p in dest.iterdir()) == [CIFAR_FOLDER]  # tarball not kept
    batch = (dest / CIFAR_FOLDER / "data_batch_1").stat()
    assert stat.S_IMODE(batch.st_mode) == 0o755  # no setuid/setgid, no write for others
    assert (batch.st_uid, batch.st_gid) == (os.getuid(), os.getgid())
    assert md5_file(dest / CIFAR_FOLDER / "test_batch") == fake.contents["test_batch"]
    assert leftovers(dest) == []


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (lambda tmp: member(f"{CIFAR_FOLDER}/../../evil"), "lies outside 'cifar-10-batches-py/'"),
        (lambda tmp: member(str(tmp / "absolute-evil")), "lies outside"),
        (lambda tmp: member("elsewhere/evil"), "lies outside"),
        (
            lambda tmp: member(f"{CIFAR_FOLDER}/x", tarfile.SYMTYPE, linkname="/etc/passwd"),
            "is a link",
        ),
        (
            lambda tmp: member(f"{CIFAR_FOLDER}/x", tarfile.LNKTYPE, linkname="/etc/passwd"),
            "is a link",
        ),
        (
            lambda tmp: member(f"{CIFAR_FOLDER}/x", tarfile.CHRTYPE, devmajor=1, devminor=5),
            "special file",
        ),
        (lambda tmp: member(f"{CIFAR_FOLDER}/x", tarfile.FIFOTYPE), "special file"),
    ],
    ids=["dotdot", "absolute", "other-folder", "symlink", "hardlink", "device", "fifo"],
)
def test_tar_members_that_could_escape_are_refused(tmp_path, expect, tar_rules, bad, words):
    bad = bad(tmp_path)
    path = tmp_path / "mirror/cifar10" / CIFAR_TARBALL
    md5 = tarball(path, [member(CIFAR_FOLDER, tarfile.DIRTYPE, mode=0o755), bad], {})
    expect(cifar10={"archives": {CIFAR_TARBALL: md5}})  # vouched for: only extraction refuses
    dest = tmp_path / "raw" / "cifar10"
    with pytest.raises(DataError) as err:
        download("cifar10", dest, mirror=tmp_path / "mirror", retry=FAST)
    assert f"refusing to extract: member '{bad.name}'" in str(err.value)
    assert words in str(err.value)
    assert not list(tmp_path.rglob("*evil")) and not list(tmp_path.rglob("x"))
    assert not dest.exists() and leftovers(dest) == []


def test_tar_bomb_is_refused_before_it_is_written(tmp_path, expect, tar_rules):
    """A member of 8 MiB of zeros (8 KiB compressed) in an archive vouched for by md5:
    the limit on what the archive may unpack to stops it, not the disk filling up."""
    zeros = bytes(8 << 20)
    path = tmp_path / "mirror/cifar10" / CIFAR_TARBALL
    fake = write_cifar10_tarball(path, n_per_batch=1, extra_members={f"{CIFAR_FOLDER}/z": zeros})
    assert path.stat().st_size < 64 << 10
    limit = sum(fake.sizes[n] for n in fake.contents) + 1000
    entry = fake.override()
    entry["unpacked"] = {CIFAR_TARBALL: {"max_bytes": limit, "max_members": 16}}
    expect(cifar10=entry)
    dest = tmp_path / "raw" / "cifar10"
    with pytest.raises(DataError) as err:
        download("cifar10", dest, mirror=tmp_path / "mirror", retry=FAST)
    assert f"its members hold more than {limit} bytes (at '{CIFAR_FOLDER}/z'" in str(err.value)
    assert not dest.exists() and leftovers(dest) == []


def test_tar_with_too_many_members_is_refused(tmp_path, expect, tar_rules):
    extra = {f"{CIFAR_FOLDER}/{i:05d}": b"" for i in range(40)}
    fake = write_cifar10_tarball(
        tmp_path / "mirror/cifar10" / CIFAR_TARBALL, n_per_batch=1, extra_members=extra
    )
    expect(cifar10=fake.override())
    with pytest.raises(DataError, match="refusing to extract: more than 16 members"):
        download("cifar10", tmp_path / "raw/cifar10", mirror=tmp_path / "mirror", retry=FAST)
    assert not (tmp_path / "raw/cifar10").exists()


def test_tar_headers_are_capped_too(tmp_path, expect, tar_rules):
    """A member of no size with 4 MiB of pax headers: what tarfile reads is bounded as well,
    not only the members' sizes."""
    path = tmp_path / "mirror/cifar10" / CIFAR_TARBALL
    big = member(f"{CIFAR_FOLDER}/x", pax_headers={"comment": "x" * (4 << 20)})
    md5 = tarball(path, [big], {f"{CIFAR_FOLDER}/x": b""})
    limits = {"max_bytes": 1000, "max_members": 16}  # about 54 KB of tar data in all
    expect(cifar10={"archives": {CIFAR_TARBALL: md5}, "unpacked": {CIFAR_TARBALL: limits}})
    with pytest.raises(DataError, match=r"more than \d+ bytes of tar data \(headers included\)"):
        download("cifar10", tmp_path / "raw/cifar10", mirror=tmp_path / "mirror", retry=FAST)
    assert not (tmp_path / "raw/cifar10").exists()


def test_flowers102_tarball_is_extracted(tmp_path, expect, tar_rules):
    folder = tmp_path / "mirror/flowers102"
    folder.mkdir(parents=True)
    (folder / FLOWERS_TARBALL).write_bytes(flowers_tarball(5))
    (folder / FLOWERS_LABELS).write_bytes(b"MATLAB 5.0, not read by download")
    (folder / FLOWERS_SETID).write_bytes(b"MATLAB 5.0, neither")
    names = (FLOWERS_TARBALL, FLOWERS_LABELS, FLOWERS_SETID)
    expect(flowers102={"archives": {n: md5_file(folder / n) for n in names}})
    dest = tmp_path / "raw/flowers102"
    download("flowers102", dest, mirror=tmp_path / "mirror", retry=FAST)
    images = sorted(p.name for p in (dest / "flowers-102/jpg").iterdir())
    assert images == [f"image_{i:05d}.jpg" for i in range(1, 6)]
    assert not (dest / "flowers-102" / FLOWERS_TARBALL).exists()


# --------------------------------------------------------------------------------------------
# gzip
# --------------------------------------------------------------------------------------------


def test_gzip_bomb_stops_at_the_decompressed_size(tmp_path, expect):
    mirror = tmp_path / "mirror"
    fake = write_mnist_like(mirror / "mnist", n_train=10, n_test=10)
    bomb = mirror / "mnist/train-labels-idx1-ubyte.gz"
    bomb.write_bytes(gzip.compress(bytes(8 << 20), mtime=0))  # 8 MiB of zeros in 8 KiB
    expect(mnist=fake.override())
    assert bomb.stat().st_size < mnist.download_cap(sources.source("mnist"), bomb.name)
    dest = tmp_path / "raw/mnist"
    with pytest.raises(DataError) as err:
        download("mnist", dest, mirror=mirror, retry=FAST)
    message = str(err.value)
    size = fake.sizes["train-labels-idx1-ubyte"]
    assert f"{bomb}: checksum mismatch" in message
    assert f"decompresses to more than the {size} bytes train-labels-idx1-ubyte has" in message
    assert not dest.exists() and leftovers(dest) == []


# --------------------------------------------------------------------------------------------
# HTTP: size caps and the time budget
# --------------------------------------------------------------------------------------------


def test_endless_body_is_cut_at_the_size_cap_and_the_next_mirror_used(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "www/good", n_train=10, n_test=10)
    (tmp_path / "www/bad").mkdir()
    dest = tmp_path / "raw/mnist"
    with serve_directory(tmp_path / "www", {"bad/*": endless(None)}) as url:
        expect(mnist=fake.override([f"{url}/bad/", f"{url}/good/"]))
        started = time.monotonic()
        finishes_within(30, download, "mnist", dest, retry=FAST)
        assert time.monotonic() - started < 10
        assert url.outcomes("bad/*") == ["endless"] * 4  # once per file: never retried
    assert (dest / "MNIST/raw/train-images-idx3-ubyte").is_file()
    assert leftovers(dest) == [] and sorted(p.name for p in dest.rglob("*.part")) == []


def test_endless_body_from_the_only_mirror_is_reported(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "www/mnist", n_train=10, n_test=10)
    dest = tmp_path / "raw/mnist"
    with serve_directory(tmp_path / "www", {"*": endless(None)}) as url:
        expect(mnist=fake.override())
        with pytest.raises(DataError) as err:
            finishes_within(30, download, "mnist", dest, mirror=url, retry=FAST)
    cap = mnist.download_cap(sources.source("mnist"), "train-images-idx3-ubyte.gz")
    assert (
        f"{url}/mnist/train-images-idx3-ubyte.gz: the server kept sending, more than the "
        f"{cap} bytes train-images-idx3-ubyte.gz can have: this is not the published file"
    ) in str(err.value)
    assert not dest.exists() and leftovers(dest) == []


def test_announced_oversize_is_refused_without_reading(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "www/mnist", n_train=10, n_test=10)
    (tmp_path / "www/mnist/t10k-labels-idx1-ubyte.gz").write_bytes(os.urandom(200_000))
    expect(mnist=fake.override())
    cap = mnist.download_cap(sources.source("mnist"), "t10k-labels-idx1-ubyte.gz")
    assert cap < 200_000
    with serve_directory(tmp_path / "www") as url, pytest.raises(DataError) as err:
        download("mnist", tmp_path / "raw/mnist", mirror=url, retry=FAST)
    assert (
        f"{url}/mnist/t10k-labels-idx1-ubyte.gz: the server announces 200000 bytes, more than "
        f"the {cap} bytes t10k-labels-idx1-ubyte.gz can have"
    ) in str(err.value)


def test_trickling_server_runs_out_of_its_time_budget(tmp_path, expect):
    """One byte every 0.1 s: no single read times out (1 s), the budget (0.5 s) does."""
    fake = write_mnist_like(tmp_path / "www/mnist", n_train=10, n_test=10)
    dest = tmp_path / "raw/mnist"
    slow = RetryPolicy(attempts=3, backoff=0.01, timeout=1.0, budget=0.5, min_rate=1e12)
    with serve_directory(tmp_path / "www", {"*": drip(None, seconds=0.1)}) as url:
        expect(mnist=fake.override([f"{url}/mnist/"]))
        started = time.monotonic()
        with pytest.raises(DataError) as err:
            finishes_within(30, download, "mnist", dest, retry=slow)
        assert time.monotonic() - started < 3
        assert url.outcomes() == ["drip"]  # the budget is spent: no second attempt
    message = str(err.value)
    assert f"{url}/mnist/train-images-idx3-ubyte.gz: no complete file within its time" in message
    assert "budget of 0.5 s" in message and "set data.mirror in params.yaml" in message
    assert not dest.exists() and leftovers(dest) == []


# --------------------------------------------------------------------------------------------
# Local mirrors: entries that are not files
# --------------------------------------------------------------------------------------------


def test_mirror_entries_that_are_not_files_are_named(tmp_path, expect):
    mirror = tmp_path / "mirror"
    fake = write_mnist_like(mirror / "mnist", n_train=5, n_test=5)
    expect(mnist=fake.override())
    (mirror / "mnist/train-images-idx3-ubyte.gz").unlink()
    (mirror / "mnist/train-images-idx3-ubyte.gz").mkdir()
    (mirror / "mnist/MNIST/raw").mkdir(parents=True)
    os.mkfifo(mirror / "mnist/MNIST/raw/train-images-idx3-ubyte.gz")  # a reader would block
    (mirror / "mnist/MNIST/raw/train-images-idx3-ubyte").symlink_to("/dev/zero")
    with pytest.raises(DataError) as err:
        finishes_within(30, download, "mnist", tmp_path / "raw/mnist", mirror=mirror)
    message = str(err.value)
    assert f"{mirror}/mnist/train-images-idx3-ubyte.gz: is a directory, not a file" in message
    not_regular = "is not a regular file (a device, FIFO or socket), so it is not read"
    assert f"{mirror}/mnist/MNIST/raw/train-images-idx3-ubyte.gz: {not_regular}" in message
    assert f"{mirror}/mnist/MNIST/raw/train-images-idx3-ubyte: {not_regular}" in message
    assert "not found" not in message


# --------------------------------------------------------------------------------------------
# What a killed download leaves behind
# --------------------------------------------------------------------------------------------


def test_scratch_left_by_a_killed_download_is_removed_next_time(tmp_path, expect):
    mirror = tmp_path / "mirror"
    fake = write_mnist_like(mirror / "mnist", n_train=5, n_test=5)
    expect(mnist=fake.override())
    dest = tmp_path / "raw/mnist"
    stale = tmp_path / "raw/.mnist.k1ll3d.partial"
    (stale / "out/MNIST/raw").mkdir(parents=True)
    (stale / "out/MNIST/raw/.train-images-idx3-ubyte.gz.x.part").write_bytes(b"half")
    running = tmp_path / "raw/.mnist.runn1ng.partial"  # another process's download, locked
    running.mkdir()
    fd = os.open(running, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        unrelated = tmp_path / "raw/.cifar10.abc.partial"
        unrelated.mkdir()
        download("mnist", dest, mirror=mirror, retry=FAST)
        assert not stale.exists()
        assert running.is_dir() and unrelated.is_dir()
    finally:
        os.close(fd)
    assert (dest / "MNIST/raw/t10k-labels-idx1-ubyte").is_file()
    download("mnist", dest, mirror=mirror, retry=FAST)  # the lock is gone: now it is stale
    assert leftovers(dest) == [".cifar10.abc.partial"]
