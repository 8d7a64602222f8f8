"""A made-up cross-experiment comparison (no training, no DVC): what
cnnlab-compare hands to the experiments page, for its unit tests and for
benchmarks/experiment_page.py (30 experiments' page without 30 trainings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from cnnlab_compare import stats
from cnnlab_compare.reporting import experiment_table, param_text

OPTIMIZERS = ("sgd", "momentum", "nag", "adagrad", "adadelta", "rmsprop", "adam")
RUNS = (("digits", "lenet"), ("digits", "alexnet"))


@dataclass
class Comparison:
    table: pd.DataFrame
    varied: list[str]
    histories: dict[tuple[str, str, str], pd.DataFrame]
    groups: pd.DataFrame | None
    by: list[str]


def _history(quality: float, epochs: int) -> pd.DataFrame:
    """Curves that rise towards ``quality`` (a fraction) over the epochs."""
    rows = []
    for epoch in range(epochs):
        reached = quality * (1 - math.exp(-(epoch + 1) / 2))
        rows.append(
            {
                "epoch": epoch,
                "train_loss": 2.3 * (1 - reached) + 0.02,
                "train_acc": min(1.0, reached + 0.01),
                "val_loss": 2.3 * (1 - reached) + 0.05,
                "val_acc": reached,
            }
        )
    return pd.DataFrame(rows)


def fake_comparison(
    configs: int = 2, seeds: int = 1, epochs: int = 5, runs=RUNS, fail_last: bool = False
) -> Comparison:
    """``configs`` optimizers (cycling through lr values past seven) times ``seeds`` seeds,
    each experiment run on ``runs``; ``fail_last``: the last experiment failed (no files)."""
    rows, histories = [], {}
    count = configs * seeds
    varied = ["optimizer"] * (configs > 1) + ["lr"] * (configs > len(OPTIMIZERS))
    varied += ["seed"] * (seeds > 1)
    for c in range(configs):
        optimizer = OPTIMIZERS[c % len(OPTIMIZERS)]
        lr = [None, 0.01, 0.05, 0.1, 0.003][(c // len(OPTIMIZERS)) % 5]
        for s in range(seeds):
            name = f"exp-{c:02d}-{s}"
            params = {"optimizer": optimizer, "lr": lr, "seed": s}
            label = ", ".join(f"{k}={param_text(params[k])}" for k in varied if k != "seed")
            failed = fail_last and len(rows) == (count - 1) * len(runs)
            for dataset, model in runs:
                quality = 0.80 + 0.02 * (c % 7) + 0.003 * s + (0.05 if model == "lenet" else 0)
                if failed:
                    run = {"dataset": dataset, "model": model, "failed": True}
                else:
                    run = {
                        "dataset": dataset,
                        "model": model,
                        "test_acc": quality - 0.01,
                        "test_top5": 0.999,
                        "best_val_acc": quality,
                        "best_epoch": epochs - 1,
                        "final_val_acc": quality,
                        "epochs": epochs,
                        "epochs_completed": epochs,
                        "train_seconds": 10.0 + c,
                        "diverged": False,
                    }
                    histories[(name, dataset, model)] = _history(quality, epochs)
                rows.append(
                    {
                        "experiment": name,
                        "rev": f"{len(rows):07x}",
                        "label": f"{name}: {label}" if seeds > 1 else label,  # as run_labels
                        "params": params,
                        "run": run,
                    }
                )
    table = experiment_table(rows, varied)
    by = stats.group_columns(varied)
    groups = stats.group_table(table, by) if seeds > 1 else None
    return Comparison(table, varied, histories, groups, by)
