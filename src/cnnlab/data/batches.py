"""From stored uint8 images to a model-ready float batch, whole batches at once (per-image
Python transforms are what makes the usual PyTorch script slow on a CPU). Random draws come
from the generator passed in, on its device: a CUDA one keeps the batch on the GPU.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation; all off (the defaults) is the identity. The colour ones
    follow torchvision's ColorJitter ranges and AlexNet's PCA lighting."""

    crop_padding: int = 0
    hflip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    pca_lighting: float = 0.0

    @property
    def jitter(self) -> bool:
        return any((self.brightness, self.contrast, self.saturation, self.hue))

    @property
    def enabled(self) -> bool:
        return self.crop_padding > 0 or self.hflip or self.jitter or self.pca_lighting > 0


class BatchMaker:
    """Turns index batches of a uint8 image tensor into normalised model inputs.

    ``size`` is the model's input size: 28x28 digits are zero-padded to 32 as LeNet-5 did
    (zero is the background) unless ``pad_to_size`` is off, anything else is resized
    bilinearly (antialiased when shrinking, e.g. 64x64 photos for LeNet's 32x32).
    ``mean``/``std`` hold one value per stored channel, or one for all of them.
    Gray images asked to feed ``in_channels=3`` are normalised first and copied last, so the
    copy costs a view, not arithmetic.
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
        pad_to_size: bool = True,
    ) -> None:
        self.device = device or torch.device("cpu")
        self.images = torch.as_tensor(images).to(self.device)  # arrays of a fresh split too
        self.labels = torch.as_tensor(labels).to(self.device)
        channels = images.shape[1]
        self.repeat = 1
        if in_channels is not None and in_channels != channels:
            if channels != 1:
                raise ValueError(f"cannot feed {channels}-channel images to {in_channels} channels")
            self.repeat = in_channels  # gray copied to every channel, as the recipes do
        for name, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, channels):
                raise ValueError(
                    f"{name} has {len(values)} values for {channels}-channel images; "
                    f"give 1 or {channels}"
                )
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.inv_std = (1.0 / torch.tensor(std, device=self.device)).view(1, -1, 1, 1)
        self.size = size
        self.channels_last = channels_last
        self.pad_to_size = pad_to_size

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def out_channels(self) -> int:
        """Channels of the batches handed to the model."""
        return self.images.shape[1] * self.repeat

    def _fit(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[-1]
        if h == self.size:
            return x
        gap = self.size - h
        if self.pad_to_size and 0 < gap <= 8 and gap % 2 == 0:
            p = gap // 2
            return F.pad(x, (p, p, p, p))
        # Shrinking (a 64x64 folder dataset fed to LeNet's 32x32) averages over each output
        # pixel's footprint, as Pillow does, instead of sampling 4 of 16 pixels and aliasing.
        return F.interpolate(
            x,
            size=(self.size, self.size),
            mode="bilinear",
            align_corners=False,
            antialias=h > self.size,
        )

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


# --------------------------------------------------------------------------- augmentation

#: Luma weights (ITU-R 601), as torchvision's grayscale and the YIQ colour space use them.
_LUMA = (0.299, 0.587, 0.114)
#: RGB -> YIQ: a hue shift is a rotation of the (I, Q) plane, so an image's whole colour
#: jitter is one 3x3 matrix plus a gray offset, not torchvision's per-op HSV round trips.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
#: Principal components of ImageNet's RGB pixels on the 0..1 scale (eigenvectors as columns),
#: as fb.resnet.torch published them: the same perturbation for every dataset, no extra pass.
PCA_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
PCA_EIGVEC = torch.tensor(
    [
        [-0.5675, 0.7192, 0.4009],
        [-0.5808, -0.0045, -0.8140],
        [-0.5836, -0.6948, 0.4203],
    ]
)


def _draw_device(generator: torch.Generator | None) -> torch.device:
    """Where random numbers come from: the generator's device; torch's global CPU RNG."""
    return generator.device if generator is not None else torch.device("cpu")


@functools.cache
def _constant(name: str, device: torch.device) -> torch.Tensor:
    """A module constant on ``device``, copied there once rather than once per batch."""
    values = {
        "luma": torch.tensor(_LUMA, dtype=torch.float64),
        "rgb_to_yiq": _RGB_TO_YIQ,
        "yiq_to_rgb": _YIQ_TO_RGB,
        "pca_eigval": PCA_EIGVAL,
        "pca_eigvec": PCA_EIGVEC,
    }[name]
    return values.to(device)


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=_draw_device(generator))


def _factor(n: int, amount: float, generator: torch.Generator | None) -> torch.Tensor | None:
    """ColorJitter's factor range [max(0, 1 - amount), 1 + amount]; None when off."""
    if amount <= 0:
        return None
    return _uniform(n, max(0.0, 1.0 - amount), 1.0 + amount, generator)


