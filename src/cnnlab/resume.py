"""Resumable training: a state after every epoch, beside the stage's outputs (DVC deletes
those before a rerun), used only by the same run: its fingerprint (params, prepared data,
library code) must match and its content fit the run's objects; otherwise it is discarded
with a message and training starts over, so a bad file never breaks every later run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from cnnlab.files import load_torch, save_torch
from cnnlab.training import EpochRecord, TrainState

CODE_ROOT = Path(__file__).resolve().parent


def _file_digest(path: Path, digest: Any) -> None:
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def fingerprint(settings: dict[str, Any], data_dir: Path) -> str:
    """A digest of the run's settings, its prepared data and the library's source code."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in sorted(data_dir.iterdir()):
        if path.is_file():
            digest.update(path.name.encode())
            _file_digest(path, digest)
    for path in sorted(CODE_ROOT.rglob("*.py")):
        digest.update(path.relative_to(CODE_ROOT).as_posix().encode())
        _file_digest(path, digest)
    return digest.hexdigest()


@dataclass
class ResumePoint:
    """Where a checkpoint lives and which run it belongs to."""

    path: Path
    fingerprint: str

    def save(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        state: TrainState,
    ) -> None:
        """Written atomically: a kill during the write leaves the previous epoch's state."""
        save_torch(
            self.path,
            {
                "fingerprint": self.fingerprint,
                "state": state.to_dict(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
            },
        )

    def read(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
    ) -> tuple[dict[str, Any] | None, str]:
        """The saved state if it belongs to this run and fits its objects (else None), and a
        line for the log. The objects are only looked at: under DDP rank 0 alone reads the
        file and hands the state to every rank's :func:`restore`."""
        if not self.path.exists():
            return None, ""
        try:
            saved = load_torch(self.path)
        except Exception as exc:  # a damaged file is discarded, never trusted
            why = f"an unreadable resume state ({exc.__class__.__name__})"
        else:
            if isinstance(saved, dict) and saved.get("fingerprint") not in (None, self.fingerprint):
                why = (
                    "a resume state from different params, data or code (or another process "
                    "count or device type); starting from epoch 1"
                )
            elif problem := misfit(saved, model, optimizer, scheduler):
                why = (
                    f"a resume state that does not fit this run ({problem}); starting from epoch 1"
                )
            else:
                return saved, f"resuming after epoch {saved['state']['epoch']} from {self.path}"
        self.path.unlink(missing_ok=True)
        return None, f"discarded {why}"


def restore(
    saved: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> TrainState:
    """Put a state read by :meth:`ResumePoint.read` back into the run's objects."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if scheduler is not None and saved["scheduler"] is not None:
        scheduler.load_state_dict(saved["scheduler"])
    return TrainState.from_dict(saved["state"])


_SAVED_KEYS = ("fingerprint", "state", "model", "optimizer", "scheduler")
_STATE_KEYS = {f.name for f in fields(TrainState)}
_RECORD_KEYS = {f.name for f in fields(EpochRecord)}


def misfit(
    saved: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> str:
    """Why ``saved`` cannot continue this run (None if it can), judged without touching the
    objects: ``load_state_dict`` fails half-way or, for the optimizer, only at its step."""
    if not isinstance(saved, dict):
        return f"a {type(saved).__name__}, not a dict"
    missing = [key for key in _SAVED_KEYS if key not in saved]
    if missing:
        return f"no {', '.join(missing)}"
    return (
        _state_misfit(saved["state"], model)
        or _weights_misfit("model", saved["model"], model.state_dict())
        or _optimizer_misfit(saved["optimizer"], optimizer)
        or _scheduler_misfit(saved["scheduler"], scheduler)
    )


def _state_misfit(state: Any, model: torch.nn.Module) -> str | None:
    if not isinstance(state, dict):
        return f"state is a {type(state).__name__}, not a dict"
    missing = sorted(_STATE_KEYS - state.keys())
    extra = sorted(map(str, state.keys() - _STATE_KEYS))
    if missing or extra:
        return f"state.{(missing or extra)[0]} {'missing' if missing else 'unknown'}"
    epoch, history = state["epoch"], state["history"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        return f"state.epoch is {epoch!r}"
    if not isinstance(history, list) or len(history) != epoch:
        return f"state.history does not hold one record for each of the {epoch} epochs"
    for number, record in enumerate(history, 1):
        if not isinstance(record, dict) or record.keys() != _RECORD_KEYS:
            return f"state.history[{number - 1}] is not an epoch record"
        if record["epoch"] != number:
            return f"state.history[{number - 1}] is epoch {record['epoch']!r}, not {number}"
    if state["best_model"] is not None:
        return _weights_misfit("state.best_model", state["best_model"], model.state_dict())
    return None


def _weights_misfit(what: str, saved: Any, current: dict[str, torch.Tensor]) -> str | None:
    """Same names, shapes and dtypes as the model's own state_dict."""
    if not isinstance(saved, dict):
        return f"{what} is a {type(saved).__name__}, not a dict"
    for name, tensor in current.items():
        value = saved.get(name)
        if not isinstance(value, torch.Tensor):
            return f"{what}.{name} missing"
        if value.shape != tensor.shape or value.dtype != tensor.dtype:
            return (
                f"{what}.{name} is {value.dtype} {tuple(value.shape)}, "
                f"this model's is {tensor.dtype} {tuple(tensor.shape)}"
            )
    extra = sorted(map(str, saved.keys() - current.keys()))
    return f"{what}.{extra[0]} is not in this model" if extra else None


def _optimizer_misfit(saved: Any, optimizer: torch.optim.Optimizer) -> str | None:
    """The param groups' sizes, and every per-parameter tensor a scalar (a step count) or of
    its parameter's shape."""
    if not isinstance(saved, dict) or not {"state", "param_groups"} <= saved.keys():
        return "optimizer is not an optimizer's state"
    groups = saved["param_groups"]
    ours = optimizer.param_groups
    if not isinstance(groups, list) or not all(
        isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups
    ):
        return "optimizer.param_groups is not a list of groups"
    if [(len(g["params"]), sorted(map(str, g))) for g in groups] != [
        (len(g["params"]), sorted(g)) for g in ours
    ]:
        return "optimizer.param_groups do not match this run's optimizer"
    shapes = {
        index: param.shape
        for group, mine in zip(groups, ours, strict=True)
        for index, param in zip(group["params"], mine["params"], strict=True)
    }
    if not isinstance(saved["state"], dict):
        return "optimizer.state is not a dict"
    for index, entry in saved["state"].items():
        if index not in shapes or not isinstance(entry, dict):
            return f"optimizer.state[{index!r}] belongs to no parameter"
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() and value.shape != shapes[index]:
                return (
                    f"optimizer.state[{index!r}].{key} is {tuple(value.shape)}, "
                    f"its parameter {tuple(shapes[index])}"
                )
    return None


def _scheduler_misfit(saved: Any, scheduler: Any) -> str | None:
    """The same parts (and their keys) as this run's schedule."""
    if scheduler is None or saved is None:
        return None if saved is scheduler else "scheduler does not match this run's schedule"
    current = scheduler.state_dict()
    if not isinstance(saved, dict) or saved.keys() != current.keys():
        return "scheduler does not match this run's schedule"
    for key, part in current.items():
        theirs = saved[key]
        if isinstance(part, dict) != isinstance(theirs, dict) or (
            isinstance(part, dict) and theirs.keys() != part.keys()
        ):
            return f"scheduler.{key} does not match this run's schedule"
    return None
