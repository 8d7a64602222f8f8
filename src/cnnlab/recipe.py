"""From validated params to the objects of one run: model, optimizer, schedule, batches.

The train and evaluate stages, the benchmarks and the tests all build runs through here, so
a run means the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnlab.data.batches import Augmentation, BatchMaker
from cnnlab.data.catalog import DATASETS
from cnnlab.data.prepare import PreparedData
from cnnlab.models.zoo import build_model, input_size
from cnnlab.optimizers import build_optimizer
from cnnlab.params import Params
from cnnlab.schedulers import build_scheduler
from cnnlab.training import EpochRecord, TrainConfig, TrainState, train


def augmentation_for(params: Params, dataset: str) -> Augmentation:
    """params.yaml's ``augment:`` where set, the dataset's usual recipe where ``null``."""
    info = DATASETS.get(dataset)
    crop = params.augment.crop_padding
    flip = params.augment.hflip
    return Augmentation(
        crop_padding=crop if crop is not None else (info.crop_padding if info else 0),
        hflip=flip if flip is not None else (info.hflip_ok if info else False),
    )


def new_model(params: Params, model_name: str, data: PreparedData) -> nn.Module:
    """The model for ``data``'s channels and classes, initialised from ``seed``."""
    torch.manual_seed(params.seed)
    return build_model(
        model_name,
        in_channels=data.image_shape[0],
        num_classes=data.num_classes,
        options=params.model_options(model_name),
    )


def batch_maker(
    params: Params, model_name: str, data: PreparedData, split: str, device: torch.device
) -> BatchMaker:
    return BatchMaker(
        data.images[split],
        data.labels[split],
        mean=data.meta["mean"],
        std=data.meta["std"],
        size=input_size(model_name, params.model_options(model_name)),
        device=device,
        channels_last=params.channels_last,
    )


@dataclass
class Run:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_batches: BatchMaker
    val_batches: BatchMaker
    config: TrainConfig


def build_run(
    params: Params,
    model_name: str,
    data: PreparedData,
    device: torch.device,
    *,
    progress: bool = False,
    label: str = "",
) -> Run:
    model = new_model(params, model_name, data).to(device)
    if params.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(
        params.optimizer,
        model.parameters(),
        params.optimizer_settings(),
        fused=params.fused_optimizer and device.type == "cpu",
    )
    scheduler = build_scheduler(params.scheduler, optimizer, params.epochs)
    config = TrainConfig(
        epochs=params.epochs,
        batch_size=params.batch_size,
        seed=params.seed,
        augment=augmentation_for(params, data.meta["dataset"]),
        eval_batch_size=params.eval_batch_size,
        progress=progress,
        label=label,
    )
    return Run(
        model,
        optimizer,
        scheduler,
        batch_maker(params, model_name, data, "train", device),
        batch_maker(params, model_name, data, "val", device),
        config,
    )


def fit(
    run: Run,
    *,
    state: TrainState | None = None,
    on_epoch: Callable[[EpochRecord, TrainState], None] | None = None,
) -> TrainState:
    return train(
        run.model,
        run.optimizer,
        run.scheduler,
        run.train_batches,
        run.val_batches,
        run.config,
        state=state,
        on_epoch=on_epoch,
    )
