"""params.yaml validation: what a user sees after a typo or a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import clean_params_text, load_clean_params, merged

from cnnlab.models.options import MODELS
from cnnlab.params import (
    AugmentParams,
    DataParams,
    Params,
    ParamsError,
    SchedulerParams,
    load_params,
    validate_params,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(clean_params_text())


def test_committed_params_are_valid() -> None:
    params = load_clean_params()
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
        (
            {"optimiser": "adam"},
            "optimiser: unknown key (a typo?); allowed keys here: amp, augment",
        ),
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
            "channels, max_test, max_train, mean, mirror, pad_to_size, std, val_fraction",
        ),
        ({"model": {"alexnet": {"dropot": 0.3}}}, "model.alexnet.dropot: unknown key (a typo?)"),
        ({"model": {"alexnet": {"dropout": 1.5}}}, "model.alexnet.dropout: got 1.5"),
        ({"model": {"vgg": {}}}, "unknown model 'vgg'; known models: "),
        ({"device": "gpu"}, "device: got 'gpu': Input should be 'auto', 'cpu', 'cuda' or 'mps'"),
        (
            {"scheduler": {"name": "cos"}},
            "scheduler.name: got 'cos': Input should be 'none', 'step', 'multistep', 'cosine', "
            "'onecycle' or 'plateau'",
        ),
        ({"scheduler": {"gamma": 0}}, "scheduler.gamma: got 0: Input should be greater than 0"),
        ({"scheduler": {"milestones": [5, 3]}}, "scheduler.milestones: got [5, 3]: milestones"),
        ({"scheduler": {"monitor": "acc"}}, "Input should be 'val_acc' or 'val_loss'"),
        ({"scheduler": {"factor": 1}}, "scheduler.factor: got 1: Input should be less than 1"),
        ({"scheduler": {"warmup": 2}}, "scheduler.warmup: unknown key (a typo?); allowed keys"),
        (
            {"scheduler": {"name": "onecycle", "warmup_epochs": 1}},
            "scheduler.warmup_epochs: got 1.0: onecycle has its own warm-up",
        ),
        (
            {"scheduler": {"name": "step", "warmup_epochs": 9}},
            "warmup_epochs: got 9.0: must not exceed epochs",
        ),
        ({"augment": {"hue": 0.7}}, "augment.hue: got 0.7: Input should be less than or equal"),
        ({"augment": {"brightness": -1}}, "augment.brightness: got -1"),
        ({"augment": {"crop_padding": 40}}, "augment.crop_padding: got 40"),
        (
            {"augment": {"jitter": 0.4}},
            "augment.jitter: unknown key (a typo?); allowed keys here: brightness, contrast, "
            "crop_padding, hflip, hue, pca_lighting, saturation",
        ),
        ({"data": {"channels": 2}}, "data.channels: got 2: Input should be 1 or 3"),
        ({"data": {"mirror": "  "}}, "data.mirror: got '  ': blank, which would be the current"),
        ({"data": {"mirror": ""}}, "data.mirror: got '': blank, which would be the current"),
        (
            {"datasets": ["cifar10"], "data": {"channels": 1}},
            "data.channels: got 1: cifar10 has 3-channel images; allowed: null (as stored) or 3",
        ),
        (
            {"datasets": ["mnist"], "data": {"mean": [0.5, 0.5, 0.5]}},
            "data.mean: got [0.5, 0.5, 0.5]: mnist has 1-channel images; give 1 value",
        ),
        ({"data": {"std": [0.0]}}, "data.std: got [0.0]: standard deviations must be > 0"),
        ({"amp": "bf32"}, "amp: got 'bf32': Input should be 'auto', 'off', 'fp16' or 'bf16'"),
        ({"label_smoothing": 1.0}, "label_smoothing: got 1.0: Input should be less than 1"),
        ({"clip_grad_norm": 0}, "clip_grad_norm: got 0: Input should be greater than 0"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(raw: dict, change: dict, expected: str):
    with pytest.raises(ParamsError) as info:
        validate_params(merged(raw, change))
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


@pytest.mark.parametrize("name", ["momentum", "nag"])
def test_momentum_rows_need_momentum(raw: dict, name: str) -> None:
    optimizers = {**raw["optimizers"], name: {"lr": 0.01, "momentum": None}}
    with pytest.raises(ParamsError, match=rf"optimizers\.{name}\.momentum: got None: {name} needs"):
        validate_params({**raw, "optimizers": optimizers})


def test_params_yaml_spells_out_every_knob(raw: dict) -> None:
    """Every key is in the file (DVC's ``-S`` cannot set a key the file lacks without ``+``),
    with today's recipe: onecycle, crop and flip from the dataset, nothing else switched on."""
    for section, schema in [
        (raw, Params),
        (raw["scheduler"], SchedulerParams),
        (raw["augment"], AugmentParams),
        (raw["data"], DataParams),
    ]:
        assert set(section) == set(schema.model_fields)
    committed = load_clean_params()
    assert (committed.scheduler.name, committed.scheduler.step_size) == ("onecycle", 2)
    assert committed.scheduler.gamma == 0.5 and committed.scheduler.warmup_epochs == 0
    assert (committed.label_smoothing, committed.clip_grad_norm) == (0, None)


def test_params_yaml_writes_out_every_models_options(raw: dict) -> None:
    """So that ``-S model.lenet.activation=tanh`` needs no ``+``; the values build the
    architectures of docs/experiments.md (test_models checks their counts)."""
    assert set(raw["model"]) == set(MODELS)
    for name, spec in MODELS.items():
        assert set(raw["model"][name]) == set(spec.options.model_fields), name


def _schemas() -> list[type]:
    from cnnlab.data.catalog import ResizedOptions
    from cnnlab.params import DistributedParams

    models = [spec.options for spec in MODELS.values()]
    return [
        Params,
        SchedulerParams,
        AugmentParams,
        DataParams,
        DistributedParams,
        ResizedOptions,
        *models,
    ]


@pytest.mark.parametrize("schema", _schemas(), ids=lambda c: c.__name__)
def test_the_schema_holds_no_defaults(schema: type) -> None:
    """Defaults are written once, in params.yaml: the schema only says what a key allows."""
    defaulted = [name for name, info in schema.model_fields.items() if not info.is_required()]
    assert defaulted == []


def test_a_missing_key_is_named_with_where_to_find_it(raw: dict) -> None:
    scheduler = {k: v for k, v in raw["scheduler"].items() if k != "gamma"}
    model = {k: v for k, v in raw["model"].items() if k != "alexnet"}
    with pytest.raises(ParamsError) as info:
        validate_params({**raw, "scheduler": scheduler, "model": model})
    message = str(info.value)
    assert "scheduler.gamma: missing: params.yaml holds every key with its default" in message
    assert "`git show HEAD:params.yaml` has them all" in message
    assert "model.alexnet: missing: every model in `models` needs its entry" in message


# ----------------------------------------------------------------------------- datasets


def _with_datasets(raw: dict, names: list[str], **entries: dict) -> dict:
    return {**raw, "datasets": names, "dataset": {**raw["dataset"], **entries}}


def test_a_declared_folder_is_a_dataset_with_defaults(raw: dict) -> None:
    from cnnlab.data.catalog import options_class

    params = validate_params(_with_datasets(raw, ["mnist", "my_photos"], my_photos={"size": 96}))

    def options(name: str):  # as the prepare stage reads them
        return options_class(name).model_validate(params.dataset[name] or {})

    assert (options("my_photos").size, options("my_photos").resize) == (96, "center_crop")
    assert options("my_photos").on_bad_file == "skip" and options("flowers102").size == 64


@pytest.mark.parametrize(
    ("names", "entries", "expected"),
    [
        (
            ["my_photos"],
            {},
            "datasets: got 'my_photos': not a built-in dataset (mnist, fashion_mnist, cifar10, "
            "digits, flowers102) nor a folder declared under `dataset:`. For your own images, "
            "put them in datasets/my_photos/<class>/<image> and add `dataset.my_photos: "
            "{size: 64}`",
        ),
        (
            ["mnist"],
            {"mnist": {"size": 64, "on_bad_file": "skip"}},
            "dataset.mnist.size: unknown key (a typo?) (mnist is a built-in dataset; it takes: "
            "no options. A folder of your own images needs a name of its own)",
        ),
        (
            ["My-Photos"],
            {"My-Photos": {}},
            "dataset.My-Photos: not a usable dataset name: use lower-case letters",
        ),
        (
            ["cats"],
            {"cats": {"resize": "stretch"}},
            "dataset.cats.resize: got 'stretch': Input should be 'center_crop' or 'letterbox'",
        ),
        (
            ["cats"],
            {"cats": {"on_bad_files": "skip"}},
            "dataset.cats.on_bad_files: unknown key (a typo?); allowed keys here: on_bad_file",
        ),
        (["cats"], {"cats": {"size": 4}}, "dataset.cats.size: got 4: Input should be greater"),
        (
            ["flowers102"],
            {"flowers102": {"on_bad_file": "skip"}},
            "flowers102 is a built-in dataset; it takes: size, resize.",
        ),
    ],
)
def test_dataset_mistakes_are_named(raw: dict, names, entries, expected: str) -> None:
    with pytest.raises(ParamsError) as info:
        validate_params(_with_datasets(raw, names, **entries))
    assert expected in str(info.value)


def test_every_dataset_of_the_committed_params_has_its_entry(raw: dict) -> None:
    """dvc.yaml's prepare stage declares `dataset.<name>`: DVC refuses to run it without."""
    from cnnlab.data.catalog import DATASETS

    assert set(raw["dataset"]) == set(DATASETS)


def test_folders_are_colour_for_channel_checks(raw: dict) -> None:
    with pytest.raises(ParamsError, match=r"data\.channels: got 1: cats has 3-channel images"):
        validate_params(
            {**_with_datasets(raw, ["cats"], cats={}), "data": {**raw["data"], "channels": 1}}
        )


# --------------------------------------------------------------------------- hostile values


def _problems(raw: dict, **changes) -> str:
    with pytest.raises(ParamsError) as info:
        validate_params({**raw, **changes})
    return str(info.value)


def test_params_are_read_with_the_yaml_dvc_records(tmp_path: Path) -> None:
    """YAML 1.2, as DVC reads params.yaml into dvc.lock: 010 is ten, 1:30 is a string."""
    text = clean_params_text()
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("\nepochs: 8\n", "\nepochs: 010\n"))
    assert load_params(path).epochs == 10
    path.write_text(text.replace("\nepochs: 8\n", "\nepochs: 1:30\n"))
    with pytest.raises(ParamsError, match=r"epochs: got '1:30': Input should be a valid integer"):
        load_params(path)


