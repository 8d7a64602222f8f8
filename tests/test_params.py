"""params.yaml validation: what a user sees after a typo or a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cnnlab.params import ParamsError, load_params, validate_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_committed_params_are_valid() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.optimizer == "adam"
    assert params.optimizer_settings() == {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 1e-4}


def test_top_level_lr_and_weight_decay_override_the_table(raw: dict) -> None:
    params = validate_params({**raw, "optimizer": "momentum", "lr": 0.003, "weight_decay": 0.0})
    assert params.optimizer_settings() == {"lr": 0.003, "momentum": 0.9, "weight_decay": 0.0}


def test_nag_is_sgd_with_nesterov(raw: dict) -> None:
    import torch

    from cnnlab.optimizers import build_optimizer

    params = validate_params({**raw, "optimizer": "nag"})
    opt = build_optimizer("nag", [torch.nn.Parameter(torch.zeros(1))], params.optimizer_settings())
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["nesterov"] is True and opt.defaults["momentum"] == 0.9


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"optimiser": "adam"}, "optimiser: unknown key (a typo?); allowed keys here: augment"),
        ({"optimizer": "adamm"}, "optimizer: got 'adamm': Input should be 'sgd', 'momentum'"),
        ({"lr": -1}, "lr: got -1: Input should be greater than 0"),
        ({"epochs": 0}, "epochs: got 0: Input should be greater than or equal to 1"),
        ({"batch_size": 0}, "batch_size: got 0"),
        ({"datasets": []}, "datasets: got []: List should have at least 1 item"),
        ({"models": ["lenet", "vgg"]}, "models.1: got 'vgg': Input should be"),
        ({"datasets": ["mnist", "mnist"]}, "names must not repeat"),
        ({"data": {"val_fraction": 1.5}}, "data.val_fraction: got 1.5: Input should be less"),
        (
            {"data": {"max_tran": 5}},
            "data.max_tran: unknown key (a typo?); allowed keys here: "
            "max_test, max_train, mirror, val_fraction",
        ),
        ({"scheduler": {"name": "cos"}}, "scheduler.name: got 'cos': Input should be 'none'"),
        ({"model": {"alexnet": {"dropot": 0.3}}}, "model.alexnet.dropot: unknown key (a typo?)"),
        ({"model": {"alexnet": {"dropout": 1.5}}}, "model.alexnet.dropout: got 1.5"),
        ({"model": {"vgg": {}}}, "unknown model 'vgg'; known models: "),
        ({"device": "gpu"}, "device: got 'gpu': Input should be 'auto', 'cpu', 'cuda' or 'mps'"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(raw: dict, change: dict, expected: str):
    with pytest.raises(ParamsError) as info:
        validate_params({**raw, **change})
    message = str(info.value)
    assert expected in message
    assert "Fix the key(s) above in params.yaml" in message


def test_optimizer_row_keys_are_checked_against_the_optimizer(raw: dict) -> None:
    optimizers = {**raw["optimizers"], "adam": {"lr": 0.1, "momentum": 0.9}}
    with pytest.raises(
        ParamsError,
        match=r"optimizers\.adam\.momentum: adam does not take "
        r"'momentum'; it takes: amsgrad, betas",
    ):
        validate_params({**raw, "optimizers": optimizers})


def test_chosen_optimizer_needs_a_row(raw: dict) -> None:
    with pytest.raises(ParamsError, match=r"optimizers\.sgd: the chosen optimizer has no row"):
        validate_params({**raw, "optimizer": "sgd", "optimizers": {"adam": {}}})


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("epochs: [1\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("- a list\n")
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(tmp_path / "params.yaml")
