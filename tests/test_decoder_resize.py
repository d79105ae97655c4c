"""Frames shrunk inside the decoder (decord's width/height, FFmpeg's scaler through PyAV) give
the clips of today's numpy preprocessing to within a stated tolerance.

Tolerance (natural video, clean files): mean absolute difference <= 3 grey levels of 255,
99th percentile <= 50 (the filters differ on sharp edges: 10-16 on natural footage, 34-49 on
the animated av1 test clip), and the default encoder's clip vectors keep cosine >= 0.99
against the numpy path (measured: >= 0.9989). Random 8-pixel colour blocks at 1080p differ
more (mean ~10 levels, ``benchmarks/decode_resize.py``): the tolerance is for real footage.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_build_corpus import moving_frames, write_video
from video_fixtures import shared_video

from vcl_infer.clips.spec import ClipSpec

MEAN_LEVELS, P99_LEVELS, MIN_COSINE = 3.0, 50.0, 0.99
# (file, backend): decord shrinks in the decoder only frames >= 16 x the target area (DECORD_MIN_SHRINK)
SHARED = [("moviepy/big_buck_bunny_432_433.webm", "decord"), ("moviepy/big_buck_bunny_432_433.webm", "pyav"),
          ("decord/video_90.mov", "decord"), ("decord/video_90.mov", "pyav"), ("torchcodec/av1_video.mkv", "decord"),
          ("decord/flipping_a_pancake.mkv", "pyav"), ("mmaction2/demo.mp4", "pyav")]


def _default_spec() -> ClipSpec:
    from vcl_infer.encode.bundle import load_bundle_spec
    from vcl_infer.encode.embedder import DEFAULT_BUNDLE

    return load_bundle_spec(DEFAULT_BUNDLE).clip


def _compare(path: str, backend: str, spec: ClipSpec) -> None:
    from vcl_infer.video.clips import decoder_size, read_clips

    numpy_path = read_clips(path, spec, 3, backend=backend, decoder_resize=False)
    assert decoder_size(numpy_path.info, spec) is not None, "the decoder should shrink these frames"
    decoder_path = read_clips(path, spec, 3, backend=backend, decoder_resize=True)
    assert decoder_path.info.backend == backend
    diff = np.abs(numpy_path.clips.astype(np.int16) - decoder_path.clips.astype(np.int16))
    assert diff.mean() <= MEAN_LEVELS and np.percentile(diff, 99) <= P99_LEVELS, (
        path, backend, float(diff.mean()), float(np.percentile(diff, 99)))
    return numpy_path.clips, decoder_path.clips


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_a_generated_video_shrunk_in_the_decoder_matches_numpy(tmp_path, backend):
    path = tmp_path / "big.mp4"
    frames = moving_frames(np.random.default_rng(3), 24, side=256)
    write_video(path, np.repeat(np.repeat(frames, 2, axis=1), 3, axis=2))  # 512 x 768
    _compare(str(path), backend, _default_spec())


@pytest.mark.slow
@pytest.mark.parametrize(("rel", "backend"), SHARED)
def test_real_videos_shrunk_in_the_decoder_match_numpy_and_embed_alike(rel, backend):
    from vcl_infer.encode.embedder import Embedder
    from vcl_infer.index.build import clip_vectors

    spec = _default_spec()
    numpy_clips, decoder_clips = _compare(shared_video(rel), backend, spec)
    embedder = Embedder.load()
    _, a = clip_vectors(embedder, numpy_clips)
    _, b = clip_vectors(embedder, decoder_clips)
    cosines = (a * b).sum(axis=1)
    assert cosines.min() >= MIN_COSINE, cosines
