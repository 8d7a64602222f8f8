"""The params schema: the one place that says which keys params.yaml may hold and allows.

The defaults, and what each key means, are params.yaml's: a missing key is an error (a
user's image folder's options excepted). The validate stage runs :func:`load_params` first,
so a typo or bad value stops the pipeline with every problem named, key by key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cnnlab.data.catalog import DATASETS, NAME_PATTERN, is_folder, options_class, stored_channels
from cnnlab.models.options import MODELS
from cnnlab.optimizers import OPTIMIZERS
from cnnlab.slices import MISSING, ParamsError, read_params, read_yaml

__all__ = ["Params", "ParamsError", "load_params", "read_yaml", "validate_params"]

ModelName = Literal[tuple(MODELS)]  # type: ignore[valid-type]
OptimizerName = Literal[tuple(OPTIMIZERS)]  # type: ignore[valid-type]


class _Section(BaseModel):
    # No inf/nan: YAML 1.2 reads 1e309 as inf, which no knob can use.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class OptimizerSettings(_Section):
    """One row of the ``optimizers:`` table; a key left out takes PyTorch's default."""

    lr: float | None = Field(None, gt=0)
    momentum: float | None = Field(None, ge=0)
    dampening: float | None = Field(None, ge=0)
    weight_decay: float | None = Field(None, ge=0)
    betas: tuple[float, float] | None = None
    alpha: float | None = Field(None, gt=0, lt=1)
    rho: float | None = Field(None, gt=0, lt=1)
    eps: float | None = Field(None, gt=0)
    lr_decay: float | None = Field(None, ge=0)
    centered: bool | None = None
    amsgrad: bool | None = None

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float] | None) -> tuple[float, float] | None:
        if betas is not None and not all(0 <= b < 1 for b in betas):
            raise ValueError(f"both betas must be in [0, 1), got {list(betas)}")
        return betas


class SchedulerParams(_Section):
    """Learning-rate schedule (``schedulers.py``): one flat section, each schedule reading
    only its own keys, so switching ``name`` needs no other edit."""

    name: Literal["none", "step", "multistep", "cosine", "onecycle", "plateau"]
    step_size: int = Field(ge=1)
    milestones: list[int]
    gamma: float = Field(gt=0, le=1)
    min_lr: float = Field(ge=0)
    pct_start: float = Field(gt=0, lt=1)
    div_factor: float = Field(ge=1)
    final_div_factor: float = Field(ge=1)
    monitor: Literal["val_acc", "val_loss"]
    factor: float = Field(gt=0, lt=1)
    patience: int = Field(ge=0)
    threshold: float = Field(ge=0, lt=1)
    cooldown: int = Field(ge=0)
    warmup_epochs: float = Field(ge=0)

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, milestones: list[int]) -> list[int]:
        if any(m < 1 for m in milestones) or milestones != sorted(set(milestones)):
            raise ValueError(f"milestones must be increasing epochs >= 1, got {milestones}")
        return milestones


class AugmentParams(_Section):
    """Augmentation of training images (``batches.py``): ``null`` crop/flip take the
    dataset's usual recipe; colour ones are 0 = off and skip gray images."""

    crop_padding: int | None = Field(ge=0, le=32)
    hflip: bool | None
    brightness: float = Field(ge=0)
    contrast: float = Field(ge=0)
    saturation: float = Field(ge=0)
    hue: float = Field(ge=0, le=0.5)
    pca_lighting: float = Field(ge=0, le=1)


class DataParams(_Section):
    mirror: str | None
    val_fraction: float = Field(gt=0, lt=1)
    max_train: int | None = Field(ge=1)
    max_test: int | None = Field(ge=1)
    channels: Literal[1, 3] | None
    mean: list[float] | None = Field(min_length=1, max_length=3)
    std: list[float] | None = Field(min_length=1, max_length=3)
    pad_to_size: bool

    @field_validator("mirror")
    @classmethod
    def _mirror_not_blank(cls, mirror: str | None) -> str | None:
        if mirror is not None and not mirror.strip():
            raise ValueError(
                "blank, which would be the current folder; leave it empty (null) for the "
                "public mirrors, or give a folder or an http(s) URL holding <dataset>/ folders"
            )
        return mirror

    @field_validator("mean")
    @classmethod
    def _mean_in_range(cls, mean: list[float] | None) -> list[float] | None:
        if mean is not None and not all(0 <= m <= 1 for m in mean):
            raise ValueError(f"means are on the 0..1 pixel scale, got {mean}")
        return mean

    @field_validator("std")
    @classmethod
    def _std_positive(cls, std: list[float] | None) -> list[float] | None:
        if std is not None and not all(s > 0 for s in std):
            raise ValueError(f"standard deviations must be > 0, got {std}")
        return std


