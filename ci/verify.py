#!/usr/bin/env python3
"""`make verify`: are the committed results what the committed code and params give, here?

Runs in a scratch clone of HEAD that shares this workspace's DVC cache (the workspace itself is
not touched) and checks, saying for each stage or run which rule it applied and why:

1. dvc.lock is up to date: every stage's code, params and committed files match it;
2. a first run (`dvc repro -f`) reproduces the committed data stages (validate, download,
   prepare) byte for byte: their bytes are the same on every machine;
3. on one machine, everything is bit for bit the same: where the first run already gave every
   committed byte and the committed results were made on this numeric platform, that is two
   runs with the same bytes; otherwise a forced rerun must reproduce the first run's bytes;
4. training against the committed results: exact where the numeric platform is the one that
   made them (ci/platform.json, written by `make lock`); on another CPU or a GPU, within the
   tolerance measured by `make tolerance` (ci/tolerance.json): each run's test accuracy and
   test predictions no further from the committed run's than two seeds' runs could be (99%
   bounds from the seed-to-seed spread).

    python ci/verify.py            # what `make verify` runs
    python ci/verify.py --record   # after `dvc repro`: this machine made dvc.lock (make lock)

Exit 0 when every check passed, 1 when one failed (each failure named with its stage or run
and the figure), 2 on bad use.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from reprokit import (
    PLATFORM_FILE,
    ROOT,
    TOLERANCE_FILE,
    VerifyError,
    agreement,
    describe,
    dvc,
    git,
    is_data_stage,
    numeric_platform,
    params_device,
    read_lock,
    recipe_key,
    run_record,
    scratch_clone,
    train_runs,
    write_json,
)

#: Fields of a run's record that describe the model and the data, not what was learned: the
#: same on every machine.
STRUCTURE = ("model", "dataset", "epochs", "params", "macs", "test_images", "diverged")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _train_outs(lock: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {name: stage["outs"] for name, stage in lock.items() if name.startswith("train@")}


def _outs(lock: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Every stage's outputs and their md5s: what two runs with the same bytes share."""
    return {name: stage["outs"] for name, stage in lock.items()}


def _committed_json(path: Path) -> Any:
    try:
        return json.loads(git("show", f"HEAD:{path}"))
    except VerifyError:
        return None


