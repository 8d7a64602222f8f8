"""evaluate@<model>-<dataset>: the best checkpoint on the test split -> metrics/<run>.json.

The metrics file (in git) holds the run's numbers and each test image's predicted class index,
in test-set order: what `make verify` compares with another machine's run. The per-class
accuracies go to plots/eval/<run>/classes.json, and the predictions with class names to
predictions.json (DVC's confusion-matrix plot).
"""

from __future__ import annotations

import json
from collections import Counter

from common import (
    CHECKPOINTS,
    EVAL_PLOTS,
    METRICS,
    MODELS,
    PREPARED,
    TRAIN_LOGS,
    run_name,
    run_stage,
)

from cnnlab.params import load_params


def main(model_name: str, dataset: str) -> None:
    params = load_params()
    from cnnlab.data.prepare import load_prepared
    from cnnlab.evaluation import classification_metrics
    from cnnlab.files import load_torch, write_json
    from cnnlab.models.zoo import count_macs, count_parameters
    from cnnlab.recipe import batch_maker, input_shape, new_model
    from cnnlab.runtime import make_deterministic, pick_device
    from cnnlab.training import evaluate_batches

    make_deterministic(params.threads)
    device = pick_device(params.device)
    name = run_name(model_name, dataset)
    # DVC recorded train@<run> before starting this stage: its resume state is spent.
    (CHECKPOINTS / f"{name}.pt").unlink(missing_ok=True)
    data = load_prepared(PREPARED / dataset)
    training = json.loads((TRAIN_LOGS / name / "metrics.json").read_text())
    classes = data.meta["classes"]
    model = new_model(params, model_name, data)
    if training["best_epoch"] is not None:
        model.load_state_dict(load_torch(MODELS / name / "best.pt")["state_dict"])
        batches = batch_maker(params, model_name, data, "test", device)
        _, logits, labels = evaluate_batches(model.to(device), batches, params.eval_batch_size)
        test = classification_metrics(logits, labels, classes)
        predicted = logits.argmax(1).tolist()
        predictions = [
            {"actual": classes[a], "predicted": classes[p]}
            for a, p in zip(labels.tolist(), predicted, strict=True)
        ]
    else:  # diverged in its first epoch: no weights worth testing
        test = {
            "test_acc": None,
            "test_top5": None,
            "test_loss": None,
            "test_images": len(data.labels["test"]),
            "per_class_acc": None,
        }
        predicted, predictions = None, []
    training_keys = (
        "best_val_acc",
        "best_epoch",
        "final_val_acc",
        "epochs",
        "epochs_completed",
        "diverged",
        "diverged_epoch",
    )
    metrics = {
        "model": model_name,
        "dataset": dataset,
        **{k: test[k] for k in ("test_acc", "test_top5", "test_loss")},
        **{k: training[k] for k in training_keys},
        "params": count_parameters(model),
        "macs": count_macs(model.cpu(), input_shape(params, model_name, data)),
        "test_images": test["test_images"],
        "test_predictions": predicted,  # class indices, in test-set order
    }
    per_class = test["per_class_acc"] or {}
    counts = Counter(data.labels["test"].tolist())
    class_rows = [
        {"class": c, "accuracy": per_class.get(c), "images": counts.get(i, 0)}
        for i, c in enumerate(classes)
    ]
    write_json(METRICS / f"{name}.json", metrics)
    write_json(EVAL_PLOTS / name / "predictions.json", predictions)
    write_json(EVAL_PLOTS / name / "classes.json", class_rows)
    status = f"diverged at epoch {training['diverged_epoch']}" if training["diverged"] else "ok"
    if metrics["test_acc"] is not None:
        status += f", test acc {metrics['test_acc']:.4f}, top-5 {metrics['test_top5']:.4f}"
    print(f"{name}: {status}, {metrics['params']:,} params")


if __name__ == "__main__":
    run_stage(
        main,
        2,
        "python stages/evaluate.py <model> <dataset>",
        writes=lambda m, d: (f"run-{run_name(m, d)}", f"run {run_name(m, d)}"),
    )
