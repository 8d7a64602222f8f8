"""The CUDA paths: mixed precision, the loss scale across a resume, deterministic kernels, no
host wait per step, the same bytes twice on one GPU.

Tests marked ``gpu`` skip without CUDA (tests/conftest.py); benchmarks/gpu_check.sh runs them
on a GPU machine. The others check on the CPU what does not need a GPU to check: that every
op of a training step has a deterministic CUDA kernel (by the ops' names), that torch's own
LRN and adaptive pool would not, and that the GPU preset is valid params.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import ROOT, make_params, model_options
from test_models import _LAYER_CHOICES, _NONDETERMINISTIC_ON_CUDA, _OpRecorder
from torch import nn

from cnnlab.data.prepare import PreparedData, save_prepared
from cnnlab.errors import UserError
from cnnlab.models import options as opts
from cnnlab.models import zoo
from cnnlab.models.zoo import build_model, input_size
from cnnlab.recipe import build_run
from cnnlab.resume import ResumePoint, restore
from cnnlab.runtime import make_deterministic, pick_device
from cnnlab.training import train

# cuBLAS reads it when its first handle is made: before any test touches CUDA.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

CUDA = torch.device("cuda")
MODELS = list(opts.MODELS)
AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Every pooling and norm of every model, and the adaptive pool after each pooling.
LAYER_CHOICES = _LAYER_CHOICES
LAYER_IDS = [f"{n}-{','.join(f'{k}={v}' for k, v in o.items())}" for n, o in LAYER_CHOICES]
#: Every augmentation on, so the batch code's device paths all run.
ALL_AUGMENTATIONS = {
    "crop_padding": 4,
    "hflip": True,
    "brightness": 0.2,
    "contrast": 0.2,
    "saturation": 0.2,
    "hue": 0.05,
    "pca_lighting": 0.1,
}


def random_data(
    n_train: int, shape: tuple[int, int, int] = (3, 32, 32), n_val: int = 32, seed: int = 0
) -> PreparedData:
    """Seeded random pixels and labels in CIFAR-10's layout (no download, no scikit-learn)."""
    g = torch.Generator().manual_seed(seed)
    n = n_train + 2 * n_val
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    cuts = {"train": slice(0, n_train), "val": slice(n_train, n_train + n_val)}
    cuts["test"] = slice(n_train + n_val, n)
    channels = shape[0]
    return PreparedData(
        images={split: images[cut] for split, cut in cuts.items()},
        labels={split: labels[cut] for split, cut in cuts.items()},
        meta={
            "dataset": "cifar10" if channels == 3 else "mnist",
            "classes": [str(i) for i in range(10)],
            "image_shape": list(shape),
            "mean": [0.5] * channels,
            "std": [0.25] * channels,
        },
    )


def gpu_params(**changes: Any):
    return make_params(**{"device": "cuda", "threads": 1, "epochs": 1, "batch_size": 8, **changes})


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@contextlib.contextmanager
def nondeterministic_allowed() -> Iterator[None]:
    """torch's own layers, as the reference the deterministic ones are compared with."""
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(True)


# --------------------------------------------------------------------------- on the CPU


@pytest.mark.parametrize("model", MODELS)
def test_a_training_step_uses_only_ops_with_deterministic_cuda_kernels(model: str) -> None:
    """The whole step as train() takes it, batch code and loss included, on 64x64 photos
    (resized for every model) with every augmentation, label smoothing and clipping."""
    make_deterministic(1)
    params = make_params(
        epochs=1, batch_size=2, label_smoothing=0.1, clip_grad_norm=1.0, augment=ALL_AUGMENTATIONS
    )
    data = random_data(4, shape=(3, 64, 64), n_val=2)
    run = build_run(params, model, data, torch.device("cpu"))
    with _OpRecorder() as recorder:
        train(run)
    assert {"convolution_backward", "_fused_adam_"} <= recorder.ops  # it saw the whole step
    assert not recorder.ops & _NONDETERMINISTIC_ON_CUDA


@pytest.mark.parametrize(
    ("layer", "shape", "banned"),
    [
        (nn.AdaptiveAvgPool2d(6), (1, 4, 4, 4), "_adaptive_avg_pool2d_backward"),
        (nn.LocalResponseNorm(5), (1, 8, 4, 4), "avg_pool3d_backward"),
    ],
    ids=["adaptive-pool", "lrn"],
)
def test_torchs_own_layers_would_be_caught(layer: nn.Module, shape: tuple, banned: str) -> None:
    """The replacements in zoo.py exist because these names are real: the check sees them."""
    x = torch.randn(shape, requires_grad=True)
    with _OpRecorder() as recorder:
        layer(x).sum().backward()
    assert banned in recorder.ops and banned in _NONDETERMINISTIC_ON_CUDA


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_a_missing_gpu_is_a_user_error() -> None:
    with pytest.raises(UserError, match="set device: auto or cpu"):
        pick_device("cuda")


