"""Folders of the user's own images: listing (download), decoding and resizing (prepare),
the bad-file policy, the user's own splits, and the mistakes a user makes with the layout."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import stat
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, clean_params_text
from fake_datasets import (
    FOLDER_COLOURS,
    finishes_within,
    image_bytes,
    png_header,
    write_image_folder,
)
from PIL import Image

from cnnlab.data import images
from cnnlab.data.catalog import FolderOptions
from cnnlab.data.folders import MANIFEST_FILE, load, scan
from cnnlab.data.raw import DataError

CLASSES = sorted(FOLDER_COLOURS)
LINK = "a symbolic link, which is not followed"


def listed(tmp_path: Path, name: str = "pics") -> tuple[Path, Path]:
    return tmp_path / "datasets" / name, tmp_path / "raw" / name


def every_image(rows) -> np.ndarray:
    """All the images of a loaded folder's split, which load leaves to be read on demand."""
    return rows[np.arange(len(rows))]


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
    train = every_image(raw_data.train_images)  # decoded on demand, not held
    assert train.dtype == np.uint8 and train.shape == (12, 3, 24, 24)
    assert np.bincount(raw_data.test_labels).tolist() == [1, 1, 1]
    # The colours survive: the class's colour dominates the lower two thirds of its images.
    for label, cls in enumerate(CLASSES):
        pixels = train[raw_data.train_labels == label][:, :, 16:, :]
        mean = pixels.astype(np.float64).mean(axis=(0, 2, 3))
        assert abs(mean - np.array(FOLDER_COLOURS[cls])).max() < 12


def test_the_test_split_follows_the_seed(tmp_path: Path) -> None:
    folder, raw = listed(tmp_path)
    write_image_folder(folder, per_class=6, bad_files=False)
    scan("pics", folder, raw)
    options = FolderOptions(size=16)

    def test_images(seed: int) -> np.ndarray:
        return every_image(load("pics", raw, folder, options, seed=seed).raw.test_images)

    assert np.array_equal(test_images(3), test_images(3))
    assert not np.array_equal(test_images(3), test_images(4))


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
        (lambda f: (f / "cat").mkdir(parents=True), "holds no regular files"),
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


def encoded(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def test_sixteen_bit_and_float_images_are_scaled_not_clipped() -> None:
    """A full-range 16-bit ramp and a 0..1 float ramp keep their mid-grey average; clipped,
    the first came out nearly all white and the second all black."""
    ramp16 = np.arange(1 << 16, dtype=np.uint16).reshape(256, 256)
    ramp_float = (ramp16 / 65535.0).astype(np.float32)
    for data in (encoded(ramp16, "PNG"), encoded(ramp_float, "TIFF")):
        out = images.decode(data, 64, "letterbox")
        assert abs(out.mean() - 127.5) < 2 and (out >= 250).mean() < 0.05
        assert (out <= 5).mean() < 0.05
    flat = {
        "16-bit PNG": encoded(np.full((4, 4), 100 * 257, np.uint16), "PNG"),
        "16-bit PGM": b"P5\n4 4\n65535\n" + np.full(16, 100 * 257, ">u2").tobytes(),
        "32-bit TIFF": encoded(np.full((4, 4), 100 * 257 * 65537 // 2, np.int32), "TIFF"),
        "float TIFF": encoded(np.full((4, 4), 100 / 255, np.float32), "TIFF"),
    }
    for what, data in flat.items():
        out = images.decode(data, 8, "center_crop")
        assert np.abs(out.astype(int) - 100).max() <= 1, what


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.linspace(0, 1000, 64, dtype=np.float32).reshape(8, 8), "values from 0 to 1000"),
        (np.full((8, 8), np.nan, np.float32), "NaN or infinite"),
        (np.full((8, 8), -5, np.int32), r"negative values \(down to -5\)"),
    ],
    ids=["float-range", "nan", "negative"],
)
def test_unscalable_bit_depths_are_refused(array: np.ndarray, words: str) -> None:
    with pytest.raises(images.BadImage, match=words):
        images.decode(encoded(array, "TIFF"), 8, "center_crop")


