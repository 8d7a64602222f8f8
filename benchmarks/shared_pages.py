"""Two processes read the same memory-mapped prepared split: do they share its pages?

    .venv/bin/python benchmarks/shared_pages.py data/prepared/<dataset>

Each process loads the split as train does (``load_prepared``), reads every image of the
training split a batch at a time, then reports the RSS and PSS of its mapping of
``train_images.npy`` (Linux: /proc/self/smaps). Shared pages count fully in each RSS and
by half in each PSS (proportional set size): two DDP ranks on one machine hold one copy.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from pathlib import Path
from typing import Any

FILE = "train_images.npy"


def mapped_mb(name: str = FILE) -> dict[str, int]:
    """RSS and PSS (MB) of this process's mappings of ``name``, from /proc/self/smaps."""
    sizes, inside = {"Rss": 0.0, "Pss": 0.0}, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = fields[-1].endswith(name)
        elif inside and fields[0] in ("Rss:", "Pss:"):
            sizes[fields[0][:-1]] += int(fields[1]) / 1024
    return {key: round(value) for key, value in sizes.items()}


def read_all(results: Any, barrier: Any, prepared: str) -> None:
    from cnnlab.data.prepare import load_prepared

    images = load_prepared(Path(prepared)).images["train"]
    for start in range(0, len(images), 64):
        images[start : start + 64].sum()  # touches every page of the batch
    barrier.wait()  # both have read everything: the pages are shared now, if ever
    results.put(mapped_mb())
    barrier.wait()


def main() -> None:
    prepared = sys.argv[1]
    ctx = mp.get_context("spawn")
    results, barrier = ctx.Queue(), ctx.Barrier(2)
    ranks = [ctx.Process(target=read_all, args=(results, barrier, prepared)) for _ in range(2)]
    for rank in ranks:
        rank.start()
    seen = [results.get(timeout=600) for _ in ranks]
    for rank in ranks:
        rank.join()
    size = Path(prepared, FILE).stat().st_size / 2**20
    for k, mb in enumerate(seen):
        print(f"process {k}: {FILE} ({size:.0f} MB) mapped: RSS {mb['Rss']} MB, PSS {mb['Pss']} MB")


if __name__ == "__main__":
    main()
