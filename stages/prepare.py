"""prepare@<dataset>: decode once into uint8 train/val/test tensors plus metadata."""

from __future__ import annotations

from common import PREPARED, RAW, run_stage

from cnnlab.params import load_params


def main(dataset: str) -> None:
    params = load_params()
    from cnnlab.data.prepare import save_prepared, split_dataset
    from cnnlab.data.sources import load_raw

    raw = load_raw(dataset, RAW / dataset)
    data = split_dataset(
        raw.train_images,
        raw.train_labels,
        raw.test_images,
        raw.test_labels,
        raw.classes,
        name=dataset,
        seed=params.seed,
        val_fraction=params.data.val_fraction,
        max_train=params.data.max_train,
        max_test=params.data.max_test,
    )
    save_prepared(data, PREPARED / dataset)
    counts = ", ".join(f"{k} {v}" for k, v in data.meta["counts"].items())
    print(
        f"{dataset}: {counts} images of {data.meta['image_shape']}; "
        f"mean {data.meta['mean']} std {data.meta['std']}"
    )


if __name__ == "__main__":
    run_stage(main, 1, "python stages/prepare.py <dataset>")
