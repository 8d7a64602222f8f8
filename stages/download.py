"""download@<dataset>: fetch the published files (or a local mirror's copy), checksums verified."""

from __future__ import annotations

from common import RAW, run_stage

from cnnlab.params import load_params


def main(dataset: str) -> None:
    params = load_params()
    from cnnlab.data.sources import download

    download(dataset, RAW / dataset, mirror=params.data.mirror)
    print(f"{dataset}: downloaded and verified into {RAW / dataset}")


if __name__ == "__main__":
    run_stage(main, 1, "python stages/download.py <dataset>")
