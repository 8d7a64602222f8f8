"""evaluate@<model>-<dataset>: the best checkpoint on the test split -> metrics/<run>.json.

The model and its input are rebuilt from the checkpoint's own header (train wrote it), so
this stage reads only how to run: device, threads, batch size, memory format. Its record
(cnnlab.record, in git) holds every number of the run, its status, confusion matrix and
recipe, and each test image's predicted class index in test-set order (what `make verify`
compares with another machine's run); compare and the cross-experiment comparison render
from it. The per-class accuracies also go to plots/eval/<run>/classes.json, and the
predictions with class names to predictions.json (DVC's confusion-matrix plot).
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

from cnnlab.slices import load_slice


def main(model_name: str, dataset: str) -> None:
    p = load_slice("device", "threads", "eval_batch_size", "channels_last")
    from cnnlab.data.batches import BatchMaker
    from cnnlab.data.catalog import title as dataset_title
    from cnnlab.data.prepare import load_prepared
    from cnnlab.evaluation import classification_metrics, evaluate_batches
    from cnnlab.files import load_torch, write_json
    from cnnlab.models.options import title as model_title
    from cnnlab.models.zoo import build_model, count_macs, count_parameters
    from cnnlab.record import RunRecord, status_of
    from cnnlab.runtime import make_deterministic, pick_device

    make_deterministic(p["threads"])
    device = pick_device(p["device"])
    name = run_name(model_name, dataset)
    # DVC recorded train@<run> before starting this stage: its resume state is spent.
    (CHECKPOINTS / f"{name}.pt").unlink(missing_ok=True)
    data = load_prepared(PREPARED / dataset)
    training = json.loads((TRAIN_LOGS / name / "metrics.json").read_text())
    checkpoint = load_torch(MODELS / name / "best.pt")
    shape = checkpoint["input"]
    model = build_model(
        checkpoint["model"],
        in_channels=shape["in_channels"],
        num_classes=checkpoint["num_classes"],
        options=checkpoint["options"],
    )
    model.load_state_dict(checkpoint["state_dict"])
    classes = data.meta["classes"]
    test: dict = {"test_acc": None, "test_top5": None, "test_loss": None}
    test |= {"confusion": None, "per_class_acc": None}
    predicted, predictions = None, []
    if training["best_epoch"] is not None:  # else diverged in its first epoch: nothing to test
        batches = BatchMaker(
            data.images["test"],
            data.labels["test"],
            **shape,
            device=device,
            channels_last=p["channels_last"],
        )
        _, logits, labels = evaluate_batches(model.to(device), batches, p["eval_batch_size"])
        test = classification_metrics(logits, labels, classes)
        predicted = logits.argmax(1).tolist()
        predictions = [
            {"actual": classes[a], "predicted": classes[i]}
            for a, i in zip(labels.tolist(), predicted, strict=True)
        ]
    meta = data.meta
    record = RunRecord(
        model=model_name,
        dataset=dataset,
        model_title=model_title(model_name),
        dataset_title=dataset_title(dataset),
        status=status_of(test["test_acc"], len(classes), training["diverged"]),
        test_acc=test["test_acc"],
        test_top5=test["test_top5"],
        test_loss=test["test_loss"],
        **{k: training[k] for k in ("best_val_acc", "best_epoch", "final_val_acc", "epochs")},
        **{k: training[k] for k in ("epochs_completed", "diverged", "diverged_epoch")},
        params=count_parameters(model),
        macs=count_macs(model.cpu(), (shape["in_channels"], shape["size"], shape["size"])),
        test_images=len(data.labels["test"]),
        recipe={
            **checkpoint["recipe"],
            **{f"{split}_images": n for split, n in meta["counts"].items()},
            "max_train": meta.get("max_train"),
            "max_test": meta.get("max_test"),
        },
        classes=classes,
        confusion=test["confusion"],
        per_class_acc=test["per_class_acc"],
        test_predictions=predicted,
    )
    per_class = record.per_class_acc or {}
    counts = Counter(data.labels["test"].tolist())
    class_rows = [
        {"class": c, "accuracy": per_class.get(c), "images": counts.get(i, 0)}
        for i, c in enumerate(classes)
    ]
    write_json(METRICS / f"{name}.json", record.model_dump())
    write_json(EVAL_PLOTS / name / "predictions.json", predictions)
    write_json(EVAL_PLOTS / name / "classes.json", class_rows)
    status = record.status
    if record.diverged:
        status = f"diverged at epoch {record.diverged_epoch}"
    if record.test_acc is not None:
        status += f", test acc {record.test_acc:.4f}, top-5 {record.test_top5:.4f}"
    print(f"{name}: {status}, {record.params:,} params")


if __name__ == "__main__":
    run_stage(
        main,
        2,
        "python stages/evaluate.py <model> <dataset>",
        writes=lambda m, d: (f"run-{run_name(m, d)}", f"run {run_name(m, d)}"),
    )