def test_huge_dimensions_are_refused_from_the_header_before_decoding() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(images.BadImage) as err:
            images.decode(png_header(12000, 12000), 32, "center_crop")
    assert str(err.value).startswith("refused: 12000x12000 pixels (144 million) is more than")
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    with pytest.raises(images.BadImage, match="refused: more than the 67 million pixels"):
        images.decode(png_header(20000, 20000), 32, "center_crop")  # Pillow's own limit
    assert images.decode(encoded(np.zeros((30, 4000), np.uint8), "PNG"), 8, "letterbox").shape


def test_huge_and_unscalable_images_in_a_folder_are_skipped_by_name(tmp_path: Path) -> None:
    folder, raw = listed(tmp_path)
    write_image_folder(folder, per_class=3, bad_files=False)
    (folder / "apple/huge.png").write_bytes(png_header(12000, 12000))
    (folder / "leaf/scan.tif").write_bytes(
        encoded(np.linspace(0, 4, 64, dtype=np.float32).reshape(8, 8), "TIFF")
    )
    deep = np.arange(1 << 16, dtype=np.uint16).reshape(256, 256)
    (folder / "sky/deep.png").write_bytes(encoded(deep, "PNG"))
    scan("pics", folder, raw)
    result = load("pics", raw, folder, FolderOptions(size=16), seed=0)
    reasons = {s["path"]: s["reason"] for s in result.skipped}
    assert sorted(reasons) == ["apple/huge.png", "leaf/scan.tif"]
    assert reasons["apple/huge.png"].startswith("refused: 12000x12000 pixels")
    assert "values from 0 to 4" in reasons["leaf/scan.tif"]
    assert len(result.raw.train_labels) + len(result.raw.test_labels) == 10  # deep.png kept
    with pytest.raises(DataError, match=r"apple/huge\.png: refused: 12000x12000 pixels"):
        load("pics", raw, folder, FolderOptions(on_bad_file="error"), seed=0)


# ----------------------------------------------------------------------------- hostile folders


