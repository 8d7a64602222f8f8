"""Resumable training: a checkpoint after every epoch, used only by the same run.

DVC 3 has no checkpoints of its own and deletes a stage's outputs before rerunning it, so the
resume state lives beside the outputs, not among them (DVC's run-cache keeps working, which
it would not with ``persist: true`` outputs). A state is used only if its fingerprint, built
from everything that decides the run's bytes (params, prepared data, library code), matches;
otherwise it is discarded with a message.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.files import load_torch, save_torch
from cnnlab.training import TrainState

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

    def load(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
    ) -> tuple[TrainState | None, str]:
        """Restore a matching state into the objects; returns it and a line for the log."""
        saved, message = self.read()
        if saved is None:
            return None, message
        return restore(saved, model, optimizer, scheduler), message

    def read(self) -> tuple[dict[str, Any] | None, str]:
        """The saved state if it belongs to this run (else None), and a line for the log.

        Separate from :func:`restore` so that under DDP rank 0 alone reads the file (other
        nodes do not have it) and hands the state to every rank.
        """
        if not self.path.exists():
            return None, ""
        try:
            saved = load_torch(self.path)
        except Exception as exc:  # a damaged file is discarded, never trusted
            self.discard()
            return None, f"discarded an unreadable resume state ({exc.__class__.__name__})"
        if saved.get("fingerprint") != self.fingerprint:
            self.discard()
            return None, (
                "discarded a resume state from different params, data or code; "
                "starting from epoch 1"
            )
        return saved, f"resuming after epoch {saved['state']['epoch']} from {self.path}"

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def restore(
    saved: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> TrainState:
    """Put a state read by :meth:`ResumePoint.read` back into the run's objects."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if scheduler is not None and saved["scheduler"] is not None:
        scheduler.load_state_dict(saved["scheduler"])
    return TrainState.from_dict(saved["state"])
