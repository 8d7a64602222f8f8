"""This project's training and evaluation loops against the usual PyTorch script, side by side.

The baseline is the script most tutorials and course notebooks use: a torchvision-style
Dataset that hands out one PIL image at a time, per-image transforms (ToTensor, Normalize, and
for CIFAR-style data RandomCrop + RandomHorizontalFlip), ``DataLoader(num_workers=2)``, the same
model in the default memory format, the same optimizer with its default (per-tensor) step.
The project's side is its own code path: ``cnnlab.recipe.build_run`` + ``fit`` over the
prepared uint8 tensors, and ``evaluate_batches`` in inference mode.

Two workloads: LeNet on real MNIST (the published files, through ``--mirror``) and the 32x32
AlexNet on CIFAR-10-sized random data (50,000 3x32x32 images in memory; speed does not depend
on the pixels). Each (workload, pipeline, repeat) runs in a fresh process, so peak memory is
that process's own, and repeats alternate the pipelines so a noisy moment hits both. The
figures are medians over the repeats.

Achieved GFLOP/s come from torch's FLOP counter on one training step (forward + backward) and
one evaluation forward, times the measured images/s; the ceiling is the best float32 matrix
multiply (sgemm) this machine does with the same thread count, measured at the start and at
the end of the run (if they differ much, something else was using the CPU: rerun).

    .venv/bin/python benchmarks/train_speed.py                     # both workloads, 3 repeats
    .venv/bin/python benchmarks/train_speed.py --only lenet --repeats 5 --json out.json

Run it on an otherwise idle machine: two busy threads on two busy cores run 10-60x slower.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2
BATCH = 128
EVAL_BATCH = 1000  # the baseline's: the PyTorch MNIST example's test_batch_size

#: Timed training images per pipeline run, after a warm-up: a full MNIST epoch for LeNet;
#: for AlexNet 24 batches, about 20-40 s of either pipeline.
WORKLOADS: dict[str, dict[str, Any]] = {
    "lenet": {"model": "lenet", "dataset": "mnist", "train": 54_000, "eval": 10_000},
    "alexnet": {"model": "alexnet", "dataset": "cifar10", "train": 24 * BATCH, "eval": 2_000},
}


# --------------------------------------------------------------------------- data


def mnist_prepared(mirror: str | None, cache: Path):
    """Real MNIST through the pipeline's own download and prepare code (cached in ``cache``)."""
    from cnnlab.data.prepare import load_prepared, save_prepared, split_dataset
    from cnnlab.data.sources import download, load_raw

    prepared = cache / "prepared" / "mnist"
    if not (prepared / "train_images.npy").exists():  # none yet, or an earlier format
        raw_dir = cache / "raw" / "mnist"
        if not raw_dir.exists():
            download("mnist", raw_dir, mirror=mirror)
        raw = load_raw("mnist", raw_dir)
        data = split_dataset(
            raw.train_images,
            raw.train_labels,
            raw.test_images,
            raw.test_labels,
            raw.classes,
            name="mnist",
            seed=42,
            val_fraction=0.1,
            max_train=None,
            max_test=None,
        )
        save_prepared(data, prepared)
    return load_prepared(prepared)


def cifar_sized(n_train: int = 50_000, n_test: int = 10_000):
    """CIFAR-10's shapes and sizes with seeded random pixels and labels.

    The whole 50,000-image training set is held, as a CIFAR-10 run would hold it, so the
    peak memory is a CIFAR-10 run's; training reads the first images of it.
    """
    import torch

    from cnnlab.data.prepare import PreparedData

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_train + n_test, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n_train + n_test,), generator=g)
    meta = {
        "dataset": "cifar10",
        "classes": [str(i) for i in range(10)],
        "image_shape": [3, 32, 32],
        "mean": [0.4914, 0.4822, 0.4465],
        "std": [0.247, 0.2435, 0.2616],
    }
    return PreparedData(
        images={"train": images[:n_train], "val": images[:500], "test": images[n_train:]},
        labels={"train": labels[:n_train], "val": labels[:500], "test": labels[n_train:]},
        meta=meta,
    )


