"""The params schema: the one place that says which keys params.yaml may hold.

Every stage calls :func:`load_params` before doing any work, so a ``-S`` typo or a bad value
stops the pipeline with one message that names the key, the value and what is allowed,
instead of a traceback from deep inside torch an hour later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from cnnlab.data.catalog import DATASETS
from cnnlab.models.options import MODEL_OPTIONS
from cnnlab.optimizers import OPTIMIZERS

DatasetName = Literal[tuple(DATASETS)]  # type: ignore[valid-type]
ModelName = Literal[tuple(MODEL_OPTIONS)]  # type: ignore[valid-type]
OptimizerName = Literal[tuple(OPTIMIZERS)]  # type: ignore[valid-type]


class ParamsError(ValueError):
    """params.yaml is unreadable or holds a value the pipeline cannot use."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    """Learning-rate schedule, stepped once per epoch."""

    name: Literal["none", "step", "cosine"] = "step"
    step_size: int = Field(2, ge=1)
    gamma: float = Field(0.5, gt=0, le=1)


class AugmentParams(_Section):
    """Batched augmentation on tensors; ``null`` takes the dataset's usual recipe."""

    crop_padding: int | None = Field(None, ge=0, le=16)
    hflip: bool | None = None


class DataParams(_Section):
    mirror: str | None = None
    val_fraction: float = Field(0.1, gt=0, lt=1)
    max_train: int | None = Field(None, ge=1)
    max_test: int | None = Field(None, ge=1)


class Params(_Section):
    datasets: list[DatasetName] = Field(min_length=1)
    models: list[ModelName] = Field(min_length=1)
    seed: int = Field(42, ge=0)
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: OptimizerName = "adam"
    lr: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)
    optimizers: dict[OptimizerName, OptimizerSettings]
    scheduler: SchedulerParams = SchedulerParams()
    augment: AugmentParams = AugmentParams()
    data: DataParams = DataParams()
    model: dict[str, Any] = Field(default_factory=dict)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    threads: int = Field(2, ge=1, le=256)
    eval_batch_size: int = Field(1000, ge=1)
    channels_last: bool = True
    fused_optimizer: bool = True

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
        unknown = sorted(set(raw) - set(MODEL_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown model {unknown[0]!r}; known models: {', '.join(MODEL_OPTIONS)}"
            )
        return raw

    def optimizer_settings(self) -> dict[str, Any]:
        """The chosen optimizer's keyword arguments, with ``lr``/``weight_decay`` overrides."""
        from cnnlab.optimizers import resolve_settings

        table = {k: v.model_dump() for k, v in self.optimizers.items()}
        return resolve_settings(self.optimizer, table, self.lr, self.weight_decay)

    def model_options(self, name: str) -> BaseModel:
        """``model.<name>`` validated against that model's options, defaults filled in."""
        return MODEL_OPTIONS[name].model_validate(self.model.get(name) or {})


def _section_problems(params: Params) -> list[str]:
    """Checks that depend on another key's value: model options and optimizer rows."""
    problems = []
    for name, options_class in MODEL_OPTIONS.items():
        try:
            options_class.model_validate(params.model.get(name) or {})
        except ValidationError as exc:
            problems += [_describe(e, prefix=("model", name)) for e in exc.errors()]
    for name, row in params.optimizers.items():
        given = {k for k, v in row.model_dump().items() if v is not None}
        for key in sorted(given - OPTIMIZERS[name].keys):
            problems.append(
                f"optimizers.{name}.{key}: {name} does not take {key!r}; "
                f"it takes: {', '.join(sorted(OPTIMIZERS[name].keys))}"
            )
    if params.optimizer not in params.optimizers:
        problems.append(
            f"optimizers.{params.optimizer}: the chosen optimizer has no row in `optimizers:`"
        )
    return problems


def _allowed_keys(loc: tuple[Any, ...]) -> list[str] | None:
    """The keys the section at ``loc`` accepts, to suggest them next to an unknown key."""
    if len(loc) == 2 and loc[0] == "model":
        section: Any = MODEL_OPTIONS.get(loc[1])
    elif len(loc) == 2 and loc[0] == "optimizers":
        section = OptimizerSettings
    elif len(loc) == 1:
        section = {"scheduler": SchedulerParams, "augment": AugmentParams, "data": DataParams}.get(
            loc[0]
        )
    else:
        section = Params if not loc else None
    return sorted(section.model_fields) if section is not None else None


def _describe(error: Any, prefix: tuple[Any, ...] = ()) -> str:
    loc = prefix + tuple(error["loc"])
    key = ".".join(str(p) for p in loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"{key}: unknown key (a typo?){hint}"
    if kind == "missing":
        return f"{key}: required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key}: got {error.get('input')!r}: {message}"


def validate_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a params mapping, raising :class:`ParamsError` with every problem listed."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of keys, got {type(raw).__name__}")
    params = None
    try:
        params = Params.model_validate(raw)
        lines = _section_problems(params)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors(include_url=False)]
    if lines:
        raise ParamsError(
            f"{source} is not valid ({len(lines)} problem{'s' if len(lines) > 1 else ''}):\n  "
            + "\n  ".join(lines)
            + "\nFix the key(s) above in params.yaml (or the -S option that set them) and rerun."
        )
    assert params is not None
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the project's top directory") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return validate_params(raw, str(path))
