"""The training-recipe knobs: optimizers, lr schedules, presets, and every model learning digits.

Schedules are checked against torch's own scheduler classes, so "step" or "onecycle" means
what a PyTorch user expects; presets are applied with DVC's own ``-S`` parser, so the lines
in presets/README.md are exactly what users can paste.
"""

from __future__ import annotations

import io
import math
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import ROOT, clean_params_text, digits_prepared, load_clean_params, make_params
from torch import nn

from cnnlab.data.prepare import PreparedData
from cnnlab.models.options import MODELS
from cnnlab.optimizers import OPTIMIZERS, build_optimizer
from cnnlab.params import Params, SchedulerParams, validate_params
from cnnlab.recipe import augmentation_for, batch_maker, build_run, new_model
from cnnlab.runtime import make_deterministic
from cnnlab.schedulers import LRSchedule
from cnnlab.training import train

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # One thread: on a shared 2-core machine two OpenMP threads can run many times slower.
    make_deterministic(1)


# --------------------------------------------------------------------------- optimizers


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 10))


def _one_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    loss = F.cross_entropy(model(x), torch.arange(8))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_each_optimizer_builds_from_params_and_moves_the_weights(name: str, fused: bool) -> None:
    params = make_params(optimizer=name)
    settings = params.optimizer_settings()
    model = _tiny_model()
    optimizer = build_optimizer(name, model.parameters(), settings, fused=fused)
    assert type(optimizer).__name__ == OPTIMIZERS[name].torch_class
    for key, value in {**settings, **OPTIMIZERS[name].fixed}.items():
        assert optimizer.defaults[key] == value, key
    before = [p.detach().clone() for p in model.parameters()]
    _one_step(model, optimizer)
    for old, new in zip(before, model.parameters(), strict=True):
        assert not torch.equal(old, new) and torch.isfinite(new).all()


#: The reference's rows of `optimizers:` (the optimizer comparison's settings), which the
#: committed rows replaced where they left the default recipe short of 80% (docs/comparisons.md).
REFERENCE_ROWS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.01, "weight_decay": 5e-4},
    "momentum": {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4},
    "nag": {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4},
    "adagrad": {"lr": 0.01, "weight_decay": 5e-4},
    "adadelta": {"lr": 0.01, "weight_decay": 5e-4},
    "rmsprop": {"lr": 1e-3, "alpha": 0.9, "weight_decay": 1e-5},
    "adam": {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 1e-4},
    "adamw": {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.01},
}


def test_the_default_optimizer_keeps_the_reference_row() -> None:
    """Adam, the default, trains the committed results: its row is the reference's."""
    assert make_params().optimizer == "adam"
    assert make_params().optimizer_settings() == REFERENCE_ROWS["adam"]


def test_the_reference_optimizers_preset_restores_the_reference_rows(tmp_path: Path) -> None:
    (sets,) = _preset_commands()["reference-optimizers"]
    (params,) = _apply_preset(tmp_path, sets)
    table = {
        name: params.model_copy(update={"optimizer": name}).optimizer_settings()
        for name in OPTIMIZERS
    }
    assert table == REFERENCE_ROWS


def test_pytorch_defaults_are_expressible() -> None:
    """A row key left out (or null) is PyTorch's default; a row value overrides it."""
    raw = yaml.safe_load(clean_params_text())
    raw["optimizers"] = {**raw["optimizers"], "rmsprop": {}, "adadelta": {"lr": 1.0}}
    for name, expected in {
        "rmsprop": {"lr": 0.01, "alpha": 0.99, "weight_decay": 0},
        "adadelta": {"lr": 1.0, "rho": 0.9, "weight_decay": 0},
    }.items():
        params = validate_params({**raw, "optimizer": name})
        optimizer = build_optimizer(name, _tiny_model().parameters(), params.optimizer_settings())
        assert {k: optimizer.defaults[k] for k in expected} == expected


# --------------------------------------------------------------------------- schedules

BASE_LR = 0.1


def _schedule(epochs: int, steps: int, **changes: Any) -> tuple[LRSchedule, torch.optim.SGD]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    settings = SchedulerParams(**{**load_clean_params().scheduler.model_dump(), **changes})
    return LRSchedule(settings, optimizer, epochs, steps), optimizer


