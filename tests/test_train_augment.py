"""Colour augmentation: per-clip parameters, same on every frame, reproducible."""

from __future__ import annotations

import pytest
import torch

from training.augment import NO_AUGMENT, ColorAugment, gaussian_blur, hsv_to_rgb, rgb_to_hsv


def _clips(b: int = 6, t: int = 3, s: int = 16) -> torch.Tensor:
    return torch.rand(b, 3, t, s, s, generator=torch.Generator().manual_seed(1))


def test_deterministic_for_a_generator_and_varies_with_seed():
    x = _clips()
    aug = ColorAugment()
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1


def test_same_parameters_on_every_frame_of_a_clip():
    frame = torch.rand(8, 3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    x = frame.expand(8, 3, 4, 16, 16).contiguous()
    y = ColorAugment()(x, torch.Generator().manual_seed(0))
    for t in range(1, 4):
        torch.testing.assert_close(y[:, :, t], y[:, :, 0])
    # and clips do get different parameters
    assert not torch.allclose(y[0] - x[0], y[1] - x[1])


def test_grayscale_always_and_identity():
    x = _clips()
    y = ColorAugment(jitter_p=0.0, grayscale_p=1.0, blur_p=0.0)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(y[:, 0], y[:, 1])
    torch.testing.assert_close(y[:, 1], y[:, 2])
    torch.testing.assert_close(NO_AUGMENT(x, torch.Generator().manual_seed(0)), x)


def test_hsv_round_trip():
    x = _clips()
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5, rtol=0)


def test_blur_keeps_constants_and_smooths():
    x = torch.full((2, 3, 2, 12, 12), 0.3)
    torch.testing.assert_close(gaussian_blur(x, torch.tensor([1.0, 2.0]), 5), x)
    noise = _clips(2, 2, 12)
    assert gaussian_blur(noise, torch.tensor([2.0, 2.0]), 5).std() < noise.std()


def test_validation():
    with pytest.raises(ValueError):
        ColorAugment(jitter_p=1.5)
    with pytest.raises(ValueError):
        ColorAugment(hue=0.7)
    with pytest.raises(ValueError):
        ColorAugment()(torch.rand(2, 4, 16, 16), torch.Generator())
