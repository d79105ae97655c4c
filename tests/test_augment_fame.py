"""FAME: HSV conversion, the foreground mask vs a loop reference, mask size, merge, motion."""

from __future__ import annotations

import colorsys
import math

import pytest
import torch

from training.augment.fame import (
    FAMEAugment,
    default_kernel_size,
    fame_foreground_mask,
    fame_merge,
    rgb_to_hsv,
)


def test_rgb_to_hsv_matches_colorsys() -> None:
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 3, 5, 7, generator=g, dtype=torch.float64)
    rgb[0, :, 0, 0] = 0.3  # grey: hue 0, saturation 0
    rgb[0, :, 0, 1] = 0.0  # black
    hsv = rgb_to_hsv(rgb)
    for b in range(2):
        for i in range(5):
            for j in range(7):
                want = colorsys.rgb_to_hsv(*rgb[b, :, i, j].tolist())
                assert hsv[b, :, i, j].tolist() == pytest.approx(list(want), abs=1e-7)


def test_default_kernel_size() -> None:
    assert default_kernel_size(112) == 11 and default_kernel_size(224) == 23


def ref_blur(img: list[list[float]], k: int) -> list[list[float]]:
    """Gaussian blur, sigma k/3, reflect padding (index -i -> i, H-1+i -> H-1-i), with loops."""
    h, w, r, sigma = len(img), len(img[0]), k // 2, k / 3
    wts = [math.exp(-((i - r) ** 2) / (2 * sigma**2)) for i in range(k)]
    wts = [x / sum(wts) for x in wts]

    def refl(i: int, n: int) -> int:
        return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)

    out = [[0.0] * w for _ in range(h)]
    for y in range(h):
        for x in range(w):
            out[y][x] = sum(
                wts[a] * wts[b] * img[refl(y + a - r, h)][refl(x + b - r, w)]
                for a in range(k)
                for b in range(k)
            )
    return out


def ref_minmax(flat: list[float]) -> list[float]:
    lo, hi = min(flat), max(flat)
    return [(v - lo) / (hi - lo + 1e-8) for v in flat]


