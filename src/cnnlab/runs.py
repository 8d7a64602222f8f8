"""Which run produced a result: DVC's run-cache key of the stage that made it (the SHA-256
of its dvc.lock entry with outputs cut down to their paths), from an experiment's dvc.lock
(:func:`lock_keys`) or, while the stage runs, from the workspace (:func:`workspace_key`).
The two agree, which binds timings.json, no DVC output, to the run it measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
    """The run-cache key of ``stage_name`` (``train@lenet-digits``) for the workspace's
    dependencies and params as they are now, as dvc.lock will record it; no output is read."""
    from dvc.repo import Repo
    from dvc.stage.serialize import to_single_stage_lockfile

    with Repo(str(root)) as repo:
        (stage,) = repo.stage.collect(stage_name)
        stage.save_deps()
        outs = sorted(out.def_path for out in stage.outs)
        stage.outs = []  # not yet written; only their paths are part of the key
        entry = to_single_stage_lockfile(stage)
    return lock_key({**entry, "outs": [{"path": path} for path in outs]})
