"""How long `dvc repro` takes when nothing needs to run: the price of every check-in.

    .venv/bin/python benchmarks/noop_repro.py                  # digits: LeNet + AlexNet
    .venv/bin/python benchmarks/noop_repro.py --config mnist --mirror DIR

Clones the committed project (HEAD) into a temporary directory with a small configuration
(CONFIGS below), runs `dvc repro` once to fill it, then times
`dvc repro` again --repeats times and prints every time, the median and the stage count.
Most of the time is DVC's own start-up and its hashing of the stages' dependencies (it keeps
file hashes by inode and mtime, so data is not read again).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

CONFIGS: dict[str, dict[str, Any]] = {
    "digits": {
        "datasets": ["digits"],
        "models": ["lenet", "alexnet"],
        "epochs": 2,
        "data": {"max_train": 600, "max_test": 300},
    },
    "mnist": {"datasets": ["mnist"], "models": ["lenet"], "epochs": 2},
}


def dvc(*args: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def clone(source: Path, dest: Path, config: dict[str, Any]) -> None:
    """A fresh clone of HEAD with ``config`` merged into params.yaml, committed."""
    subprocess.run(["git", "clone", "-q", str(source), str(dest)], check=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for key, value in config.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "commit", "-qam", "small configuration"], cwd=dest, check=True)


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
