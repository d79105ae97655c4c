"""Batched colour augmentation of float clips, one parameter draw per clip.

The MoCo v2 / SimCLR colour pipeline (Chen et al. 2020, "Improved Baselines with Momentum
Contrastive Learning"; FAME's ``Augment_GPU_pre`` with ``same_on_frame=True``), applied on the
device to a whole batch: colour jitter (brightness, contrast, saturation, hue) with probability
``jitter_p``, random grayscale with probability ``grayscale_p``, and an optional Gaussian blur
with probability ``blur_p``. Every clip draws its own parameters and all its frames get the
same ones, so the augmentation never creates fake motion.

Input and output: ``B x 3 x T x H x W`` float RGB in ``[0, 1]`` (before mean/std normalisation).
All randomness comes from the ``torch.Generator`` passed in (on the CPU), so a step is
reproducible from its seed alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# ITU-R BT.601 luma weights, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


def _check_clips(x: torch.Tensor) -> None:
    if x.ndim != 5 or x.shape[1] != 3:
        raise ValueError(f"expected B x 3 x T x H x W clips, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected float clips in [0, 1], got {x.dtype}")


def _per_clip(v: torch.Tensor) -> torch.Tensor:
    """``B`` values -> ``B x 1 x 1 x 1 x 1`` for broadcasting over a clip."""
    return v.view(-1, 1, 1, 1, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """``B x 3 x T x H x W`` -> ``B x 1 x T x H x W`` luma."""
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """RGB in ``[0, 1]`` on dim 1 -> HSV with hue in ``[0, 1)`` (fraction of a turn)."""
    r, g, b = x.unbind(dim=1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack((h, s, maxc), dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = x.unbind(dim=1)
    h6 = (h % 1.0) * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = (
        (v, t, p),
        (q, v, p),
        (p, v, t),
        (p, q, v),
        (t, p, v),
        (v, p, q),
    )
    out = torch.zeros_like(x)
    for k, (cr, cg, cb) in enumerate(choices):
        sel = (i == k).unsqueeze(1)
        out = torch.where(sel, torch.stack((cr, cg, cb), dim=1), out)
    return out


def _blend(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    return (ratio * a + (1 - ratio) * b).clamp(0.0, 1.0)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Blur every frame of clip ``b`` with an isotropic Gaussian of std ``sigma[b]`` pixels.

    Args:
        x: ``B x C x T x H x W``.
        sigma: ``B`` standard deviations (pixels).
        kernel_size: odd kernel side.
    """
    b, c, t, h, w = x.shape
    half = kernel_size // 2
    pos = torch.arange(kernel_size, dtype=x.dtype, device=x.device) - half
    k = torch.exp(-(pos[None, :] ** 2) / (2 * sigma.to(x.dtype)[:, None] ** 2))
    k = k / k.sum(dim=1, keepdim=True)  # B x k
    k = k.repeat_interleave(c, dim=0)  # (B*C) x k
    # T frames become the batch, (B*C) the channels of a grouped separable convolution
    y = x.reshape(b * c, t, h, w).transpose(0, 1)
    mode = "reflect" if min(h, w) > half else "replicate"
    y = F.conv2d(F.pad(y, (half, half, 0, 0), mode=mode), k.view(b * c, 1, 1, kernel_size), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, half, half), mode=mode), k.view(b * c, 1, kernel_size, 1), groups=b * c)
    return y.transpose(0, 1).reshape(b, c, t, h, w)


@dataclass(frozen=True)
class ColorAugment:
    """MoCo v2-style colour augmentation of ``B x 3 x T x H x W`` clips in ``[0, 1]``.

    Attributes:
        jitter_p: probability of colour jitter (0.8).
        brightness, contrast, saturation: jitter strengths ``s``; factors ~ ``U(1-s, 1+s)`` (0.4).
        hue: hue shift ~ ``U(-hue, hue)`` of a turn (0.1).
        grayscale_p: probability of converting to grayscale (0.2).
        blur_p: probability of a Gaussian blur (0.5; 0 disables).
        blur_sigma: blur std range in pixels, ``U(lo, hi)`` (0.1, 2.0).
        blur_kernel_frac: kernel side as a fraction of the crop (0.1, rounded to odd, >= 3).

    The four jitter operations run in a fixed order (brightness, contrast, saturation, hue),
    where torchvision shuffles the order per image; the parameter distributions are the same.
    """

    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_frac: float = 0.1

    def __post_init__(self) -> None:
        for name in ("jitter_p", "grayscale_p", "blur_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError("hue must be in [0, 0.5]")
        lo, hi = self.blur_sigma
        if not 0 < lo <= hi:
            raise ValueError("blur_sigma needs 0 < lo <= hi")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment ``x`` (``B x 3 x T x H x W`` in [0, 1]); returns a new tensor, same shape."""
        _check_clips(x)
        b = x.shape[0]

        def draw(n: int = b) -> torch.Tensor:
            # parameters are drawn on the CPU generator, then moved: identical on every device
            return torch.rand(n, generator=generator, dtype=torch.float64).to(x.device, x.dtype)

        def factor(strength: float) -> torch.Tensor:
            return _per_clip(1.0 + strength * (2 * draw() - 1))

        # Draw every parameter every time, whether used or not, so the stream of random numbers
        # (and thus any later step) does not depend on which branches were taken.
        do_jitter = _per_clip(draw() < self.jitter_p)
        fb, fc, fs = factor(self.brightness), factor(self.contrast), factor(self.saturation)
        hue_shift = _per_clip(self.hue * (2 * draw() - 1))
        do_gray = _per_clip(draw() < self.grayscale_p)
        do_blur = draw() < self.blur_p
        lo, hi = self.blur_sigma
        sigma = lo + (hi - lo) * draw()

        y = x.clamp(0.0, 1.0)
        if do_jitter.any():
            j = _blend(y, torch.zeros_like(y), fb)
            mean = grayscale(j).mean(dim=(2, 3, 4), keepdim=True)
            j = _blend(j, mean.expand_as(j), fc)
            j = _blend(j, grayscale(j).expand_as(j), fs)
            if self.hue > 0:
                hsv = rgb_to_hsv(j)
                hsv = torch.cat((((hsv[:, :1] + hue_shift) % 1.0), hsv[:, 1:]), dim=1)
                j = hsv_to_rgb(hsv).clamp(0.0, 1.0)
            y = torch.where(do_jitter, j, y)
        if do_gray.any():
            y = torch.where(do_gray, grayscale(y).expand_as(y), y)
        if self.blur_p > 0 and do_blur.any():
            side = min(x.shape[-2:])
            k = max(3, int(math.floor(self.blur_kernel_frac * side)) // 2 * 2 + 1)
            blurred = gaussian_blur(y, sigma, k)
            y = torch.where(_per_clip(do_blur), blurred, y)
        return y


NO_AUGMENT = ColorAugment(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
