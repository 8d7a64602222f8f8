"""evaluate@<model>-<dataset>: the best checkpoint on the test split -> metrics/<run>.json."""

from __future__ import annotations

import json

from common import EVAL_PLOTS, METRICS, MODELS, PREPARED, TRAIN_LOGS, run_name, run_stage

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
    data = load_prepared(PREPARED / dataset)
    checkpoint = load_torch(MODELS / name / "best.pt")
    training = json.loads((TRAIN_LOGS / name / "metrics.json").read_text())
    model = new_model(params, model_name, data)
    model.load_state_dict(checkpoint["state_dict"])
    model.to(device)
    batches = batch_maker(params, model_name, data, "test", device)
    _, logits, labels = evaluate_batches(model, batches, params.eval_batch_size)
    metrics = classification_metrics(logits, labels, data.meta["classes"])
    metrics.pop("confusion")  # compare rebuilds it from predictions.json, the DVC plot
    metrics = {
        "model": model_name,
        "dataset": dataset,
        **{k: metrics[k] for k in ("test_acc", "test_top5", "test_loss")},
        **{
            k: training[k]
            for k in (
                "best_val_acc",
                "best_epoch",
                "final_val_acc",
                "epochs",
                "epochs_completed",
                "diverged",
                "diverged_epoch",
            )
        },
        "params": count_parameters(model),
        "macs": count_macs(model.cpu(), input_shape(params, model_name, data)),
        **{
            k: training[k]
            for k in ("train_seconds", "train_images_per_second", "threads", "device")
        },
        "test_images": metrics["test_images"],
        "per_class_acc": metrics["per_class_acc"],
    }
    if training["best_epoch"] is None:  # diverged in its first epoch: no weights worth testing
        metrics["test_acc"] = metrics["test_top5"] = metrics["test_loss"] = None
    write_json(METRICS / f"{name}.json", metrics)
    classes = data.meta["classes"]
    predicted = logits.argmax(1).tolist()
    write_json(
        EVAL_PLOTS / name / "predictions.json",
        [
            {"actual": classes[a], "predicted": classes[p]}
            for a, p in zip(labels.tolist(), predicted, strict=True)
        ],
    )
    status = "diverged" if training["diverged"] else "ok"
    if metrics["test_acc"] is not None:
        status += f", test acc {metrics['test_acc']:.4f}"
    print(f"{name}: {status}, top-5 {metrics['test_top5']}, {metrics['params']:,} params")


if __name__ == "__main__":
    run_stage(main, 2, "python stages/evaluate.py <model> <dataset>")