def test_infinite_and_huge_numbers_are_refused(raw: dict) -> None:
    assert "lr: got inf: Input should be a finite number" in _problems(raw, lr=float("inf"))
    message = _problems(raw, seed=18446744073709551616)
    assert "seed: got 18446744073709551616: Input should be less than or equal to" in message
    dropout = {**raw["model"], "lenet": {**raw["model"]["lenet"], "dropout": float("nan")}}
    assert "model.lenet.dropout: got nan" in _problems(raw, model=dropout)


def test_every_problem_is_listed_at_once_top_level_and_per_model(raw: dict) -> None:
    model = {**raw["model"], "alexnet": {**raw["model"]["alexnet"], "dropout": 2}}
    message = _problems(raw, epochs=0, model=model)
    assert message.startswith("params.yaml is not valid (2 problems):")
    assert "\n  epochs: got 0: Input should be greater than or equal to 1" in message
    assert "\n  model.alexnet.dropout: got 2: Input should be less than 1" in message


@pytest.mark.parametrize("name", ["x;echo INJECTED>injected.txt", "../etc", "Mnist", "a b"])
def test_a_dataset_name_that_could_reach_a_shell_or_a_path_is_refused(raw: dict, name) -> None:
    message = _problems(raw, datasets=["digits", name])
    assert f"datasets: got {name!r}: not a usable dataset name" in message
    assert "datasets/" not in message  # no advice to make a folder of that name