class Checks:
    """Collects what passed and what failed, printing each line as it comes."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def ok(self, rule: str, what: str) -> None:
        print(f"  ok    [{rule}] {what}", flush=True)

    def fail(self, rule: str, what: str) -> None:
        print(f"  FAIL  [{rule}] {what}", flush=True)
        self.failures.append(what)


def _is_output(path: str, outputs: set[str]) -> bool:
    return any(path == o or path.startswith(f"{o}/") or o.startswith(f"{path}/") for o in outputs)


def lock_problems(repo: Path, lock: dict[str, dict[str, Any]]) -> list[str]:
    """What in the committed tree does not match dvc.lock: changed code or params, committed
    outputs edited, stages never run (outputs not built yet are fine)."""
    outputs = {path for stage in lock.values() for path in stage["outs"]}
    problems = []
    stages = dvc(repo, "stage", "list", "--name-only", quiet=True).split()
    for name in stages:
        if name not in lock:
            problems.append(f"{name}: not in dvc.lock (never run with the committed dvc.yaml)")
    for name in sorted(set(lock) - set(stages)):
        problems.append(f"{name}: in dvc.lock but no longer in dvc.yaml")
    status = json.loads(dvc(repo, "status", "--json", quiet=True) or "{}")
    for stage, entries in status.items():
        if stage not in lock:
            continue
        for entry in entries:
            if isinstance(entry, str):
                problems.append(f"{stage}: {entry}")
                continue
            for kind, changes in entry.items():
                if not isinstance(changes, dict):
                    problems.append(f"{stage}: {kind}")
                    continue
                for path, state in changes.items():
                    if isinstance(state, dict):  # params.yaml: key -> modified/new/deleted
                        keys = ", ".join(f"{k} ({v})" for k, v in sorted(state.items()))
                        problems.append(f"{stage}: params changed since dvc.lock: {keys}")
                    elif state in ("deleted", "not in cache") and _is_output(path, outputs):
                        continue  # not built yet in this clone
                    elif kind == "changed outs":
                        problems.append(
                            f"{stage}: the committed {path} is not what dvc.lock records "
                            f"({state}): edited by hand, or committed without `make lock`"
                        )
                    else:
                        problems.append(f"{stage}: {path} {state} since dvc.lock")
    return problems


def check_training(
    checks: Checks,
    run: str,
    here: dict[str, Any],
    committed: dict[str, Any],
    tolerance: dict[str, Any] | None,
    recipe: str,
    why: str,
) -> None:
    """The tolerance rule for one run on a platform that did not make the committed results."""
    rule = "tolerance"
    for key in STRUCTURE:
        if here.get(key) != committed.get(key):
            checks.fail(
                rule,
                f"{run}: {key} is {here.get(key)!r} here and {committed.get(key)!r} committed; "
                "that does not depend on the machine (a code or data change?)",
            )
            return
    entry = (tolerance or {}).get("runs", {}).get(run)
    if entry is None or entry.get("recipe") != recipe:
        reason = "no measured spread" if entry is None else "a spread measured for another recipe"
        checks.fail(
            rule,
            f"{run}: {TOLERANCE_FILE} has {reason} for this run; run `make tolerance` and "
            f"commit {TOLERANCE_FILE} (test acc here {_pct(here.get('test_acc'))}, committed "
            f"{_pct(committed.get('test_acc'))})",
        )
        return
    seeds = ", ".join(map(str, tolerance["measured_with"]["seeds"]))
    a, b = here.get("test_acc"), committed.get("test_acc")
    if a is None or b is None:
        if a == b:
            checks.ok(rule, f"{run}: diverged here as in the committed run ({why})")
        else:
            checks.fail(rule, f"{run}: test acc {_pct(a)} here, {_pct(b)} committed")
        return
    gap, limit = abs(a - b), entry["test_acc_bound"]
    share = agreement(here.get("test_predictions"), committed.get("test_predictions"))
    least = entry["agreement_bound"]
    text = (
        f"{run}: test acc {_pct(a)} here vs {_pct(b)} committed, |diff| {100 * gap:.2f} "
        f"{'<=' if gap <= limit + 1e-9 else '>'} {100 * limit:.2f} points; predictions agree "
        f"on {_pct(share)} of {here.get('test_images')} test images "
        f"{'>=' if share is not None and share >= least - 1e-9 else '<'} {_pct(least)} "
        f"({entry['confidence']:.0%} bounds for two seeds' runs, from seeds {seeds}); {why}"
    )
    if gap <= limit + 1e-9 and share is not None and share >= least - 1e-9:
        checks.ok(rule, text)
    else:
        checks.fail(rule, text)


def verify() -> int:
    started = time.monotonic()
    sha = git("rev-parse", "--short", "HEAD").strip()
    committed = read_lock(git("show", "HEAD:dvc.lock"))
    made_on = _committed_json(PLATFORM_FILE)
    tolerance = _committed_json(TOLERANCE_FILE)
    checks = Checks()
    with scratch_clone() as repo:
        here_platform = numeric_platform(params_device(repo))
        print(f"verify: the committed results of {sha}, in a scratch clone ({repo})")
        print(f"  this machine:   {describe(here_platform)}")
        if made_on is None:
            raise VerifyError(f"HEAD has no {PLATFORM_FILE}: `make lock` writes it; commit it")
        print(f"  results made on: {describe(made_on['platform'])}")
        differs = sorted(
            k
            for k in made_on["platform"].keys() | here_platform.keys()
            if made_on["platform"].get(k) != here_platform.get(k)
        )
        same = not differs
        print(
            "  -> the same numeric platform: training must match bit for bit"
            if same
            else f"  -> another numeric platform ({', '.join(differs)} differ): training is "
            f"compared within the measured tolerance ({TOLERANCE_FILE})",
            flush=True,
        )

        print("1. dvc.lock is up to date with the committed code and params")
        problems = lock_problems(repo, committed)
        if made_on.get("train_outs") != _train_outs(committed):
            problems.append(
                f"{PLATFORM_FILE} describes other training outputs than dvc.lock's: "
                "`make lock` writes both; rerun it where the results were made"
            )
        for problem in problems:
            checks.fail("lock", problem)
        if problems:
            return _summary(checks, started)
        checks.ok("lock", f"{len(committed)} stages: code, params and committed files match")

        print("2. first run here: dvc repro -f", flush=True)
        dvc(repo, "repro", "--force", "--quiet", quiet=True)
        first = read_lock((repo / "dvc.lock").read_text())
        first_records = {run: run_record(repo, run) for run in train_runs(first)}
        for stage in (s for s in committed if is_data_stage(s)):
            for path, md5 in committed[stage]["outs"].items():
                got = first[stage]["outs"].get(path)
                if got == md5:
                    checks.ok("exact, every machine", f"{stage}: {path} is the committed bytes")
                else:
                    checks.fail(
                        "exact, every machine",
                        f"{stage}: {path} is {got} here, {md5} committed: data stages must "
                        "give the same bytes on every machine",
                    )

        if same and _outs(first) == _outs(committed):
            # The committed outputs were made on this numeric platform (step 1 checked that
            # ci/platform.json describes dvc.lock's training outputs), by another run in
            # another checkout: this run matching them bit for bit is a second run with the
            # same bytes, so a forced rerun here would prove nothing more.
            print("3. same machine, same bytes: the first run is that second run", flush=True)
            checks.ok(
                "same machine, same bytes",
                f"all {len(first)} stages' outputs are the committed bytes, made by another run "
                "on this numeric platform: no forced rerun needed",
            )
        else:
            print("3. forced rerun here: dvc repro -f", flush=True)
            dvc(repo, "repro", "--force", "--quiet", quiet=True)
            second = read_lock((repo / "dvc.lock").read_text())
            unstable = [
                f"{stage}: {path} ({md5} then {second.get(stage, {}).get('outs', {}).get(path)})"
                for stage, entry in first.items()
                for path, md5 in entry["outs"].items()
                if second.get(stage, {}).get("outs", {}).get(path) != md5
            ]
            for line in unstable:
                checks.fail("same machine, same bytes", f"not reproducible here: {line}")
            if not unstable:
                checks.ok(
                    "same machine, same bytes",
                    f"all {len(first)} stages' outputs are bit-identical to the first run's",
                )

        print("4. training against the committed results", flush=True)
        for stage in (s for s in committed if not is_data_stage(s)):
            run = stage.split("@", 1)[-1]
            if same:
                changed = [
                    p
                    for p, m in committed[stage]["outs"].items()
                    if first[stage]["outs"].get(p) != m
                ]
                if not changed:
                    checks.ok(
                        "exact, same platform", f"{stage}: every output is the committed bytes"
                    )
                    continue
                figure = ""
                if run in first_records:
                    here, then = (
                        first_records[run],
                        json.loads(git("show", f"HEAD:metrics/{run}.json")),
                    )
                    figure = (
                        f" (test acc {_pct(here.get('test_acc'))} here, "
                        f"{_pct(then.get('test_acc'))} committed)"
                    )
                checks.fail(
                    "exact, same platform",
                    f"{stage}: {', '.join(changed)} differ from the committed bytes on the "
                    f"platform that made them{figure}",
                )
            elif stage.startswith("train@"):
                check_training(
                    checks,
                    run,
                    first_records[run],
                    json.loads(git("show", f"HEAD:metrics/{run}.json")),
                    tolerance,
                    recipe_key(committed, run),
                    f"platform differs in {', '.join(differs)}",
                )
            else:
                print(
                    f"  --    [derived] {stage}: made from the training runs above; "
                    "not compared byte for byte on another platform"
                )
    return _summary(checks, started)


def _summary(checks: Checks, started: float) -> int:
    took = time.monotonic() - started
    if checks.failures:
        print(f"verify: FAILED ({len(checks.failures)} check(s), {took:.0f} s):")
        for line in checks.failures:
            print(f"  {line}")
        print("See docs/reproducibility.md for what each rule means and what to do.")
        return 1
    print(f"verify: passed ({took:.0f} s)")
    return 0


def record() -> int:
    """`make lock`: the workspace's dvc.lock was made on this machine."""
    lock = read_lock((ROOT / "dvc.lock").read_text())
    found = {
        "platform": numeric_platform(params_device(ROOT)),
        "train_outs": _train_outs(lock),
    }
    write_json(ROOT / PLATFORM_FILE, found)
    print(f"{PLATFORM_FILE}: results made on {describe(found['platform'])}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--record", action="store_true", help="record this machine as the one that made dvc.lock"
    )
    args = parser.parse_args(argv)
    try:
        return record() if args.record else verify()
    except VerifyError as error:
        print(f"verify: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
