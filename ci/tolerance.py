#!/usr/bin/env python3
"""Measure how far apart runs of the committed recipe land with other seeds, and write it to
ci/tolerance.json: the tolerance `make verify` applies to training results on a machine whose
numeric platform is not the one that made the committed results.

    make tolerance                      # seeds 1-5, the committed thread count
    python ci/tolerance.py --seeds 1 2 3 --threads 1   # while other work runs

Each seed is a `dvc exp run -S seed=N` in a scratch clone of HEAD (the workspace is not
touched). Per run it records each seed's test accuracy and predictions, and derives how far
two seeds' runs can be apart (99% bounds, see `derive`). A run elsewhere is within tolerance
when it is no further from the committed run than two seeds could be from each other.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Iterable
from math import sqrt

import numpy as np
from reprokit import (
    ROOT,
    TOLERANCE_FILE,
    VerifyError,
    agreement,
    describe,
    dvc,
    numeric_platform,
    params_device,
    read_lock,
    recipe_key,
    run_record,
    scratch_clone,
    train_runs,
    write_json,
)
from scipy import stats

#: The share of pairs of seeds whose difference the bounds cover (two-sided): a platform that
#: behaves like one more seed fails `make verify` about once in a hundred runs.
CONFIDENCE = 0.99


def derive(accs: Iterable[float | None], agreements: Iterable[float | None]) -> dict:
    """The bounds `make verify` applies, from the seeds' figures (a normal model, Student's t
    for the few seeds): two runs' test accuracies differ by at most ``t * SD * sqrt(2)``, and
    their predictions disagree on at most the mean disagreement of two seeds plus
    ``t * SD * sqrt(1 + 1/pairs)`` (a prediction bound for one more pair)."""
    known = [a for a in accs if a is not None]
    shares = [1.0 - a for a in agreements if a is not None]
    if len(known) < 3 or len(shares) < 3:
        raise VerifyError("the bounds need at least three seeds that trained (not diverged)")
    t_acc = stats.t.ppf(0.5 + CONFIDENCE / 2, len(known) - 1)
    t_pair = stats.t.ppf(0.5 + CONFIDENCE / 2, len(shares) - 1)
    disagreement = np.mean(shares) + t_pair * np.std(shares, ddof=1) * sqrt(1 + 1 / len(shares))
    return {
        "confidence": CONFIDENCE,
        "test_acc_sd": round(float(np.std(known, ddof=1)), 6),
        "test_acc_bound": round(float(t_acc * np.std(known, ddof=1) * sqrt(2)), 6),
        "disagreement_mean": round(float(np.mean(shares)), 6),
        "agreement_bound": round(float(max(0.0, 1.0 - disagreement)), 6),
    }


def measure(seeds: list[int], threads: int | None) -> dict:
    records: dict[str, dict[int, dict]] = {}
    recipes: dict[str, set[str]] = {}
    with scratch_clone() as repo:
        for seed in seeds:
            started = time.monotonic()
            extra = ["-S", f"threads={threads}"] if threads is not None else []
            print(f"tolerance: seed {seed} ...", flush=True)
            dvc(repo, "exp", "run", "--quiet", "-S", f"seed={seed}", *extra, quiet=True)
            measured = read_lock((repo / "dvc.lock").read_text())
            runs = train_runs(measured)
            for run in runs:
                records.setdefault(run, {})[seed] = run_record(repo, run)
                recipes.setdefault(run, set()).add(recipe_key(measured, run))
            print(
                f"tolerance: seed {seed}: "
                + ", ".join(f"{r} {records[r][seed]['test_acc']}" for r in runs)
                + f" ({time.monotonic() - started:.0f} s)",
                flush=True,
            )
        device = params_device(repo)
    result = {}
    for run in records:
        accs = {s: r["test_acc"] for s, r in records[run].items()}
        pairs = {
            f"{a}-{b}": agreement(
                records[run][a]["test_predictions"], records[run][b]["test_predictions"]
            )
            for a, b in itertools.combinations(seeds, 2)
        }
        if len(recipes[run]) != 1:
            raise VerifyError(f"{run}: the seeds' runs had different recipes: {recipes[run]}")
        result[run] = {
            "recipe": recipes[run].pop(),
            "test_acc_by_seed": {str(s): a for s, a in accs.items()},
            "agreement_by_pair": {
                k: round(v, 6) if v is not None else None for k, v in pairs.items()
            },
            **derive(accs.values(), pairs.values()),
        }
    return {
        "measured_with": {
            "seeds": seeds,
            "threads": "as committed" if threads is None else threads,
            "platform": describe(numeric_platform(device)),
        },
        "runs": result,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--threads", type=int, help="override params.yaml's threads")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) < 3:
        print("error: --seeds needs at least three different seeds", file=sys.stderr)
        return 2
    try:
        result = measure(sorted(set(args.seeds)), args.threads)
    except VerifyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    write_json(ROOT / TOLERANCE_FILE, result)
    for run, entry in result["runs"].items():
        print(
            f"{run}: test accuracies within {100 * entry['test_acc_bound']:.2f} points, "
            f"predictions agreeing on at least {100 * entry['agreement_bound']:.2f}%"
        )
    print(f"wrote {TOLERANCE_FILE}; commit it with the results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
