"""Peak memory and time of download/prepare@<folder> for a folder of N JPEG photos (not a test).

    .venv/bin/python benchmarks/prepare_memory.py 1000 3000 6000          # this checkout
    .venv/bin/python benchmarks/prepare_memory.py 2000 --code /other/checkout   # compare
    .venv/bin/python benchmarks/prepare_memory.py 4000 --max-train 500 --max-test 100  # a subsample
    .venv/bin/python benchmarks/prepare_memory.py 1000 --train alexnet2012   # and one epoch

Writes N photos (224x224 JPEG, 10 classes: a colour ramp, a disc and noise, about 20 KB
each, the same bytes for the same N) to a temporary folder, runs download@photos (the md5
listing), then prepare@photos at `size: 224` (150 KB per image decoded) and, with
``--train``, one epoch of that model with `threads: 1`; each stage runs alone in a child
process, whose peak RSS (getrusage) and time are printed, so that the growth with N shows.
`import torch` alone is part of each peak: it is printed first, and subtracted in the
"above torch" figures. RSS counts the pages a process has mapped: a memory-mapped
prepared split counts as far as training has touched it (shared with any other process
mapping it, and dropped by the kernel under memory pressure), the page cache behind plain
reads and writes does not; the "anonymous" figure (sampled) is the heap alone.
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
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
SIZE = 224


def write_photos(folder: Path, n: int, seed: int = 0) -> None:
    """N deterministic 224x224 JPEGs in 10 class folders: smooth colour, a disc, noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, SIZE)[None, :, None]
    for i in range(n):
        base = rng.uniform(0, 255, 3)[None, None, :] * ramp + rng.normal(0, 12, (SIZE, SIZE, 3))
        image = Image.fromarray(np.clip(base + 40, 0, 255).astype(np.uint8))
        x, y, r = (int(v) for v in rng.integers((20, 20, 10), (200, 200, 60)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        ImageDraw.Draw(image).ellipse((x - r, y - r, x + r, y + r), fill=colour)
        path = folder / f"c{i % 10}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=85)


def _rss_kb(pid: int) -> dict[str, int]:
    """The RSS fields of /proc/<pid>/status (kB); empty once the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = (line.split(":") for line in lines if line.startswith(("RssAnon", "RssFile")))
    return {key: int(value.split()[0]) for key, value in fields}


def peak_of(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """Peak RSS (MB, from the kernel's own count: ``wait4``'s ``ru_maxrss``), the largest
    anonymous part of it sampled every 20 ms (MB: the heap, as against mapped files), and
    the seconds of one child."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        anon = 0
        while True:
            anon = max(anon, _rss_kb(proc.pid).get("RssAnon", 0))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(command)} failed:\n{err.read().decode()[-3000:]}")
    return usage.ru_maxrss / 1024, anon / 1024, seconds


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("counts", type=int, nargs="+", help="numbers of photos")
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose stages run")
    parser.add_argument("--max-train", type=int, help="data.max_train (default: all)")
    parser.add_argument("--max-test", type=int, help="data.max_test (default: all)")
    parser.add_argument("--train", metavar="MODEL", help="also train MODEL for one epoch")
    parser.add_argument("--dir", type=Path, help="where the temporary project goes (default: /tmp)")
    args = parser.parse_args()
    code = args.code.resolve()
    env = {
        **os.environ,
        "CI": "true",
        "PYTHONPATH": str(code / "src"),
        "OMP_NUM_THREADS": "1",
    }
    torch_mb, torch_anon, _ = peak_of([sys.executable, "-c", "import torch"], ROOT, env)
    print(
        f"code: {code}; max_train: {args.max_train}; max_test: {args.max_test}; threads 1; "
        f"{os.cpu_count()} CPUs; "
        f"load average before: {load_average()}; `import torch` alone: peak RSS "
        f"{torch_mb:.0f} MB ({torch_anon:.0f} MB anonymous)"
    )
    stages = ["download", "prepare"] + (["train"] if args.train else [])
    print(
        "photos | decoded MB | "
        + " | ".join(f"{s} peak RSS MB (above torch; anonymous) | {s} s" for s in stages)
        + " | load average after"
    )
    for n in args.counts:
        with tempfile.TemporaryDirectory(prefix="prepare-memory-", dir=args.dir) as tmp:
            work = Path(tmp)
            write_photos(work / "datasets/photos", n)
            params = yaml.safe_load((code / "params.yaml").read_text())
            model = args.train or "lenet"
            params.update(datasets=["photos"], models=[model], threads=1, epochs=1)
            params["dataset"]["photos"] = {"size": SIZE}
            params["data"]["max_train"] = args.max_train
            params["data"]["max_test"] = args.max_test
            (work / "params.yaml").write_text(yaml.safe_dump(params))
            cells = [str(n), f"{n * SIZE * SIZE * 3 / 2**20:.0f}"]
            for stage in stages:
                script = code / f"stages/{stage}.py"
                names = [model, "photos"] if stage == "train" else ["photos"]
                rss, anon, seconds = peak_of([sys.executable, str(script), *names], work, env)
                above = f"{rss - torch_mb:.0f}" if rss > torch_mb else "no torch"
                cells += [f"{rss:.0f} ({above}; {anon:.0f})", f"{seconds:.1f}"]
            print(" | ".join([*cells, load_average()]), flush=True)


if __name__ == "__main__":
    main()