def ref_mask(clip: torch.Tensor, beta: float, k: int, hue_units: str) -> list[float]:
    """FAME mask of one 3 x T x H x W clip written from the paper/official steps with loops."""
    c, t, h, w = clip.shape
    x = clip.tolist()
    seed = [
        [
            sum(abs(x[ch][f][i][j] - x[ch][f + 1][i][j]) for ch in range(c) for f in range(t - 1)) / (t - 1)
            for j in range(w)
        ]
        for i in range(h)
    ]
    seed_flat = ref_minmax([v for row in ref_blur(seed, k) for v in row])
    n = h * w
    by_desc = sorted(range(n), key=lambda i: (-seed_flat[i], i))
    by_asc = sorted(range(n), key=lambda i: (seed_flat[i], i))
    fg, bg = by_desc[: int(0.5 * n)], by_asc[: int(0.1 * n)]

    def colour_bin(i: int) -> int:
        rgb = [sum(x[ch][f][i // w][i % w] for f in range(t)) / t for ch in range(3)]
        hh, s, v = colorsys.rgb_to_hsv(*rgb)
        if hue_units == "official":
            hh *= 2 * math.pi  # kornia returns radians; the official code multiplies by 2 pi again
        hx, hy = (s * math.cos(hh * 2 * math.pi) + 1) / 2, (s * math.sin(hh * 2 * math.pi) + 1) / 2
        # Official 1-based bins round(x*9+1) and index bx + (by-1)*10 + (bv-1)*100.
        bx, by, bv = (int(torch.round(torch.tensor(a * 9 + 1, dtype=torch.float64))) for a in (hx, hy, v))
        return bx + (by - 1) * 10 + (bv - 1) * 100

    bins = [colour_bin(i) for i in range(n)]
    hist_fg, hist_bg = [0.0] * 1000, [1.0] * 1000
    for i in fg:
        hist_fg[bins[i]] += 1
    for i in bg:
        hist_bg[bins[i]] += 1
    sfg, sbg = sum(hist_fg), sum(hist_bg)
    prob = [(hist_fg[bins[i]] / sfg) / (hist_fg[bins[i]] / sfg + hist_bg[bins[i]] / sbg) for i in range(n)]
    prob = ref_minmax([v for row in ref_blur([prob[r * w : (r + 1) * w] for r in range(h)], k) for v in row])
    keep = set(sorted(range(n), key=lambda i: (-prob[i], i))[: math.ceil(beta * n)])
    return [1.0 if i in keep else 0.0 for i in range(n)]


@pytest.mark.parametrize("hue_units", ["paper", "official"])
@pytest.mark.parametrize(("beta", "k"), [(0.5, 3), (0.3, 5)])
def test_mask_matches_loop_reference(hue_units: str, beta: float, k: int) -> None:
    g = torch.Generator().manual_seed(int(beta * 10) + k)
    clips = torch.rand(2, 3, 3, 10, 11, generator=g, dtype=torch.float64)
    clips[1, :, :, 2:6, 3:7] = 0.9  # a flat patch: repeated colours, so the histogram matters
    mask = fame_foreground_mask(clips, beta=beta, kernel_size=k, hue_units=hue_units)
    for b in range(2):
        assert mask[b].flatten().tolist() == ref_mask(clips[b], beta, k, hue_units)


@pytest.mark.parametrize("beta", [0.05, 0.3, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("shape", [(3, 4, 16, 16), (2, 2, 13, 9)])
def test_mask_has_exactly_ceil_beta_hw_ones(beta: float, shape: tuple[int, ...]) -> None:
    b, t, h, w = shape
    clips = torch.rand(b, 3, t, h, w, dtype=torch.float64)
    clips[0] = 0.5  # a constant clip: every score ties, the count must still be exact
    for hue_units in ("paper", "official"):
        mask = fame_foreground_mask(clips, beta=beta, hue_units=hue_units)
        assert mask.shape == (b, h, w) and mask.dtype == torch.float64
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert mask.sum(dim=(1, 2)).tolist() == [float(math.ceil(beta * h * w))] * b


def moving_square_clip(
    t: int = 8, size: int = 32, side: int = 6, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright square moving left to right over a static random-texture background."""
    g = torch.Generator().manual_seed(seed)
    background = 0.6 * torch.rand(3, size, size, generator=g, dtype=torch.float64)
    clip = background[:, None].repeat(1, t, 1, 1).clone()
    path = torch.zeros(size, size, dtype=torch.bool)
    top = size // 2 - side // 2
    for f in range(t):
        left = 2 + f * (size - side - 4) // (t - 1)
        clip[:, f, top : top + side, left : left + side] = 1.0
        path[top : top + side, left : left + side] = True
    return clip, path


@pytest.mark.parametrize("hue_units", ["paper", "official"])
def test_mask_follows_the_moving_square(hue_units: str) -> None:
    clips, paths = zip(*(moving_square_clip(seed=s) for s in range(2)))
    clips, paths = torch.stack(clips), torch.stack(paths)
    beta = 0.25
    mask = fame_foreground_mask(clips, beta=beta, hue_units=hue_units).bool()
    for b in range(2):
        recall = (mask[b] & paths[b]).sum() / paths[b].sum()  # chance level: beta
        precision = (mask[b] & paths[b]).sum() / mask[b].sum()  # chance level: path area fraction
        area = paths[b].float().mean()
        assert recall > 0.8, recall
        assert precision > 3 * area, (precision, area)


def test_merge_pastes_foreground_on_donor_background() -> None:
    g = torch.Generator().manual_seed(1)
    clips = torch.rand(4, 3, 2, 8, 8, generator=g, dtype=torch.float64)
    mask = (torch.rand(4, 8, 8, generator=g) > 0.5).double()
    perm = torch.tensor([2, 0, 3, 1])
    merged = fame_merge(clips, mask, perm)
    for i in range(4):
        fg = mask[i].bool()
        assert torch.equal(merged[i][:, :, fg], clips[i][:, :, fg])
        assert torch.equal(merged[i][:, :, ~fg], clips[perm[i]][:, :, ~fg])
    assert torch.equal(fame_merge(clips, mask, torch.arange(4)), clips)


def test_augment_module_uses_given_perm() -> None:
    clips, _ = moving_square_clip()
    clips = torch.stack([clips, moving_square_clip(seed=3)[0].flip(-1)])
    aug = FAMEAugment(beta=0.5)
    perm = torch.tensor([1, 0])
    assert torch.equal(aug(clips, perm), fame_merge(clips, aug.mask(clips), perm))
    assert aug(clips).shape == clips.shape


def test_validation_errors() -> None:
    clips = torch.rand(2, 3, 4, 16, 16)
    for beta in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="beta"):
            FAMEAugment(beta=beta)
        with pytest.raises(ValueError, match="beta"):
            fame_foreground_mask(clips, beta=beta)
    with pytest.raises(ValueError, match="hue_units"):
        FAMEAugment(hue_units="degrees")
    with pytest.raises(ValueError, match="kernel_size"):
        FAMEAugment(kernel_size=4)
    with pytest.raises(ValueError, match="kernel_size"):
        fame_foreground_mask(clips, kernel_size=33)
    with pytest.raises(ValueError, match="frames"):
        fame_foreground_mask(clips[:, :, :1])
    with pytest.raises(ValueError, match="B x 3 x T x H x W"):
        fame_foreground_mask(clips[0])