def _run_schedule(
    schedule: LRSchedule,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    steps: int,
    metrics: list[float] | None = None,
) -> list[list[float]]:
    """The lr of every batch, epoch by epoch, as the training loop drives the schedule."""
    lrs = []
    for epoch in range(epochs):
        lrs.append([])
        for _ in range(steps):
            lrs[-1].append(optimizer.param_groups[0]["lr"])
            optimizer.step()  # no gradients: a no-op that keeps torch's call-order check quiet
            schedule.step_batch()
        metric = metrics[epoch] if metrics else 0.5
        schedule.step_epoch(val_loss=1 - metric, val_acc=metric)
    return lrs


def _torch_epoch_lrs(make: Any, epochs: int, metrics: list[float] | None = None) -> list[float]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    scheduler = make(optimizer)
    lrs = []
    for epoch in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: a no-op that keeps torch's call-order check quiet
        if metrics:
            scheduler.step(metrics[epoch])
        else:
            scheduler.step()
    return lrs


S = torch.optim.lr_scheduler


@pytest.mark.parametrize(
    ("changes", "make"),
    [
        ({"name": "none"}, lambda o: S.LambdaLR(o, lambda e: 1.0)),
        ({"name": "step", "step_size": 2, "gamma": 0.5}, lambda o: S.StepLR(o, 2, 0.5)),
        ({"name": "step", "step_size": 3, "gamma": 0.1}, lambda o: S.StepLR(o, 3, 0.1)),
        (
            {"name": "multistep", "milestones": [2, 5], "gamma": 0.1},
            lambda o: S.MultiStepLR(o, [2, 5], 0.1),
        ),
        ({"name": "cosine"}, lambda o: S.CosineAnnealingLR(o, T_max=8)),
        (
            {"name": "cosine", "min_lr": 0.01},
            lambda o: S.CosineAnnealingLR(o, T_max=8, eta_min=0.01),
        ),
    ],
)
def test_epoch_schedules_match_torch(changes: dict[str, Any], make: Any) -> None:
    schedule, optimizer = _schedule(8, 3, **changes)
    lrs = _run_schedule(schedule, optimizer, 8, 3)
    assert all(len(set(epoch)) == 1 for epoch in lrs)  # constant within an epoch
    assert [epoch[0] for epoch in lrs] == pytest.approx(_torch_epoch_lrs(make, 8), rel=1e-12)


def test_step_schedule_halves_every_two_epochs() -> None:
    changes = {**make_params().scheduler.model_dump(), "name": "step"}
    schedule, optimizer = _schedule(6, 1, **changes)
    lrs = [e[0] for e in _run_schedule(schedule, optimizer, 6, 1)]
    assert lrs == [BASE_LR * f for f in (1, 1, 0.5, 0.5, 0.25, 0.25)]


def test_plateau_matches_torch_and_divides_by_ten() -> None:
    accs = [0.3, 0.5, 0.5, 0.49, 0.5, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    changes = {"name": "plateau", "factor": 0.1, "patience": 1, "cooldown": 1, "min_lr": 1e-4}
    schedule, optimizer = _schedule(len(accs), 2, **changes)
    lrs = [e[0] for e in _run_schedule(schedule, optimizer, len(accs), 2, accs)]
    expected = _torch_epoch_lrs(
        lambda o: S.ReduceLROnPlateau(
            o, mode="max", factor=0.1, patience=1, threshold=1e-4, cooldown=1, min_lr=1e-4
        ),
        len(accs),
        accs,
    )
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[:4] == [BASE_LR] * 4 and lrs[4] == pytest.approx(BASE_LR / 10)
    assert lrs[-1] == pytest.approx(1e-4)  # the floor: no reduction below min_lr
    # three reductions, the last one to the floor
    assert sorted(set(lrs), reverse=True) == pytest.approx([BASE_LR, 1e-2, 1e-3, 1e-4])


def test_plateau_on_val_loss_waits_for_the_loss() -> None:
    schedule, optimizer = _schedule(6, 1, name="plateau", monitor="val_loss", patience=0)
    losses = [1.0, 0.5, 0.6, 0.4, 0.4, 0.3]
    lrs = []
    for loss in losses:
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step_batch()
        schedule.step_epoch(val_loss=loss, val_acc=0.0)  # the accuracy is ignored
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.001])


