"""The batch pipeline: sizes, normalisation and seeded augmentation on whole batches."""

from __future__ import annotations

import torch

from cnnlab.data.batches import Augmentation, BatchMaker, augment_batch


def _maker(images: torch.Tensor, size: int, **kwargs) -> BatchMaker:
    labels = torch.arange(len(images))
    c = images.shape[1]
    return BatchMaker(images, labels, mean=[0.5] * c, std=[0.25] * c, size=size, **kwargs)


def test_mnist_sized_images_are_zero_padded_to_32_and_normalised() -> None:
    images = torch.full((4, 1, 28, 28), 255, dtype=torch.uint8)
    x, y = _maker(images, 32).batch(slice(0, 4))
    assert x.shape == (4, 1, 32, 32) and y.tolist() == [0, 1, 2, 3]
    # the padding is background (0 -> (0 - 0.5) / 0.25 = -2), the image is (1 - 0.5) / 0.25 = 2
    assert x[0, 0, 0, 0].item() == -2.0 and x[0, 0, 2, 2].item() == 2.0


def test_small_images_are_resized_and_gray_can_feed_three_channels() -> None:
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    x, _ = _maker(images, 32, in_channels=3).batch(torch.tensor([2, 0]))
    assert x.shape == (2, 3, 32, 32)
    assert torch.equal(x[:, 0], x[:, 2])


def test_channels_last_layout() -> None:
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    x, _ = _maker(images, 32, channels_last=True).batch(slice(0, 2))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_crop_and_flip_are_seeded_and_move_pixels() -> None:
    x = torch.rand(64, 3, 32, 32)
    aug = Augmentation(crop_padding=4, hflip=True)
    a = augment_batch(x, aug, torch.Generator().manual_seed(1))
    b = augment_batch(x, aug, torch.Generator().manual_seed(1))
    c = augment_batch(x, aug, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape
    unchanged = [torch.equal(a[i], x[i]) for i in range(64)]
    assert sum(unchanged) < 10  # almost every image is shifted or mirrored


def test_crop_is_a_shifted_window_of_the_zero_padded_image() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    for seed in range(20):
        out = augment_batch(x, Augmentation(crop_padding=1), torch.Generator().manual_seed(seed))
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
        windows = [padded[..., i : i + 4, j : j + 4] for i in range(3) for j in range(3)]
        assert any(torch.equal(out, w) for w in windows)


def test_flip_mirrors_left_right() -> None:
    x = torch.arange(4.0).view(1, 1, 1, 4).expand(200, 1, 1, 4)
    out = augment_batch(x, Augmentation(hflip=True), torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 3).sum().item()
    assert 60 < flipped < 140
    assert torch.equal(out[out[:, 0, 0, 0] == 3][0, 0, 0], torch.tensor([3.0, 2.0, 1.0, 0.0]))