def color_jitter(
    x: torch.Tensor, augment: Augmentation, generator: torch.Generator | None
) -> torch.Tensor:
    """Brightness, contrast, saturation and hue, each drawn per image, in that fixed order.

    All four are affine in RGB, so they are composed into one matrix and one offset per image
    and applied with a single ``baddbmm``; the result is clamped to [0, 1] once at the end
    (torchvision clamps after every op, which only differs where a middle op overshoots).
    Contrast blends with the image's mean luma; hue rotates chroma in YIQ space, a close
    linear stand-in for torchvision's HSV shift. Gray images get brightness and contrast.
    """
    n, c, h, w = x.shape
    at = _draw_device(generator)  # where the per-image factors and matrices are built
    b = _factor(n, augment.brightness, generator)
    k = _factor(n, augment.contrast, generator)
    colour = c == 3
    s = _factor(n, augment.saturation, generator) if colour else None
    hue = _uniform(n, -augment.hue, augment.hue, generator) if colour and augment.hue else None
    ones = torch.ones(n, device=at)
    b = ones if b is None else b
    k = ones if k is None else k
    flat = x.reshape(n, c, h * w)
    if c == 3:
        luma = _constant("luma", x.device).to(x.dtype)
        mean_luma = torch.einsum("c,nc->n", luma, flat.mean(dim=2))
    else:
        mean_luma = flat.mean(dim=(1, 2))
    # (b x) -> contrast: k (b x) + (1 - k) b m; saturation and hue keep gray, so the offset
    # survives them unchanged.
    offset = ((1 - k) * b).to(x.device) * mean_luma
    if not colour:
        scale = (k * b).to(x.device)
        out = flat * scale[:, None, None] + offset[:, None, None]
        return out.clamp_(0, 1).view(n, c, h, w)
    eye = torch.eye(3, dtype=torch.float64, device=at)
    matrix = eye.expand(n, 3, 3)
    if s is not None:  # blend with the pixel's luma: s I + (1 - s) 1 w^T
        gray = _constant("luma", at).expand(3, 3)
        s64 = s.double()[:, None, None]
        matrix = s64 * eye + (1 - s64) * gray
    if hue is not None:
        angle = hue.double() * 2 * math.pi
        cos, sin = angle.cos(), angle.sin()
        rotation = torch.zeros(n, 3, 3, dtype=torch.float64, device=at)
        rotation[:, 0, 0] = 1
        rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
        rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
        yiq_to_rgb, rgb_to_yiq = _constant("yiq_to_rgb", at), _constant("rgb_to_yiq", at)
        matrix = yiq_to_rgb @ rotation @ rgb_to_yiq @ matrix
    matrix = (matrix * (k * b).double()[:, None, None]).to(dtype=x.dtype, device=x.device)
    out = torch.baddbmm(offset[:, None, None].expand(n, 3, 1), matrix, flat)
    return out.clamp_(0, 1).view(n, c, h, w)


def pca_lighting(x: torch.Tensor, std: float, generator: torch.Generator | None) -> torch.Tensor:
    """AlexNet's lighting noise: one RGB offset per image along the principal components.

    Each image adds ``eigvec @ (alpha * eigval)`` with ``alpha ~ N(0, std)`` (the paper used
    0.1) to every pixel; no clamping, as in the paper and fb.resnet.torch. Colour images only.
    """
    if x.shape[1] != 3 or std <= 0:
        return x
    at = _draw_device(generator)
    alpha = torch.randn(x.shape[0], 3, generator=generator, device=at) * std
    offset = (alpha * _constant("pca_eigval", at)) @ _constant("pca_eigvec", at).T
    return x + offset.to(dtype=x.dtype, device=x.device)[:, :, None, None]


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None) -> torch.Tensor:
    """A random window of each zero-padded image, picked with one indexing call.

    ``unfold`` views every possible window without copying; indexing it by (image, dy, dx)
    copies each chosen window as a block, several times faster than gathering pixel indices.
    """
    n, _, h, w = x.shape
    p = padding
    padded = F.pad(x, (p, p, p, p))
    at = _draw_device(generator)
    dy = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=at).to(x.device)
    dx = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=at).to(x.device)
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (n, c, 2p+1, 2p+1, h, w), a view
    return windows.permute(0, 2, 3, 1, 4, 5)[torch.arange(n, device=x.device), dy, dx]


def random_hflip(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Mirror a random half of the images; ``where`` keeps it one op for the whole batch."""
    at = _draw_device(generator)
    flip = (torch.rand(x.shape[0], generator=generator, device=at) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def augment_batch(
    x: torch.Tensor, augment: Augmentation, generator: torch.Generator | None
) -> torch.Tensor:
    """Every enabled augmentation, drawn per image from ``generator``, on 0..1 pixels: colour
    first, so the crop's zero padding stays black. Only enabled steps draw random numbers, so
    a crop+flip recipe draws what it drew before the colour steps existed."""
    if augment.jitter:
        x = color_jitter(x, augment, generator)
    if augment.pca_lighting > 0:
        x = pca_lighting(x, augment.pca_lighting, generator)
    if augment.crop_padding > 0:
        x = random_crop(x, augment.crop_padding, generator)
    if augment.hflip:
        x = random_hflip(x, generator)
    return x
