"""Peak memory and time of prepare@<folder> for a folder of N JPEG photos (not a test).

    .venv/bin/python benchmarks/prepare_memory.py 1000 2000 4000           # this checkout
    .venv/bin/python benchmarks/prepare_memory.py 2000 --code /other/checkout   # compare
    .venv/bin/python benchmarks/prepare_memory.py 4000 --max-train 500   # a quick-run subsample

Writes N photos (256x256 JPEG, 10 classes, smooth colours plus noise, about 20 KB each) to a
temporary folder, lists them with download@photos, then runs prepare@photos at `size: 224`
(150 KB each decoded) and prints the child's peak RSS (getrusage), the time, and the size of
the decoded images, so that the growth with N shows. `import torch` alone is part of the
peak: it is printed first.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def write_photos(folder: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, 256)[None, :, None]
    for i in range(n):
        base = rng.uniform(0, 255, 3)[None, None, :] * ramp + rng.normal(0, 12, (256, 256, 3))
        pixels = np.clip(base + 40, 0, 255).astype(np.uint8)
        path = folder / f"c{i % 10}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=85)


def peak_of(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Peak RSS (MB) and seconds of one child (run alone: RUSAGE_CHILDREN holds the max)."""
    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)"
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - start
    kb, code = done.stdout.split()[-2:]
    if code != "0":
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return int(kb) / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("counts", type=int, nargs="+", help="numbers of photos")
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose stages run")
    parser.add_argument("--max-train", type=int, help="data.max_train (default: all)")
    args = parser.parse_args()
    code = args.code.resolve()
    env = {**os.environ, "CI": "true", "PYTHONPATH": str(code / "src")}
    torch_mb, _ = peak_of([sys.executable, "-c", "import torch"], ROOT, env)
    print(
        f"code: {code}; max_train: {args.max_train}; `import torch` alone: peak RSS "
        f"{torch_mb:.0f} MB"
    )
    print("photos | decoded MB | prepare peak RSS MB | above import torch | seconds")
    for n in args.counts:
        with tempfile.TemporaryDirectory(prefix="prepare-memory-") as tmp:
            work = Path(tmp)
            write_photos(work / "datasets/photos", n)
            params = yaml.safe_load((code / "params.yaml").read_text())
            params.update(datasets=["photos"], models=["lenet"], threads=1)
            params["dataset"]["photos"] = {"size": 224}
            params["data"]["max_train"] = args.max_train
            (work / "params.yaml").write_text(yaml.safe_dump(params))
            subprocess.run(
                [sys.executable, str(code / "stages/download.py"), "photos"],
                cwd=work, env=env, check=True, capture_output=True,
            )  # fmt: skip
            rss, seconds = peak_of(
                [sys.executable, str(code / "stages/prepare.py"), "photos"], work, env
            )
            decoded = n * 224 * 224 * 3 / 2**20
            print(f"{n} | {decoded:.0f} | {rss:.0f} | {rss - torch_mb:.0f} | {seconds:.1f}")


if __name__ == "__main__":
    main()
