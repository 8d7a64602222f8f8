"""Folders of the user's own images: listing (download), decoding and resizing (prepare),
the bad-file policy, the user's own splits, and the mistakes a user makes with the layout."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_datasets import FOLDER_COLOURS, image_bytes, write_image_folder
from PIL import Image

from cnnlab.data import images
from cnnlab.data.folders import MANIFEST_FILE, load, scan
from cnnlab.data.options import FolderOptions
from cnnlab.data.sources import DataError

CLASSES = sorted(FOLDER_COLOURS)


def listed(tmp_path: Path, name: str = "pics") -> tuple[Path, Path]:
    return tmp_path / "datasets" / name, tmp_path / "raw" / name


def test_scan_lists_every_file_with_class_and_md5(tmp_path: Path) -> None:
    folder, raw = listed(tmp_path)
    written = write_image_folder(folder, per_class=4)
    (folder / "README.md").write_text("about these photos\n")
    (folder / "apple" / ".DS_Store").write_bytes(b"\0junk")
    manifest = scan("pics", folder, raw)
    assert manifest["classes"] == CLASSES
    paths = [f["path"] for f in manifest["files"]]
    assert sorted(paths) == sorted(p for files in written.values() for p in files)
    assert manifest["ignored"] == ["README.md"]  # hidden files are not even mentioned
    first = manifest["files"][0]
    assert first["class"] == first["path"].split("/")[0] and len(first["md5"]) == 32
    assert json.loads((raw / MANIFEST_FILE).read_text()) == manifest


def test_load_resizes_every_image_and_skips_bad_files_by_name(tmp_path: Path) -> None:
    folder, raw = listed(tmp_path)
    write_image_folder(folder, per_class=5)
    scan("pics", folder, raw)
    result = load("pics", raw, folder, FolderOptions(size=24, test_fraction=0.2), seed=1)
    assert result.skipped == [
        {"path": "apple/corrupt.jpg", "reason": "cannot decode it (OSError: Truncated File Read)"},
        {
            "path": "apple/notes.png",
            "reason": "not an image (Pillow does not recognise its format)",
        },
    ]
    raw_data = result.raw
    assert raw_data.classes == CLASSES
    assert raw_data.train_images.shape == (12, 3, 24, 24)  # 4 of 5 per class
    assert raw_data.test_images.shape == (3, 3, 24, 24)  # round(5 * 0.2) = 1 per class
    assert raw_data.train_images.dtype == torch.uint8
    assert torch.bincount(raw_data.test_labels).tolist() == [1, 1, 1]
    # The colours survive: the class's colour dominates the lower two thirds of its images.
    for label, cls in enumerate(CLASSES):
        pixels = raw_data.train_images[raw_data.train_labels == label][:, :, 16:, :]
        mean = pixels.float().mean(dim=(0, 2, 3))
        assert abs(mean - torch.tensor(FOLDER_COLOURS[cls], dtype=torch.float)).max() < 12


def test_the_test_split_follows_the_seed(tmp_path: Path) -> None:
    folder, raw = listed(tmp_path)
    write_image_folder(folder, per_class=6, bad_files=False)
    scan("pics", folder, raw)
    options = FolderOptions(size=16)

    def test_images(seed: int) -> torch.Tensor:
        return load("pics", raw, folder, options, seed=seed).raw.test_images

    assert torch.equal(test_images(3), test_images(3))
    assert not torch.equal(test_images(3), test_images(4))


def test_on_bad_file_error_names_every_bad_file(tmp_path: Path) -> None:
    folder, raw = listed(tmp_path)
    write_image_folder(folder, per_class=3)
    scan("pics", folder, raw)
    with pytest.raises(DataError) as err:
        load("pics", raw, folder, FolderOptions(on_bad_file="error"), seed=0)
    message = str(err.value)
    assert "2 file(s)" in message
    assert f"{folder}/apple/corrupt.jpg: cannot decode it" in message
    assert f"{folder}/apple/notes.png: not an image" in message
    assert "dataset.pics.on_bad_file: skip" in message


def test_user_splits_are_kept(tmp_path: Path) -> None:
    folder, raw = listed(tmp_path)
    write_image_folder(folder / "train", per_class=4, bad_files=False)
    write_image_folder(folder / "val", per_class=2, bad_files=False)
    write_image_folder(folder / "test", per_class=3, bad_files=False)
    manifest = scan("pics", folder, raw)
    assert manifest["splits"] == ["train", "val", "test"]
    result = load("pics", raw, folder, FolderOptions(size=16), seed=0).raw
    assert len(result.train_labels) == 12 and len(result.test_labels) == 9
    assert result.val_labels is not None and len(result.val_labels) == 6


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda f: None, "does not exist or is not a folder"),
        (lambda f: (f.mkdir(parents=True), (f / "a.png").write_bytes(b"x")), "no class folders"),
        (lambda f: (f / "cat").mkdir(parents=True), "holds no files"),
        (
            lambda f: write_image_folder(f, per_class=1, classes={"only": (1, 2, 3)}),
            "a classifier needs at least two",
        ),
        (
            lambda f: (
                write_image_folder(f / "train", per_class=1, bad_files=False),
                write_image_folder(f / "extra", per_class=1, bad_files=False),
            ),
            "mixes split folders and class folders",
        ),
        (
            lambda f: write_image_folder(f / "train", per_class=1, bad_files=False),
            "mixes split folders and class folders",
        ),
        (
            lambda f: (
                write_image_folder(f / "train", per_class=1, bad_files=False),
                write_image_folder(f / "test", per_class=1, classes={"zebra": (0, 0, 0)}),
            ),
            "test/ has class folders that train/ lacks: zebra",
        ),
    ],
)
def test_layout_mistakes_are_explained(tmp_path: Path, make, words: str) -> None:
    folder, raw = listed(tmp_path)
    make(folder)
    with pytest.raises(DataError, match=words):
        scan("pics", folder, raw)
    assert not raw.exists()


def test_a_class_left_without_readable_images_is_an_error(tmp_path: Path) -> None:
    folder, raw = listed(tmp_path)
    write_image_folder(folder, per_class=2, bad_files=False)
    (folder / "broken").mkdir()
    (folder / "broken" / "x.jpg").write_bytes(b"not a jpeg")
    scan("pics", folder, raw)
    with pytest.raises(DataError, match=r"broken of .* have no readable training images"):
        load("pics", raw, folder, FolderOptions(), seed=0)


def test_a_file_changed_after_listing_is_refused(tmp_path: Path) -> None:
    folder, raw = listed(tmp_path)
    write_image_folder(folder, per_class=2, bad_files=False)
    scan("pics", folder, raw)
    (folder / "leaf" / "leaf_00.png").write_bytes(image_bytes((0, 0, 0), (9, 9)))
    with pytest.raises(DataError, match=r"leaf_00\.png changed since download@pics listed it"):
        load("pics", raw, folder, FolderOptions(), seed=0)
    (folder / "leaf" / "leaf_00.png").unlink()
    with pytest.raises(DataError, match="run `dvc repro`"):
        load("pics", raw, folder, FolderOptions(), seed=0)


# ----------------------------------------------------------------------------- resizing


def test_center_crop_and_letterbox_on_a_wide_image() -> None:
    data = image_bytes((0, 0, 200), (120, 40), "PNG")  # white bar over the top 13 rows
    crop = images.decode(data, 30, "center_crop")
    box = images.decode(data, 30, "letterbox")
    assert crop.shape == box.shape == (30, 30, 3)
    # Cropped: the full height is kept, so the white bar is at the top.
    assert crop[0].min() > 220 and crop[-1, :, 2].mean() > 170
    # Letterboxed: 120x40 -> 30x10, padded with black above and below.
    assert box[:9].max() == 0 and box[-9:].max() == 0
    assert box[10:13].min() > 200 and box[17:19, :, 2].mean() > 150


def test_exif_orientation_is_applied() -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(buffer, format="JPEG", exif=exif)
    upright = images.decode(buffer.getvalue(), 20, "letterbox")
    # Displayed 20 wide x 40 tall with the white half on top; letterboxed to 10x20 in the middle.
    assert upright[:8, 5:15].mean() > 200 and upright[12:, 5:15].mean() < 50


def test_gray_and_transparent_images_become_rgb() -> None:
    for mode in ("L", "RGBA", "P"):
        buffer = io.BytesIO()
        Image.new(mode, (10, 7)).save(buffer, format="PNG")
        assert images.decode(buffer.getvalue(), 8, "center_crop").shape == (8, 8, 3)
