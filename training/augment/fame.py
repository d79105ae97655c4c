"""FAME: foreground-background merging, a motion-aware augmentation for MoCo-style training.

Ding et al., "Motion-aware Contrastive Video Representation Learning via Foreground-background
Merging", CVPR 2022 (Sec. 3.2). Official code: ``Mark12Ding/FAME`` @ ``0600c0e9``,
``moco/loader.py::FAME`` (uses kornia; this is pure torch). The foreground of each clip
(estimated from frame differences refined by colour statistics) is pasted onto the background
of another clip of the batch, so the positive pair shares motion but not background.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.checks import check_choice, check_shape

HUE_UNITS = ("paper", "official")
_BINS = 10  # colour bins per axis of (hx, hy, v): 10 x 10 x 10 histogram


def _check_beta(beta: float) -> float:
    b = float(beta)
    if not 0.0 < b <= 1.0:
        raise ValueError(f"beta (foreground fraction) must be in (0, 1], got {beta!r}")
    return b


def default_kernel_size(crop: int) -> int:
    """The official blur kernel for a ``crop`` x ``crop`` clip: ``int(0.1 * crop) // 2 * 2 + 1``."""
    return int(0.1 * crop) // 2 * 2 + 1


def rgb_to_hsv(rgb: Tensor, eps: float = 1e-8) -> Tensor:
    """RGB in ``[0, 1]`` -> HSV with all three channels in ``[0, 1]`` (hue in turns, not radians).

    Args:
        rgb: ``B x 3 x H x W``.
        eps: guards the saturation of black pixels (as kornia's ``rgb_to_hsv``).

    Returns:
        ``B x 3 x H x W`` (h, s, v); grey pixels get hue 0.
    """
    r, g, b = rgb.unbind(dim=1)
    v, argmax = rgb.max(dim=1)
    delta = v - rgb.min(dim=1).values
    s = delta / (v + eps)
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    # Hexcone sector by the maximal channel, in units of 60 degrees (6 sectors per turn).
    h = torch.where(
        argmax == 0, ((g - b) / safe) % 6, torch.where(argmax == 1, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h)) % 1.0
    return torch.stack([h, s, v], dim=1)