def load_data(workload: str, mirror: str | None, cache: Path):
    return mnist_prepared(mirror, cache) if workload == "lenet" else cifar_sized()


# --------------------------------------------------------------------------- measurements


def sgemm_gflops(threads: int = THREADS, sizes: tuple[int, ...] = (1024, 2048)) -> float:
    """The best float32 matmul rate: the ceiling a convolution-heavy step can approach."""
    import torch

    torch.set_num_threads(threads)
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        for _ in range(5):
            started = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * n**3 / (time.perf_counter() - started) / 1e9)
    return best


def flops_per_image(model, x, y, *, train: bool) -> float:
    """FLOPs of one image: forward (+ backward when ``train``) under torch's FLOP counter."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    model.train(train)
    if train:
        with counter:
            F.cross_entropy(model(x), y).backward()
        model.zero_grad(set_to_none=True)
    else:
        with torch.inference_mode(), counter:
            model(x)
    return counter.get_total_flops() / len(x)


def peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest child (DataLoader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def cnnlab_pipeline(workload: str, data) -> dict[str, float]:
    """The project's path: build_run + fit (2 epochs over the timed images), evaluate_batches.

    The second epoch is the one timed, as the first warms up the allocator and the kernels.
    """
    import torch
    import yaml

    from cnnlab.evaluation import evaluate_batches
    from cnnlab.params import validate_params
    from cnnlab.recipe import batch_maker, build_run
    from cnnlab.runtime import make_deterministic
    from cnnlab.training import train

    spec = WORKLOADS[workload]
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw.update(epochs=2, batch_size=BATCH, optimizer="adam", threads=THREADS)
    raw["scheduler"]["name"] = "none"
    params = validate_params(raw)
    make_deterministic(params.threads)
    n = spec["train"]
    data.images["train"] = data.images["train"][:n]
    data.labels["train"] = data.labels["train"][:n]
    data.images["val"], data.labels["val"] = data.images["val"][:500], data.labels["val"][:500]
    device = torch.device("cpu")
    run = build_run(params, spec["model"], data, device)
    x, y = run.train_batches.batch(slice(0, BATCH), run.config.augment, None)
    train_flops = flops_per_image(run.model, x, y, train=True)
    state = train(run)
    train_ips = n / state.history[-1].seconds
    train_rss, _ = peak_rss_mb()

    test = batch_maker(params, spec["model"], data, "test", device)
    m = spec["eval"]
    test.images, test.labels = test.images[:m], test.labels[:m]
    eval_batch = params.eval_batch_size  # the project's choice, made for speed
    eval_flops = flops_per_image(run.model, *test.batch(slice(0, eval_batch)), train=False)
    evaluate_batches(run.model, test, eval_batch)  # warm-up
    started = time.perf_counter()
    evaluate_batches(run.model, test, eval_batch)
    eval_ips = m / (time.perf_counter() - started)
    return {
        "train_ips": train_ips,
        "eval_ips": eval_ips,
        "train_flops": train_flops,
        "eval_flops": eval_flops,
        "train_peak_rss_mb": train_rss,
    }


class PILDataset:
    """What torchvision's MNIST and CIFAR10 datasets do per item: a PIL image, transformed."""

    def __init__(self, images, labels, transform: Callable) -> None:
        self.images = images.numpy()  # N, C, H, W uint8
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        image = self.images[i]
        pil = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        return self.transform(pil), self.labels[i]


