"""train@<model>-<dataset>: train on the prepared tensors, keep the best and the last weights.

Per-epoch metrics go through DVCLive into plots/train/<run>/ (declared in dvc.yaml, so DVCLive
is told not to touch dvc.yaml); its summary, plots/train/<run>/metrics.json, records the run:
best epoch, divergence. Training time and throughput differ from run to run, so they go to
timings.json, which is no stage's output (dvc.lock stays byte-identical on a rerun).
The checkpoints hold the weights and the header that rebuilds the model (evaluate reads it),
so their bytes repeat from run to run.

After every epoch a resume state goes to checkpoints/<run>.pt (outside DVC's outputs, which
DVC deletes before a rerun); a killed or interrupted run continues from there on the next
`dvc repro` and ends with the same bytes as an uninterrupted one. A complete state is kept
until evaluate@<run> starts, so a kill between training's end and DVC's record of it costs
no retraining.

With `distributed.nproc` > 1 the script starts itself again under torchrun (so `dvc repro`
needs no other command); under torchrun, started by it or by the user, every rank trains
and rank 0 alone reads the resume state and writes checkpoints, logs and metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from common import (
    CHECKPOINTS,
    MODELS,
    PREPARED,
    TIMINGS,
    TRAIN_LOGS,
    interactive,
    run_name,
    run_stage,
)

from cnnlab.params import load_params

if TYPE_CHECKING:
    import torch

    from cnnlab.distributed import World
    from cnnlab.params import Params


def main(model_name: str, dataset: str) -> None:
    params = load_params()
    from cnnlab import distributed
    from cnnlab.runtime import make_deterministic, pick_device

    if distributed.should_launch(params.distributed.nproc):
        # a device that is not there: one line here, not one per worker and torchrun's traceback
        pick_device(params.device)
        distributed.relaunch_under_torchrun(params.distributed.nproc, params.threads)

    world = distributed.world_from_env()
    make_deterministic(params.threads)
    requested = pick_device(params.device)
    with distributed.joined(world, requested, params.distributed.backend) as device:
        train_and_save(params, model_name, dataset, world, device)


def train_and_save(
    params: Params, model_name: str, dataset: str, world: World, device: torch.device
) -> None:
    """Rank 0 (or the only process): the whole stage; any other rank: its share of training."""
    from dvclive import Live

    from cnnlab import distributed
    from cnnlab.data.prepare import load_prepared
    from cnnlab.files import save_torch
    from cnnlab.recipe import build_run, checkpoint_header
    from cnnlab.resume import ResumePoint, restore
    from cnnlab.training import train

    data = load_prepared(PREPARED / dataset)
    name = run_name(model_name, dataset)
    run = build_run(
        params, model_name, data, device, progress=interactive(), label=name, world=world
    )
    saved = None
    if world.is_main:
        resume = ResumePoint(
            CHECKPOINTS / f"{name}.pt", run_fingerprint(params, model_name, dataset, world, device)
        )
        saved, message = resume.read(run.model, run.optimizer, run.scheduler)
        if message:
            print(f"{name}: {message}", flush=True)
    saved = distributed.broadcast_from_main(saved, world)
    state = restore(saved, run.model, run.optimizer, run.scheduler) if saved else None
    if not world.is_main:  # trains its shard; rank 0 writes everything
        train(run, state=state)
        return
    out = MODELS / name

    with Live(dir=str(TRAIN_LOGS / name), dvcyaml=False, save_dvc_exp=False, report=None) as live:

        def log(record) -> None:
            live.step = record.epoch  # x axis of the plots: epochs counted from 1
            for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
                split, metric = key.split("_")
                live.log_metric(f"{split}/{metric}", getattr(record, key))
            live.log_metric("lr", record.lr)
            live.next_step()

        def log_and_save(record, state) -> None:
            log(record)
            resume.save(run.model, run.optimizer, run.scheduler, state)

        for record in state.history if state else []:  # DVC removed the old logs: replay them
            log(record)
        state = train(run, state=state, on_epoch=log_and_save)
        # DVCLive's summary (metrics.json) is the run's training record; evaluate reads it.
        live.summary.update(state.summary(params.epochs))

    # what rebuilds the model without params.yaml, and the recipe the reports state
    header = checkpoint_header(params, model_name, data)
    last = {k: v.cpu() for k, v in run.model.state_dict().items()}
    save_torch(out / "last.pt", {**header, "epoch": state.epoch, "state_dict": last})
    save_torch(
        out / "best.pt",
        {**header, "epoch": state.best_epoch, "state_dict": state.best_model or last},
    )

    # A run that diverged in its first epoch logged no epoch; its plots output still exists.
    (TRAIN_LOGS / name / "plots" / "metrics").mkdir(parents=True, exist_ok=True)
    timing = {"device": device.type, "threads": params.threads, "processes": world.size}
    # the comparison shows a time only for the run it timed (train_*: the README's
    # `dvc exp show --drop` leaves it out like the times)
    timing["train_run"] = run_key(name)
    runs = {run_name(m, d) for m in params.models for d in params.datasets}
    record_timing(name, {**state.timings(), **timing}, runs)


def run_fingerprint(
    params: Params, model_name: str, dataset: str, world: World, device: torch.device
) -> str:
    """Which run a resume state belongs to: the params, the prepared data, the code, and
    what else changes the bytes though params.yaml does not say it: the number of processes
    (a torchrun of the user's, or PET_NNODES nodes: the ranks' batches and streams, and under
    `batch_size_per: rank` the steps per epoch) and the device type `device: auto` chose."""
    from cnnlab.resume import fingerprint

    settings = params.model_dump(exclude={"datasets", "models"})
    where = {"processes": world.size, "device_type": device.type}
    run = {"run": run_name(model_name, dataset), **where}
    return fingerprint({**run, **settings}, PREPARED / dataset)


def run_key(name: str) -> str | None:
    """What this run is (DVC's run-cache key of train@<name>, as dvc.lock will record it,
    cnnlab.runs): timings.json is no output, so a run DVC restores from its cache leaves
    another run's entry there, and this key tells the two apart. None outside a DVC repo."""
    from dvc.exceptions import DvcException

    from cnnlab.runs import workspace_key

    try:
        return workspace_key(f"train@{name}")
    except DvcException as exc:
        print(f"{name}: timings.json: no run key ({exc}); comparisons will not show this time")
        return None


def record_timing(name: str, timing: dict, runs: set[str]) -> None:
    """This run's entry in timings.json; entries of runs the params no longer name go."""
    import json

    from cnnlab.files import write_json

    try:
        table = json.loads(TIMINGS.read_text())
    except (FileNotFoundError, ValueError):
        table = {}
    table = {k: v for k, v in table.items() if k in runs} if isinstance(table, dict) else {}
    write_json(TIMINGS, dict(sorted({**table, name: timing}.items())))
    # The resume state stays until evaluate@<run> starts (DVC has recorded this stage by
    # then): killed before DVC wrote dvc.lock, the rerun rewrites these outputs from it
    # instead of training again.


if __name__ == "__main__":
    run_stage(
        main,
        2,
        "python stages/train.py <model> <dataset>",
        writes=lambda m, d: (f"run-{run_name(m, d)}", f"run {run_name(m, d)}"),
    )