def test_onecycle_matches_torch_batch_by_batch() -> None:
    epochs, steps = 4, 5
    schedule, optimizer = _schedule(epochs, steps, name="onecycle", pct_start=0.3)
    lrs = [lr for epoch in _run_schedule(schedule, optimizer, epochs, steps) for lr in epoch]
    reference_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    reference = S.OneCycleLR(
        reference_opt, max_lr=BASE_LR, total_steps=epochs * steps, cycle_momentum=False
    )
    expected = []
    for _ in range(epochs * steps):
        expected.append(reference_opt.param_groups[0]["lr"])
        reference_opt.step()
        reference.step()
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[0] == pytest.approx(BASE_LR / 25)
    assert max(lrs) == pytest.approx(BASE_LR) and lrs.index(max(lrs)) == 5  # 0.3 * 20 - 1
    assert lrs[-1] == pytest.approx(BASE_LR / 25 / 1e4)
    # After the last batch the lr stays at the final one; OneCycleLR's would climb back.
    assert optimizer.param_groups[0]["lr"] == pytest.approx(BASE_LR / 25 / 1e4)
    assert reference_opt.param_groups[0]["lr"] > 1e3 * BASE_LR / 25 / 1e4


@pytest.mark.parametrize(("epochs", "steps", "pct_start"), [(2, 5, 0.1), (1, 3, 0.3), (1, 1, 0.3)])
def test_onecycle_with_a_rise_shorter_than_one_batch_decays_from_the_peak(
    epochs: int, steps: int, pct_start: float
) -> None:
    total = epochs * steps
    if pct_start * total == 1:  # why OneCycleLR is not used here: it divides by zero
        reference_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=BASE_LR)
        with pytest.raises(ZeroDivisionError):
            S.OneCycleLR(reference_opt, BASE_LR, total_steps=total, pct_start=pct_start)
    schedule, optimizer = _schedule(epochs, steps, name="onecycle", pct_start=pct_start)
    lrs = [lr for epoch in _run_schedule(schedule, optimizer, epochs, steps) for lr in epoch]
    final = BASE_LR / 25 / 1e4
    expected = [
        final + (BASE_LR - final) * (1 + math.cos(math.pi * k / max(total - 1, 1))) / 2
        for k in range(total)
    ]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[0] == BASE_LR and optimizer.param_groups[0]["lr"] == pytest.approx(lrs[-1])


def test_warmup_ramps_linearly_by_batch_then_follows_the_schedule() -> None:
    schedule, optimizer = _schedule(4, 4, name="step", step_size=2, gamma=0.5, warmup_epochs=1.5)
    lrs = _run_schedule(schedule, optimizer, 4, 4)
    flat = [lr for epoch in lrs for lr in epoch]
    assert flat[:6] == pytest.approx([BASE_LR * (i + 1) / 6 for i in range(6)])
    assert flat[6:8] == [BASE_LR] * 2
    assert lrs[2] == lrs[3] == [BASE_LR * 0.5] * 4