def baseline_pipeline(workload: str, data) -> dict[str, float]:
    """The usual script: PIL dataset, per-image transforms, DataLoader(num_workers=2)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import transforms

    from cnnlab.models.zoo import build_model
    from cnnlab.params import load_params

    spec = WORKLOADS[workload]
    mean, std = data.meta["mean"], data.meta["std"]
    if workload == "lenet":  # LeNet-5's 32x32 input: pad the 28x28 digits by 2
        train_tf = test_tf = transforms.Compose(
            [transforms.Pad(2), transforms.ToTensor(), transforms.Normalize(mean, std)]
        )
    else:  # the CIFAR-10 recipe of the PyTorch examples
        train_tf = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(mean, std),
            ]
        )
        test_tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    torch.manual_seed(0)
    n, m = spec["train"], spec["eval"]
    train_set = PILDataset(data.images["train"][:n], data.labels["train"][:n], train_tf)
    test_set = PILDataset(data.images["test"][:m], data.labels["test"][:m], test_tf)
    options = load_params().model_options(spec["model"])  # params.yaml's defaults
    model = build_model(
        spec["model"], in_channels=data.image_shape[0], num_classes=10, options=options
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = next(iter(DataLoader(train_set, batch_size=BATCH)))
    train_flops = flops_per_image(model, x, y, train=True)

    def epoch(limit: int | None = None) -> int:
        model.train()
        loader = DataLoader(train_set, batch_size=BATCH, shuffle=True, num_workers=2)
        seen = 0
        for i, (x, y) in enumerate(loader):
            if limit is not None and i == limit:
                break
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            seen += len(y)
        return seen

    epoch(limit=5)  # warm-up, as the project's first epoch is
    started = time.perf_counter()
    seen = epoch()
    train_ips = seen / (time.perf_counter() - started)
    train_rss, _ = peak_rss_mb()

    loader = DataLoader(test_set, batch_size=EVAL_BATCH, num_workers=2)
    x, _ = next(iter(loader))
    eval_flops = flops_per_image(model, x, None, train=False)
    model.eval()
    started = time.perf_counter()
    with torch.no_grad():
        for x, _ in loader:
            model(x)
    eval_ips = m / (time.perf_counter() - started)
    return {
        "train_ips": train_ips,
        "eval_ips": eval_ips,
        "train_flops": train_flops,
        "eval_flops": eval_flops,
        "train_peak_rss_mb": train_rss,
    }


PIPELINES = {"baseline": baseline_pipeline, "cnnlab": cnnlab_pipeline}


def worker(pipeline: str, workload: str, mirror: str | None, cache: Path) -> None:
    """One measurement in this fresh process; prints one JSON line."""
    data = load_data(workload, mirror, cache)
    result = PIPELINES[pipeline](workload, data)
    import torch

    result["threads"] = torch.get_num_threads()
    result["peak_rss_mb"], result["worker_peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


# --------------------------------------------------------------------------- report


def measure(pipeline: str, workload: str, mirror: str | None, cache: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--worker", pipeline, workload]
    cmd += ["--mirror", mirror] if mirror else []
    cmd += ["--cache", str(cache)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{pipeline} {workload} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: dict[str, dict[str, dict[str, float]]], ceiling: float) -> str:
    """One row per (workload, pipeline) and a ratio row per workload."""
    import pandas as pd

    rows = []
    for workload, by_pipe in results.items():
        for pipeline, r in by_pipe.items():
            train_gf = r["train_ips"] * r["train_flops"] / 1e9
            eval_gf = r["eval_ips"] * r["eval_flops"] / 1e9
            rows.append(
                {
                    "workload": workload,
                    "pipeline": pipeline,
                    "train img/s": f"{r['train_ips']:,.0f}",
                    "train GFLOP/s": f"{train_gf:.1f} ({100 * train_gf / ceiling:.0f}%)",
                    "eval img/s": f"{r['eval_ips']:,.0f}",
                    "eval GFLOP/s": f"{eval_gf:.1f} ({100 * eval_gf / ceiling:.0f}%)",
                    "train peak RSS MB": f"{r['train_peak_rss_mb']:,.0f}",
                    "peak RSS MB": f"{r['peak_rss_mb']:,.0f}",
                    # only the baseline has workers (the other figure is some short-lived child)
                    "worker RSS MB": (
                        f"{r['worker_peak_rss_mb']:,.0f}" if pipeline == "baseline" else ""
                    ),
                }
            )
        if {"baseline", "cnnlab"} <= by_pipe.keys():
            ours, base = by_pipe["cnnlab"], by_pipe["baseline"]
            rows.append(
                {
                    "workload": workload,
                    "pipeline": "cnnlab/baseline",
                    "train img/s": f"{ours['train_ips'] / base['train_ips']:.2f}x",
                    "eval img/s": f"{ours['eval_ips'] / base['eval_ips']:.2f}x",
                }
            )
    return pd.DataFrame(rows).fillna("").to_string(index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=sorted(WORKLOADS), action="append")
    parser.add_argument("--pipelines", nargs="+", choices=sorted(PIPELINES), default=None)
    parser.add_argument(
        "--mirror",
        default=os.environ.get("CNNLAB_MIRROR"),
        help="a data.mirror holding mnist/ (default: $CNNLAB_MIRROR; none: download)",
    )
    parser.add_argument("--cache", type=Path, default=None, help="prepared MNIST cache")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument(
        "--quick", action="store_true", help="a few batches per workload: checks the script runs"
    )
    parser.add_argument(
        "--worker", nargs=2, metavar=("PIPELINE", "WORKLOAD"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    if args.quick:
        os.environ["CNNLAB_BENCH_QUICK"] = "1"
    if os.environ.get("CNNLAB_BENCH_QUICK"):
        for spec in WORKLOADS.values():
            spec.update(train=4 * BATCH, eval=EVAL_BATCH)
    if args.worker:
        worker(*args.worker, args.mirror, args.cache)
        return

    workloads = args.only or list(WORKLOADS)
    pipelines = args.pipelines or ["baseline", "cnnlab"]
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as tmp:
        cache = args.cache or Path(tmp)
        if "lenet" in workloads:
            mnist_prepared(args.mirror, cache)  # download/prepare once, outside the timings
        ceiling_start = sgemm_gflops()
        print(f"sgemm ceiling ({THREADS} threads): {ceiling_start:.1f} GFLOP/s", flush=True)
        samples: dict[str, dict[str, list[dict[str, float]]]] = {}
        for repeat in range(args.repeats):
            order = pipelines if repeat % 2 == 0 else pipelines[::-1]
            for workload in workloads:
                for pipeline in order:
                    r = measure(pipeline, workload, args.mirror, cache)
                    samples.setdefault(workload, {}).setdefault(pipeline, []).append(r)
                    print(
                        f"  repeat {repeat + 1}: {workload:8s} {pipeline:9s} "
                        f"train {r['train_ips']:9,.0f} img/s  eval {r['eval_ips']:9,.0f} img/s  "
                        f"peak {r['peak_rss_mb']:,.0f} MB",
                        flush=True,
                    )
        ceiling_end = sgemm_gflops()
    ceiling = max(ceiling_start, ceiling_end)
    medians = {
        workload: {
            pipeline: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            for pipeline, runs in by_pipe.items()
        }
        for workload, by_pipe in samples.items()
    }
    print(
        f"\nsgemm ceiling: {ceiling_start:.1f} GFLOP/s at the start, {ceiling_end:.1f} at the end"
        f"; medians of {args.repeats} runs, batch {BATCH}, baseline eval batch {EVAL_BATCH}, "
        f"{THREADS} threads, {os.cpu_count()} CPUs"
    )
    print(
        "GFLOP/s percentages are of the sgemm ceiling. RSS: the measuring process's peak after"
        " training, then after evaluation too; its largest DataLoader worker's in the last column."
    )
    print(report(medians, ceiling))
    if args.json:
        args.json.write_text(
            json.dumps({"sgemm": [ceiling_start, ceiling_end], "samples": samples}, indent=1)
        )


if __name__ == "__main__":
    main()