def test_the_gpu_preset_is_valid_params() -> None:
    preset = yaml.safe_load((ROOT / "presets" / "lenet-mnist-gpu.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in preset.items():
        section = params
        *parents, leaf = key.split(".")
        for parent in parents:
            section = section[parent]
        assert leaf in section, f"{key}: not a key of params.yaml"
        section[leaf] = value
    checked = make_params(**params)
    assert checked.models == ["lenet"] and checked.datasets == ["mnist"]


# --------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@pytest.mark.parametrize("amp", list(AMP_DTYPES))
@pytest.mark.parametrize("model", MODELS)
def test_each_model_trains_under_each_amp_choice(model: str, amp: str) -> None:
    make_deterministic(1)
    run = build_run(gpu_params(amp=amp), model, random_data(64), CUDA)  # 8 steps
    assert run.config.amp_dtype == AMP_DTYPES[amp]
    assert run.train_batches.images.is_cuda and run.train_batches.labels.is_cuda
    dtypes = []
    run.model.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    state = train(run)
    assert state.epoch == 1 and not state.diverged
    assert dtypes[0] == (AMP_DTYPES[amp] or torch.float32)  # the first training forward
    after = run.model.state_dict()
    assert not same_weights(before, after)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert (state.grad_scaler is not None) == (amp == "fp16")


@pytest.mark.gpu
@pytest.mark.parametrize(("name", "options"), LAYER_CHOICES, ids=LAYER_IDS)
def test_every_layer_choice_runs_deterministically_on_cuda(
    name: str, options: dict[str, Any]
) -> None:
    """Deterministic mode on: an op without a deterministic CUDA kernel would raise here.
    Two identical steps must also give the same gradient bits."""
    make_deterministic(1)
    torch.manual_seed(0)
    resolved = model_options(name, options)
    model = build_model(name, in_channels=3, num_classes=10, options=resolved).to(CUDA)
    model = model.to(memory_format=torch.channels_last)
    size = input_size(name, resolved)
    x = torch.randn(4, 3, size, size, device=CUDA).contiguous(memory_format=torch.channels_last)
    y = torch.arange(4, device=CUDA)
    grads = []
    for dtype in (None, torch.bfloat16, None):
        torch.manual_seed(1)  # the same dropout masks
        model.zero_grad(set_to_none=True)
        autocast = torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext()
        with autocast:
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.isfinite(g).all() for g in grads[1])
    assert all(torch.equal(a, b) for a, b in zip(grads[0], grads[2], strict=True))


@pytest.mark.gpu
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(("in_size", "out_size"), [(4, 6), (13, 6), (12, 6), ((7, 9), (6, 4))])
def test_adaptive_pool_matches_torchs_on_cuda(in_size: Any, out_size: Any, memory_format) -> None:
    make_deterministic(1)
    h, w = in_size if isinstance(in_size, tuple) else (in_size, in_size)
    x = torch.randn(2, 8, h, w, device=CUDA).contiguous(memory_format=memory_format)
    x.requires_grad_()
    grad = torch.randn_like(nn.AdaptiveAvgPool2d(out_size)(x.detach()))
    ours = zoo.AdaptiveAvgPool2d(out_size)(x)
    (ours_grad,) = torch.autograd.grad(ours, x, grad)
    with pytest.raises(RuntimeError, match="deterministic"):  # torch's raises: why ours exists
        torch.autograd.grad(nn.AdaptiveAvgPool2d(out_size)(x), x, grad)
    with nondeterministic_allowed():
        theirs = nn.AdaptiveAvgPool2d(out_size)(x)
        (theirs_grad,) = torch.autograd.grad(theirs, x, grad)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours_grad, theirs_grad)


@pytest.mark.gpu
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("channels", [3, 6, 96])
def test_lrn_matches_torchs_on_cuda(channels: int, memory_format) -> None:
    make_deterministic(1)
    x = 3 * torch.randn(2, channels, 5, 5, device=CUDA).contiguous(memory_format=memory_format)
    x.requires_grad_()
    args = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}
    grad = torch.randn_like(x)
    ours = zoo.LocalResponseNorm(**args)(x)
    (ours_grad,) = torch.autograd.grad(ours, x, grad)
    with pytest.raises(RuntimeError, match="deterministic"):
        torch.autograd.grad(nn.LocalResponseNorm(**args)(x), x, grad)
    with nondeterministic_allowed():
        theirs = nn.LocalResponseNorm(**args)(x)
        (theirs_grad,) = torch.autograd.grad(theirs, x, grad)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours_grad, theirs_grad)


