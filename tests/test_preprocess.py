import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vcl_infer.clips.preprocess import fit_frames, preprocess_clip, resized_size, to_model_input
from vcl_infer.clips.spec import ClipSpec


def torch_reference(frames: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """Independent reference: torch's antialiased bilinear resize, then a centre crop."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).double()
    out_h, out_w = resized_size(frames.shape[1], frames.shape[2], spec)
    x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (out_h - spec.crop_size) // 2, (out_w - spec.crop_size) // 2
    x = x[:, :, top : top + spec.crop_size, left : left + spec.crop_size]
    return x.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("size", [(240, 320), (256, 340), (320, 568), (60, 80), (1, 1), (8, 8)])
def test_fit_frames_matches_torch_antialiased_resize(size):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, *size, 3), dtype=np.uint8)
    spec = ClipSpec(frames_per_clip=3, resize_size=128, crop_size=112)
    ours = fit_frames(frames, spec).astype(np.float64)
    ref = torch_reference(frames, spec)
    assert ours.shape == (3, 112, 112, 3)
    # ours is rounded to uint8; torch's bicubic-free bilinear differs only by that rounding
    assert np.abs(ours - ref).max() <= 1.0 + 1e-6


def test_short_side_rule_keeps_aspect_and_square_rule_does_not():
    assert resized_size(240, 320, ClipSpec(resize_size=128)) == (128, 171)
    assert resized_size(320, 240, ClipSpec(resize_size=128)) == (171, 128)
    assert resized_size(240, 320, ClipSpec(resize_mode="square", resize_size=128)) == (128, 128)


def test_crop_is_centred():
    frames = np.zeros((1, 200, 300, 3), dtype=np.uint8)
    frames[:, 95:105, 145:155] = 255  # a bright square at the centre
    out = fit_frames(frames, ClipSpec(frames_per_clip=1, resize_size=100, crop_size=50))
    bright = np.argwhere(out[0, :, :, 0] > 128)
    centre = bright.mean(axis=0)
    assert np.allclose(centre, [24.5, 24.5], atol=0.6)


def test_model_input_is_normalised_in_nCTHW_and_honours_channel_order():
    spec = ClipSpec(frames_per_clip=2, resize_size=4, crop_size=4, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.125))
    clips = np.zeros((1, 2, 4, 4, 3), dtype=np.uint8)
    clips[..., 0] = 255  # pure red
    out = to_model_input(clips, spec)
    assert out.shape == (1, 3, 2, 4, 4) and out.dtype == np.float32
    assert np.allclose(out[0, :, 0, 0, 0], [(1 - 0.1) / 0.5, (0 - 0.2) / 0.25, (0 - 0.3) / 0.125])
    bgr = to_model_input(clips, ClipSpec(**{**spec.to_dict(), "channel_order": "BGR"}))
    assert np.allclose(bgr[0, :, 0, 0, 0], [(0 - 0.1) / 0.5, (0 - 0.2) / 0.25, (1 - 0.3) / 0.125])


def test_wrong_inputs_are_refused():
    spec = ClipSpec(frames_per_clip=2, resize_size=4, crop_size=4)
    with pytest.raises(ValueError):
        fit_frames(np.zeros((2, 8, 8), dtype=np.uint8), spec)
    with pytest.raises(ValueError):
        to_model_input(np.zeros((1, 3, 4, 4, 3), dtype=np.uint8), spec)


def test_preprocess_clip_composes_the_two_steps():
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, size=(4, 30, 40, 3), dtype=np.uint8)
    spec = ClipSpec(frames_per_clip=4, resize_size=16, crop_size=16)
    assert np.array_equal(preprocess_clip(frames, spec), to_model_input(fit_frames(frames, spec)[None], spec)[0])
