"""The compare stage's report says what it compares: the recipe of every run, top-5 only
where it can be below 100%, and a run at chance flagged "did not learn" with what to try."""

from __future__ import annotations

import json

from test_reporting import make_run, table_rows

from cnnlab import reporting

ADAM = {"lr": 0.001, "betas": (0.9, 0.999), "weight_decay": 1.0e-4}
ONECYCLE = {"name": "onecycle", "pct_start": 0.3, "warmup_epochs": 0}


def recipe(max_train: int | None = None) -> dict:
    """As the compare stage builds it from a run record's ``recipe``."""
    return reporting.recipe(
        {
            "optimizer": "adam",
            "lr": ADAM["lr"],
            "weight_decay": ADAM["weight_decay"],
            "settings": ADAM,
            "scheduler": ONECYCLE,
            "epochs": 8,
            "batch_size": 32,
            "seed": 42,
            "train_images": 1257,
            "val_images": 140,
            "test_images": 359,
            "max_train": max_train,
            "max_test": None,
        }
    )


def test_the_report_states_the_recipe_of_every_run() -> None:
    runs = [make_run(m, "digits", 0.97, num_classes=10) for m in ("lenet", "alexnet")]
    recipes = {"lenet-digits": recipe(2000), "alexnet-digits": recipe(2000)}
    table = reporting.run_table(runs)
    text = reporting.report_markdown(table, {}, "lenet", "alexnet", recipes=recipes)
    assert text.startswith("# LeNet vs AlexNet (subsampled: max_train=2,000)\n")
    assert "## Recipe" in text
    header, *rows = [r for r in table_rows(text) if r[0] in ("Dataset", "scikit-learn digits")]
    assert header[:10] == [
        "Dataset", "Model", "Optimizer", "lr", "Weight decay", "Schedule", "Epochs", "Batch",
        "Train / val / test images", "Subsampled",
    ]  # fmt: skip
    assert rows[0][:10] == [
        "scikit-learn digits", "LeNet", "adam", "0.001", "0.0001",
        "onecycle (peak at 0.3 of the run)", "8", "32", "1,257 / 140 / 359", "max_train=2,000",
    ]  # fmt: skip
    summary = reporting.summary_json(table, "lenet", "alexnet", recipes=recipes)
    assert summary["runs"]["lenet-digits"]["recipe"] == {
        "optimizer": "adam",
        "lr": 0.001,
        "weight_decay": 0.0001,
        "schedule": "onecycle (peak at 0.3 of the run)",
        "epochs": 8,
        "batch_size": 32,
        "train_images": 1257,
        "val_images": 140,
        "test_images": 359,
        "max_train": 2000,
        "max_test": None,
    }
    json.dumps(summary, allow_nan=False)


def test_schedules_name_the_keys_they_read() -> None:
    assert reporting.schedule_text({"name": "none", "warmup_epochs": 0}) == "none"
    step = {"name": "step", "gamma": 0.5, "step_size": 2, "warmup_epochs": 1}
    assert reporting.schedule_text(step) == "step (x0.5 every 2 epochs), 1 warm-up epochs"


def test_top5_only_with_more_than_five_classes() -> None:
    three = reporting.run_table([make_run("lenet", "own", 0.9, num_classes=3)])
    assert "Top-5" not in reporting.report_markdown(three, {}, "lenet", None)
    assert reporting.summary_json(three, "lenet", None)["runs"]["lenet-own"]["test_top5"] is None
    ten = reporting.run_table([make_run("lenet", "mnist", 0.9, num_classes=10)])
    assert "Top-5 (%)" in reporting.report_markdown(ten, {}, "lenet", None)
    assert reporting.summary_json(ten, "lenet", None)["runs"]["lenet-mnist"]["test_top5"] > 0.99


def test_a_run_at_chance_did_not_learn_and_says_what_to_try() -> None:
    runs = [
        make_run("lenet", "mnist", 0.4373, num_classes=10),
        make_run("alexnet", "mnist", 0.1031, num_classes=10),  # chance is 10%
    ]
    table = reporting.run_table(runs)
    assert table["status"].tolist() == ["ok", reporting.DID_NOT_LEARN]
    text = reporting.report_markdown(table, {}, "lenet", "alexnet")
    assert any(row[-1] == "did not learn" for row in table_rows(text))
    assert "## Runs that did not learn" in text
    assert (
        "- **AlexNet on MNIST** did not learn: test accuracy 10.31%, chance 10.00% (10 "
        "classes); try a larger lr" in text
    )
    runs_json = reporting.summary_json(table, "lenet", "alexnet")["runs"]
    assert runs_json["alexnet-mnist"]["status"] == "did not learn"
    assert "another optimizer" in runs_json["alexnet-mnist"]["advice"]
    assert "advice" not in runs_json["lenet-mnist"]
