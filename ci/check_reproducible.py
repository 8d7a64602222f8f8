#!/usr/bin/env python3
"""Prove that the pipeline reproduces: same params + same code => the same output bytes.

    python ci/check_reproducible.py                 # digits, LeNet + AlexNet, 2 epochs (~3 min)
    python ci/check_reproducible.py --config mnist --mirror ../shared/datasets
    python ci/check_reproducible.py --lock          # is the committed dvc.lock up to date?

The default mode clones the committed project (HEAD) into a temporary directory, sets a small
configuration, runs `dvc repro`, runs it again with `-f`, and reproduces once more from a
second fresh clone. Every file of every stage output must have the same md5 in all three runs;
a difference fails the check with the stages and files that changed.

Training time and throughput are measurements, not results: in the JSON files that carry
them they are left out of the comparison (MEASURED_KEYS), and reports/report.md, rendered from
reports/summary.json, is compared through that file.

`--lock` checks the repository it runs in: `dvc status` must report that nothing would run
(`dvc repro --dry` does not fail by itself when something would).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

#: JSON keys that hold wall-clock measurements (and ratios of them).
MEASURED_KEYS = re.compile(r"(seconds|per_second|time_ratio|images_per_s)")
#: Outputs whose measurements are compared through another file.
RENDERED = {"reports/report.md": "reports/summary.json"}

CONFIGS: dict[str, dict[str, Any]] = {
    "digits": {
        "datasets": ["digits"],
        "models": ["lenet", "alexnet"],
        "epochs": 2,
        "batch_size": 64,
        "data": {"max_train": 600, "max_test": 300},
    },
    "mnist": {
        "datasets": ["mnist"],
        "models": ["lenet"],
        "epochs": 2,
        "data": {"max_train": None, "max_test": None},
    },
}


class CheckFailed(Exception):
    pass


def sh(cmd: list[str], cwd: Path, quiet: bool = True) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise CheckFailed(f"`{' '.join(cmd)}` failed in {cwd}:\n{result.stdout}\n{result.stderr}")
    if not quiet:
        print(result.stdout, end="")
    return result.stdout


def dvc(*args: str, cwd: Path) -> str:
    return sh([str(Path(sys.executable).parent / "dvc"), *args], cwd)


def clone(source: Path, dest: Path, config: dict[str, Any]) -> None:
    """A fresh clone of HEAD with the small configuration merged into params.yaml."""
    sh(["git", "clone", "--quiet", str(source), str(dest)], source)
    params_path = dest / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    for key, value in config.items():
        if isinstance(value, dict):
            params[key] = {**params.get(key, {}), **value}
        else:
            params[key] = value
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))


def stage_outputs(repo: Path) -> dict[str, list[str]]:
    """Stage name -> output paths, from dvc.lock (what DVC itself recorded)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {
        name: [out["path"] for out in stage.get("outs", [])]
        for name, stage in lock["stages"].items()
    }


def _without_measurements(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _without_measurements(v) for k, v in value.items() if not MEASURED_KEYS.search(k)
        }
    if isinstance(value, list):
        return [_without_measurements(v) for v in value]
    return value


def fingerprint(path: Path, relative: str) -> str:
    """md5 of a file; for JSON, of its content without the measured keys."""
    if relative.endswith(".json"):
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            pass
        else:
            stripped = json.dumps(_without_measurements(data), sort_keys=True)
            return hashlib.md5(stripped.encode()).hexdigest()
    return hashlib.md5(path.read_bytes()).hexdigest()


def snapshot(repo: Path) -> dict[str, dict[str, str]]:
    """Stage -> {file: fingerprint} for every file of every output of every stage."""
    result: dict[str, dict[str, str]] = {}
    for stage, outs in stage_outputs(repo).items():
        files: dict[str, str] = {}
        for out in outs:
            root = repo / out
            paths = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
            for path in paths:
                relative = path.relative_to(repo).as_posix()
                if relative not in RENDERED:
                    files[relative] = fingerprint(path, relative)
        result[stage] = files
    return result


def differences(first: dict, second: dict, label: str) -> list[str]:
    problems = []
    for stage in sorted(set(first) | set(second)):
        a, b = first.get(stage, {}), second.get(stage, {})
        changed = sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))
        if changed:
            listed = "\n      ".join(changed[:10]) + ("\n      ..." if len(changed) > 10 else "")
            problems.append(f"  {stage} ({label}): {len(changed)} file(s) differ:\n      {listed}")
    return problems


def check_runs(source: Path, config: dict[str, Any], fresh_clone: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="check-reproducible-") as tmp:
        first = Path(tmp) / "first"
        clone(source, first, config)
        steps = [("dvc repro", first, ["repro"]), ("dvc repro -f", first, ["repro", "-f"])]
        if fresh_clone:
            second = Path(tmp) / "second"
            clone(source, second, config)
            steps.append(("dvc repro in a second fresh clone", second, ["repro"]))
        snapshots = []
        for label, repo, args in steps:
            started = time.perf_counter()
            dvc(*args, cwd=repo)
            snapshots.append((label, snapshot(repo)))
            files = sum(len(f) for f in snapshots[-1][1].values())
            print(
                f"{label}: {len(snapshots[-1][1])} stages, {files} output files, "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
        reference = snapshots[0][1]
        problems = []
        for label, snap in snapshots[1:]:
            problems += differences(reference, snap, f"first run vs {label}")
        if problems:
            raise CheckFailed(
                "outputs changed between runs with the same params and code:\n"
                + "\n".join(problems)
            )
        print(
            f"reproducible: every output of {len(reference)} stages is identical across "
            f"{len(snapshots)} runs (measured keys {MEASURED_KEYS.pattern} left out)"
        )


def check_lock(repo: Path) -> None:
    status = json.loads(dvc("status", "--json", cwd=repo) or "{}")
    if status:
        lines = "\n".join(f"  {stage}: {changes}" for stage, changes in status.items())
        raise CheckFailed(
            "dvc.lock is not up to date; `dvc repro` would run:\n"
            + lines
            + "\nRun `dvc repro` and commit dvc.lock."
        )
    print("dvc.lock is up to date: nothing would run")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="digits")
    parser.add_argument("--mirror", help="data.mirror for datasets that need a download")
    parser.add_argument(
        "--no-fresh-clone",
        action="store_true",
        help="skip the third run from a second clone (faster)",
    )
    parser.add_argument(
        "--lock", action="store_true", help="only check that the committed dvc.lock is up to date"
    )
    parser.add_argument(
        "--repo",
        type=Path,
        default=Path.cwd(),
        help="the git repository to check (default: the current directory)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        if args.lock:
            check_lock(args.repo)
        else:
            config = dict(CONFIGS[args.config])
            if args.mirror:
                config["data"] = {
                    **config.get("data", {}),
                    "mirror": str(Path(args.mirror).resolve()),
                }
            check_runs(args.repo.resolve(), config, fresh_clone=not args.no_fresh_clone)
    except CheckFailed as exc:
        print(f"check-reproducible: FAILED\n{exc}", file=sys.stderr)
        return 1
    print(f"check-reproducible: OK in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