def _gaussian_blur(x: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur of ``B x H x W`` maps, sigma ``k / 3``, reflect padding.

    Reflect padding (no edge repeat) is kornia's ``GaussianBlur2d`` default, as in the official code.
    """
    sigma = kernel_size / 3.0
    coords = torch.arange(kernel_size, dtype=x.dtype, device=x.device) - kernel_size // 2
    w = torch.exp(-(coords**2) / (2 * sigma**2))
    w = w / w.sum()
    pad = kernel_size // 2
    y = F.pad(x.unsqueeze(1), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, w.view(1, 1, 1, -1))
    y = F.conv2d(y, w.view(1, 1, -1, 1))
    return y.squeeze(1)


def _minmax(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Per-sample min-max normalisation of ``B x H x W`` maps to ``[0, 1]``."""
    flat = x.flatten(1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    return (x - lo[:, None, None]) / (hi - lo + eps)[:, None, None]


def _colour_bins(mean_frame: Tensor, hue_units: str) -> Tensor:
    """``B x 3 x H x W`` RGB -> ``B x (H*W)`` bin index in ``[0, 1000)`` of (hx, hy, v).

    ``hx = (s cos 2 pi h + 1) / 2``, ``hy = (s sin 2 pi h + 1) / 2``, each axis quantised as
    ``round(x * 9)``. The official code indexes from 1 (``round(x * 9 + 1)``, bin 0 unused);
    the zero-based index here is that minus one, which leaves every probability unchanged.
    """
    h, s, v = rgb_to_hsv(mean_frame).flatten(2).unbind(dim=1)
    # The official code feeds kornia's hue in radians to cos(h * 2 pi): the wheel wraps 2 pi times.
    angle = 2 * math.pi * (h * 2 * math.pi if hue_units == "official" else h)
    hx, hy = (s * torch.cos(angle) + 1) / 2, (s * torch.sin(angle) + 1) / 2
    q = [torch.round(c * (_BINS - 1)).long().clamp(0, _BINS - 1) for c in (hx, hy, v)]
    return q[0] + q[1] * _BINS + q[2] * _BINS * _BINS


def _histograms(bins: Tensor, idx: Tensor, smoothing: float) -> Tensor:
    """Normalised per-sample histograms (``B x 1000``) of ``bins`` at positions ``idx`` (``B x n``)."""
    n_bins = _BINS**3
    hist = torch.full((bins.shape[0], n_bins), smoothing, dtype=torch.float64, device=bins.device)
    hist.scatter_add_(1, bins.gather(1, idx), torch.ones(idx.shape, dtype=torch.float64, device=bins.device))
    return hist / hist.sum(dim=1, keepdim=True)


@torch.no_grad()
def fame_foreground_mask(
    clips: Tensor, beta: float = 0.5, kernel_size: int | None = None, hue_units: str = "paper"
) -> Tensor:
    """Binary foreground mask of each clip (FAME Sec. 3.2, official ``FAME.getmask``/``getSeg``).

    1. Seed: ``|x_t - x_{t+1}|`` summed over channels, averaged over time; Gaussian blur;
       per-sample min-max normalisation.
    2. Colour refinement on the time-averaged frame in HSV: foreground candidates are the top
       ``int(0.5 H W)`` seed pixels, background candidates the bottom ``int(0.1 H W)``;
       10 x 10 x 10 histograms of (hx, hy, v) for both (background with +1 Laplace smoothing),
       each normalised; per pixel ``p = P_fg / (P_fg + P_bg)``.
    3. Blur ``p`` (same kernel), min-max normalise, keep the top ``ceil(beta H W)`` pixels,
       exactly that many (ties go to the lower flat index). The official code keeps
       ``int(beta H W)``; both agree whenever ``beta H W`` is an integer.

    Args:
        clips: ``B x 3 x T x H x W`` RGB in ``[0, 1]``, before mean/std normalisation; ``T >= 2``.
        beta: foreground fraction in ``(0, 1]`` (FAME 0.5).
        kernel_size: odd blur kernel; ``None`` gives ``int(0.1 * min(H, W)) // 2 * 2 + 1``
            (11 at 112 px, 23 at 224 px); sigma is ``kernel_size / 3``. Must be < ``2 min(H, W)``
            (reflect padding).
        hue_units: ``"paper"`` (hue in turns) or ``"official"`` (reproduces the official code's
            hue-in-radians times ``2 pi`` bug, for numerical comparison).

    Returns:
        ``B x H x W`` float mask of 0/1 in the dtype of ``clips``.
    """
    beta = _check_beta(beta)
    check_choice("hue_units", hue_units, HUE_UNITS)
    check_shape("clips", clips, 5, "B x 3 x T x H x W")
    b, c, t, h, w = clips.shape
    if c != 3 or t < 2:
        raise ValueError(f"clips must have 3 channels and >= 2 frames, got shape {tuple(clips.shape)}")
    k = default_kernel_size(min(h, w)) if kernel_size is None else int(kernel_size)
    if k < 1 or k % 2 == 0 or k // 2 >= min(h, w):
        raise ValueError(f"kernel_size must be odd, >= 1 and < 2 * min(H, W) = {2 * min(h, w)}; got {k}")
    hw = h * w

    seed = (clips[:, :, :-1] - clips[:, :, 1:]).abs().sum(dim=1).mean(dim=1)  # B x H x W
    seed = _minmax(_gaussian_blur(seed, k)).flatten(1)

    # Stable sorts make the candidate sets deterministic when seed values tie.
    order = torch.argsort(seed, dim=1, descending=True, stable=True)
    fg_idx = order[:, : int(0.5 * hw)]
    bg_idx = torch.argsort(seed, dim=1, stable=True)[:, : int(0.1 * hw)]
    bins = _colour_bins(clips.mean(dim=2), hue_units)
    p_fg = _histograms(bins, fg_idx, 0.0).gather(1, bins)
    p_bg = _histograms(bins, bg_idx, 1.0).gather(1, bins)  # > 0 everywhere: no division by 0
    prob = (p_fg / (p_fg + p_bg)).to(clips.dtype).view(b, h, w)

    prob = _minmax(_gaussian_blur(prob, k)).flatten(1)
    top = torch.argsort(prob, dim=1, descending=True, stable=True)[:, : math.ceil(beta * hw)]
    mask = torch.zeros_like(prob).scatter_(1, top, 1.0)
    return mask.view(b, h, w)


def fame_merge(clips: Tensor, mask: Tensor, perm: Tensor) -> Tensor:
    """Paste each clip's foreground onto the background of clip ``perm[i]``.

    ``out[i] = clips[perm[i]] * (1 - mask[i]) + clips[i] * mask[i]``, the mask broadcast over
    channels and time (it is static over the clip, as in the official code).

    Args:
        clips: ``B x C x T x H x W``.
        mask: ``B x H x W`` in ``[0, 1]`` (foreground = 1).
        perm: ``B`` long tensor of donor indices (a permutation; ``perm[i] == i`` keeps clip ``i``).

    Returns:
        ``B x C x T x H x W`` merged clips.
    """
    check_shape("clips", clips, 5, "B x C x T x H x W")
    b, _, _, h, w = clips.shape
    if mask.shape != (b, h, w) or perm.shape != (b,):
        raise ValueError(
            f"mask must be {(b, h, w)} and perm {(b,)}; got {tuple(mask.shape)}, {tuple(perm.shape)}"
        )
    m = mask[:, None, None].to(clips.dtype)
    return clips[perm.to(clips.device)] * (1 - m) + clips * m


class FAMEAugment(nn.Module):
    """FAME foreground-background merging of a batch of clips (query view only, before normalisation).

    Args:
        beta: foreground fraction in ``(0, 1]`` (FAME 0.5).
        hue_units: ``"paper"`` or ``"official"``, see :func:`fame_foreground_mask`.
        kernel_size: blur kernel; ``None`` derives it from the crop size.
    """

    def __init__(self, beta: float = 0.5, hue_units: str = "paper", kernel_size: int | None = None) -> None:
        super().__init__()
        self.beta = _check_beta(beta)
        self.hue_units = check_choice("hue_units", hue_units, HUE_UNITS)
        if kernel_size is not None and (int(kernel_size) < 1 or int(kernel_size) % 2 == 0):
            raise ValueError(f"kernel_size must be an odd integer >= 1, got {kernel_size!r}")
        self.kernel_size = kernel_size

    def mask(self, clips: Tensor) -> Tensor:
        """``B x H x W`` foreground masks of ``B x 3 x T x H x W`` clips."""
        return fame_foreground_mask(clips, self.beta, self.kernel_size, self.hue_units)

    def forward(self, clips: Tensor, perm: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Merge ``clips`` (``B x 3 x T x H x W``, RGB in [0, 1]) with donors ``perm``; without one the
        donors are a random permutation, drawn (on the CPU) from ``generator`` when given."""
        if perm is None:
            perm = torch.randperm(clips.shape[0], generator=generator).to(clips.device)
        return fame_merge(clips, self.mask(clips), perm)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, hue_units={self.hue_units!r}, kernel_size={self.kernel_size}"