def _warmed(epoch_lrs: list[float], steps: int, warmup_steps: int) -> list[float]:
    """Each batch's lr: the warm-up factor times the epoch schedule's lr without warm-up."""
    return [
        min(1.0, (k + 1) / warmup_steps) * epoch_lrs[k // steps]
        for k in range(len(epoch_lrs) * steps)
    ]


def _torch_alone(make_warmup: Any, make: Any, epochs: int, steps: int, metrics: list[float]):
    """torch's warm-up and epoch scheduler stepped on one optimizer, with nothing between."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    warmup, scheduler = make_warmup(optimizer), make(optimizer)
    lrs = []
    for epoch in range(epochs):
        for _ in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            warmup.step()
        if isinstance(scheduler, S.ReduceLROnPlateau):
            scheduler.step(metrics[epoch])
        else:
            scheduler.step()
    return lrs


PLATEAU = {"name": "plateau", "factor": 0.5, "patience": 0, "min_lr": 0.03}


def _plateau(o: torch.optim.Optimizer) -> S.ReduceLROnPlateau:
    return S.ReduceLROnPlateau(o, mode="max", factor=0.5, patience=0, min_lr=0.03)


@pytest.mark.parametrize(
    ("changes", "make", "make_warmup"),
    [
        (
            {"name": "cosine", "min_lr": 0.05},
            lambda o: S.CosineAnnealingLR(o, T_max=5, eta_min=0.05),
            lambda o: S.LinearLR(o, 1 / 9, 1.0, total_iters=8),
        ),
        (PLATEAU, _plateau, lambda o: S.LinearLR(o, 1 / 9, 1.0, total_iters=8)),
        # LambdaLR sets base lr times its factor at every batch: plateau's reductions vanish
        (PLATEAU, _plateau, lambda o: S.LambdaLR(o, lambda k: min(1.0, (k + 1) / 9))),
    ],
    ids=["cosine+LinearLR", "plateau+LinearLR", "plateau+LambdaLR"],
)
def test_warmup_with_a_floor_is_what_torch_alone_gets_wrong(changes, make, make_warmup) -> None:
    """Why step_epoch takes the warm-up's factor out of the lr around the epoch step."""
    epochs, steps, accs = 5, 2, [0.5] * 5  # warm-up: 4.5 epochs = 9 batches
    schedule, optimizer = _schedule(epochs, steps, **changes, warmup_epochs=4.5)
    lrs = [lr for epoch in _run_schedule(schedule, optimizer, epochs, steps, accs) for lr in epoch]
    plateau = changes["name"] == "plateau"
    expected = _warmed(_torch_epoch_lrs(make, epochs, accs if plateau else None), steps, 9)
    assert lrs == pytest.approx(expected, rel=1e-12)
    if plateau:
        assert lrs[-1] == pytest.approx(0.03)  # reduced twice, to the floor
    alone = _torch_alone(make_warmup, make, epochs, steps, accs)
    assert alone[:steps] == pytest.approx(expected[:steps], rel=1e-12)  # before any epoch step
    assert alone != pytest.approx(expected, rel=1e-3)
    if plateau:  # torch alone: min_lr bounds the warmed lr; under LambdaLR no reduction stays
        assert min(alone[2 * steps :]) >= 0.03 > min(expected[2 * steps :])


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "plateau", "patience": 0, "warmup_epochs": 1.5},
        {"name": "plateau", "patience": 0, "min_lr": 0.03, "warmup_epochs": 4.5},
        {"name": "cosine", "min_lr": 0.01, "warmup_epochs": 4},
        {"name": "step", "step_size": 1},
        {"name": "onecycle"},
        {"name": "none"},
    ],
    ids=lambda c: "+".join(f"{k}={v}" for k, v in c.items()),
)
def test_state_dict_resumes_the_exact_lr_sequence(changes: dict[str, Any]) -> None:
    accs = [0.5, 0.4, 0.6, 0.6, 0.7, 0.7]
    whole, opt = _schedule(6, 4, **changes)
    uninterrupted = _run_schedule(whole, opt, 6, 4, accs)
    first, opt = _schedule(6, 4, **changes)
    _run_schedule(first, opt, 3, 4, accs[:3])
    buffer = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": first.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    # A new run: the optimizer state comes back first (with a scheduled lr), as on resume.
    resumed, opt2 = _schedule(6, 4, **changes)
    opt2.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["scheduler"])
    assert resumed.state_dict() == first.state_dict()
    assert _run_schedule(resumed, opt2, 3, 4, accs[3:]) == uninterrupted[3:]


