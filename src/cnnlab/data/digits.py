"""scikit-learn's bundled 8x8 digits, the default dataset: no network, and no torchvision."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnlab.data.raw import DataError, RawDataset, redownload_hint

if TYPE_CHECKING:
    from cnnlab.data.catalog import ResizedOptions

FILE = "digits.npz"
TEST_FRACTION = 0.2
SPLIT_SEED = 0
SIZE = 32


def build(out: Path) -> None:
    """scikit-learn ships the 8x8 digits, so no network; pixels go from 0..16 to 0..255 so
    every dataset is uint8 on the same scale. The .npz is written byte-for-byte the same
    on every run (no zip timestamps), so DVC sees an unchanged output."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    with zipfile.ZipFile(out / FILE, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, array in (("images", images), ("labels", labels)):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buffer.getvalue())


def load(raw_dir: Path, options: ResizedOptions | None) -> RawDataset:
    """Upsample 8x8 to 32x32 (bilinear, then rounded) so the same models fit every dataset,
    and hold out a fixed 20% as the test set: scikit-learn ships no split of its own."""
    import torch
    import torch.nn.functional as F

    path = raw_dir / FILE
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read it ({exc}); {redownload_hint('digits')}") from exc
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
            f"labels {labels.shape}); {redownload_hint('digits')}"
        )
    n = len(images)
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test = round(n * TEST_FRACTION)
    test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])

    x = torch.from_numpy(images).unsqueeze(1).to(torch.float32)
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8)
    x, y = x.numpy(), labels.astype(np.int64)
    return RawDataset(
        train_images=x[train_idx],
        train_labels=y[train_idx],
        test_images=x[test_idx],
        test_labels=y[test_idx],
        classes=[str(i) for i in range(10)],
    )
