"""The online kNN monitor, the frame cache and the mirror-aware flip of the training loop."""

import csv

import numpy as np
import pytest
import torch
from train_fixtures import synth_data  # noqa: F401 - pytest fixture

from training.config import TrainConfig
from training.data.dataset import ClipDataset
from training.data.layouts import load_layout
from training.methods.views import DistinctClips
from training.monitor import knn_top1


def test_knn_top1_separates_clusters_and_falls_to_chance_on_noise():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    mem_y, q_y = np.repeat(np.arange(3), 20), np.repeat(np.arange(3), 10)
    memory = centres[mem_y] + rng.normal(size=(60, 16))
    queries = centres[q_y] + rng.normal(size=(30, 16))
    assert knn_top1(memory, mem_y, queries, q_y) == 1.0
    noise = knn_top1(rng.normal(size=(600, 16)), np.repeat(np.arange(3), 200), rng.normal(size=(300, 16)),
                     np.repeat(np.arange(3), 100))
    assert 0.2 < noise < 0.5


def test_a_flip_is_off_on_mirror_sensitive_synthetic_classes(synth_data):  # noqa: F811
    from training.loop import _use_flip

    assert _use_flip(TrainConfig(data=str(synth_data))) is False  # MoveLeft / MoveRight
    assert _use_flip(TrainConfig(data=str(synth_data), flip=True)) is True


def test_frame_cache_yields_the_same_clips(synth_data):  # noqa: F811
    items, _ = load_layout(synth_data)
    spec = TrainConfig(data="x", frames=4, frame_step=2, crop=32).clip_spec()
    plain = ClipDataset(items[:3], spec, DistinctClips(spec, 2), seed=5)
    cached = ClipDataset(items[:3], spec, DistinctClips(spec, 2), seed=5, cache_frames=True)
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(3):
            assert torch.equal(plain[i]["clips"], cached[i]["clips"])
    assert len(cached._cache) == 3


@pytest.mark.slow
def test_monitor_logs_knn_and_does_not_change_the_run(synth_data, tmp_path):  # noqa: F811
    from training.loop import train

    base = dict(method="simclr", data=str(synth_data), arch="r3d_small", epochs=2, batch_size=4, workers=0,
                device="cpu", frames=4, frame_step=2, crop=32, keep_epochs=False, log_every=1)
    plain = train(TrainConfig(out=str(tmp_path / "a"), **base), progress=False)
    watched = train(TrainConfig(out=str(tmp_path / "b"), eval_data=str(synth_data), eval_every=2, **base),
                    progress=False)
    for (name, a), (_, b) in zip(plain.method.state_dict().items(), watched.method.state_dict().items()):
        assert torch.equal(a, b), name  # the monitor draws no randomness and moves no BN statistic
    with (tmp_path / "b" / "metrics.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    knn = [(int(r["step"]), float(r["knn_top1"])) for r in rows if r.get("knn_top1")]
    assert [s for s, _ in knn] == [0, 2, 4]
    assert all(0.0 <= v <= 1.0 for _, v in knn)
    assert all(r["loss"] for r in rows if int(r["step"]) > 0)