@pytest.fixture(scope="module")
def tiny_digits() -> PreparedData:
    return digits_prepared(max_train=120)


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "none"},
        {"name": "step", "step_size": 1, "gamma": 0.5},
        {"name": "multistep", "milestones": [1], "gamma": 0.1},
        {"name": "cosine"},
        {"name": "onecycle"},
        {"name": "plateau", "patience": 0},
        {"name": "step", "warmup_epochs": 1},
    ],
    ids=lambda c: "+".join(f"{k}={v}" for k, v in c.items()),
)
def test_each_schedule_builds_from_params_and_trains(tiny_digits, changes) -> None:
    params = make_params(epochs=2, batch_size=32, lr=1e-3, scheduler=changes)
    run = build_run(params, "lenet", tiny_digits, CPU)
    assert isinstance(run.scheduler, LRSchedule)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    state = train(run)
    assert state.epoch == 2 and not state.diverged
    after = run.model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)
    lrs = [r.lr for r in state.history]
    name = changes["name"]
    if name in ("none", "plateau"):  # plateau: patience 0 and the first epoch always improves
        assert lrs == [1e-3, 1e-3]
    elif name in ("step", "multistep") and "warmup_epochs" not in changes:
        assert lrs == pytest.approx([1e-3, 1e-3 * changes["gamma"]])
    elif name == "cosine":
        assert lrs == pytest.approx([1e-3, 5e-4])
    elif name == "onecycle":  # the last batch of epoch 1 is past the peak, of epoch 2 at the end
        assert lrs[0] < 1e-3 and lrs[1] == pytest.approx(1e-3 / 25 / 1e4)
    else:  # warm-up: the first epoch ends at the full lr
        assert lrs == pytest.approx([1e-3, 1e-3])


# --------------------------------------------------------------------------- every model learns

#: Per model: enough to be well above chance (0.1) in seconds on one busy core. AlexNet
#: without BatchNorm starts slowly from PyTorch's default init on 300 images, so it gets
#: Kaiming init, no dropout and a lower lr; the 2012 network needs 224x224 inputs.
LEARNING_RUNS: dict[str, dict[str, Any]] = {
    "lenet": {"max_train": 600, "epochs": 3, "batch_size": 32, "lr": 3e-3},
    "lenet5": {"max_train": 600, "epochs": 3, "batch_size": 32, "lr": 3e-3},
    "alexnet": {
        "max_train": 300,
        "epochs": 1,
        "batch_size": 16,
        "lr": 1e-4,
        "model": {"alexnet": {"init": "kaiming", "dropout": 0.0}},
    },
    "alexnet_bn": {"max_train": 300, "epochs": 2, "batch_size": 16, "lr": 1e-3},
}


@pytest.mark.parametrize("name", list(MODELS))
def test_a_short_digits_run_learns(name: str) -> None:
    if name == "alexnet2012":
        pytest.skip(
            "alexnet2012 takes only 224/227 inputs: about 0.1 s per training image on one "
            "core, minutes per digits epoch; its forward/backward is covered by test_models"
        )
    settings = dict(LEARNING_RUNS[name])
    data = digits_prepared(max_train=settings.pop("max_train"))
    params = make_params(optimizer="adam", scheduler={"name": "step"}, **settings)
    state = train(build_run(params, name, data, CPU))
    assert not state.diverged
    assert state.best_val_acc > 0.5, [r.val_acc for r in state.history]  # chance is 0.1


# --------------------------------------------------------------------------- presets

PRESETS = ROOT / "presets" / "README.md"
PRESET_NAMES = [
    "classic",
    "lenet-vs-alexnet",
    "optimizers-fashion-mnist",
    "optimizers-cifar10",
    "lenet-mnist-99",
    "alexnet2012",
    "tuned-optimizers-lenet-mnist",
    "reference-optimizers",
]


def _preset_commands() -> dict[str, list[list[str]]]:
    """The ``-S`` options of every command in presets/README.md, under its ``##`` heading.

    A code line that is only ``-S`` options extends the heading's previous command (the
    documented "add to either sweep" lines).
    """
    commands: dict[str, list[list[str]]] = {}
    for section in re.split(r"^## ", PRESETS.read_text(), flags=re.M)[1:]:
        name, body = section.split("\n", 1)
        found: list[list[str]] = []
        for block in re.findall(r"```\n(.*?)```", body, flags=re.S):
            for line in block.splitlines():
                args = shlex.split(line)
                sets = [args[i + 1] for i, a in enumerate(args) if a == "-S"]
                if args[:3] == ["dvc", "exp", "run"]:
                    found.append(sets)
                elif args and args[0] == "-S":
                    found.append(found[-1] + sets)
        commands[name.strip()] = found
    return commands