def test_models_must_be_a_list(raw: dict) -> None:
    assert "models: got 'lenet': Input should be a valid list" in _problems(raw, models="lenet")


@pytest.mark.parametrize(
    ("override", "changed"),
    [
        ("seed=42", 0),  # DVC rewrites the file; in its own style nothing moves
        ("optimizer=sgd", 1),
        ("model.lenet.activation=tanh", 1),
        ("models=[lenet]", 1),  # one list item fewer
        ("datasets=[mnist,cifar10]", 2),
        ("lr=0.01", 1),
    ],
)
def test_dvc_exp_run_s_changes_only_the_lines_it_sets(tmp_path: Path, override, changed) -> None:
    """params.yaml is written the way DVC's `-S` writer writes it (empty = null, block lists),
    so an experiment's diff of params.yaml is the lines it set, not a reformatted file."""
    import difflib

    hydra = pytest.importorskip("dvc.utils.hydra")
    path = tmp_path / "params.yaml"
    before = clean_params_text()
    path.write_text(before)
    hydra.apply_overrides(path, [override])
    diff = [
        line
        for line in difflib.unified_diff(before.splitlines(), path.read_text().splitlines(), n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    added, removed = (len([x for x in diff if x.startswith(sign)]) for sign in "+-")
    assert max(added, removed) == changed, diff
