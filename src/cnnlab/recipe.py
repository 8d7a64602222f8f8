"""From validated params to the objects of one run: model, optimizer, schedule, batches."""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from cnnlab.data.batches import Augmentation, BatchMaker
from cnnlab.data.catalog import DATASETS
from cnnlab.data.prepare import PreparedData
from cnnlab.distributed import SINGLE, World, global_batches
from cnnlab.errors import UserError
from cnnlab.models.zoo import build_model, input_size
from cnnlab.optimizers import build_optimizer
from cnnlab.params import Params
from cnnlab.schedulers import LRSchedule
from cnnlab.training import Run, TrainConfig


def augmentation_for(params: Params, dataset: str) -> Augmentation:
    """params.yaml's ``augment:``; crop and flip take the dataset's usual recipe where ``null``."""
    info = DATASETS.get(dataset)
    augment = params.augment.model_dump()
    if augment["crop_padding"] is None:
        augment["crop_padding"] = info.crop_padding if info else 0
    if augment["hflip"] is None:
        augment["hflip"] = info.hflip_ok if info else False
    return Augmentation(**augment)


def input_channels(params: Params, data: PreparedData) -> int:
    """Channels the model sees: ``data.channels``, or the stored images' own."""
    return params.data.channels or data.image_shape[0]


def new_model(params: Params, model_name: str, data: PreparedData) -> nn.Module:
    """The model for ``data``'s classes and the channels it is fed, initialised from ``seed``."""
    torch.manual_seed(params.seed)
    return build_model(
        model_name,
        in_channels=input_channels(params, data),
        num_classes=data.num_classes,
        options=params.model_options(model_name),
    )


def checkpoint_header(params: Params, model_name: str, data: PreparedData) -> dict[str, Any]:
    """What rebuilds the model and its input batches without params.yaml (evaluate reads it
    from the checkpoint), and the recipe the reports state; ``input`` is
    :class:`BatchMaker`'s arguments."""
    options = params.model_options(model_name)
    settings = params.optimizer_settings()
    return {
        "model": model_name,
        "dataset": data.meta["dataset"],
        "num_classes": data.num_classes,
        "options": options.model_dump(),
        "input": {
            "in_channels": input_channels(params, data),
            "size": input_size(model_name, options),
            "mean": params.data.mean or data.meta["mean"],
            "std": params.data.std or data.meta["std"],
            "pad_to_size": params.data.pad_to_size,
        },
        "recipe": {
            "optimizer": params.optimizer,
            "lr": settings.get("lr"),  # None: PyTorch's default
            "weight_decay": settings.get("weight_decay"),
            "settings": settings,
            "scheduler": params.scheduler.model_dump(),
            "epochs": params.epochs,
            "batch_size": params.batch_size,
            "seed": params.seed,
        },
    }


def batch_maker(
    params: Params, model_name: str, data: PreparedData, split: str, device: torch.device
) -> BatchMaker:
    """Batches of ``split`` as the model takes them: size, channels, normalisation."""
    header = checkpoint_header(params, model_name, data)
    return BatchMaker(
        data.images[split],
        data.labels[split],
        **header["input"],
        device=device,
        channels_last=params.channels_last,
    )


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for params ``amp`` on ``device``: None (float32) off CUDA, where
    bf16 autocast ran 3-35x slower than float32 on this project's machine."""
    if device.type != "cuda" or amp == "off":
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def build_run(
    params: Params,
    model_name: str,
    data: PreparedData,
    device: torch.device,
    *,
    progress: bool = False,
    label: str = "",
    world: World = SINGLE,
) -> Run:
    """The run's objects; under DDP (``world``) each rank builds the same ones, and the lr
    is never rescaled (docs/beyond-one-machine.md)."""
    batch_size = params.global_batch_size(world.size)
    model = new_model(params, model_name, data).to(device)
    if params.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(
        params.optimizer,
        model.parameters(),
        params.optimizer_settings(),
        fused=params.fused_optimizer,
        device=device.type,
    )
    train_batches = batch_maker(params, model_name, data, "train", device)
    steps = len(global_batches(len(train_batches), batch_size, world.size))
    if not steps:  # each process takes the same number of images per step, at least one
        raise UserError(
            f"{label or 'train'}: the training split holds {len(train_batches)} image(s), "
            f"fewer than the {world.size} processes that each need one per step: raise "
            "data.max_train (or lower data.val_fraction), or train with fewer processes "
            "(distributed.nproc)"
        )
    scheduler = LRSchedule(params.scheduler, optimizer, params.epochs, steps)
    if params.amp in ("fp16", "bf16") and device.type != "cuda":
        print(
            f"{label or 'train'}: amp: {params.amp} runs on CUDA only; training in float32 "
            f"on {device.type}",
            file=sys.stderr,
        )
    config = TrainConfig(
        epochs=params.epochs,
        batch_size=batch_size,
        seed=params.seed,
        augment=augmentation_for(params, data.meta["dataset"]),
        eval_batch_size=params.eval_batch_size,
        label_smoothing=params.label_smoothing,
        clip_grad_norm=params.clip_grad_norm,
        amp_dtype=amp_dtype(params.amp, device),
        progress=progress,
        label=label,
        world=world,
    )
    val_batches = batch_maker(params, model_name, data, "val", device)
    return Run(model, optimizer, scheduler, train_batches, val_batches, config)
