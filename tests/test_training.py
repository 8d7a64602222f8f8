"""The training loop on real (small) data: it learns, repeats bit for bit, survives divergence."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import digits_prepared, make_params

from cnnlab.data.prepare import split_dataset
from cnnlab.evaluation import classification_metrics, evaluate_batches
from cnnlab.recipe import amp_dtype, augmentation_for, build_run, new_model
from cnnlab.runtime import epoch_seed, make_deterministic
from cnnlab.training import train

CPU = torch.device("cpu")


def _train(data, **changes):
    # One thread: two OpenMP threads on a shared 2-core machine can run many times slower.
    make_deterministic(1)
    params = make_params(**{"epochs": 3, "batch_size": 32, **changes})
    run = build_run(params, "lenet", data, CPU)
    return run, train(run)


def test_epoch_seeds_come_from_numpy_seed_sequence() -> None:
    """The same (seed, epoch, stream) gives the same seed; every other triple another one."""
    triples = [(s, e, k) for s in (0, 1, 42, 2**63 - 1) for e in range(1, 30) for k in range(9)]
    seeds = [epoch_seed(*t) for t in triples]
    assert seeds == [epoch_seed(*t) for t in triples]
    assert len(set(seeds)) == len(triples)
    assert all(0 <= s < 2**63 for s in seeds) and max(seeds) >= 2**62
    words = np.random.SeedSequence(42, spawn_key=(3, 5)).generate_state(1, np.uint64)
    assert epoch_seed(42, 3, 5) == int(words[0]) >> 1
    assert epoch_seed(42, 3) == epoch_seed(42, 3, 0)
    torch.Generator().manual_seed(max(seeds))  # torch takes every one of them


def test_lenet_learns_digits(digits) -> None:
    _run, state = _train(digits, epochs=4, lr=3e-3)
    assert [r.epoch for r in state.history] == [1, 2, 3, 4]
    assert state.history[-1].train_loss < state.history[0].train_loss
    assert state.best_val_acc > 0.85  # chance is 0.10
    assert 1 <= state.best_epoch <= 4 and not state.diverged


def test_two_runs_give_identical_weights(digits) -> None:
    _, a = _train(digits, epochs=1)
    _, b = _train(digits, epochs=1)
    assert a.best_model.keys() == b.best_model.keys()
    assert all(torch.equal(a.best_model[k], b.best_model[k]) for k in a.best_model)
    assert [r.train_loss for r in a.history] == [r.train_loss for r in b.history]


def test_a_different_seed_gives_different_weights(digits) -> None:
    _, a = _train(digits, epochs=1)
    _, b = _train(digits, epochs=1, seed=7)
    first = next(iter(a.best_model))
    assert not torch.equal(a.best_model[first], b.best_model[first])


def test_divergence_is_recorded_not_raised(digits) -> None:
    _run, state = _train(digits, optimizer="sgd", lr=1e6, epochs=3)
    assert state.diverged and state.diverged_epoch == 1
    assert state.epoch == 0 and state.history == []


def test_cifar_gets_crop_and_flip_digits_get_neither() -> None:
    params = make_params()
    assert augmentation_for(params, "cifar10").crop_padding == 4
    assert augmentation_for(params, "cifar10").hflip
    assert not augmentation_for(params, "digits").enabled
    flipped = make_params(augment={"crop_padding": 2, "hflip": None})
    assert augmentation_for(flipped, "mnist").crop_padding == 2


def test_test_metrics(digits) -> None:
    run, _ = _train(digits, epochs=1)
    _, logits, labels = evaluate_batches(run.model, run.val_batches, 100)
    metrics = classification_metrics(logits, labels, [str(i) for i in range(10)])
    assert 0 < metrics["test_acc"] <= metrics["test_top5"] <= 1
    assert sum(map(sum, metrics["confusion"])) == len(labels)
    assert set(metrics["per_class_acc"]) == {str(i) for i in range(10)}


@pytest.fixture(scope="module")
def one_batch():
    """32 training images: with batch_size 32 an epoch is exactly one optimizer step."""
    return digits_prepared(max_train=40)


def run_params(**changes):
    return make_params(
        **{"optimizer": "sgd", "weight_decay": 0.0, "epochs": 1, "batch_size": 32, **changes}
    )


def _sgd_step(data, **changes):
    """One plain SGD step (no momentum, no weight decay) from the seed's initial weights."""
    make_deterministic(1)
    params = run_params(**changes)
    run = build_run(params, "lenet", data, CPU)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    state = train(run)
    delta = torch.cat([(run.model.state_dict()[k] - v).flatten() for k, v in before.items()])
    return run, state, delta