def hostile_folder(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, str]]:
    """A folder dataset with every kind of entry that must not be read, each where a user
    could put it: links to a file and to a folder outside, a linked class folder, a link to
    /dev/zero, a FIFO, a socket, a link loop, and (when allowed here) a device file. The
    outside images are real images, so that following a link would visibly pull them in.
    Returns (folder, raw, outside, {relative path: start of the reason})."""
    folder, raw = listed(tmp_path)
    write_image_folder(folder, per_class=3, bad_files=False)
    outside = tmp_path / "outside"
    (outside / "more").mkdir(parents=True)
    (outside / "secret.png").write_bytes(image_bytes((1, 2, 3), (20, 20), seed=7))
    for i in range(3):
        (outside / "more" / f"m{i}.png").write_bytes(image_bytes((9, 9, 9), (20, 20), seed=i))
    expected = {
        "apple/x.png": LINK,
        "apple/more": LINK,
        "dog": LINK,
        "leaf/zero.png": LINK,
        "leaf/pipe.png": "a FIFO (named pipe), which is not read",
        "sky/loop": LINK,
        "sky/s.sock": "a socket, which is not read",
    }
    (folder / "apple/x.png").symlink_to(outside / "secret.png")
    (folder / "apple/more").symlink_to(outside / "more", target_is_directory=True)
    (folder / "dog").symlink_to(outside / "more", target_is_directory=True)
    (folder / "leaf/zero.png").symlink_to("/dev/zero")
    os.mkfifo(folder / "leaf/pipe.png")
    (folder / "sky/loop").symlink_to(folder / "sky/loop")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(folder / "sky/s.sock"))
    try:
        os.mknod(folder / "sky/null.png", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        expected["sky/null.png"] = "a device file, which is not read"
    except PermissionError:  # not root: no device file in this test
        pass
    return folder, raw, outside, expected


def test_links_and_special_files_are_skipped_by_name_never_read(tmp_path: Path) -> None:
    folder, raw, outside, expected = hostile_folder(tmp_path)
    manifest = finishes_within(30, scan, "pics", folder, raw)  # a FIFO read would block
    assert manifest["classes"] == CLASSES  # the linked "dog" folder is not a class
    assert len(manifest["files"]) == 9 and all(
        f["path"].split("/")[-1].startswith(f["class"]) for f in manifest["files"]
    )
    reasons = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert sorted(reasons) == sorted(expected)
    for path, start in expected.items():
        assert reasons[path].startswith(start), path
    assert "copy the file or folder itself here instead" in reasons["apple/x.png"]
    written = (raw / MANIFEST_FILE).read_text()
    secret_md5 = hashlib.md5((outside / "secret.png").read_bytes()).hexdigest()
    assert secret_md5 not in written and "outside" not in written

    result = finishes_within(30, load, "pics", raw, folder, FolderOptions(size=16), seed=0)
    assert [s["path"] for s in result.skipped] == [s["path"] for s in manifest["skipped"]]
    assert len(result.raw.train_labels) + len(result.raw.test_labels) == 9

    with pytest.raises(DataError) as err:
        load("pics", raw, folder, FolderOptions(on_bad_file="error"), seed=0)
    message = str(err.value)
    assert f"{len(expected)} file(s) in {folder} cannot be used as images" in message
    assert f"{folder}/apple/x.png: {LINK}" in message
    assert f"{folder}/leaf/pipe.png: a FIFO" in message


def test_a_file_swapped_for_a_link_after_listing_is_not_followed(tmp_path: Path) -> None:
    folder, raw = listed(tmp_path)
    write_image_folder(folder, per_class=2, bad_files=False)
    scan("pics", folder, raw)
    target = folder / "leaf/leaf_00.png"
    target.unlink()
    target.symlink_to("/dev/zero")
    words = r"leaf_00\.png: cannot read it \(it is now a symbolic link, which is not followed\)"
    with pytest.raises(DataError, match=words):
        finishes_within(30, load, "pics", raw, folder, FolderOptions(), seed=0)


def test_a_class_of_links_only_says_so(tmp_path: Path) -> None:
    folder, raw = listed(tmp_path)
    write_image_folder(folder, per_class=2, bad_files=False)
    (folder / "cat").mkdir()
    (folder / "cat/a.png").symlink_to(folder / "leaf/leaf_00.png")
    with pytest.raises(DataError, match=r"cat/ holds no regular files \(1 link\(s\) or special"):
        scan("pics", folder, raw)
    assert not raw.exists()


def test_hidden_class_folders_are_listed_as_ignored(tmp_path: Path) -> None:
    folder, raw = listed(tmp_path)
    write_image_folder(folder / "train", per_class=2, bad_files=False)
    write_image_folder(folder / "test", per_class=1, bad_files=False)
    write_image_folder(folder / ".hidden", per_class=2, bad_files=False)
    write_image_folder(folder / "train/.drafts", per_class=1, bad_files=False)
    (folder / "train/leaf/.thumbnails").mkdir()  # inside a class: left out without mention
    (folder / "train/leaf/.thumbnails/t.png").write_bytes(image_bytes((0, 0, 0), (8, 8)))
    manifest = scan("pics", folder, raw)
    assert manifest["ignored"] == [".hidden/", "train/.drafts/"]
    assert not any("/." in f["path"] or f["path"].startswith(".") for f in manifest["files"])
    assert manifest["classes"] == CLASSES


def test_download_stage_names_what_it_skipped_and_ignored(tmp_path, monkeypatch, capsys):
    folder, _, _, expected = hostile_folder(tmp_path)
    write_image_folder(folder / ".hidden", per_class=1, bad_files=False)
    params = yaml.safe_load(clean_params_text())
    params["datasets"] = ["pics"]
    params["dataset"]["pics"] = {}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT / "stages"))
    sys.modules.pop("download", None)
    import download

    finishes_within(30, download.main, "pics")
    out, err = capsys.readouterr()
    assert "ignored (not in a class folder): .hidden/" in out
    assert f"{len(expected)} link(s) or special file(s) skipped" in out
    assert f"pics: skipped datasets/pics/apple/x.png: {LINK}" in err
    assert "pics: skipped datasets/pics/leaf/pipe.png: a FIFO (named pipe)" in err