def _apply_preset(tmp_path: Path, sets: list[str]) -> list[Params]:
    """What ``dvc exp run [--queue] -S ...`` would train: one Params per swept experiment."""
    hydra = pytest.importorskip("dvc.utils.hydra")
    results = []
    for i, sweep in enumerate(hydra.get_hydra_sweeps({"params.yaml": sets})):
        path = tmp_path / f"params-{i}.yaml"
        path.write_text(clean_params_text())
        hydra.apply_overrides(path, sweep["params.yaml"])
        results.append(validate_params(yaml.safe_load(path.read_text()), str(path)))
    return results


def test_every_preset_is_documented_and_validates(tmp_path: Path) -> None:
    commands = _preset_commands()
    assert list(commands) == PRESET_NAMES
    for name, lines in commands.items():
        assert lines, name
        for sets in lines:
            assert _apply_preset(tmp_path, sets), name


def test_lenet_vs_alexnet_preset_is_experiment_one(tmp_path: Path) -> None:
    quick, full = _preset_commands()["lenet-vs-alexnet"]
    (params,) = _apply_preset(tmp_path, quick)
    assert (params.datasets, params.models) == (["cifar10"], ["lenet", "alexnet"])
    assert params.optimizer == "adam" and params.optimizer_settings()["lr"] == 1e-3
    assert params.optimizer_settings()["weight_decay"] == 0
    assert (params.scheduler.name, params.scheduler.step_size, params.scheduler.gamma) == (
        "step",
        2,
        0.5,
    )
    assert (params.batch_size, params.seed, params.epochs) == (128, 42, 3)
    augment = augmentation_for(params, "cifar10")
    assert augment.crop_padding == 4 and augment.hflip and not augment.jitter
    assert params.data.std == [0.2023, 0.1994, 0.2010]
    assert _apply_preset(tmp_path, full)[0].epochs == 30


def test_make_classic_runs_the_classic_preset(tmp_path: Path) -> None:
    """`make classic` and presets/README.md say the same thing; it is the classic recipe."""
    (sets,) = _preset_commands()["classic"]
    recipe = (ROOT / "Makefile").read_text().split("\nclassic:", 1)[1].split("\n\n", 1)[0]
    args = shlex.split(recipe.replace("\\\n", " "))
    assert [args[i + 1] for i, a in enumerate(args) if a == "-S"] == sets
    (params,) = _apply_preset(tmp_path, sets)
    assert params.datasets == ["mnist", "fashion_mnist", "cifar10"]
    assert (params.epochs, params.batch_size, params.scheduler.name) == (3, 128, "step")
    assert params.models == ["lenet", "alexnet"] and params.optimizer == "adam"


def test_optimizer_presets_sweep_the_reference_optimizers(tmp_path: Path) -> None:
    names = ["sgd", "momentum", "nag", "adagrad", "adadelta", "rmsprop", "adam"]
    presets = [("optimizers-fashion-mnist", "fashion_mnist"), ("optimizers-cifar10", "cifar10")]
    for preset, dataset in presets:
        runs = _apply_preset(tmp_path, _preset_commands()[preset][0])
        assert [p.optimizer for p in runs] == names
        for params in runs:
            assert params.datasets == [dataset] and params.models == ["alexnet"]
            assert (params.epochs, params.batch_size, params.scheduler.name) == (20, 128, "none")
            assert params.model_options("alexnet").adaptive_pool
            assert params.lr is None and params.weight_decay is None  # the table's rows
            assert params.optimizer_settings() == REFERENCE_ROWS[params.optimizer]
    # The documented "PyTorch's own defaults" options, added to a sweep.
    with_torch_defaults = _preset_commands()["optimizers-cifar10"][1]
    runs = _apply_preset(tmp_path, with_torch_defaults)
    assert runs[names.index("adadelta")].optimizer_settings()["lr"] == 1.0
    assert runs[names.index("rmsprop")].optimizer_settings()["alpha"] == 0.99