@pytest.mark.gpu
def test_the_loss_scale_survives_a_resume(tmp_path: Path) -> None:
    """fp16: stopped after epoch 1 with a resume state on disk, as a killed stage would be,
    and resumed by a fresh run: the same weights and GradScaler state as never stopped."""
    make_deterministic(1)
    params = gpu_params(amp="fp16", epochs=3, model={"lenet": {"dropout": 0.2}})
    data = random_data(64)
    straight_run = build_run(params, "lenet", data, CUDA)
    straight = train(straight_run)
    assert straight.grad_scaler is not None

    class Stop(Exception):
        pass

    point = ResumePoint(tmp_path / "lenet.pt", "this run")
    first = build_run(params, "lenet", data, CUDA)

    def save_then_stop(record, state) -> None:
        point.save(first.model, first.optimizer, first.scheduler, state)
        raise Stop

    with pytest.raises(Stop):
        train(first, on_epoch=save_then_stop)
    second = build_run(params, "lenet", data, CUDA)
    saved, message = point.read(second.model, second.optimizer, second.scheduler)
    assert saved is not None
    state = restore(saved, second.model, second.optimizer, second.scheduler)
    assert state is not None and state.epoch == 1 and "resuming after epoch 1" in message
    assert state.grad_scaler is not None
    resumed = train(second, state=state)
    assert resumed.grad_scaler == straight.grad_scaler
    assert same_weights(second.model.state_dict(), straight_run.model.state_dict())
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in straight.history]


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("model", "amp"),
    [("lenet", "off"), ("lenet", "fp16"), ("alexnet", "bf16"), ("alexnet_bn", "off")],
)
def test_two_runs_give_the_same_bytes_on_the_same_gpu(model: str, amp: str) -> None:
    """Shuffle, every augmentation (drawn on the GPU), dropout, mixed precision."""
    params = gpu_params(amp=amp, epochs=2, batch_size=16, augment=ALL_AUGMENTATIONS)
    data = random_data(96)
    results = []
    for _ in range(2):
        make_deterministic(1)
        run = build_run(params, model, data, CUDA)
        state = train(run)
        results.append((run.model.state_dict(), state))
    (weights_a, a), (weights_b, b) = results
    assert same_weights(weights_a, weights_b) and same_weights(a.best_model, b.best_model)
    assert [dataclasses.replace(r, seconds=0) for r in a.history] == [
        dataclasses.replace(r, seconds=0) for r in b.history
    ]


@pytest.mark.gpu
@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 1e6), ("rmsprop", 1e25)])
def test_divergence_on_the_gpu_stops_with_the_last_finite_weights(optimizer, lr) -> None:
    """The flag is read every 50 steps by default: the steps in between are skipped on the
    device, so the run ends as one checked every step does."""
    runs = []
    for check_every in (1, None):
        make_deterministic(1)
        params = gpu_params(optimizer=optimizer, lr=lr, epochs=2, batch_size=4)
        run = build_run(params, "lenet", random_data(400), CUDA)
        run.config = dataclasses.replace(run.config, check_every=check_every)
        runs.append((run, train(run)))
    (checked, checked_state), (late, late_state) = runs
    assert late_state.diverged_epoch == checked_state.diverged_epoch == 1
    assert late_state.history == [] and late_state.best_model is None
    weights = late.model.state_dict()
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert same_weights(weights, checked.model.state_dict())


def _host_waits(n_train: int, check_every: int | None) -> int:
    """Synchronising CUDA calls during one epoch (torch's sync debug mode counts them)."""
    make_deterministic(1)
    params = gpu_params(amp="fp16", batch_size=16, augment=ALL_AUGMENTATIONS)
    run = build_run(params, "alexnet", random_data(n_train), CUDA)
    run.config = dataclasses.replace(run.config, check_every=check_every)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train(run)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.gpu
def test_the_host_waits_per_epoch_not_per_step() -> None:
    _host_waits(64, None)  # the first run copies constants to the GPU once; not counted
    few, many = _host_waits(64, 10**6), _host_waits(1600, 10**6)  # 4 vs 100 steps
    assert many == few
    assert _host_waits(1600, None) - few <= 100 // 50  # the default: one read per 50 steps


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 GPUs"
)
def test_two_gpus_train_through_nccl(tmp_path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(datasets=["mnist"], models=["lenet"], epochs=2, batch_size=32, threads=1)
    params.update(device="cuda")
    params["distributed"].update(nproc=2, backend="nccl")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    save_prepared(random_data(256, shape=(1, 28, 28)), tmp_path / "data/prepared/mnist")
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "train.py"), "lenet", "mnist"],
        cwd=tmp_path,
        env={**os.environ, "CI": "true"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = yaml.safe_load((tmp_path / "plots/train/lenet-mnist/metrics.json").read_text())
    assert summary["processes"] == 2 and summary["device"] == "cuda"
    assert summary["epochs_completed"] == 2
