"""prepare: seeded split, subsampling, statistics, and the files it leaves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data.prepare import channel_stats, load_prepared, save_prepared, split_dataset
from cnnlab.errors import UserError


def _data(n_train: int = 100, n_test: int = 30):
    g = np.random.default_rng(0)
    train = g.integers(0, 256, (n_train, 3, 8, 8), dtype=np.uint8)
    test = g.integers(0, 256, (n_test, 3, 8, 8), dtype=np.uint8)
    return train, np.arange(n_train) % 10, test, np.arange(n_test) % 10, list("abcdefghij")


def test_split_is_disjoint_complete_and_seeded() -> None:
    a = split_dataset(*_data(), name="x", seed=1, val_fraction=0.2)
    b = split_dataset(*_data(), name="x", seed=1, val_fraction=0.2)
    c = split_dataset(*_data(), name="x", seed=2, val_fraction=0.2)
    assert a.meta["counts"] == {"train": 80, "val": 20, "test": 30}
    assert np.array_equal(a.images["val"], b.images["val"])
    assert not np.array_equal(a.images["val"], c.images["val"])
    rows = {tuple(img.flatten().tolist()) for s in ("train", "val") for img in a.images[s]}
    assert len(rows) == 100  # every training image once, none in both splits


def test_max_train_and_max_test_subsample() -> None:
    data = split_dataset(*_data(), name="x", seed=1, val_fraction=0.1, max_train=50, max_test=7)
    assert data.meta["counts"] == {"train": 45, "val": 5, "test": 7}
    assert sum(data.meta["class_counts"]["train"]) == 45


def test_statistics_come_from_the_training_split() -> None:
    data = split_dataset(*_data(), name="x", seed=1, val_fraction=0.2)
    expected = (data.images["train"] / 255.0).mean(axis=(0, 2, 3))
    assert data.meta["mean"] == pytest.approx(expected.tolist(), abs=1e-6)
    mean, std = channel_stats(np.array([[[[0, 255]]]], dtype=np.uint8))
    assert mean == [0.5] and std == [0.5]


def test_too_large_val_fraction_is_explained() -> None:
    with pytest.raises(UserError, match="leaves no training images"):
        split_dataset(*_data(n_train=2), name="x", seed=1, val_fraction=0.9)


def test_saved_files_round_trip(tmp_path: Path) -> None:
    data = split_dataset(*_data(), name="x", seed=1, val_fraction=0.2)
    save_prepared(data, tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["classes"] == list("abcdefghij") and meta["image_shape"] == [3, 8, 8]
    loaded = load_prepared(tmp_path)
    assert torch.equal(loaded.images["test"], torch.from_numpy(data.images["test"]))
    assert loaded.labels["train"].dtype == torch.int64
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "meta.json",
        *(
            f"{split}_{kind}.npy"
            for split in ("test", "train", "val")
            for kind in ("images", "labels")
        ),
    ]


def test_prepared_images_are_memory_mapped_from_plain_npy_files(tmp_path: Path) -> None:
    """Training reads the images out of the page cache, a batch at a time: the split is a
    mapping of its .npy file (which numpy alone can read), not a copy on the heap."""
    data = split_dataset(*_data(), name="x", seed=1, val_fraction=0.2)
    save_prepared(data, tmp_path)
    loaded = load_prepared(tmp_path)
    if Path("/proc/self/maps").exists():  # Linux: the tensor's bytes lie in the file's mapping
        address = loaded.images["train"].data_ptr()
        train_file = str((tmp_path / "train_images.npy").resolve())
        mappings = [line.split() for line in Path("/proc/self/maps").read_text().splitlines()]
        assert any(
            int(m[0].split("-")[0], 16) <= address < int(m[0].split("-")[1], 16)
            for m in mappings
            if m[-1] == train_file
        )
    on_disk = np.load(tmp_path / "train_images.npy", mmap_mode="r")
    assert np.array_equal(on_disk, data.images["train"])
    assert np.array_equal(np.load(tmp_path / "val_labels.npy"), data.labels["val"])
    batch = loaded.images["train"][torch.tensor([3, 1])]  # a batch is an ordinary tensor
    assert torch.equal(batch, torch.from_numpy(data.images["train"][[3, 1]]))


def test_the_same_split_is_saved_as_the_same_bytes(tmp_path: Path) -> None:
    """DVC compares the outputs of a rerun byte for byte."""
    for out in ("a", "b"):
        save_prepared(split_dataset(*_data(), name="x", seed=1, val_fraction=0.2), tmp_path / out)
    for path in (tmp_path / "a").iterdir():
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name


class _Counted:
    """Rows decoded on demand (as a folder's are), counting how many are fetched at once."""

    def __init__(self, images: np.ndarray) -> None:
        self.images, self.largest = images, 0

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        self.largest = max(self.largest, len(index))
        return self.images[index]


def test_a_split_of_on_demand_images_is_written_a_chunk_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Images that are decoded on demand are fetched a chunk at a time while saved, and give
    the same files and statistics (to the bit) as the same images in memory."""
    import cnnlab.data.prepare as prepare

    monkeypatch.setattr(prepare, "WRITE_CHUNK", 7)  # blocks of another size than in memory

    train, train_y, test, test_y, classes = _data(n_train=300)
    in_memory = split_dataset(
        train, train_y, test, test_y, classes, name="x", seed=1, val_fraction=0.2
    )
    save_prepared(in_memory, tmp_path / "memory")
    source = _Counted(train)
    on_demand = split_dataset(
        source, train_y, _Counted(test), test_y, classes, name="x", seed=1, val_fraction=0.2
    )
    assert on_demand.meta["mean"] is None  # computed while saving
    save_prepared(on_demand, tmp_path / "chunks")
    assert 0 < source.largest <= prepare.WRITE_CHUNK
    assert on_demand.meta == in_memory.meta
    for path in (tmp_path / "memory").iterdir():
        assert path.read_bytes() == (tmp_path / "chunks" / path.name).read_bytes(), path.name


def test_data_prepared_by_an_earlier_version_asks_for_prepare_again(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text('{"dataset": "digits"}')
    (tmp_path / "tensors.pt").write_bytes(b"")
    with pytest.raises(UserError, match=r"earlier version.*dvc repro prepare@digits"):
        load_prepared(tmp_path)


def test_a_failed_save_keeps_the_previous_complete_output(tmp_path: Path, monkeypatch) -> None:
    import cnnlab.data.prepare as prepare

    first = split_dataset(*_data(), name="x", seed=1, val_fraction=0.2)
    save_prepared(first, tmp_path / "out")

    def disk_full(path, data) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(prepare, "write_json", disk_full)
    second = split_dataset(*_data(), name="x", seed=2, val_fraction=0.2)
    with pytest.raises(OSError, match="No space left"):
        save_prepared(second, tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary directory left
    assert np.array_equal(load_prepared(tmp_path / "out").images["val"], first.images["val"])


def test_channel_stats_are_exact_and_the_same_however_the_images_are_split() -> None:
    """The statistics in meta.json come from exact integer sums: the same bits for any block
    size (a folder's images arrive a chunk at a time), equal to a float64 computation."""
    import cnnlab.data.prepare as prepare

    images = np.random.default_rng(3).integers(0, 256, (700, 3, 37, 41), dtype=np.uint8)
    flat = images.transpose(1, 0, 2, 3).reshape(3, -1) / 255.0
    mean, std = flat.mean(axis=1), flat.std(axis=1)
    results = set()
    for chunk in (1, 7, 64, 700):
        sums = prepare._ChannelSums(3)
        for start in range(0, len(images), chunk):
            sums.add(images[start : start + chunk])
        results.add(str(sums.result()))
    assert len(results) == 1
    got_mean, got_std = channel_stats(images)
    assert got_mean == pytest.approx(mean.tolist(), abs=1e-6)
    assert got_std == pytest.approx(std.tolist(), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 42, 2**31 - 1, 2**32 - 1, 2**32 + 5, 2**40 + 3])
def test_the_seeded_draw_is_torchs_randperm(seed: int) -> None:
    """prepare draws its splits without importing torch (600 MB), yet draws the numbers
    ``torch.randperm`` draws from ``manual_seed(seed)``, one draw after another: the splits
    of every earlier prepared dataset stay the same."""
    import cnnlab.data.prepare as prepare

    generator = torch.Generator().manual_seed(seed)
    bits = prepare._mt19937(seed)
    for n in (0, 1, 2, 3, 10, 1000, 12345):
        expected = torch.randperm(n, generator=generator).numpy()
        assert np.array_equal(prepare._randperm(n, bits), expected), n
