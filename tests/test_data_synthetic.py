"""The synthetic motion data set: layout, decodability, determinism, and the background shortcut."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from training.data.layouts import group_leakage, load_layout
from training.data.synthetic import MOTIONS, SynthConfig, generate
from training.synth_cli import main
from vcl_infer.video.open import open_video

BIASED = SynthConfig(classes=4, videos_per_class=16, frames=8, size=32, background_bias=1.0, seed=3,
                     test_fraction=0.5)


@pytest.fixture(scope="module")
def biased(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(out, BIASED)
    return out


def decode_all(path):
    reader = open_video(path)
    try:
        return reader.get_frames(list(range(reader.info.num_frames)))
    finally:
        reader.close()


def test_layout_loads_with_right_sizes_and_no_leakage(biased):
    train, classes = load_layout(biased)
    test, _ = load_layout(biased, subset="test")
    assert classes == list(MOTIONS[:4])
    assert len(train) + len(test) == 4 * 16 and len(train) == len(test) == 32  # 2 of 4 groups held out
    for label in range(4):
        assert sum(i.label == label for i in train) == sum(i.label == label for i in test) == 8
    assert group_leakage(train, test) == []
    meta = json.loads((biased / "synth.json").read_text())
    assert meta["config"]["background_bias"] == 1.0 and len(meta["videos"]) == 64


def test_videos_decode_at_the_right_size(biased):
    train, _ = load_layout(biased)
    frames = decode_all(train[0].path)
    assert frames.shape == (8, 32, 32, 3)


def background_accuracy(items):
    """Nearest-centroid accuracy of the mean first-frame colour (fitted on ``items[0]``)."""
    fit, score = items
    feats = {id(i): decode_all(i.path)[0].reshape(-1, 3).mean(0) for i in fit + score}
    labels = sorted({i.label for i in fit})
    centroids = np.stack([np.mean([feats[id(i)] for i in fit if i.label == k], axis=0) for k in labels])

    def accuracy(items):
        pred = [int(np.argmin(((centroids - feats[id(i)]) ** 2).sum(1))) for i in items]
        return float(np.mean([p == i.label for p, i in zip(pred, items)]))

    return accuracy(fit), accuracy(score)


def test_background_predicts_class_in_train_only(biased):
    train, _ = load_layout(biased)
    test, _ = load_layout(biased, subset="test")
    train_acc, test_acc = background_accuracy((train, test))
    assert train_acc >= 0.9  # bias 1: every train video shows its class's own background
    assert test_acc <= 0.6  # random backgrounds: chance is about 0.25


def test_no_bias_means_no_shortcut_in_train(tmp_path):
    generate(tmp_path, SynthConfig(classes=4, videos_per_class=12, frames=4, size=16, background_bias=0.0, seed=1))
    meta = json.loads((tmp_path / "synth.json").read_text())
    own = np.mean([v["own_background"] for v in meta["videos"]])
    assert own < 0.4  # random from a bank of 8: about 1/8


def test_deterministic_for_a_seed(tmp_path):
    cfg = SynthConfig(classes=3, videos_per_class=3, frames=6, size=24, background_bias=0.5, seed=11)
    metas = [generate(tmp_path / name, cfg) for name in ("a", "b")]
    assert metas[0] == metas[1]
    other = generate(tmp_path / "c", SynthConfig(**{**cfg.__dict__, "seed": 12}))
    for v in metas[0]["videos"][:3]:
        a, b = decode_all(tmp_path / "a" / v["path"]), decode_all(tmp_path / "b" / v["path"])
        assert np.array_equal(a, b)
        assert not np.array_equal(a, decode_all(tmp_path / "c" / v["path"]))
    assert other != metas[0]


def test_motion_is_in_the_frames(tmp_path):
    """MoveRight: the object's column of maximal change drifts right (a sanity check of the renderer)."""
    from training.data.synthetic import render_video, texture_bank

    bank, _ = texture_bank(2, 36, 0)
    background = np.full_like(bank[0], 128.0)
    actor = {"shape": "rectangle", "texture": "flat", "colours": (np.zeros(3), np.zeros(3)), "radius": 5.0}
    frames = render_video("MoveRight", background, actor, 8, 32, np.random.default_rng(0)).astype(float)
    xs = [np.mean(np.nonzero((f < 30).all(-1))[1]) for f in frames]
    assert xs[-1] - xs[0] > 5


def test_cli_writes_a_data_set_and_refuses_bad_values(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, [str(tmp_path / "d"), "--classes", "2", "--videos-per-class", "2",
                                  "--frames", "4", "--size", "16", "--test-fraction", "0", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["train"] + summary["test"] == 4
    items, classes = load_layout(tmp_path / "d")
    assert len(classes) == 2
    bad = runner.invoke(main, [str(tmp_path / "e"), "--classes", "99"])
    assert bad.exit_code != 0 and "classes" in bad.output
    again = runner.invoke(main, [str(tmp_path / "d")])
    assert again.exit_code != 0 and "not empty" in again.output