def test_label_smoothing_changes_the_gradients_not_the_recorded_loss(one_batch) -> None:
    run, plain_state, plain = _sgd_step(one_batch, lr=1.0)
    _, smooth_state, smooth = _sgd_step(one_batch, lr=1.0, label_smoothing=0.3)
    assert run.config.label_smoothing == 0 and not torch.allclose(plain, smooth)
    # Both record the plain cross-entropy of the initial weights on the one batch, which the
    # smoothed objective (what the gradient came from) is not.
    recorded = smooth_state.history[0].train_loss
    assert recorded == plain_state.history[0].train_loss
    model = new_model(run_params(label_smoothing=0.3), "lenet", one_batch)
    model.train()
    x, y = run.train_batches.batch(slice(0, 32))
    with torch.no_grad():
        logits = model(x)
    assert recorded == pytest.approx(F.cross_entropy(logits, y).item(), abs=1e-5)
    assert abs(recorded - F.cross_entropy(logits, y, label_smoothing=0.3).item()) > 1e-3


def test_gradient_clipping_bounds_the_step(one_batch) -> None:
    _, _, free = _sgd_step(one_batch, lr=1.0)
    _, _, clipped = _sgd_step(one_batch, lr=1.0, clip_grad_norm=1e-3)
    assert free.norm() > 0.01  # the unclipped gradient is far larger than the bound
    assert clipped.norm().item() == pytest.approx(1e-3, rel=1e-3)  # lr 1 x the clipped norm
    assert torch.allclose(clipped / clipped.norm(), free / free.norm(), atol=1e-4)


def test_mixed_precision_is_cuda_only() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [amp_dtype(a, cpu) for a in ("auto", "off", "fp16", "bf16")] == [None] * 4
    assert amp_dtype("auto", cuda) == amp_dtype("fp16", cuda) == torch.float16
    assert amp_dtype("bf16", cuda) == torch.bfloat16 and amp_dtype("off", cuda) is None


def test_fp16_on_the_cpu_trains_in_float32_and_says_so(one_batch, capsys) -> None:
    _, _, default = _sgd_step(one_batch, lr=0.1, amp="off")
    run, _, asked = _sgd_step(one_batch, lr=0.1, amp="fp16")
    assert run.config.amp_dtype is None and torch.equal(default, asked)
    assert "amp: fp16 runs on CUDA only; training in float32 on cpu" in capsys.readouterr().err


def test_summary_of_a_run_that_never_finished_an_epoch(digits) -> None:
    _, state = _train(digits, optimizer="sgd", lr=1e6, epochs=3)
    summary = state.summary(epochs=3)
    assert summary["diverged"] is True and summary["diverged_epoch"] == 1
    assert summary["best_epoch"] is None and summary["best_val_acc"] is None
    assert state.timings()["train_images_per_second"] is None and summary["epochs_completed"] == 0


@pytest.mark.parametrize("model", ["lenet", "lenet5", "alexnet", "alexnet_bn", "alexnet2012"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32), (3, 64, 64)], ids=str)
def test_every_model_takes_every_dataset_shape(model: str, shape: tuple[int, int, int]) -> None:
    """MNIST-, digits-, CIFAR- and photo-sized images (a 64x64 folder): padded or resized to
    the model's input by the batch code, one optimizer step, weights move."""
    make_deterministic(1)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, *shape), dtype=torch.uint8, generator=generator)
    labels = torch.tensor([0, 1, 2, 3])
    data = split_dataset(
        images, labels, images, labels, list("abcd"), name="x", seed=0, val_fraction=0.25
    )
    run = build_run(make_params(batch_size=3, epochs=1), model, data, CPU)
    before = [p.detach().clone() for p in run.model.parameters()]
    x, y = run.train_batches.batch(torch.arange(3))
    torch.nn.functional.cross_entropy(run.model(x), y).backward()
    run.optimizer.step()
    assert x.shape[1] == shape[0] and x.shape[-1] == run.train_batches.size
    assert any(not torch.equal(a, b) for a, b in zip(before, run.model.parameters(), strict=True))


# --------------------------------------------------------------------------- no wait per step


def _deferred(data, check_every: int, **changes):
    """A run whose divergence flag the host reads every ``check_every`` steps, as on a GPU."""
    make_deterministic(1)
    params = make_params(**{"epochs": 2, "batch_size": 16, **changes})
    run = build_run(params, "lenet", data, CPU)
    run.config = dataclasses.replace(run.config, check_every=check_every)
    return run, train(run)


def _same_run(a, b) -> bool:
    (run_a, state_a), (run_b, state_b) = a, b
    weights_a, weights_b = run_a.model.state_dict(), run_b.model.state_dict()
    best_a, best_b = state_a.best_model or {}, state_b.best_model or {}
    return (
        all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
        and best_a.keys() == best_b.keys()
        and all(torch.equal(best_a[k], best_b[k]) for k in best_a)
        and [r.train_loss for r in state_a.history] == [r.train_loss for r in state_b.history]
        and [r.val_acc for r in state_a.history] == [r.val_acc for r in state_b.history]
        and state_a.diverged_epoch == state_b.diverged_epoch
    )


