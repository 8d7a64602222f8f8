"""The rules `make verify` applies to a run on another numeric platform (ci/verify.py), on
made-up records: no dvc, no training."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ci"))
import verify

RUN = "alexnet-digits"
TOLERANCE = {
    "measured_with": {"seeds": [1, 2, 3]},
    "runs": {
        RUN: {"recipe": "r1", "confidence": 0.99, "test_acc_bound": 0.02, "agreement_bound": 0.9}
    },
}


def _record(acc: float, predictions: list[int]) -> dict:
    return {
        "model": "alexnet",
        "dataset": "digits",
        "epochs": 8,
        "params": 10,
        "macs": 20,
        "test_images": len(predictions),
        "diverged": False,
        "test_acc": acc,
        "test_predictions": predictions,
    }


def _check(here: dict, committed: dict, tolerance=TOLERANCE, recipe="r1") -> verify.Checks:
    checks = verify.Checks()
    verify.check_training(
        checks, RUN, here, committed, tolerance, recipe, "platform differs in cpu"
    )
    return checks


COMMITTED = _record(0.95, [0] * 95 + [1] * 5)


def test_a_run_no_further_than_two_seeds_passes(capsys: pytest.CaptureFixture) -> None:
    here = _record(0.96, [0] * 96 + [1] * 4)  # 1 point off; 99% of predictions agree
    assert _check(here, COMMITTED).failures == []
    out = capsys.readouterr().out
    assert "ok    [tolerance] alexnet-digits: test acc 96.00% here vs 95.00% committed" in out
    assert "|diff| 1.00 <= 2.00 points; predictions agree on 99.00% of 100 test images" in out
    assert ">= 90.00% (99% bounds for two seeds' runs, from seeds 1, 2, 3)" in out


def test_an_accuracy_further_than_the_seed_range_fails() -> None:
    here = _record(0.98, [0] * 98 + [1] * 2)
    failures = _check(here, COMMITTED).failures
    assert len(failures) == 1 and "|diff| 3.00 > 2.00 points" in failures[0]


def test_predictions_agreeing_less_than_two_seeds_fails() -> None:
    """Same accuracy, but on other images: more than a platform's rounding changes that."""
    here = _record(0.95, [1] * 6 + [0] * 94)
    failures = _check(here, COMMITTED).failures
    assert len(failures) == 1
    assert "predictions agree on 89.00% of 100 test images < 90.00%" in failures[0]


def test_a_spread_measured_for_another_recipe_asks_for_make_tolerance() -> None:
    failures = _check(COMMITTED, COMMITTED, recipe="r2").failures
    assert failures == [
        "alexnet-digits: ci/tolerance.json has a spread measured for another recipe for this "
        "run; run `make tolerance` and commit ci/tolerance.json (test acc here 95.00%, "
        "committed 95.00%)"
    ]


def test_a_structural_difference_fails_whatever_the_tolerance() -> None:
    here = {**COMMITTED, "params": 11}
    failures = _check(here, COMMITTED).failures
    assert failures == [
        "alexnet-digits: params is 11 here and 10 committed; that does not depend on the "
        "machine (a code or data change?)"
    ]


def test_the_bounds_cover_two_seeds_runs_99_times_in_100() -> None:
    """Student's t over the seeds: wide for few seeds, and from the pairs' disagreements."""
    import tolerance

    accs = [0.95, 0.96, 0.97, 0.98, 0.99]  # SD 0.0158
    agreements = [0.97, 0.98, 0.96, 0.97, 0.98, 0.99, 0.97, 0.96, 0.98, 0.97]
    bounds = tolerance.derive(accs, agreements)
    assert bounds["test_acc_sd"] == pytest.approx(0.015811, abs=1e-6)
    assert bounds["test_acc_bound"] == pytest.approx(4.604095 * 0.015811 * 2**0.5, abs=1e-5)
    # mean disagreement 0.027, SD 0.009487, t(0.995, 9) = 3.249836
    assert bounds["agreement_bound"] == pytest.approx(
        1 - (0.027 + 3.249836 * 0.009487 * (1.1**0.5)), abs=1e-5
    )
    with pytest.raises(tolerance.VerifyError, match="at least three seeds"):
        tolerance.derive([0.9, 0.91], [0.95])
