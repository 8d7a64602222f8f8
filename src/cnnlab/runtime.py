"""Where and how torch runs: device choice, thread count and determinism switches."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

from cnnlab.errors import UserError


def pick_device(requested: str) -> torch.device:
    """``auto`` prefers CUDA, then Apple's MPS, then the CPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    missing = {
        "cuda": (torch.cuda.is_available, "no CUDA device is available"),
        "mps": (torch.backends.mps.is_available, "MPS is not available"),
    }
    if requested in missing and not missing[requested][0]():
        raise UserError(
            f"device: {requested} was requested but {missing[requested][1]}; "
            "set device: auto or cpu in params.yaml"
        )
    return torch.device(requested)


def make_deterministic(threads: int) -> None:
    """Pin what changes the bits of a run: the thread count and the choice of kernels, so the
    same params on the same machine give byte-identical checkpoints. Call it before any CUDA
    work: cuBLAS reads its workspace setting at its first call."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set in this process; harmless
        torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=False)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device``: before reading a clock, not per step."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A seed per (run seed, epoch, stream), so an epoch's randomness needs no saved RNG
    state: numpy's SeedSequence hashes the three into independent streams, and the top 63
    bits of its first word seed a torch.Generator."""
    state = np.random.SeedSequence(entropy=seed, spawn_key=(epoch, stream)).generate_state(
        1, np.uint64
    )
    return int(state[0] >> np.uint64(1))
