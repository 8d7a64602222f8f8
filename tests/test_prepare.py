"""prepare: seeded split, subsampling, statistics, and the files it leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnnlab.data.prepare import channel_stats, load_prepared, save_prepared, split_dataset
from cnnlab.errors import UserError


def _data(n_train: int = 100, n_test: int = 30):
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (n_train, 3, 8, 8), generator=g, dtype=torch.uint8)
    test = torch.randint(0, 256, (n_test, 3, 8, 8), generator=g, dtype=torch.uint8)
    return train, torch.arange(n_train) % 10, test, torch.arange(n_test) % 10, list("abcdefghij")


def test_split_is_disjoint_complete_and_seeded() -> None:
    a = split_dataset(*_data(), name="x", seed=1, val_fraction=0.2)
    b = split_dataset(*_data(), name="x", seed=1, val_fraction=0.2)
    c = split_dataset(*_data(), name="x", seed=2, val_fraction=0.2)
    assert a.meta["counts"] == {"train": 80, "val": 20, "test": 30}
    assert torch.equal(a.images["val"], b.images["val"])
    assert not torch.equal(a.images["val"], c.images["val"])
    rows = {tuple(img.flatten().tolist()) for s in ("train", "val") for img in a.images[s]}
    assert len(rows) == 100  # every training image once, none in both splits


def test_max_train_and_max_test_subsample() -> None:
    data = split_dataset(*_data(), name="x", seed=1, val_fraction=0.1, max_train=50, max_test=7)
    assert data.meta["counts"] == {"train": 45, "val": 5, "test": 7}
    assert sum(data.meta["class_counts"]["train"]) == 45


def test_statistics_come_from_the_training_split() -> None:
    data = split_dataset(*_data(), name="x", seed=1, val_fraction=0.2)
    expected = data.images["train"].double().div(255).mean(dim=(0, 2, 3))
    assert data.meta["mean"] == pytest.approx(expected.tolist(), abs=1e-6)
    mean, std = channel_stats(torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
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
    assert torch.equal(loaded.images["test"], data.images["test"])
    assert loaded.labels["train"].dtype == torch.int64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "tensors.pt"]


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
    assert torch.equal(load_prepared(tmp_path / "out").images["val"], first.images["val"])


def test_channel_stats_are_the_same_bits_as_over_the_whole_transposed_split() -> None:
    """Computed chunk by chunk from the images each chunk spans (no transposed copy of the
    whole split), the statistics in meta.json must not change by a bit."""
    import cnnlab.data.prepare as prepare

    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (700, 3, 37, 41), generator=g, dtype=torch.uint8)
    for chunk in (1000, 1517, 37 * 41, prepare.STATS_CHUNK):
        flat = images.transpose(0, 1).reshape(3, -1).to(torch.float64) / 255.0
        sums = sum(part.sum(dim=1) for part in flat.split(chunk, dim=1))
        squares = sum((part * part).sum(dim=1) for part in flat.split(chunk, dim=1))
        mean = sums / flat.shape[1]
        std = (squares / flat.shape[1] - mean * mean).clamp_min(1e-12).sqrt()
        expected = [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]
        original = prepare.STATS_CHUNK
        prepare.STATS_CHUNK = chunk
        try:
            assert channel_stats(images) == expected, chunk
        finally:
            prepare.STATS_CHUNK = original
