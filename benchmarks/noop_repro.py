"""How long `dvc repro` takes when nothing needs to run: the price of every check-in.

    .venv/bin/python benchmarks/noop_repro.py                  # digits: LeNet + AlexNet
    .venv/bin/python benchmarks/noop_repro.py --config mnist --mirror ../shared/datasets

Clones the committed project (HEAD) into a temporary directory with one of
ci/check_reproducible.py's small configurations, runs `dvc repro` once to fill it, then times
`dvc repro` again --repeats times and prints every time, the median and the stage count.
Most of the time is DVC's own start-up and its hashing of the stages' dependencies (it keeps
file hashes by inode and mtime, so data is not read again).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ci"))

from check_reproducible import CONFIGS, clone, dvc  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="digits")
    parser.add_argument("--mirror", help="data.mirror for the mnist configuration")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = dict(CONFIGS[args.config])
    if args.mirror:
        config["data"] = {**config.get("data", {}), "mirror": str(Path(args.mirror).resolve())}
    with tempfile.TemporaryDirectory(prefix="cnnlab-noop-") as tmp:
        repo = Path(tmp) / "repo"
        clone(ROOT, repo, config)
        started = time.perf_counter()
        dvc("repro", cwd=repo)
        print(f"first `dvc repro` ({args.config}): {time.perf_counter() - started:.1f} s")
        stages = [
            line for line in dvc("stage", "list", "--name-only", cwd=repo).splitlines() if line
        ]
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            out = dvc("repro", cwd=repo)
            times.append(time.perf_counter() - started)
            if "Running stage" in out:
                raise SystemExit(f"a second `dvc repro` ran something:\n{out}")
    print(
        f"no-op `dvc repro`, {len(stages)} stages: "
        + ", ".join(f"{t:.2f}" for t in times)
        + f" s; median {statistics.median(times):.2f} s"
    )


if __name__ == "__main__":
    main()
