#!/usr/bin/env python3
"""`make baseline`: back to the committed params and their results, after any workspace
experiment or a failed `dvc exp run -S` that left a bad value in params.yaml.

1. params.yaml, dvc.lock, metrics/, metrics.json and timings.json get HEAD's bytes, compared
   by content (a failed `-S` can leave a value git's index does not show). The replaced files
   are kept in .dvc/tmp/baseline/<n>/ first, so nothing is lost.
2. The outputs: the committed ones (`dvc checkout`) where this machine's DVC cache has every
   one of them; otherwise this machine's own run of the committed params (`dvc repro`, which
   restores it from DVC's run cache when this machine ran it before, so nothing trains twice).
   Outputs in the workspace are in the cache already (DVC caches each stage it completes),
   except files an interrupted run left, which DVC would refuse to replace: those are moved
   to .dvc/tmp/baseline/<n>/ too.

Refuses, changing nothing, when code or other tracked files differ from HEAD: the baseline is
the committed params for the committed code.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from reprokit import ROOT, VerifyError, dvc, git, read_lock

#: What an experiment changes among the tracked files (params and results); everything else
#: is code or docs, which `make baseline` does not touch.
RESULT_FILES = ("params.yaml", "dvc.lock", "metrics.json", "timings.json")
RESULT_FOLDERS = ("metrics/",)
BACKUPS = ROOT / ".dvc" / "tmp" / "baseline"


def _is_result(path: str) -> bool:
    return path in RESULT_FILES or path.startswith(RESULT_FOLDERS)


def changed_files() -> dict[str, str | None]:
    """Tracked path -> HEAD's blob id, for every file whose bytes differ from HEAD's (git
    status trusts the index's timestamps, which `dvc exp run` rewrites)."""
    blobs = {}
    for line in git("ls-tree", "-r", "HEAD").splitlines():
        meta, path = line.split("\t", 1)
        mode, kind, blob = meta.split()
        if kind == "blob" and mode != "120000":
            blobs[path] = blob
    present = [p for p in blobs if (ROOT / p).is_file()]
    hashed = subprocess.run(
        ["git", "hash-object", "--stdin-paths"],
        cwd=ROOT,
        input="\n".join(present) + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    now = dict(zip(present, hashed, strict=True))
    changed: dict[str, str | None] = {p: b for p, b in blobs.items() if now.get(p) != b}
    for extra in git("ls-files", "--others", "--exclude-standard", "metrics").split():
        changed[extra] = None  # a run's record HEAD does not have: removed (kept as backup)
    return changed


def next_backup() -> Path:
    """A new numbered folder under .dvc/tmp/baseline/ (made when something is kept in it)."""
    taken = [int(p.name) for p in BACKUPS.iterdir() if p.name.isdigit()] if BACKUPS.is_dir() else []
    return BACKUPS / str(1 + max(taken, default=0))


def restore_files(paths: dict[str, str | None], backup: Path) -> None:
    """Keep the current copies in ``backup``, then write HEAD's bytes (atomically) and sync
    git's index."""
    for path in paths:
        if (ROOT / path).is_file():
            (backup / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, backup / path)
    tracked = [p for p, blob in paths.items() if blob is not None]
    if tracked:
        git("reset", "--quiet", "HEAD", "--", *tracked)
    for path, blob in paths.items():
        target = ROOT / path
        if blob is None:
            target.unlink(missing_ok=True)
            continue
        data = subprocess.run(
            ["git", "cat-file", "blob", blob], cwd=ROOT, capture_output=True, check=True
        ).stdout
        temporary = target.with_name(f".{target.name}.baseline")
        temporary.write_bytes(data)
        temporary.replace(target)


def missing_from_cache(lock_text: str) -> list[str]:
    """The committed outputs this machine's DVC cache lacks (git-tracked outputs aside)."""
    cache = Path(dvc(ROOT, "cache", "dir", quiet=True).strip()) / "files" / "md5"
    tracked = set(git("ls-tree", "-r", "--name-only", "HEAD").split())
    missing = []
    for stage, entry in read_lock(lock_text).items():
        for path, md5 in entry["outs"].items():
            if path in tracked or md5 is None:
                continue
            objects = [md5]
            if md5.endswith(".dir"):
                listing = cache / md5[:2] / md5[2:]
                if not listing.is_file():
                    missing.append(f"{stage}: {path}")
                    continue
                objects = [item["md5"] for item in json.loads(listing.read_text())]
            if not all((cache / m[:2] / m[2:]).is_file() for m in objects):
                missing.append(f"{stage}: {path}")
    return missing


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def unsaved_outputs(lock_text: str) -> list[Path]:
    """Files in the workspace's outputs whose bytes DVC's cache lacks: what a run stopped
    midway left (DVCLive's first epochs, say). `dvc checkout` refuses to replace them."""
    cache = Path(dvc(ROOT, "cache", "dir", quiet=True).strip()) / "files" / "md5"
    tracked = set(git("ls-tree", "-r", "--name-only", "HEAD").split())
    unsaved = []
    for entry in read_lock(lock_text).values():
        for out in entry["outs"]:
            target = ROOT / out
            if out in tracked or not target.exists():
                continue
            files = [target] if target.is_file() else sorted(target.rglob("*"))
            for path in (f for f in files if f.is_file()):
                md5 = _md5(path)
                if not (cache / md5[:2] / md5[2:]).is_file():
                    unsaved.append(path)
    return unsaved


def drop_from_lock(stages: set[str]) -> None:
    """Remove these stages' entries from the workspace's dvc.lock, with DVC's own round-trip
    YAML writer (the other entries keep their bytes)."""
    from dvc.utils.serialize import modify_yaml

    with modify_yaml(ROOT / "dvc.lock") as data:
        for stage in stages:
            data["stages"].pop(stage, None)


def restore_stage_order(head_text: str) -> None:
    """DVC appends a stage it records anew: put the entries back in the committed order, so
    that the same results are the same bytes (HEAD's, when nothing differs)."""
    from dvc.utils.serialize import modify_yaml

    path = ROOT / "dvc.lock"
    committed = yaml.safe_load(head_text)
    if yaml.safe_load(path.read_text()) == committed:
        path.write_text(head_text)
        return
    order = list(committed.get("stages") or {})
    with modify_yaml(path) as data:
        stages = data["stages"]
        for name in sorted(stages, key=lambda n: order.index(n) if n in order else len(order)):
            stages.move_to_end(name)


def main() -> int:
    started = time.monotonic()
    changed = changed_files()
    code = sorted(p for p in changed if not _is_result(p))
    if code:
        shown = ", ".join(code[:8]) + (f" and {len(code) - 8} more" if len(code) > 8 else "")
        print(
            f"baseline: these tracked files differ from HEAD: {shown}. The baseline is the "
            "committed params for the committed code: commit or stash them (git stash), "
            "then run `make baseline` again. Nothing was changed.",
            file=sys.stderr,
        )
        return 1
    results = {p: b for p, b in changed.items() if _is_result(p)}
    backup = next_backup()
    restore_files(results, backup)
    if results:
        print(f"baseline: {', '.join(sorted(results))} back to HEAD's")
        print(f"  (the replaced copies are kept in {backup.relative_to(ROOT)}/)")
    else:
        print("baseline: params.yaml and the committed results are already HEAD's")
    lock_text = (ROOT / "dvc.lock").read_text()
    unsaved = unsaved_outputs(lock_text)
    for path in unsaved:
        kept = backup / path.relative_to(ROOT)
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, kept)
    if unsaved:
        first = unsaved[0].relative_to(ROOT)
        print(
            f"baseline: {len(unsaved)} output file(s) that no finished run made ({first}"
            f"{', ...' if len(unsaved) > 1 else ''}: a run stopped midway) moved to "
            f"{backup.relative_to(ROOT)}/"
        )
    missing = missing_from_cache(lock_text)
    if not missing:
        print("baseline: this machine's DVC cache has every committed output: dvc checkout")
        dvc(ROOT, "checkout", "--quiet")
    else:
        print(
            f"baseline: {len(missing)} committed output(s) are not in this machine's DVC "
            f"cache ({missing[0]}{', ...' if len(missing) > 1 else ''}): this machine's own "
            "run of the committed params instead (dvc repro; from the run cache where it ran "
            "before)",
            flush=True,
        )
        # DVC looks up its run cache only for a stage that dvc.lock does not pin to outputs:
        # with the committed entry in place it would retrain rather than restore this
        # machine's run of the same params. HEAD keeps the committed entries.
        drop_from_lock({entry.split(":", 1)[0] for entry in missing})
        dvc(ROOT, "repro")
        restore_stage_order(git("show", "HEAD:dvc.lock"))
    status = dvc(ROOT, "status", quiet=True).strip()
    print(f"baseline: dvc status: {status or 'nothing to reproduce'}")
    differs = git("status", "--short", "--", *RESULT_FILES, *RESULT_FOLDERS).strip()
    if differs:
        print(
            "baseline: dvc.lock and metrics record this machine's run, which differs from the "
            "committed one in its last bits (another CPU or GPU: docs/reproducibility.md); "
            "`make verify` checks that it is within the measured tolerance"
        )
    print(f"baseline: done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except VerifyError as error:
        print(f"baseline: error: {error}", file=sys.stderr)
        sys.exit(1)
