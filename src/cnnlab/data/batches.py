"""From stored uint8 images to a model-ready float batch, on whole batches at once.

Per-image Python transforms are what makes the usual PyTorch script slow on a CPU; here a
batch is converted, resized, augmented and normalised with a handful of tensor operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation; both off is the identity."""

    crop_padding: int = 0
    hflip: bool = False

    @property
    def enabled(self) -> bool:
        return self.crop_padding > 0 or self.hflip


class BatchMaker:
    """Turns index batches of a uint8 image tensor into normalised model inputs.

    ``size`` is the model's input size: 28x28 digits are zero-padded to 32 as LeNet-5 did
    (zero is the background), anything else is resized bilinearly.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        mean: list[float],
        std: list[float],
        size: int,
        in_channels: int | None = None,
        device: torch.device | None = None,
        channels_last: bool = False,
    ) -> None:
        self.device = device or torch.device("cpu")
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        channels = images.shape[1]
        self.repeat = 1
        if in_channels is not None and in_channels != channels:
            if channels != 1:
                raise ValueError(f"cannot feed {channels}-channel images to {in_channels} channels")
            self.repeat = in_channels  # gray copied to every channel, as the recipes do
        shape = (1, channels, 1, 1)
        self.mean = torch.tensor(mean, device=self.device).view(shape)
        self.inv_std = (1.0 / torch.tensor(std, device=self.device)).view(shape)
        self.size = size
        self.channels_last = channels_last

    def __len__(self) -> int:
        return len(self.labels)

    def _fit(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[-1]
        if h == self.size:
            return x
        if h < self.size and (self.size - h) % 2 == 0 and self.size - h <= 8:
            p = (self.size - h) // 2
            return F.pad(x, (p, p, p, p))
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)

    def batch(
        self,
        index: torch.Tensor | slice,
        augment: Augmentation | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[index].float().div_(255.0)
        x = self._fit(x)
        if augment is not None and augment.enabled:
            x = augment_batch(x, augment, generator)
        x = x.sub_(self.mean).mul_(self.inv_std)
        if self.repeat > 1:
            x = x.expand(-1, self.repeat, -1, -1)
        x = x.contiguous(
            memory_format=torch.channels_last if self.channels_last else torch.contiguous_format
        )
        return x, self.labels[index]


def augment_batch(
    x: torch.Tensor, augment: Augmentation, generator: torch.Generator | None
) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip, drawn per image from ``generator``.

    The crop gathers every image's window with one advanced-indexing call instead of a loop.
    """
    n, _, h, w = x.shape
    if augment.crop_padding > 0:
        p = augment.crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if augment.hflip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x
