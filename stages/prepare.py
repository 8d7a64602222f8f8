"""prepare@<dataset>: decode once into uint8 train/val/test arrays (.npy, memory-mapped by
train and evaluate) plus metadata."""

from __future__ import annotations

import sys

from common import PREPARED, RAW, SOURCES, interactive, run_stage

from cnnlab.slices import load_slice


def main(dataset: str) -> None:
    p = load_slice(
        "seed", "data.val_fraction", "data.max_train", "data.max_test", f"dataset.{dataset}"
    )
    from cnnlab.data.catalog import is_folder, options_class
    from cnnlab.data.prepare import save_prepared, split_dataset
    from cnnlab.data.sources import load_raw

    options = options_class(dataset).model_validate(p[f"dataset.{dataset}"] or {})
    skipped: list[dict[str, str]] = []
    progress = "bar" if interactive() else "line"  # a folder's decoding and writing
    if is_folder(dataset):
        from cnnlab.data.folders import listed_files, load

        # Never held whole: decoded once to a scratch file beside the output, then written a
        # chunk at a time; of a subsample (a cap below the number of files) only the drawn
        # files are decoded (checked when drawn, and again when written).
        listed = listed_files(dataset, RAW / dataset)
        caps = (p["data.max_train"], p["data.max_test"])
        subsample = any(cap is not None and cap < listed for cap in caps)
        PREPARED.mkdir(parents=True, exist_ok=True)
        folder = load(
            dataset,
            RAW / dataset,
            SOURCES / dataset,
            options,
            seed=p["seed"],
            lazy=subsample,
            scratch_dir=PREPARED,
            progress=progress,
        )
        raw, skipped = folder.raw, folder.skipped
        del folder
    else:
        raw = load_raw(dataset, RAW / dataset, options)
    data = split_dataset(
        raw.train_images,
        raw.train_labels,
        raw.test_images,
        raw.test_labels,
        raw.classes,
        name=dataset,
        seed=p["seed"],
        val_fraction=p["data.val_fraction"],
        max_train=p["data.max_train"],
        max_test=p["data.max_test"],
        val_images=raw.val_images,
        val_labels=raw.val_labels,
    )
    if is_folder(dataset):
        data.meta["skipped_files"] = skipped  # the record of what was left out, and why
    del raw  # every decoded image: only the chosen ones (in data) are needed from here on
    save_prepared(data, PREPARED / dataset, progress=progress)  # fills mean/std of a folder
    for entry in skipped:
        print(
            f"{dataset}: skipped {SOURCES / dataset / entry['path']}: {entry['reason']}",
            file=sys.stderr,
        )
    counts = ", ".join(f"{k} {v}" for k, v in data.meta["counts"].items())
    print(
        f"{dataset}: {counts} images of {data.meta['image_shape']}"
        + (f" ({len(skipped)} bad file(s) skipped)" if skipped else "")
        + f"; mean {data.meta['mean']} std {data.meta['std']}"
    )


if __name__ == "__main__":
    run_stage(
        main,
        1,
        "python stages/prepare.py <dataset>",
        writes=lambda d: (f"prepare-{d}", f"data/prepared/{d}"),
    )
