"""Which run produced a result: DVC's run-cache key of the stage that made it.

Two experiments reached the same run when DVC would restore the one's outputs from the
other's: the same command, the same hashes of every dependency and the same params. DVC
files its run cache under exactly that key (``dvc.stage.cache``: the SHA-256 of the stage's
dvc.lock entry with each output cut down to its path, sizes left out), so the key names
what made a run without reading any of its outputs. It is computed from an experiment's
dvc.lock (:func:`lock_keys`, git-tracked, so it needs no DVC cache) and, by a stage while
it runs, from the workspace (:func:`workspace_key`, before DVC has written dvc.lock): the
two agree, which is how a measurement written outside DVC's outputs (timings.json) is
bound to the run it measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["lock_key", "lock_keys", "short", "workspace_key"]

#: dvc.lock's output fields that are not part of a run's identity (DVC leaves them out too).
_NOT_IDENTITY = ("size", "nfiles")


def lock_key(entry: Mapping[str, Any]) -> str:
    """The run-cache key of one stage's dvc.lock entry (``cmd``, ``deps``, ``params``,
    ``outs``), as DVC computes it (dvc.stage.cache._get_cache_hash with key=True)."""
    from dvc.utils import dict_sha256

    cache = dict(entry)
    cache["outs"] = [out["path"] for out in cache.get("outs") or []]
    return str(dict_sha256(cache, exclude=list(_NOT_IDENTITY)))


def lock_keys(lock: Mapping[str, Any] | None) -> dict[str, str]:
    """Stage name -> run-cache key for every stage of a parsed dvc.lock (an empty dict for
    anything that is not a dvc.lock of schema 2)."""
    stages = (lock or {}).get("stages") if isinstance(lock, Mapping) else None
    if not isinstance(stages, Mapping):
        return {}
    return {
        str(name): lock_key(entry)
        for name, entry in stages.items()
        if isinstance(entry, Mapping) and entry.get("cmd")
    }


def workspace_key(stage_name: str, root: Path | str = ".") -> str:
    """The run-cache key of ``stage_name`` (e.g. ``train@lenet-digits``) for the workspace's
    dependencies and params as they are now: what dvc.lock will record for the stage once
    it has run. DVC hashes the dependencies (from its state database, where `dvc repro`
    has just put them) and reads the params; no output is read."""
    from dvc.repo import Repo
    from dvc.stage.serialize import to_single_stage_lockfile

    with Repo(str(root)) as repo:
        (stage,) = repo.stage.collect(stage_name)
        stage.save_deps()
        outs = sorted(out.def_path for out in stage.outs)
        stage.outs = []  # not yet written; only their paths are part of the key
        entry = to_single_stage_lockfile(stage)
    return lock_key({**entry, "outs": [{"path": path} for path in outs]})


def short(key: str | None) -> str:
    """A key as shown in tables (its first 8 hex digits), "" for none."""
    return key[:8] if key else ""
