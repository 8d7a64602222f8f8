"""cnnlab.data.mnist.read_idx: the one IDX reader, used to verify a fetched file and to load it.

Torch-free, like the module. How a damaged file is reported through download and load_raw
is in test_sources.py; here, each check of the reader on its own.
"""

from __future__ import annotations

import numpy as np
import pytest
from fake_datasets import idx_arrays, idx_bytes

from cnnlab.data.fetch import Failed
from cnnlab.data.mnist import read_idx


def test_reads_images_and_labels_as_written(tmp_path):
    images, labels = idx_arrays(7, seed=3)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    read_images = read_idx(tmp_path / "train-images-idx3-ubyte")
    read_labels = read_idx(tmp_path / "train-labels-idx1-ubyte")
    assert read_images.dtype == np.uint8 and read_images.shape == (7, 28, 28)
    assert np.array_equal(read_images, images) and np.array_equal(read_labels, labels)
    empty = tmp_path / "t10k-labels-idx1-ubyte"
    empty.write_bytes(idx_bytes(np.zeros(0, np.uint8)))
    assert read_idx(empty).shape == (0,)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x00\x00", "truncated IDX file: only 2 bytes"),
        (b"\x00\x00\x08\x03" + bytes(12), "not an IDX labels file: magic number 0x00000803"),
        (b"\x00\x00\x08\x01\x00", "truncated IDX file: 5 bytes, shorter than its header"),
        (idx_bytes(np.zeros(3, np.uint8))[:-1], "truncated IDX file: 10 bytes, the header"),
        (idx_bytes(np.zeros(3, np.uint8)) + b"x", "IDX file has 1 bytes after the 11"),
        (idx_bytes(np.array([1, 10], np.uint8)), "label 10 outside 0..9"),
    ],
)
def test_damaged_labels_are_named(tmp_path, data, words):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(data)
    with pytest.raises(Failed, match=words) as info:
        read_idx(path)
    assert info.value.category == "corrupt"


def test_images_must_be_28x28(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((2, 28, 27), np.uint8)))
    with pytest.raises(Failed, match="wrong image shape 28x27, expected 28x28"):
        read_idx(path)
