"""cnnlab.data.sources: download (HTTP and local mirrors, retries, checksums, atomicity) and
load_raw, on small files in the real formats (tests/fake_datasets.py), offline.

The fakes have their own md5s and URLs; the tests tell the module to expect them through
the ``CNNLAB_SOURCES`` override, the one place every checksum lookup goes through.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from fake_datasets import (
    CIFAR_FOLDER,
    CIFAR_TARBALL,
    FLOWERS_LABELS,
    FLOWERS_SETID,
    FLOWERS_TARBALL,
    IDX_FILES,
    FakeFiles,
    hang,
    idx_bytes,
    md5_file,
    recompress,
    reset,
    serve_directory,
    status,
    truncate,
    write_cifar10_batches,
    write_cifar10_tarball,
    write_flowers102,
    write_mnist_like,
    write_sources_override,
)

from cnnlab.data import sources
from cnnlab.data.catalog import ResizedOptions
from cnnlab.data.sources import OVERRIDE_ENV, DataError, RetryPolicy, download, load_raw

FAST = RetryPolicy(attempts=3, backoff=0.01, timeout=2.0)
#: A local mirror holding the real MNIST files (``<mirror>/mnist/*.gz``), when one is at hand.
REAL_MIRROR_ENV = "CNNLAB_TEST_REAL_MIRROR"
TV_FOLDER = {"mnist": "MNIST/raw", "fashion_mnist": "FashionMNIST/raw"}


@pytest.fixture
def expect(tmp_path, monkeypatch):
    """Make ``sources`` expect the given fakes: ``expect(mnist=fake.override([...]))``."""

    def install(**entries: dict) -> None:
        table = write_sources_override(tmp_path / "sources.json", **entries)
        monkeypatch.setenv(OVERRIDE_ENV, str(table))

    return install


def leftovers(dest: Path) -> list[str]:
    """Anything download() leaves next to dest besides dest itself (scratch dirs, .part)."""
    return sorted(p.name for p in dest.parent.iterdir() if p.name != dest.name)


def assert_matches(raw: sources.RawDataset, fake: FakeFiles, shape: tuple[int, int, int]) -> None:
    assert raw.train_images.dtype == np.uint8 and raw.test_images.dtype == np.uint8
    assert raw.train_labels.dtype == np.int64 and raw.test_labels.dtype == np.int64
    assert tuple(raw.train_images.shape) == (len(fake.train_labels), *shape)
    assert tuple(raw.test_images.shape) == (len(fake.test_labels), *shape)
    assert np.array_equal(raw.train_images, fake.train_images)
    assert np.array_equal(raw.test_images, fake.test_images)
    assert np.array_equal(raw.train_labels, fake.train_labels)
    assert np.array_equal(raw.test_labels, fake.test_labels)


# --------------------------------------------------------------------------------------------
# Over HTTP, through the "public mirrors" path
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_dataset_over_http(name, tmp_path, expect):
    from torchvision import datasets as tvd

    fake = write_mnist_like(tmp_path / "www" / name, n_train=30, n_test=12)
    dest = tmp_path / "raw" / name
    with serve_directory(tmp_path / "www") as url:
        expect(**{name: fake.override([f"{url}/{name}/"])})
        download(name, dest, retry=FAST)
        assert sorted(set(url.outcomes())) == ["200"]
    folder = dest / TV_FOLDER[name]
    for content in IDX_FILES.values():
        assert (folder / content).is_file() and (folder / f"{content}.gz").is_file()
    assert leftovers(dest) == []

    raw = load_raw(name, dest)
    assert_matches(raw, fake, (1, 28, 28))
    cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
    assert raw.classes == list(cls.classes)


def test_cifar10_over_http(tmp_path, expect, monkeypatch):
    fake = write_cifar10_tarball(tmp_path / "www" / CIFAR_TARBALL, n_per_batch=6)
    dest = tmp_path / "raw" / "cifar10"

    def no_unpickling(*args, **kwargs):
        raise AssertionError("download must never unpickle")

    with serve_directory(tmp_path / "www") as url:
        expect(cifar10=fake.override([f"{url}/"]))
        with monkeypatch.context() as m:
            m.setattr(pickle, "load", no_unpickling)
            m.setattr(pickle, "loads", no_unpickling)
            download("cifar10", dest, retry=FAST)
    assert sorted(p.name for p in dest.iterdir()) == [CIFAR_FOLDER]  # tarball not kept
    assert (dest / CIFAR_FOLDER / "data_batch_5").is_file()

    raw = load_raw("cifar10", dest)
    assert_matches(raw, fake, (3, 32, 32))
    assert raw.classes == fake.classes


def test_next_mirror_after_404_without_retrying_it(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "www" / "good", n_train=10, n_test=10)
    (tmp_path / "www" / "gone").mkdir()
    dest = tmp_path / "raw" / "mnist"
    with serve_directory(tmp_path / "www") as url:
        expect(mnist=fake.override([f"{url}/gone/", f"{url}/good/"]))
        download("mnist", dest, retry=FAST)
        assert url.outcomes("gone/*") == ["404"] * 4  # once per file: 404 is not retried
        assert url.outcomes("good/*") == ["200"] * 4
    assert load_raw("mnist", dest).train_images.shape == (10, 1, 28, 28)


def test_503_then_200_is_retried(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "www" / "mnist", n_train=10, n_test=10)
    dest = tmp_path / "raw" / "mnist"
    failures = {"mnist/train-images-*": [status(503, times=2)]}
    with serve_directory(tmp_path / "www", failures) as url:
        expect(mnist=fake.override([f"{url}/mnist/"]))
        download("mnist", dest, retry=FAST)
        assert url.outcomes("mnist/train-images-*") == ["503", "503", "200"]
    assert (dest / "MNIST/raw/train-images-idx3-ubyte").is_file()


def test_next_mirror_after_persistent_503(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "www" / "good", n_train=10, n_test=10)
    dest = tmp_path / "raw" / "mnist"
    with serve_directory(tmp_path / "www", {"bad/*": [status(503, times=None)]}) as url:
        expect(mnist=fake.override([f"{url}/bad/", f"{url}/good/"]))
        download("mnist", dest, retry=FAST)
        assert url.outcomes("bad/*") == ["503"] * (FAST.attempts * 4)
    assert (dest / "MNIST/raw/t10k-labels-idx1-ubyte").is_file()


def test_user_http_mirror_down_is_not_probed_for_other_layouts(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "www" / "mnist", n_train=10, n_test=10)
    expect(mnist=fake.override())
    dest = tmp_path / "raw" / "mnist"
    with serve_directory(tmp_path / "www", {"*": [status(503, times=None)]}) as url:
        with pytest.raises(DataError) as info:
            download("mnist", dest, mirror=url, retry=FAST)
        assert url.requests == [("mnist/train-images-idx3-ubyte.gz", "503")] * FAST.attempts
    assert f"the mirror {url} did not answer properly: retry later" in str(info.value)
    assert not dest.exists() and leftovers(dest) == []


@pytest.mark.parametrize(
    "failure", [truncate(), reset(), hang(seconds=10)], ids=["truncated", "reset", "timeout"]
)
def test_transient_failure_once_then_success(failure, tmp_path, expect):
    fake = write_mnist_like(tmp_path / "www" / "mnist", n_train=10, n_test=10)
    dest = tmp_path / "raw" / "mnist"
    quick = RetryPolicy(attempts=3, backoff=0.01, timeout=0.5)
    with serve_directory(tmp_path / "www", {"mnist/t10k-images-*": [failure]}) as url:
        expect(mnist=fake.override([f"{url}/mnist/"]))
        download("mnist", dest, retry=quick)
        assert url.outcomes("mnist/t10k-images-*")[-1] == "200"
        assert len(url.outcomes("mnist/t10k-images-*")) == 2
    assert load_raw("mnist", dest).test_images.shape == (10, 1, 28, 28)


def test_404_everywhere_fails_with_a_useful_message(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "elsewhere", n_train=10, n_test=10)
    (tmp_path / "www").mkdir()
    dest = tmp_path / "raw" / "mnist"
    with serve_directory(tmp_path / "www") as url:
        mirrors = [f"{url}/a/", f"{url}/b/"]
        expect(mnist=fake.override(mirrors))
        with pytest.raises(DataError) as info:
            download("mnist", dest, retry=FAST)
        assert url.outcomes() == ["404", "404"]  # gave up on the first file, no retries
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message
    for mirror in mirrors:
        assert f"{mirror}train-images-idx3-ubyte.gz: HTTP 404" in message
    assert "retry later" in message and "data.mirror" in message and "params.yaml" in message
    assert "without any download: scikit-learn's bundled digits" in message  # the other way out
    assert not dest.exists() and leftovers(dest) == []


def test_always_truncated_body_is_an_error(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "www" / "mnist", n_train=10, n_test=10)
    dest = tmp_path / "raw" / "mnist"
    with serve_directory(tmp_path / "www", {"mnist/train-labels-*": [truncate(None)]}) as url:
        expect(mnist=fake.override([f"{url}/mnist/"]))
        with pytest.raises(DataError) as info:
            download("mnist", dest, retry=FAST)
        assert url.outcomes("mnist/train-labels-*") == ["truncated"] * FAST.attempts
    message = str(info.value)
    assert "train-labels-idx1-ubyte.gz" in message and "truncated body" in message
    assert f"gave up after {FAST.attempts} attempts" in message
    assert not dest.exists() and leftovers(dest) == []


def test_persistent_timeout_is_reported(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "www" / "mnist", n_train=10, n_test=10)
    dest = tmp_path / "raw" / "mnist"
    quick = RetryPolicy(attempts=2, backoff=0.01, timeout=0.3)
    with serve_directory(tmp_path / "www", {"*": [hang(None, seconds=10)]}) as url:
        expect(mnist=fake.override([f"{url}/mnist/"]))
        with pytest.raises(DataError, match=r"timed out \(gave up after 2 attempts\)"):
            download("mnist", dest, retry=quick)
    assert not dest.exists() and leftovers(dest) == []


def test_wrong_checksum_names_both_md5s_and_leaves_nothing(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "www" / "mnist", n_train=10, n_test=10)
    entry = fake.override()
    entry["archives"]["t10k-labels-idx1-ubyte.gz"] = "0" * 32
    entry["contents"]["t10k-labels-idx1-ubyte"] = "1" * 32
    dest = tmp_path / "raw" / "mnist"
    with serve_directory(tmp_path / "www") as url:
        entry["mirrors"] = [f"{url}/mnist/"]
        expect(mnist=entry)
        with pytest.raises(DataError) as info:
            download("mnist", dest, retry=FAST)
    message = str(info.value)
    actual = md5_file(tmp_path / "www/mnist/t10k-labels-idx1-ubyte.gz")
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert f"expected md5 {'0' * 32}, got {actual}" in message
    assert f"expected md5 {'1' * 32}, got {fake.contents['t10k-labels-idx1-ubyte']}" in message
    assert "damaged or is not the published version" in message
    assert not dest.exists() and leftovers(dest) == []


def test_failed_download_keeps_the_previous_copy(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "www" / "mnist", n_train=10, n_test=10)
    expect(mnist=fake.override())
    dest = tmp_path / "raw" / "mnist"
    download("mnist", dest, mirror=str(tmp_path / "www"), retry=FAST)
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    (tmp_path / "www/mnist/train-images-idx3-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(DataError):
        download("mnist", dest, mirror=str(tmp_path / "www"), retry=FAST)
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before
    assert leftovers(dest) == []
    # and a good download replaces it
    write_mnist_like(tmp_path / "www" / "mnist", n_train=10, n_test=10)
    download("mnist", dest, mirror=str(tmp_path / "www"), retry=FAST)
    assert leftovers(dest) == []


# --------------------------------------------------------------------------------------------
# Local directory mirrors (data.mirror)
# --------------------------------------------------------------------------------------------


def test_local_mirror_published_layout(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "mirror" / "fashion_mnist", n_train=20, n_test=10)
    expect(fashion_mnist=fake.override(["http://127.0.0.1:9/never-used/"]))
    dest = tmp_path / "raw" / "fashion_mnist"
    download("fashion_mnist", dest, mirror=str(tmp_path / "mirror"), retry=FAST)
    assert_matches(load_raw("fashion_mnist", dest), fake, (1, 28, 28))


def test_local_mirror_torchvision_layout_idx(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "mirror/mnist/MNIST/raw", n_train=20, n_test=10, gz=False)
    expect(mnist=fake.override())
    dest = tmp_path / "raw" / "mnist"
    download("mnist", dest, mirror=tmp_path / "mirror", retry=FAST)
    assert_matches(load_raw("mnist", dest), fake, (1, 28, 28))


def test_local_mirror_torchvision_layout_cifar(tmp_path, expect):
    fake = write_cifar10_batches(tmp_path / "mirror" / "cifar10", n_per_batch=4)
    expect(cifar10={"contents": fake.contents, "sizes": fake.sizes})
    dest = tmp_path / "raw" / "cifar10"
    download("cifar10", dest, mirror=str(tmp_path / "mirror"), retry=FAST)
    assert_matches(load_raw("cifar10", dest), fake, (3, 32, 32))


def test_http_mirror_torchvision_layout_cifar(tmp_path, expect):
    fake = write_cifar10_batches(tmp_path / "www" / "cifar10", n_per_batch=4)
    expect(cifar10={"contents": fake.contents, "sizes": fake.sizes})
    dest = tmp_path / "raw" / "cifar10"
    with serve_directory(tmp_path / "www") as url:
        download("cifar10", dest, mirror=url, retry=FAST)
        assert url.outcomes(f"cifar10/{CIFAR_TARBALL}") == ["404"]
    assert_matches(load_raw("cifar10", dest), fake, (3, 32, 32))


def test_recompressed_gzip_is_verified_by_decompressed_md5(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "mirror" / "mnist", n_train=20, n_test=10)
    for name in IDX_FILES.values():
        path = tmp_path / "mirror/mnist" / f"{name}.gz"
        assert recompress(path) != fake.archives[path.name]
    expect(mnist=fake.override())
    dest = tmp_path / "raw" / "mnist"
    download("mnist", dest, mirror=str(tmp_path / "mirror"), retry=FAST)
    assert_matches(load_raw("mnist", dest), fake, (1, 28, 28))


def test_recompressed_gzip_without_decompressed_md5s_is_rejected(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "mirror" / "fashion_mnist", n_train=20, n_test=10)
    recompress(tmp_path / "mirror/fashion_mnist/train-images-idx3-ubyte.gz")
    entry = fake.override()
    entry["contents"] = {}  # as if no md5s of the decompressed files were known
    expect(fashion_mnist=entry)
    dest = tmp_path / "raw" / "fashion_mnist"
    with pytest.raises(DataError, match="recompressed copy it cannot be verified"):
        download("fashion_mnist", dest, mirror=str(tmp_path / "mirror"), retry=FAST)
    assert not dest.exists() and leftovers(dest) == []


def test_missing_mirror_folder_is_explained(tmp_path):
    (tmp_path / "mirror").mkdir()
    with pytest.raises(DataError, match="has no 'mnist/' folder"):
        download("mnist", tmp_path / "raw/mnist", mirror=str(tmp_path / "mirror"))
    with pytest.raises(DataError, match="not a directory"):
        download("mnist", tmp_path / "raw/mnist", mirror=str(tmp_path / "nowhere"))
    (tmp_path / "mirror" / "mnist").mkdir()  # the dataset's folder given for the mirror's
    with pytest.raises(DataError) as err:
        download("mnist", tmp_path / "raw/mnist", mirror=str(tmp_path / "mirror" / "mnist"))
    assert str(err.value) == (
        f"data.mirror is {tmp_path / 'mirror' / 'mnist'}, the 'mnist/' folder itself: set "
        f"data.mirror in params.yaml to the folder that holds it, {tmp_path / 'mirror'} (one "
        "folder per dataset)"
    )
    assert not (tmp_path / "raw/mnist").exists()


def test_missing_files_in_local_mirror_list_every_place_looked(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "mirror" / "mnist", n_train=5, n_test=5)
    (tmp_path / "mirror/mnist/t10k-images-idx3-ubyte.gz").unlink()
    expect(mnist=fake.override())
    with pytest.raises(DataError) as info:
        download("mnist", tmp_path / "raw/mnist", mirror=str(tmp_path / "mirror"))
    message = str(info.value)
    for place in [
        "mnist/t10k-images-idx3-ubyte.gz",
        "mnist/MNIST/raw/t10k-images-idx3-ubyte.gz",
        "mnist/MNIST/raw/t10k-images-idx3-ubyte",
    ]:
        assert f"{tmp_path / 'mirror'}/{place}: not found" in message
    assert "check data.mirror in params.yaml" in message


# --------------------------------------------------------------------------------------------
# Damaged files
# --------------------------------------------------------------------------------------------


def test_tar_member_outside_the_folder_is_refused(tmp_path, expect):
    fake = write_cifar10_tarball(
        tmp_path / "mirror/cifar10" / CIFAR_TARBALL,
        n_per_batch=2,
        extra_members={"../evil": b"owned"},
    )
    expect(cifar10=fake.override())  # the md5 matches: only extraction can refuse it
    dest = tmp_path / "raw" / "cifar10"
    with pytest.raises(DataError, match=r"refusing to extract: member '\.\./evil'"):
        download("cifar10", dest, mirror=str(tmp_path / "mirror"), retry=FAST)
    assert not list(tmp_path.rglob("evil"))
    assert not dest.exists() and leftovers(dest) == []


def test_tar_symlink_member_is_refused(tmp_path, expect):
    import io
    import tarfile

    path = tmp_path / "mirror/cifar10" / CIFAR_TARBALL
    path.parent.mkdir(parents=True)
    with tarfile.open(path, "w:gz") as tar:
        link = tarfile.TarInfo(f"{CIFAR_FOLDER}/data_batch_1")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link, io.BytesIO())
    fake = write_cifar10_batches(tmp_path / "unused", n_per_batch=1)
    expect(cifar10={"archives": {CIFAR_TARBALL: md5_file(path)}, "contents": fake.contents})
    with pytest.raises(DataError, match="is a link or a special file"):
        download("cifar10", tmp_path / "raw/cifar10", mirror=str(tmp_path / "mirror"))


def test_cifar_batch_with_wrong_md5_is_never_unpickled(tmp_path, expect, monkeypatch):
    fake = write_cifar10_batches(tmp_path / "mirror" / "cifar10", n_per_batch=3)
    contents = dict(fake.contents, data_batch_3="f" * 32)
    expect(cifar10={"contents": contents, "sizes": fake.sizes})
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(DataError, match=f"data_batch_3: .*expected md5 {'f' * 32}"):
        download("cifar10", tmp_path / "raw/cifar10", mirror=str(tmp_path / "mirror"))


def test_load_raw_checks_cifar_md5s_before_unpickling(tmp_path, expect, monkeypatch):
    fake = write_cifar10_batches(tmp_path / "raw" / "cifar10", n_per_batch=3)
    expect(cifar10={"contents": fake.contents})
    (tmp_path / "raw/cifar10" / CIFAR_FOLDER / "test_batch").write_bytes(b"cos\nsystem\n")
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(DataError, match="test_batch: checksum mismatch"):
        load_raw("cifar10", tmp_path / "raw/cifar10")


def _damage(path: Path, how: str) -> None:
    data = bytearray(gzip.decompress(path.read_bytes()))
    if how == "magic":
        data[2:4] = b"\x08\x02"
    elif how == "shape":
        data = bytearray(idx_bytes(np.zeros((4, 27, 29), dtype=np.uint8)))
    else:  # truncated
        data = data[: len(data) - 7]
    path.write_bytes(gzip.compress(bytes(data), mtime=0))


@pytest.mark.parametrize(
    ("how", "words"),
    [
        ("magic", "magic number 0x00000802"),
        ("shape", "wrong image shape 27x29"),
        ("truncated", "truncated IDX file"),
    ],
)
def test_damaged_idx_in_local_mirror_is_named(how, words, tmp_path, expect):
    mirror = tmp_path / "mirror"
    fake = write_mnist_like(mirror / "mnist", n_train=8, n_test=8)
    bad = mirror / "mnist/train-images-idx3-ubyte.gz"
    _damage(bad, how)
    entry = fake.override()
    entry["archives"][bad.name] = md5_file(bad)  # checksums match: the format is what's wrong
    expect(mnist=entry)
    dest = tmp_path / "raw" / "mnist"
    with pytest.raises(DataError) as info:
        download("mnist", dest, mirror=str(mirror), retry=FAST)
    assert f"{bad}: " in str(info.value) and words in str(info.value)
    assert not dest.exists() and leftovers(dest) == []


def test_load_raw_names_a_damaged_idx_file(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "mirror" / "mnist", n_train=8, n_test=8)
    expect(mnist=fake.override())
    dest = tmp_path / "raw" / "mnist"
    download("mnist", dest, mirror=str(tmp_path / "mirror"), retry=FAST)
    labels = dest / "MNIST/raw/t10k-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00\x08\x03" + labels.read_bytes()[4:])
    with pytest.raises(DataError, match=f"{labels}: not an IDX labels file"):
        load_raw("mnist", dest)
    labels.unlink()
    with pytest.raises(DataError, match=f"{labels} is missing"):
        load_raw("mnist", dest)


def test_images_and_labels_must_agree(tmp_path, expect):
    fake = write_mnist_like(tmp_path / "mirror" / "mnist", n_train=8, n_test=8)
    other = write_mnist_like(tmp_path / "other", n_train=9, n_test=8)
    (tmp_path / "other/train-labels-idx1-ubyte.gz").replace(
        tmp_path / "mirror/mnist/train-labels-idx1-ubyte.gz"
    )
    fake.archives["train-labels-idx1-ubyte.gz"] = other.archives["train-labels-idx1-ubyte.gz"]
    fake.sizes["train-labels-idx1-ubyte"] = other.sizes["train-labels-idx1-ubyte"]
    expect(mnist=fake.override())
    with pytest.raises(DataError, match=r"8 images but .* 9 labels"):
        download("mnist", tmp_path / "raw/mnist", mirror=str(tmp_path / "mirror"))


# --------------------------------------------------------------------------------------------
# The override itself, digits, names
# --------------------------------------------------------------------------------------------


def test_override_file_is_validated(tmp_path, monkeypatch):
    table = tmp_path / "sources.json"
    monkeypatch.setenv(OVERRIDE_ENV, str(table))
    table.write_text("{not json")
    with pytest.raises(DataError, match=OVERRIDE_ENV):
        sources.source("mnist")
    table.write_text(json.dumps({"mnist": {"archives": {"other.gz": "0" * 32}}}))
    with pytest.raises(DataError, match="file names are fixed"):
        sources.source("mnist")
    table.write_text(json.dumps({"mnist": {"checksums": {}}}))
    with pytest.raises(DataError, match="unknown keys"):
        sources.source("mnist")
    table.write_text(json.dumps({"mnist": {"sizes": {"train-images-idx3-ubyte": -1}}}))
    with pytest.raises(DataError, match=r"'sizes' must map file names to sizes in bytes"):
        sources.source("mnist")
    table.write_text(json.dumps({"cifar10": {"unpacked": {"other.tgz": {}}}}))
    with pytest.raises(DataError, match="'unpacked' must map archive names to"):
        sources.source("cifar10")
    limits = {"max_bytes": 10, "max_members": 2}
    table.write_text(json.dumps({"cifar10": {"unpacked": {"cifar-10-python.tar.gz": limits}}}))
    assert sources.source("cifar10").unpacked["cifar-10-python.tar.gz"] == sources.TarLimits(10, 2)


def test_default_source_is_torchvisions():
    from torchvision import datasets as tvd

    mnist = sources.source("mnist")
    assert mnist.mirrors == tuple(tvd.MNIST.mirrors)
    assert dict(mnist.archives) == dict(tvd.MNIST.resources)
    assert mnist.contents["train-images-idx3-ubyte"] == "6bbc9ace898e44ae57da46a324031adb"
    cifar = sources.source("cifar10")
    assert cifar.mirrors[0] + tvd.CIFAR10.filename == tvd.CIFAR10.url
    assert cifar.archives == {tvd.CIFAR10.filename: tvd.CIFAR10.tgz_md5}
    assert len(cifar.contents) == 7
    flowers = sources.source("flowers102")
    assert flowers.mirrors == (tvd.Flowers102._download_url_prefix,)
    for src in (mnist, sources.source("fashion_mnist"), cifar, flowers):
        # every file has a size limit, every tarball limits on what it unpacks to
        assert set(src.sizes) == set(src.archives) | sources._content_names(src), src.name
        assert set(src.unpacked) == {a for a in src.archives if ".t" in a and "gz" in a}
    assert mnist.sizes["train-images-idx3-ubyte"] == 16 + 60000 * 28 * 28
    assert cifar.sizes[tvd.CIFAR10.filename] == 170498071
    assert flowers.archives == {
        "102flowers.tgz": "52808999861908f626f3c1f4e79d11fa",
        "imagelabels.mat": "e0620be6f572b9609742df49c70aed4d",
        "setid.mat": "a5357ecc9cb78c4bef273ce3793fc85c",
    }


# --------------------------------------------------------------------------------------------
# Oxford Flowers-102: a tarball of JPEGs and two MATLAB files
# --------------------------------------------------------------------------------------------


def test_flowers102_over_http_with_official_splits(tmp_path, expect):
    fake = write_flowers102(tmp_path / "site", n_images=12)
    dest = tmp_path / "raw" / "flowers102"
    with serve_directory(tmp_path / "site", failures={"setid.mat": [status(503)]}) as url:
        expect(flowers102=fake.override([url + "/"]))
        download("flowers102", dest, retry=FAST)
    assert url.outcomes("setid.mat") == ["503", "200"]
    folder = dest / "flowers-102"
    assert sorted(p.name for p in folder.iterdir()) == [FLOWERS_LABELS, "jpg", FLOWERS_SETID]
    assert len(list((folder / "jpg").iterdir())) == 12  # the tarball itself is not kept
    raw = load_raw("flowers102", dest, ResizedOptions(size=20, resize="center_crop"))
    assert raw.train_images.shape == (4, 3, 20, 20) and raw.train_images.dtype == np.uint8
    assert raw.val_images is not None and raw.val_images.shape == (4, 3, 20, 20)
    assert raw.test_images.shape == (4, 3, 20, 20)
    assert raw.train_labels.tolist() == fake.train_labels.tolist()  # 1-based in the .mat
    assert raw.test_labels.tolist() == fake.test_labels.tolist()
    assert len(raw.classes) == 102 and raw.classes[0] == "pink primrose"
    assert leftovers(dest) == []


def test_flowers102_from_a_local_mirror(tmp_path, expect):
    fake = write_flowers102(tmp_path / "mirror" / "flowers102", n_images=6)
    expect(flowers102=fake.override())
    download("flowers102", tmp_path / "raw", mirror=tmp_path / "mirror")
    raw = load_raw("flowers102", tmp_path / "raw", ResizedOptions(size=12, resize="letterbox"))
    assert len(raw.train_labels) == len(raw.test_labels) == 2


def test_flowers102_checksum_mismatch_names_the_file(tmp_path, expect):
    fake = write_flowers102(tmp_path / "mirror" / "flowers102", n_images=6)
    archives = dict(fake.archives, **{FLOWERS_LABELS: "0" * 32})
    expect(flowers102={"archives": archives})
    dest = tmp_path / "raw" / "flowers102"
    with pytest.raises(DataError) as err:
        download("flowers102", dest, mirror=tmp_path / "mirror")
    message = str(err.value)
    assert f"could not get a verified copy of {FLOWERS_LABELS} for Oxford Flowers-102" in message
    assert f"expected md5 {'0' * 32}, got {fake.archives[FLOWERS_LABELS]}" in message
    assert not dest.exists() and leftovers(dest) == []


def test_flowers102_archive_escaping_its_folder_is_refused(tmp_path, expect):
    import io
    import tarfile

    site = tmp_path / "mirror" / "flowers102"
    fake = write_flowers102(site, n_images=3)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.jpg")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    (site / FLOWERS_TARBALL).write_bytes(buffer.getvalue())
    expect(
        flowers102={
            "archives": dict(fake.archives, **{FLOWERS_TARBALL: md5_file(site / FLOWERS_TARBALL)})
        }
    )
    with pytest.raises(DataError, match=r"refusing to extract: member '\.\./evil\.jpg'"):
        download("flowers102", tmp_path / "raw", mirror=tmp_path / "mirror")
    assert not (tmp_path / "evil.jpg").exists()


def test_flowers102_damaged_label_file_is_caught_at_load(tmp_path, expect):
    fake = write_flowers102(tmp_path / "mirror" / "flowers102", n_images=6)
    expect(flowers102=fake.override())
    dest = tmp_path / "raw"
    download("flowers102", dest, mirror=tmp_path / "mirror")
    (dest / "flowers-102" / FLOWERS_LABELS).write_bytes(b"MATLAB 5.0 damaged")
    with pytest.raises(DataError, match=r"torchvision could not read .*run the download"):
        load_raw("flowers102", dest, ResizedOptions(size=8, resize="center_crop"))


def test_digits(tmp_path):
    dest = tmp_path / "raw" / "digits"
    download("digits", dest, mirror="/ignored/for/digits")
    first = (dest / "digits.npz").read_bytes()
    download("digits", dest)
    assert (dest / "digits.npz").read_bytes() == first  # byte-identical: DVC sees no change
    raw = load_raw("digits", dest)
    assert raw.train_images.shape == (1438, 1, 32, 32)
    assert raw.test_images.shape == (359, 1, 32, 32)
    assert raw.train_images.dtype == np.uint8 and raw.train_labels.dtype == np.int64
    assert raw.classes == [str(i) for i in range(10)]
    assert int(raw.train_images.max()) == 255 and int(raw.train_images.min()) == 0
    assert sorted(set(raw.test_labels.tolist())) == list(range(10))
    again = load_raw("digits", dest)
    assert np.array_equal(again.test_images, raw.test_images)
    assert np.array_equal(again.train_labels, raw.train_labels)
    assert leftovers(dest) == []


def test_unknown_dataset():
    with pytest.raises(DataError, match=r"unknown dataset 'svhn'.*mnist"):
        download("svhn", Path("/nonexistent/x"))
    with pytest.raises(DataError, match="unknown dataset"):
        load_raw("svhn", Path("."))


# --------------------------------------------------------------------------------------------
# The real thing, from a local mirror of the published files
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(
    not os.environ.get(REAL_MIRROR_ENV),
    reason=f"set {REAL_MIRROR_ENV} to a local mirror holding mnist/ with the published files",
)
def test_real_mnist_from_local_mirror(tmp_path, monkeypatch):
    monkeypatch.delenv(OVERRIDE_ENV, raising=False)
    dest = tmp_path / "raw" / "mnist"
    download("mnist", dest, mirror=os.environ[REAL_MIRROR_ENV])
    raw = load_raw("mnist", dest)
    assert raw.train_images.shape == (60000, 1, 28, 28)
    assert raw.test_images.shape == (10000, 1, 28, 28)
    assert raw.train_images.dtype == np.uint8 and raw.test_labels.dtype == np.int64
    assert sorted(set(raw.train_labels.tolist())) == list(range(10))
    assert raw.classes[0] == "0 - zero"


def test_html_instead_of_the_file_reports_the_checksum(tmp_path, expect):
    """A captive portal or proxy answering 200 with a web page: say the md5 is wrong."""
    mnist = write_mnist_like(tmp_path / "www" / "mnist", n_train=5, n_test=5)
    cifar = write_cifar10_tarball(tmp_path / "www" / "cifar10" / CIFAR_TARBALL, n_per_batch=1)
    page = b"<html>please log in</html>"
    (tmp_path / "www/mnist/train-images-idx3-ubyte.gz").write_bytes(page)
    (tmp_path / "www/cifar10" / CIFAR_TARBALL).write_bytes(page)
    with serve_directory(tmp_path / "www") as url:
        expect(mnist=mnist.override([f"{url}/mnist/"]), cifar10=cifar.override([f"{url}/cifar10/"]))
        with pytest.raises(DataError, match=r"expected md5 \w+, got \w+; not a valid gzip"):
            download("mnist", tmp_path / "raw/mnist", retry=FAST)
        with pytest.raises(DataError, match=r"expected md5 \w+, got \w+; cannot extract"):
            download("cifar10", tmp_path / "raw/cifar10", retry=FAST)
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == []
