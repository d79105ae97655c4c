"""The `embed` progress bar of vcl-eval / vcl-classify eval reaches N of N and is closed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from tests.video_fixtures import make_video
from vcl_infer.clips.spec import ClipSpec
from vcl_infer.probe.evaluation import embed_split
from vcl_infer.probe.labels import VideoItem


class _MeanColourEmbedder:
    """Stands in for an Embedder: one 3-d vector (mean colour) per clip."""

    spec = SimpleNamespace(clip=ClipSpec(frames_per_clip=2, frame_step=1, resize_size=32, crop_size=32))

    def embed_clips(self, x: np.ndarray) -> np.ndarray:
        return x.mean(axis=(2, 3, 4))


def test_the_embed_bar_ends_at_n_of_n_and_is_closed(tmp_path, capsys):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"v{i}.mp4")
        make_video(paths[-1], num_frames=6)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    items = [VideoItem(path=str(p), label=i % 2) for i, p in enumerate([*paths, tmp_path / "broken.mp4"])]
    vectors, labels, failures = embed_split(_MeanColourEmbedder(), items, 2, progress=True)
    assert len(vectors) == 3 and len(failures) == 1
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "4/4" in last and "100%" in last, err  # the bar was closed at the end (its final refresh)
    assert err.endswith("\n")  # tqdm writes the newline only when it is closed