def test_validate_names_a_dataset_whose_folder_does_not_exist(tmp_path: Path) -> None:
    """Else it passes, and DVC stops later with only "No such file or directory"."""
    import subprocess

    params = yaml.safe_load(clean_params_text())
    params["datasets"] = ["digits", "nofolder"]
    params["dataset"]["nofolder"] = {}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    validate = [sys.executable, str(ROOT / "stages" / "validate.py")]
    result = subprocess.run(validate, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == (
        "error: datasets: got 'nofolder': a dataset of your own images, but there is no folder "
        "datasets/nofolder/; put its images in datasets/nofolder/<class>/<image> (or fix the "
        "name, or take it out of `datasets`)\n"
    )
    assert not (tmp_path / "data/params-ok").exists()
    write_image_folder(tmp_path / "datasets/nofolder", per_class=1, bad_files=False)
    again = subprocess.run(validate, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr


def _prepare_folder(
    tmp_path: Path, options: FolderOptions, *, lazy: bool, out: Path, seed: int = 3
):
    """load + split_dataset + save_prepared of ``datasets/pics`` as prepare@pics runs them,
    with data.max_train 10 and max_test 4; the folder's skipped files with the split."""
    from cnnlab.data.prepare import save_prepared, split_dataset

    folder, raw = listed(tmp_path)
    loaded = load("pics", raw, folder, options, seed=seed, lazy=lazy, scratch_dir=tmp_path)
    data = loaded.raw
    split = split_dataset(
        data.train_images, data.train_labels, data.test_images, data.test_labels,
        data.classes, name="pics", seed=seed, val_fraction=0.2, max_train=10, max_test=4,
    )  # fmt: skip
    save_prepared(split, out)
    return split, loaded.skipped


def test_a_subsample_of_a_folder_decodes_only_the_files_it_draws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data.max_train/max_test on a large folder: the subsample is drawn from the listed
    files and only the drawn ones are decoded (checked when drawn, then written), the same
    prepared data as decoding the whole folder first. A drawn bad file is replaced by the
    next of the draw. Without a subsample, each file is decoded once into a scratch file."""
    from cnnlab.data.prepare import load_prepared

    folder, raw = listed(tmp_path)
    write_image_folder(folder, per_class=40, bad_files=False)  # 120 images
    scan("pics", folder, raw)
    options = FolderOptions(size=16, on_bad_file="skip")
    decoded = []
    real_decode = images.decode
    monkeypatch.setattr(images, "decode", lambda *a: decoded.append(1) or real_decode(*a))
    everything, _ = _prepare_folder(tmp_path, options, lazy=False, out=tmp_path / "all")
    assert len(decoded) == 120
    decoded.clear()
    subsample, _ = _prepare_folder(tmp_path, options, lazy=True, out=tmp_path / "some")
    assert len(decoded) == 2 * (10 + 4)  # checked when drawn, decoded again when written
    assert subsample.meta == everything.meta
    for path in (tmp_path / "all").iterdir():
        assert path.read_bytes() == (tmp_path / "some" / path.name).read_bytes(), path.name
    assert load_prepared(tmp_path / "some").meta["counts"] == {"train": 8, "val": 2, "test": 4}
    assert not list(tmp_path.glob(".pics-*"))  # the scratch file has no name

    # Bad files in the draw (seed 2 draws both): skipped by name and replaced.
    shutil.rmtree(folder)
    write_image_folder(folder, per_class=10)  # 30 images, apple/corrupt.jpg, apple/notes.png
    scan("pics", folder, raw)
    decoded.clear()
    split, skipped = _prepare_folder(tmp_path, options, lazy=True, out=tmp_path / "bad", seed=2)
    assert sorted(s["path"] for s in skipped) == ["apple/corrupt.jpg", "apple/notes.png"]
    assert split.meta["counts"] == {"train": 8, "val": 2, "test": 4}
    assert len(decoded) == 2 * (10 + 4) + 2


def _split_folder_errors(tmp_path: Path, bad: Callable[[str, str], bool]) -> list[str]:
    """A train/val/test folder whose files ``bad(split, class)`` are not images, prepared
    whole and as a subsample (max_test below the number of files): the error each gives.
    Nothing is written."""
    from cnnlab.data.prepare import save_prepared, split_dataset
    from cnnlab.errors import UserError

    folder, raw = listed(tmp_path)
    for split, per_class in (("train", 4), ("val", 2), ("test", 3)):
        for c, (cls, colour) in enumerate(FOLDER_COLOURS.items()):
            (folder / split / cls).mkdir(parents=True)
            for i in range(per_class):
                path = folder / split / cls / f"{cls}_{i}.png"
                if bad(split, cls):
                    path.write_text("not an image, despite the name\n")
                else:
                    path.write_bytes(image_bytes(colour, (20, 16), seed=10 * c + i))
    scan("pics", folder, raw)
    errors = []
    for lazy in (False, True):
        with pytest.raises(UserError) as err:
            data = load("pics", raw, folder, FolderOptions(size=8), seed=0, lazy=lazy,
                        scratch_dir=tmp_path).raw  # fmt: skip
            split = split_dataset(
                data.train_images, data.train_labels, data.test_images, data.test_labels,
                data.classes, name="pics", seed=0, val_fraction=0.2, max_test=2,
                val_images=data.val_images, val_labels=data.val_labels,
            )  # fmt: skip
            save_prepared(split, tmp_path / "out")
        errors.append(str(err.value))
    assert not (tmp_path / "out").exists()
    return errors


@pytest.mark.parametrize("bad_classes", [["sky"], CLASSES])
def test_a_subsample_stops_on_a_class_whose_every_training_file_is_bad(
    tmp_path: Path, bad_classes: list[str]
) -> None:
    """A subsample checks every training file as it draws them: a class with no readable one
    stops prepare as decoding the whole folder does, and a folder with none at all too, not
    with a division by zero in the statistics."""
    errors = _split_folder_errors(
        tmp_path, lambda split, cls: split == "train" and cls in bad_classes
    )
    for error in errors:
        assert f"class(es) {', '.join(bad_classes)}" in error
        assert "have no readable training images" in error


def test_a_val_folder_of_only_bad_files_stops_prepare(tmp_path: Path) -> None:
    """Without one readable validation image every epoch's val accuracy would be 0 and the
    "best" epoch arbitrary: prepare stops, whole folder or subsample, and writes nothing."""
    for error in _split_folder_errors(tmp_path, lambda split, cls: split == "val"):
        assert error.startswith("pics: no validation image can be decoded"), error


def test_a_drawn_bad_file_stops_a_subsample_when_bad_files_are_errors(tmp_path: Path) -> None:
    from cnnlab.data.prepare import split_dataset

    folder, raw = listed(tmp_path)
    write_image_folder(folder, per_class=3)  # 9 images, 2 bad files, all drawn below
    scan("pics", folder, raw)
    data = load("pics", raw, folder, FolderOptions(on_bad_file="error"), seed=0, lazy=True).raw
    with pytest.raises(DataError, match=r"1 file\(s\) in .* cannot be used as images") as err:
        split_dataset(
            data.train_images, data.train_labels, data.test_images, data.test_labels,
            data.classes, name="pics", seed=0, val_fraction=0.2, max_train=100,
        )  # fmt: skip
    assert "dataset.pics.on_bad_file: skip" in str(err.value)
    assert "apple/corrupt.jpg" in str(err.value) or "apple/notes.png" in str(err.value)


def test_listing_and_preparing_a_folder_print_one_summary_line_each_off_a_terminal(
    tmp_path: Path,
) -> None:
    """In a CI log or a redirected output, the md5 listing, the decoding and the writing of
    a folder each end with one line of counts and time instead of a progress bar. Neither
    stage imports torch: it alone would take 600 MB, more than a 6,000-photo prepare."""
    import re
    import subprocess

    folder = tmp_path / "datasets/pics"
    write_image_folder(folder, per_class=4)  # 12 images and 2 bad files
    params = yaml.safe_load(clean_params_text())
    params.update(datasets=["pics"], models=["lenet"], threads=1)
    params["dataset"]["pics"] = {"size": 16, "on_bad_file": "skip"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    err = ""
    for script in ("download.py", "prepare.py"):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", str(ROOT / "stages" / script), "pics"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
        assert "numpy" in imported and "torch" not in imported, script
        err += result.stderr
    lines = [line for line in err.splitlines() if " in " in line and " s" in line]
    assert [re.sub(r" in [0-9.]+ s, \d+ ", " in T s, R ", line) for line in lines] == [
        "pics: md5 of the files: 14 files in T s, R files/s",
        "pics: decode: 14 files in T s, R files/s",
        "pics: prepare: 12 img in T s, R img/s",
    ]
    assert "\r" not in err  # no bar redrawn


def test_progress_on_a_terminal_is_a_bar_with_counts(capsys: pytest.CaptureFixture) -> None:
    from cnnlab.data.progress import track

    with track("bar", 40, "pics: decode", "files") as bar:
        for _ in range(40):
            bar.update()
    err = capsys.readouterr().err
    assert "pics: decode" in err and "40/40" in err
    with track(None, 40, "pics: decode", "files") as bar:
        bar.update(40)
    assert capsys.readouterr() == ("", "")
