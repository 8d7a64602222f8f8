"""GPU throughput of the project's own training loop, against the GPU's own matmul ceiling.

Measured in one process, in this order:

* the dense matmul ceiling (``torch.matmul`` of square matrices, CUDA events, best of
  several) in float32 (strict, no TF32), TF32, bfloat16 and float16;
* the 32x32 AlexNet's training throughput through ``cnnlab.recipe.build_run`` + ``fit``
  (the pipeline's loop: data on the GPU, no host wait per step) on CIFAR-10-sized random data,
  for ``amp`` off (float32 maths; torch lets cuDNN use TF32 for convolutions by default),
  bf16 and fp16; the timed epoch is the last one, after a warm-up epoch;
* the achieved FLOP/s (torch's FLOP counter on one training step, times the images/s) as a
  share of the ceiling at the same precision (float32 against both strict float32 and TF32);
* with ``--lenet``, the training seconds of the GPU LeNet preset's shape of run (54,000
  MNIST-sized images per epoch) for a few speed knobs, to see which one to keep.

    python benchmarks/gpu_speed.py --json out.json
    python benchmarks/gpu_speed.py --quick        # tiny sizes: checks the script runs (CPU ok)

Prints one line per measurement and writes every figure to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from cnnlab.data.prepare import PreparedData
from cnnlab.params import validate_params
from cnnlab.recipe import build_run
from cnnlab.runtime import make_deterministic, synchronize
from cnnlab.training import train

ROOT = Path(__file__).resolve().parents[1]

PRECISIONS = {
    "float32": (torch.float32, False),
    "tf32": (torch.float32, True),
    "bf16": (torch.bfloat16, False),
    "fp16": (torch.float16, False),
}


def matmul_ceiling(device: torch.device, sizes: tuple[int, ...], repeats: int) -> dict[str, float]:
    """Best dense matmul rate per precision, in TFLOP/s."""
    out = {}
    previous = torch.backends.cuda.matmul.allow_tf32
    try:
        for name, (dtype, tf32) in PRECISIONS.items():
            torch.backends.cuda.matmul.allow_tf32 = tf32
            best = 0.0
            for n in sizes:
                a = torch.randn(n, n, device=device, dtype=dtype)
                b = torch.randn(n, n, device=device, dtype=dtype)
                torch.matmul(a, b)
                synchronize(device)
                for _ in range(repeats):
                    seconds = _timed(lambda a=a, b=b: torch.matmul(a, b), device)
                    best = max(best, 2 * n**3 / seconds / 1e12)
            out[name] = best
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return out


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def random_data(n_train: int, shape: tuple[int, int, int], n_val: int = 256) -> PreparedData:
    """Random pixels in the prepared layout: speed does not depend on what the images show."""
    g = torch.Generator().manual_seed(0)
    n = n_train + 2 * n_val
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    cuts = {
        "train": slice(0, n_train),
        "val": slice(n_train, n_train + n_val),
        "test": slice(n_train + n_val, n),
    }
    return PreparedData(
        images={k: images[c] for k, c in cuts.items()},
        labels={k: labels[c] for k, c in cuts.items()},
        meta={
            "dataset": "cifar10" if shape[0] == 3 else "mnist",
            "classes": [str(i) for i in range(10)],
            "image_shape": list(shape),
            "mean": [0.5] * shape[0],
            "std": [0.25] * shape[0],
        },
    )


def params_with(changes: dict[str, Any]):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in changes.items():
        section = raw
        *parents, leaf = key.split(".")
        for parent in parents:
            section = section[parent]
        section[leaf] = value
    return validate_params(raw)


def train_flops_per_image(run) -> float:
    """forward + backward FLOPs of one image, by torch's counter, on a copy of the model."""
    import copy

    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(run.model).train()
    x, y = run.train_batches.batch(slice(0, 8))
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / len(x)


def alexnet_throughput(
    device: torch.device, amp: str, n_train: int, batch: int, epochs: int
) -> dict[str, float]:
    params = params_with(
        {
            "models": ["alexnet"],
            "datasets": ["cifar10"],
            "device": device.type,
            "amp": amp,
            "epochs": epochs,
            "batch_size": batch,
            "scheduler.name": "none",
        }
    )
    run = build_run(params, "alexnet", random_data(n_train, (3, 32, 32)), device)
    flops = train_flops_per_image(run)
    state = train(run)
    seconds = state.history[-1].seconds
    return {"images_per_second": len(run.train_batches) / seconds, "flops_per_image": flops}


def lenet_variants(device: torch.device, n_train: int) -> list[dict[str, Any]]:
    """The GPU preset's recipe on MNIST-sized random data, with each speed knob flipped."""
    preset = yaml.safe_load((ROOT / "presets" / "lenet-mnist-gpu.yaml").read_text())
    out = []
    for name, extra in {
        "preset": {},
        "channels_last off": {"channels_last": False},
        "amp bf16": {"amp": "bf16"},
        "amp fp16": {"amp": "fp16"},
    }.items():
        params = params_with({**preset, "device": device.type, "data.mirror": None, **extra})
        run = build_run(params, "lenet", random_data(n_train, (1, 28, 28), 512), device)
        state = train(run)
        out.append(
            {
                "variant": name,
                "train_seconds": state.train_seconds,
                "images_per_second": state.train_images / state.train_seconds,
            }
        )
        print(
            f"LeNet preset, {name}: {state.train_seconds:.3f} s of training "
            f"({state.train_images / state.train_seconds:,.0f} img/s)",
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a CPU dry run)")
    parser.add_argument("--lenet", action="store_true", help="also the LeNet preset's knobs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    make_deterministic(2)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}", flush=True)
    quick = args.quick or device.type != "cuda"
    sizes, repeats = ((512, 1024), 3) if quick else ((4096, 8192), 10)
    ceiling = matmul_ceiling(device, sizes, repeats)
    for key, value in ceiling.items():
        print(f"matmul ceiling {key}: {value:.3g} TFLOP/s", flush=True)
    n_train, batch, epochs = (256, 64, 2) if quick else (25_600, 128, 2)
    results: dict[str, Any] = {"device": name, "torch": torch.__version__, "ceiling": ceiling}
    alexnet = {}
    for amp, against in (("off", ("float32", "tf32")), ("bf16", ("bf16",)), ("fp16", ("fp16",))):
        if device.type != "cuda" and amp != "off":
            continue  # autocast is CUDA-only in this project
        r = alexnet_throughput(device, amp, n_train, batch, epochs)
        achieved = r["images_per_second"] * r["flops_per_image"] / 1e12
        r["tflops"] = achieved
        r["share"] = {k: achieved / ceiling[k] for k in against}
        shares = ", ".join(f"{100 * v:.1f}% of {k} matmul" for k, v in r["share"].items())
        print(
            f"AlexNet 32x32, amp {amp}: {r['images_per_second']:,.0f} img/s, "
            f"{achieved:.3g} TFLOP/s = {shares}",
            flush=True,
        )
        alexnet[amp] = r
    results["alexnet"] = alexnet
    if args.lenet:
        results["lenet"] = lenet_variants(device, 2_000 if quick else 54_000)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
