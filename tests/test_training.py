"""The training loop on real (small) data: it learns, repeats bit for bit, survives divergence."""

from __future__ import annotations

import torch
from conftest import make_params

from cnnlab.evaluation import classification_metrics
from cnnlab.recipe import augmentation_for, build_run, fit
from cnnlab.runtime import make_deterministic
from cnnlab.training import evaluate_batches

CPU = torch.device("cpu")


def _train(data, **changes):
    make_deterministic(2)
    params = make_params(**{"epochs": 3, "batch_size": 32, **changes})
    run = build_run(params, "lenet", data, CPU)
    return run, fit(run)


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
