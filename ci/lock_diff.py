#!/usr/bin/env python3
"""Say which stages' outputs differ between two dvc.lock files: the explanation of a failed
`git diff --exit-code dvc.lock` (the project's reproducibility gate).

    python ci/lock_diff.py              # the workspace's dvc.lock against HEAD's
    python ci/lock_diff.py main         # ... against another revision's

Exit code 0 when the two locks record the same stages with the same bytes, 1 otherwise, with
one line per difference: the stage, and the output, dependency or param that changed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def _entries(stage: dict[str, Any], kind: str) -> dict[str, str]:
    """path -> md5 of a stage's deps or outs (a folder's md5 covers every file in it)."""
    return {entry["path"]: str(entry.get("md5")) for entry in stage.get(kind) or []}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per stage input or output that differs between two parsed dvc.lock files."""
    lines = []
    old_stages, new_stages = old.get("stages") or {}, new.get("stages") or {}
    for name in sorted(set(old_stages) | set(new_stages)):
        if name not in new_stages:
            lines.append(f"{name}: no longer in dvc.lock (not run, or removed from dvc.yaml)")
            continue
        if name not in old_stages:
            lines.append(f"{name}: new in dvc.lock")
            continue
        before, after = old_stages[name], new_stages[name]
        if before.get("cmd") != after.get("cmd"):
            lines.append(f"{name}: command changed: {before.get('cmd')} -> {after.get('cmd')}")
        if before.get("params") != after.get("params"):
            lines.append(f"{name}: params changed (see `dvc params diff`)")
        for kind, what in (("deps", "input"), ("outs", "output")):
            a, b = _entries(before, kind), _entries(after, kind)
            for path in sorted(set(a) | set(b)):
                if a.get(path) != b.get(path):
                    lines.append(f"{name}: {what} {path} changed ({a.get(path)} -> {b.get(path)})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", nargs="?", default="HEAD", help="revision to compare against")
    parser.add_argument("--lock", type=Path, default=Path("dvc.lock"), help="the new dvc.lock")
    args = parser.parse_args(argv)
    committed = subprocess.run(
        ["git", "show", f"{args.rev}:dvc.lock"], capture_output=True, text=True, check=False
    )
    if committed.returncode != 0:
        print(f"error: {args.rev} has no dvc.lock: {committed.stderr.strip()}", file=sys.stderr)
        return 2
    lines = differences(yaml.safe_load(committed.stdout), yaml.safe_load(args.lock.read_text()))
    if not lines:
        print(f"dvc.lock records the same stages and bytes as {args.rev}'s")
        return 0
    print(f"dvc.lock differs from {args.rev}'s in {len(lines)} place(s):")
    print("\n".join(f"  {line}" for line in lines))
    print(
        "An output that changed with the same inputs is a stage that is not reproducible "
        "(a clock, a random draw without the seed, a thread count): docs/reproducibility.md"
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
