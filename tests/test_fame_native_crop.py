"""``--protocol fame`` crops the centre 112 px at the frame's native scale, as FAME's official
retrieval (``ToTensorVideo``, ``CenterCropVideo(112)`` with no resize, ``NormalizeVideo`` with
ImageNet statistics), checked against a plain re-implementation of that transform."""

from __future__ import annotations

import numpy as np
import pytest
from video_fixtures import VIDEOS

from vcl_infer.clips.spec import ClipSpec
from vcl_infer.probe.evaluation import IMAGENET_MEAN, IMAGENET_STD, PROTOCOLS, protocol_clip_spec

CROP = 112


def official_fame_transform(frames: np.ndarray, crop: int = CROP) -> np.ndarray:
    """``T x H x W x 3`` uint8 -> ``3 x T x crop x crop`` float32, written from the transform's
    definition: to float / 255 and channels first, the centre crop at
    ``int(round((size - crop) / 2.0))``, then per channel ``(x - mean) / std``."""
    t, h, w, _ = frames.shape
    if h < crop or w < crop:
        raise ValueError("height and width must be no smaller than crop_size")
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    out = np.zeros((3, t, crop, crop), np.float32)
    for c in range(3):
        channel = frames[:, top : top + crop, left : left + crop, c].astype(np.float32) / 255.0
        out[c] = (channel - np.float32(IMAGENET_MEAN[c])) / np.float32(IMAGENET_STD[c])
    return out


def _fame_spec(bundle: ClipSpec | None = None) -> ClipSpec:
    return protocol_clip_spec(PROTOCOLS["fame"], bundle or ClipSpec(resize_size=128, crop_size=CROP))


@pytest.mark.parametrize("height,width", [(240, 320), (241, 333), (243, 327), (112, 112), (300, 113)])
def test_the_fame_protocol_input_equals_the_official_transform(height, width):
    from vcl_infer.clips.preprocess import preprocess_clip

    frames = np.random.default_rng(height * width).integers(0, 256, (16, height, width, 3), dtype=np.uint8)
    ours = preprocess_clip(frames, _fame_spec())
    np.testing.assert_allclose(ours, official_fame_transform(frames), rtol=0, atol=2e-6)


def test_keeping_the_bundles_normalisation_still_crops_at_native_scale():
    from vcl_infer.clips.preprocess import fit_frames

    frames = np.random.default_rng(0).integers(0, 256, (4, 240, 320, 3), dtype=np.uint8)
    spec = protocol_clip_spec(PROTOCOLS["fame"], ClipSpec(), keep_bundle_normalization=True)
    assert np.array_equal(fit_frames(frames, spec), frames[:, 64:176, 104:216])


def test_a_frame_smaller_than_the_crop_is_scaled_up_just_enough():
    from vcl_infer.clips.preprocess import fit_frames, resized_size

    spec = _fame_spec()
    assert resized_size(64, 96, spec) == (CROP, 168)
    assert fit_frames(np.zeros((2, 64, 96, 3), np.uint8), spec).shape == (2, CROP, CROP, 3)


def test_the_fame_protocol_decodes_a_320x240_video_without_resizing():
    from vcl_infer.video.clips import read_clips
    from vcl_infer.video.open import open_video

    path = VIDEOS / "mmaction2" / "test.avi"  # 320 x 240, UCF101's frame size
    if not path.is_file():
        pytest.skip("shared video missing")
    spec = _fame_spec()
    decoded = read_clips(path, spec, 3, backend="pyav")
    reader = open_video(str(path), "pyav")
    try:
        for clip, window in zip(decoded.clips, decoded.windows):
            frames = reader.get_frames(window.indices)
            assert frames.shape[1:3] == (240, 320)
            assert np.array_equal(clip, frames[:, 64:176, 104:216])  # the native-scale centre, bit for bit
    finally:
        reader.close()
    resized = read_clips(path, ClipSpec(resize_size=128, crop_size=CROP), 3, backend="pyav")
    assert not np.array_equal(resized.clips, decoded.clips)  # the bundle's own rule rescales first
