"""ClipDataset: shapes, determinism from (seed, epoch, index), crops, broken files; normalisation."""

import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from video_fixtures import make_video

from training.data.dataset import ClipDataset, collate_skip_none, normalize_clips, to_float_clips
from training.data.layouts import VideoItem
from training.data.spatial import crop_and_resize, random_resized_crop_box
from vcl_infer.clips.preprocess import fit_frames, to_model_input
from vcl_infer.clips.sampling import ClipWindow, random_clip, uniform_clips
from vcl_infer.clips.spec import ClipSpec
from vcl_infer.video.open import open_video

SPEC = ClipSpec(frames_per_clip=4, frame_step=2, resize_size=40, crop_size=32)


class TwoRandomClips:  # picklable, as a method's view sampler must be for worker processes
    def __call__(self, ts, rng):
        return [random_clip(ts, SPEC, rng) for _ in range(2)]


class OneUniformClip:
    def __call__(self, ts, rng):
        return uniform_clips(ts, SPEC, 1)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("clipdata")
    items = []
    for i in range(3):
        path = root / f"v{i}.mp4"
        make_video(path, num_frames=20 + 4 * i, width=64, height=48)
        items.append(VideoItem(str(path), label=i))
    return items


def test_item_shapes_and_labels(videos):
    ds = ClipDataset(videos, SPEC, TwoRandomClips())
    item = ds[1]
    assert item["clips"].shape == (2, 4, 32, 32, 3) and item["clips"].dtype == torch.uint8
    assert item["index"] == 1 and item["label"] == 1
    batch = collate_skip_none([ds[i] for i in range(len(ds))])
    assert batch["clips"].shape == (3, 2, 4, 32, 32, 3)
    assert batch["index"].tolist() == [0, 1, 2] and batch["label"].tolist() == [0, 1, 2]
    assert batch["skipped"] == 0


def test_same_clips_for_same_seed_epoch_index_and_new_ones_next_epoch(videos):
    a, b = ClipDataset(videos, SPEC, TwoRandomClips(), seed=5), ClipDataset(videos, SPEC, TwoRandomClips(), seed=5)
    assert torch.equal(a[0]["clips"], b[0]["clips"])
    a.set_epoch(3), b.set_epoch(3)
    assert torch.equal(a[2]["clips"], b[2]["clips"])
    first = a[2]["clips"]
    a.set_epoch(4)
    assert not torch.equal(first, a[2]["clips"])
    other_seed = ClipDataset(videos, SPEC, TwoRandomClips(), seed=6)
    other_seed.set_epoch(3)
    assert not torch.equal(first, other_seed[2]["clips"])


def test_eval_mode_is_fit_frames_of_the_window(videos):
    ds = ClipDataset(videos, SPEC, OneUniformClip(), train=False)
    reader = open_video(videos[0].path)
    window = uniform_clips(reader.timestamps, SPEC, 1)[0]
    expected = fit_frames(reader.get_frames(window.indices.tolist()), SPEC)
    reader.close()
    assert np.array_equal(ds[0]["clips"][0].numpy(), expected)


def test_one_box_and_flip_per_clip_fresh_per_clip():
    pattern = np.random.default_rng(0).integers(0, 256, (1, 40, 50, 3), dtype=np.uint8)
    frames = np.repeat(pattern, 4, axis=0)  # a still video: any per-frame box would show
    ds = ClipDataset([], SPEC, TwoRandomClips())
    rng = np.random.default_rng(1)
    clips = [ds._transform(frames, rng) for _ in range(2)]
    for clip in clips:
        assert clip.shape == (4, 32, 32, 3)
        assert all(np.array_equal(clip[0], f) for f in clip[1:])
    assert not np.array_equal(clips[0], clips[1])


def test_flip_happens_about_half_the_time():
    ramp = np.tile(np.arange(0, 240, 8, dtype=np.uint8)[None, None, :, None], (2, 30, 1, 3))
    ds = ClipDataset([], SPEC, TwoRandomClips(), crop_scale=(1.0, 1.0))
    flipped = [ds._transform(ramp, np.random.default_rng(i))[0, 0, 0, 0] > 128 for i in range(40)]
    assert 8 <= sum(flipped) <= 32
    no_flip = ClipDataset([], SPEC, TwoRandomClips(), crop_scale=(1.0, 1.0), flip=False)
    assert not any(no_flip._transform(ramp, np.random.default_rng(i))[0, 0, 0, 0] > 128 for i in range(10))


def test_crop_and_resize_of_whole_frame_matches_vcl_infer_resize():
    frames = np.random.default_rng(2).integers(0, 256, (3, 37, 53, 3), dtype=np.uint8)
    square = ClipSpec(resize_mode="square", resize_size=24, crop_size=24)
    assert np.array_equal(crop_and_resize(frames, (0, 0, 37, 53), 24), fit_frames(frames, square))
    with pytest.raises(ValueError):
        crop_and_resize(frames, (30, 0, 10, 10), 8)


def test_random_resized_crop_box_respects_scale_and_ratio():
    rng = np.random.default_rng(3)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(120, 160, rng, (0.2, 1.0))
        assert 0 <= top and 0 <= left and top + h <= 120 and left + w <= 160
        assert 0.19 <= h * w / (120 * 160) <= 1.0
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def test_broken_file_is_skipped_logged_and_counted(videos, tmp_path, caplog):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 40)
    items = [videos[0], VideoItem(str(junk), 7), videos[1], videos[2]]
    ds = ClipDataset(items, SPEC, TwoRandomClips())
    with caplog.at_level(logging.WARNING, logger="training.data.dataset"):
        assert ds[1] is None and ds[1] is None
    assert ds.failures == 2
    assert len(caplog.records) == 1 and "junk.mp4" in caplog.text  # logged once per file
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_skip_none)
    (batch,) = list(loader)
    assert batch["skipped"] == 1
    assert batch["clips"].shape == (3, 2, 4, 32, 32, 3)
    assert batch["index"].tolist() == [0, 2, 3] and batch["label"].tolist() == [0, 1, 2]
    empty = collate_skip_none([None, None])
    assert empty["skipped"] == 2 and empty["clips"].shape[0] == 0


def test_windows_of_different_lengths_are_refused(videos):
    def ragged(ts, rng):
        return [ClipWindow(np.arange(4), 0.0, 1.0), ClipWindow(np.arange(3), 0.0, 1.0)]

    with pytest.raises(ValueError, match="same number of frames"):
        ClipDataset(videos, SPEC, ragged)[0]


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_normalize_clips_agrees_with_to_model_input(order):
    spec = ClipSpec(frames_per_clip=3, resize_size=8, crop_size=8, channel_order=order,
                    mean=(0.1, 0.5, 0.9), std=(0.2, 0.3, 0.25))
    clips = np.random.default_rng(4).integers(0, 256, (2, 3, 3, 8, 8, 3), dtype=np.uint8)  # B x V x T x S x S x 3
    x = to_float_clips(torch.from_numpy(clips), spec)
    assert x.shape == (2, 3, 3, 3, 8, 8) and 0 <= x.min() and x.max() <= 1
    ours = normalize_clips(x, spec).reshape(6, 3, 3, 8, 8).numpy()
    theirs = to_model_input(clips.reshape(6, 3, 8, 8, 3), spec)
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=0)
    with pytest.raises(ValueError):
        to_float_clips(torch.from_numpy(clips[:, :, :2].copy()), spec)