def test_lenet_mnist_99_preset_is_a_short_one_cycle_adam_run(tmp_path: Path) -> None:
    (params,) = _apply_preset(tmp_path, _preset_commands()["lenet-mnist-99"][0])
    assert (params.datasets, params.models, params.epochs) == (["mnist"], ["lenet"], 3)
    assert params.optimizer == "adam" and params.optimizer_settings()["lr"] == 0.006
    assert (params.scheduler.name, params.scheduler.warmup_epochs) == ("onecycle", 0)
    assert not augmentation_for(params, "mnist").enabled
    assert params.threads == 2


def test_fashion_mnist_preset_feeds_resized_gray_as_three_channels(tmp_path: Path) -> None:
    sets = _preset_commands()["optimizers-fashion-mnist"][0]
    params = _apply_preset(tmp_path, sets)[0]
    images = torch.full((4, 1, 28, 28), 255, dtype=torch.uint8)
    data = PreparedData(
        images={"train": images},
        labels={"train": torch.arange(4)},
        meta={
            "dataset": "fashion_mnist",
            "classes": [str(i) for i in range(10)],
            "image_shape": [1, 28, 28],
            "mean": [0.286],
            "std": [0.353],
        },
    )
    x, _ = batch_maker(params, "alexnet", data, "train", CPU).batch(slice(0, 4))
    # Resized, not padded (no background border), copied to 3 channels, (1 - 0.5) / 0.5 = 1.
    assert x.shape == (4, 3, 32, 32) and torch.allclose(x, torch.ones_like(x))
    model = new_model(params, "alexnet", data).eval()
    assert model(x).shape == (4, 10)
    assert not augmentation_for(params, "fashion_mnist").enabled


def test_alexnet2012_preset_is_the_paper_recipe(tmp_path: Path) -> None:
    (params,) = _apply_preset(tmp_path, _preset_commands()["alexnet2012"][0])
    assert params.models == ["alexnet2012"] and params.optimizer == "momentum"
    assert params.optimizer_settings() == {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}
    sched = params.scheduler
    assert (sched.name, sched.factor, sched.monitor) == ("plateau", 0.1, "val_acc")
    # the floor allows exactly three divisions by 10, as in the paper
    assert 0.01 * 0.1**4 < sched.min_lr <= 0.01 * 0.1**3 * (1 + 1e-9)
    options = params.model_options("alexnet2012")
    assert options.effective_init == "paper" and options.dropout == 0.5
    augment = augmentation_for(params, "cifar10")
    assert augment.pca_lighting == 0.1 and augment.hflip and augment.crop_padding == 16
    assert (params.batch_size, params.epochs) == (128, 90)


def test_tuned_preset_is_an_lr_grid_around_each_optimizers_row_with_two_seeds(
    tmp_path: Path,
) -> None:
    lines = _preset_commands()["tuned-optimizers-lenet-mnist"]
    names = ["sgd", "momentum", "nag", "adagrad", "adadelta", "rmsprop", "adam"]
    shared = None
    for name, sets in zip(names, lines, strict=True):
        runs = _apply_preset(tmp_path, sets)
        assert {p.optimizer for p in runs} == {name}
        default = REFERENCE_ROWS[name]["lr"]  # the grid is around the reference's row
        lrs = sorted({p.optimizer_settings()["lr"] for p in runs})
        assert lrs == pytest.approx([default / 3, default, default * 3], rel=0.11)
        assert lrs[1] == default  # the untuned result is in the grid
        # every lr with seeds 1 and 2, and nothing else different between the runs
        assert sorted((p.lr, p.seed) for p in runs) == [(lr, s) for lr in lrs for s in (1, 2)]
        for params in runs:
            assert (params.datasets, params.models, params.epochs) == (["mnist"], ["lenet"], 3)
            assert params.scheduler.name == "none" and params.threads == 1
            rest = params.model_dump(exclude={"optimizer", "lr", "seed"})
            assert shared is None or rest == shared
            shared = rest
    assert len(lines) == len(names)
    text = PRESETS.read_text().split("## tuned-optimizers-lenet-mnist", 1)[1]
    assert "\ncnnlab-compare --tune lr\n" in text
