"""The batch pipeline: sizes, normalisation and seeded augmentation on whole batches."""

from __future__ import annotations

import pytest
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


# --------------------------------------------------------------------------- colour augmentation

LUMA = torch.tensor([0.299, 0.587, 0.114])


def _colour_batch(n: int = 64, low: float = 0.4, high: float = 0.6) -> torch.Tensor:
    """Colours well inside [0, 1], so that no jitter below reaches the clamp."""
    g = torch.Generator().manual_seed(3)
    return low + (high - low) * torch.rand(n, 3, 8, 8, generator=g)


def _luma(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("c,nchw->nhw", LUMA, x)


def _augment(x: torch.Tensor, seed: int = 0, **kwargs) -> torch.Tensor:
    return augment_batch(x, Augmentation(**kwargs), torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"brightness": 0.4},
        {"contrast": 0.4},
        {"saturation": 0.4},
        {"hue": 0.1},
        {"pca_lighting": 0.1},
        {
            "crop_padding": 4,
            "hflip": True,
            "brightness": 0.4,
            "contrast": 0.4,
            "saturation": 0.4,
            "hue": 0.1,
            "pca_lighting": 0.1,
        },
    ],
    ids=lambda k: "+".join(k),
)
def test_each_augmentation_is_seeded(kwargs: dict) -> None:
    x = _colour_batch()
    a, b, c = _augment(x, 1, **kwargs), _augment(x, 1, **kwargs), _augment(x, 2, **kwargs)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, x)


def test_all_off_is_the_identity() -> None:
    x = _colour_batch()
    assert not Augmentation().enabled
    assert torch.equal(_augment(x, brightness=0.0, pca_lighting=0.0), x)


def test_brightness_scales_each_image_by_one_factor_within_bounds() -> None:
    x = _colour_batch()
    ratio = _augment(x, brightness=0.4) / x
    per_image = ratio.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-5)
    factors = per_image[:, 0]
    assert factors.min() >= 0.6 - 1e-6 and factors.max() <= 1.4 + 1e-6
    assert factors.std() > 0.1  # drawn per image, not once per batch


def test_contrast_keeps_each_images_mean_luma_and_scales_around_it() -> None:
    x = _colour_batch()
    out = _augment(x, contrast=0.5)
    mean_in = _luma(x).mean(dim=(1, 2))
    assert torch.allclose(_luma(out).mean(dim=(1, 2)), mean_in, atol=1e-5)
    spread = (out - mean_in[:, None, None, None]) / (x - mean_in[:, None, None, None])
    factors = spread.flatten(1).median(dim=1).values
    assert factors.min() >= 0.5 - 1e-4 and factors.max() <= 1.5 + 1e-4


def test_saturation_and_hue_keep_every_pixels_luma_and_leave_gray_alone() -> None:
    x = _colour_batch()
    gray = x[:, :1].expand(-1, 3, -1, -1).contiguous()
    for kwargs in ({"saturation": 0.5}, {"hue": 0.5}):
        out = _augment(x, **kwargs)
        assert torch.allclose(_luma(out), _luma(x), atol=1e-5), kwargs
        assert not torch.allclose(out, x, atol=1e-3), kwargs
        assert torch.allclose(_augment(gray, **kwargs), gray, atol=1e-5), kwargs


def test_full_desaturation_is_gray() -> None:
    x = _colour_batch(256)
    out = _augment(x, saturation=1.0)  # factors from [0, 2]: some images near gray
    spread = (out.amax(dim=1) - out.amin(dim=1)).flatten(1).amax(dim=1)
    original = (x.amax(dim=1) - x.amin(dim=1)).flatten(1).amax(dim=1)
    assert (spread / original).min() < 0.05


def test_jitter_clamps_to_the_pixel_range() -> None:
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = _augment(x, brightness=0.9, contrast=0.9, saturation=0.9, hue=0.5)
    assert out.min() >= 0 and out.max() <= 1


def test_gray_images_get_brightness_and_contrast_only() -> None:
    x = _colour_batch()[:, :1]
    assert torch.equal(_augment(x, saturation=0.9, hue=0.5), x)
    assert torch.equal(_augment(x, pca_lighting=0.5), x)
    out = _augment(x, brightness=0.4, contrast=0.4)
    assert out.shape == x.shape and not torch.equal(out, x)


def test_pca_lighting_adds_one_rgb_offset_per_image_along_the_components() -> None:
    from cnnlab.data.batches import PCA_EIGVAL, PCA_EIGVEC

    x = _colour_batch(512)
    offset = _augment(x, pca_lighting=0.1) - x
    per_image = offset.flatten(2)
    assert torch.allclose(per_image, per_image[:, :, :1].expand_as(per_image), atol=1e-6)
    rgb = per_image[:, :, 0]
    assert rgb.std(dim=0).min() > 0  # every image and channel moves
    # Back to the component weights: alpha ~ N(0, 0.1) per component.
    alpha = torch.linalg.solve(PCA_EIGVEC, rgb.T).T / PCA_EIGVAL
    assert torch.allclose(alpha.std(dim=0), torch.full((3,), 0.1), atol=0.015)
    assert alpha.mean(dim=0).abs().max() < 0.02


def test_colour_then_crop_keeps_the_padding_black() -> None:
    x = torch.ones(32, 3, 8, 8)
    out = _augment(x, crop_padding=2, contrast=0.5)
    # Contrast leaves a flat image as it is; had it come after the crop, it would have
    # blended the zero border with the image's mean.
    assert ((out == 0) | (out == 1)).all() and (out == 0).any()


# --------------------------------------------------------------------------- inputs


def test_one_normalisation_value_serves_every_channel() -> None:
    images = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    x, _ = BatchMaker(images, torch.arange(2), mean=[0.5], std=[0.5], size=32).batch(slice(0, 2))
    assert torch.equal(x, torch.ones_like(x))
    with pytest.raises(ValueError, match="mean has 2 values for 3-channel images"):
        BatchMaker(images, torch.arange(2), mean=[0.5, 0.5], std=[0.5], size=32)


def test_28_pixel_images_are_resized_not_padded_when_asked() -> None:
    images = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    maker = _maker(images, 32, in_channels=3, pad_to_size=False)
    x, _ = maker.batch(slice(0, 2))
    assert x.shape == (2, 3, 32, 32) and maker.out_channels == 3
    assert torch.allclose(x, torch.full_like(x, 2.0))  # (1 - 0.5) / 0.25, no zero border


def test_shrinking_averages_instead_of_aliasing() -> None:
    """224x224 photos fed to a 32x32 model: one-pixel stripes must shrink to flat gray, not to
    stripes of their own (plain bilinear would sample 2 of every 7 columns)."""
    stripes = torch.zeros(1, 3, 224, 224, dtype=torch.uint8)
    stripes[..., 1::2] = 255
    maker = BatchMaker(stripes, torch.zeros(1), mean=[0.0], std=[1.0], size=32)
    x, _ = maker.batch(slice(0, 1))
    assert x.shape == (1, 3, 32, 32)
    assert abs(x.mean().item() - 0.5) < 0.02 and x.std().item() < 0.05
    # Growing (64 -> 224 for alexnet2012) is unchanged: plain bilinear.
    small = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    grown, _ = BatchMaker(small, torch.zeros(1), mean=[0.0], std=[1.0], size=224).batch(slice(0, 1))
    expected = torch.nn.functional.interpolate(
        small.float() / 255, size=(224, 224), mode="bilinear", align_corners=False
    )
    assert torch.allclose(grown, expected)