class DistributedParams(_Section):
    """Data-parallel training (``distributed.py``); a job under the user's own torchrun
    takes its world size from torchrun."""

    nproc: int = Field(ge=1, le=1024)
    batch_size_per: Literal["global", "rank"]
    backend: Literal["auto", "gloo", "nccl"]


class Params(_Section):
    datasets: list[str] = Field(min_length=1)
    models: list[ModelName] = Field(min_length=1)
    seed: int = Field(ge=0, le=2**63 - 1)  # torch's and numpy's generators take 64 bits
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    optimizer: OptimizerName
    lr: float | None = Field(gt=0)
    weight_decay: float | None = Field(ge=0)
    optimizers: dict[OptimizerName, OptimizerSettings]
    scheduler: SchedulerParams
    augment: AugmentParams
    data: DataParams
    dataset: dict[str, Any]
    model: dict[str, Any]
    device: Literal["auto", "cpu", "cuda", "mps"]
    threads: int = Field(ge=1, le=256)
    eval_batch_size: int = Field(ge=1)
    channels_last: bool
    fused_optimizer: bool
    label_smoothing: float = Field(ge=0, lt=1)
    clip_grad_norm: float | None = Field(gt=0)
    amp: Literal["auto", "off", "fp16", "bf16"]
    distributed: DistributedParams

    @field_validator("datasets", "models")
    @classmethod
    def _no_repeats(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError(f"names must not repeat, got {names}")
        return names

    @field_validator("model")
    @classmethod
    def _known_models(cls, raw: dict[str, Any] | None) -> dict[str, Any]:
        raw = raw or {}
        unknown = sorted(set(raw) - set(MODELS))
        if unknown:
            raise ValueError(f"unknown model {unknown[0]!r}; known models: {', '.join(MODELS)}")
        return raw

    def optimizer_settings(self) -> dict[str, Any]:
        """The chosen optimizer's keyword arguments, with ``lr``/``weight_decay`` overrides."""
        from cnnlab.optimizers import resolve_settings

        table = {k: v.model_dump() for k, v in self.optimizers.items()}
        return resolve_settings(self.optimizer, table, self.lr, self.weight_decay)

    def global_batch_size(self, processes: int, where: str = "") -> int:
        """Images per optimizer step over ``processes`` ranks: the one check that a global
        batch splits evenly (each rank must hold the same number of images)."""
        if self.distributed.batch_size_per == "rank":
            return self.batch_size * processes
        if self.batch_size % processes:
            raise ParamsError(
                f"batch_size: got {self.batch_size}: a global batch must split evenly over "
                f"{where or f'{processes} processes'}; use a multiple of {processes} or "
                "distributed.batch_size_per: rank"
            )
        return self.batch_size

    def model_options(self, name: str) -> BaseModel:
        """``model.<name>`` validated against that model's options."""
        return MODELS[name].options.model_validate(self.model[name])


def _model_problems(raw_model: Any, models: Any) -> list[str]:
    """``model.<name>`` against its options, from the raw mapping so that its problems are
    listed even when a top-level key is bad too."""
    problems = []
    raw_model = raw_model if isinstance(raw_model, dict) else {}
    for name, options in raw_model.items():
        if name not in MODELS:
            continue  # the schema names the unknown model
        try:
            MODELS[name].options.model_validate(options or {})
        except ValidationError as exc:
            problems += [_describe(e, prefix=("model", name)) for e in exc.errors()]
    for name in models if isinstance(models, list) else []:
        if name in MODELS and name not in raw_model:
            problems.append(
                f"model.{name}: missing: every model in `models` needs its entry under "
                "`model:` (the committed params.yaml has one for each model)"
            )
    return problems


def _section_problems(params: Params) -> list[str]:
    """Values fine alone but not together: optimizer rows, schedule, batch split, channels."""
    problems = []
    for name, row in params.optimizers.items():
        given = {k for k, v in row.model_dump().items() if v is not None}
        for key in sorted(given - OPTIMIZERS[name].keys):
            problems.append(
                f"optimizers.{name}.{key}: {name} does not take {key!r}; "
                f"it takes: {', '.join(sorted(OPTIMIZERS[name].keys))}"
            )
    for name in ("momentum", "nag"):
        row = params.optimizers.get(name)
        if row is not None and not row.momentum:
            problems.append(
                f"optimizers.{name}.momentum: got {row.momentum!r}: {name} needs momentum > 0 "
                "(e.g. 0.9); without it use optimizer `sgd`"
            )
    if params.optimizer not in params.optimizers:
        problems.append(
            f"optimizers.{params.optimizer}: the chosen optimizer has no row in `optimizers:`"
        )
    sched = params.scheduler
    if sched.warmup_epochs and sched.name == "onecycle":
        problems.append(
            f"scheduler.warmup_epochs: got {sched.warmup_epochs}: onecycle has its own warm-up "
            "(pct_start); set warmup_epochs: 0"
        )
    if sched.warmup_epochs > params.epochs:
        problems.append(
            f"scheduler.warmup_epochs: got {sched.warmup_epochs}: must not exceed epochs "
            f"({params.epochs})"
        )
    nproc = params.distributed.nproc
    try:
        params.global_batch_size(nproc, f"distributed.nproc={nproc} processes")
    except ParamsError as exc:
        problems.append(str(exc))
    for dataset in params.datasets:
        stored = stored_channels(dataset)
        if params.data.channels == 1 and stored != 1:
            problems.append(
                f"data.channels: got 1: {dataset} has {stored}-channel images; "
                "allowed: null (as stored) or 3"
            )
        for key in ("mean", "std"):
            values = getattr(params.data, key)
            if values is not None and len(values) not in (1, stored):
                problems.append(
                    f"data.{key}: got {values}: {dataset} has {stored}-channel images; "
                    f"give 1 value (every channel){f' or {stored}' if stored > 1 else ''}"
                )
    return problems


def _dataset_problems(dataset: Any, datasets: Any) -> list[str]:
    """Every dataset named is built in or declared as a folder, and has its options entry
    (from the raw values, so that these problems are listed next to any other)."""
    problems = []
    builtins = ", ".join(DATASETS)
    dataset = dataset if isinstance(dataset, dict) else {}
    datasets = datasets if isinstance(datasets, list) else []
    for name, raw in dataset.items():
        if not NAME_PATTERN.match(str(name)):
            problems.append(
                f"dataset.{name}: not a usable dataset name: use lower-case letters, digits and "
                "_ (starting with a letter); it becomes a folder name and part of stage names"
            )
            continue
        try:
            options_class(name).model_validate(raw or {})
        except ValidationError as exc:
            hint = ""
            if not is_folder(name) and any(e["type"] == "extra_forbidden" for e in exc.errors()):
                takes = ", ".join(options_class(name).model_fields) or "no options"
                hint = (
                    f" ({name} is a built-in dataset; it takes: {takes}. A folder of your "
                    "own images needs a name of its own)"
                )
            problems += [_describe(e, prefix=("dataset", name)) + hint for e in exc.errors()]
    for name in datasets:
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            problems.append(
                f"datasets: got {name!r}: not a usable dataset name: use lower-case letters, "
                "digits and _ (starting with a letter); it becomes a folder name and part of "
                "stage names and commands"
            )
            continue
        if name not in dataset and not is_folder(name):
            problems.append(
                f"dataset.{name}: missing: every dataset in `datasets` needs its entry under "
                "`dataset:` (the committed params.yaml has one for each built-in dataset)"
            )
        elif name not in dataset:
            problems.append(
                f"datasets: got {name!r}: not a built-in dataset ({builtins}) nor a folder "
                f"declared under `dataset:`. For your own images, put them in "
                f"datasets/{name}/<class>/<image> and add `dataset.{name}: {{size: 64}}` "
                "to params.yaml"
            )
    return problems


def _allowed_keys(loc: tuple[Any, ...]) -> list[str] | None:
    """The keys the section at ``loc`` accepts, to suggest them next to an unknown key."""
    section: Any = None
    if not loc:
        section = Params
    elif len(loc) == 1 and str(loc[0]) in Params.model_fields:
        section = Params.model_fields[str(loc[0])].annotation
    elif len(loc) == 2 and loc[0] == "model":
        section = MODELS[loc[1]].options if loc[1] in MODELS else None
    elif len(loc) == 2 and loc[0] == "dataset":
        section = options_class(str(loc[1]))
    elif len(loc) == 2 and loc[0] == "optimizers":
        section = OptimizerSettings
    is_section = isinstance(section, type) and issubclass(section, BaseModel)
    return sorted(section.model_fields) if is_section else None


def _describe(error: Any, prefix: tuple[Any, ...] = ()) -> str:
    loc = prefix + tuple(error["loc"])
    key = ".".join(str(p) for p in loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"{key}: unknown key (a typo?){hint}"
    if kind == "missing":
        return f"{key}: {MISSING}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key}: got {error.get('input')!r}: {message}"


def validate_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a params mapping, raising :class:`ParamsError` with every problem listed."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of keys, got {type(raw).__name__}")
    params = None
    lines = []
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        lines += [_describe(e) for e in exc.errors(include_url=False)]
    lines += _model_problems(raw.get("model"), raw.get("models"))
    lines += _dataset_problems(raw.get("dataset"), raw.get("datasets"))
    if params is not None:
        lines += _section_problems(params)
    if lines:
        raise ParamsError(
            f"{source} is not valid ({len(lines)} problem{'s' if len(lines) > 1 else ''}):\n  "
            + "\n  ".join(lines)
            + "\nFix the key(s) above in params.yaml (or the -S option that set them) and rerun."
        )
    assert params is not None
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (the other stages read a slice: :mod:`cnnlab.slices`)."""
    return validate_params(read_params(path), str(path))