# adam and nag: torch's fused step (skips in its kernel); rmsprop: no fused step (snapshot)
@pytest.mark.parametrize("optimizer", ["adam", "nag", "rmsprop"])
def test_reading_the_divergence_flag_rarely_changes_no_bit(digits, optimizer: str) -> None:
    every_step = _deferred(digits, 1, optimizer=optimizer)
    assert _same_run(every_step, _deferred(digits, 7, optimizer=optimizer))
    assert _same_run(every_step, _deferred(digits, 10_000, optimizer=optimizer))  # per epoch


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 1e6), ("adam", 1e25), ("rmsprop", 1e25)])
def test_a_late_check_still_stops_at_the_first_non_finite_loss(
    digits, capsys, optimizer: str, lr: float
) -> None:
    """Steps between the first non-finite loss and the check are skipped on the device: the
    run ends with the weights from before that loss, as when every step is checked."""
    every_step = _deferred(digits, 1, optimizer=optimizer, lr=lr)
    late = _deferred(digits, 10_000, optimizer=optimizer, lr=lr)
    run, state = late
    assert state.diverged_epoch == 1 and state.history == [] and state.best_model is None
    assert all(torch.isfinite(w).all() for w in run.model.state_dict().values())
    assert _same_run(every_step, late)
    assert "loss is not finite; the run diverged" in capsys.readouterr().err


def test_the_host_reads_device_values_once_per_check_not_per_step(digits, monkeypatch) -> None:
    """What makes the host wait for a GPU: ``item()``, ``bool()``, ``tolist()`` of a tensor."""
    calls: list[str] = []
    make_deterministic(1)
    params = make_params(epochs=2, batch_size=16)  # 480 images: 30 steps an epoch
    run = build_run(params, "lenet", digits, CPU)
    run.config = dataclasses.replace(run.config, check_every=10)
    for name in ("item", "__bool__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counting(tensor, *args, _name=name, _original=original):
            calls.append(_name)
            return _original(tensor, *args)

        monkeypatch.setattr(torch.Tensor, name, counting)
    state = train(run)
    monkeypatch.undo()
    # per epoch: 3 checks, the loss and accuracy sums, validation's loss and accuracy
    assert len(state.history) == 2 and 0 < len(calls) <= 2 * 8 < 2 * 30, calls


class _NaNWhenEvaluating(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.training else x * float("nan")


def test_a_non_finite_validation_loss_is_divergence_and_never_the_best(digits) -> None:
    make_deterministic(1)
    params = make_params(epochs=3, batch_size=32)
    run = build_run(params, "lenet", digits, CPU)
    run.model.classifier.add_module("nan", _NaNWhenEvaluating())
    state = train(run)
    assert state.diverged_epoch == 1 and [r.epoch for r in state.history] == [1]
    assert state.best_model is None and state.best_epoch == 0
    assert math.isnan(state.history[0].val_loss)


@pytest.mark.parametrize(("val", "ranks"), [(4, 3), (10, 8)])
def test_validation_shares_add_up_when_some_ranks_get_no_image(val: int, ranks: int) -> None:
    """Each rank validates a contiguous share of ceil(val / ranks) images, so with few
    validation images the last ranks get none: they count zero instead of raising."""
    from cnnlab.distributed import World
    from cnnlab.training import _validate

    make_deterministic(1)
    data = digits_prepared(max_train=5 * val)  # val_fraction 0.2: `val` validation images
    assert len(data.labels["val"]) == val
    params = make_params(batch_size=ranks, distributed={"nproc": ranks})
    shares = []
    for world in [World(rank, ranks) for rank in range(ranks)] + [World(0, 1)]:
        # no process group: each rank's own sums over the whole split's count, unreduced
        run = build_run(params, "lenet", data, CPU, world=world)
        shares.append(_validate(run.model, run.val_batches, run.config))
    *shares, whole = shares
    assert shares[-1] == (0.0, 0.0)
    assert sum(loss for loss, _ in shares) == pytest.approx(whole[0])
    assert sum(acc for _, acc in shares) == pytest.approx(whole[1])


def test_fewer_training_images_than_processes_is_one_line() -> None:
    from cnnlab.distributed import World
    from cnnlab.errors import UserError

    data = digits_prepared(max_train=8)  # 6 training images
    params = make_params(batch_size=8, distributed={"nproc": 8})
    with pytest.raises(UserError, match=r"holds 6 image\(s\), fewer than the 8 processes"):
        build_run(params, "lenet", data, CPU, world=World(0, 8))
