"""Limited-label probe fitting, multi-clip prediction and classification metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vcl_infer.probe.classify import (
    evaluate_predictions,
    evaluate_probe,
    fit_probe,
    predict_clips,
    stratified_subset,
    video_probabilities,
)
from vcl_infer.probe.linear import LinearProbe


def test_label_fraction_is_stratified_and_seeded():
    labels = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 3)
    rows = stratified_subset(labels, 0.1, seed=0)
    counts = {c: int((labels[rows] == c).sum()) for c in "abc"}
    assert counts == {"a": 5, "b": 3, "c": 1}  # at least one per class
    assert np.array_equal(rows, stratified_subset(labels, 0.1, seed=0))
    assert not np.array_equal(rows, stratified_subset(labels, 0.1, seed=1))
    assert len(stratified_subset(labels, 1.0)) == len(labels)
    with pytest.raises(ValueError):
        stratified_subset(labels, 0.0)


def _blobs(seed=0, n=20, dim=6):
    rng = np.random.default_rng(seed)
    centres = 3 * np.eye(3, dim)
    y = np.repeat(np.array(["x", "y", "z"]), n)
    X = centres[np.repeat(np.arange(3), n)] + 0.3 * rng.normal(size=(3 * n, dim))
    return X, y


def test_fit_probe_with_fraction_and_save_without_pickle(tmp_path):
    X, y = _blobs()
    probe = fit_probe(X, y, label_fraction=0.1, seed=3)
    assert len(probe.train_indices_) == 6 and set(y[probe.train_indices_]) == {"x", "y", "z"}
    assert probe.score(X, y) > 0.9
    path = probe.save(tmp_path / "p", info={"encoder_fingerprint": "sha256:abc"})
    with np.load(f"{path}.npz", allow_pickle=False) as arrays:
        assert set(arrays.files) == {"coef", "intercept", "mean", "scale"}
    loaded = LinearProbe.load(path)
    assert loaded.info["encoder_fingerprint"] == "sha256:abc"
    assert json.loads((tmp_path / "p.json").read_text())["classes"] == ["x", "y", "z"]
    assert np.allclose(loaded.predict_proba(X), probe.predict_proba(X))


def test_multi_clip_modes_and_per_clip_output():
    X, y = _blobs()
    probe = fit_probe(X, y)
    clips = np.stack([X[0], X[1], X[25]])  # two "x" clips and one "y" clip
    windows = [type("W", (), {"start_sec": s, "end_sec": s + 1})() for s in (0.0, 2.0, 4.0)]
    out = predict_clips(probe, clips, windows, mode="mean_probability", top=2)
    assert out["top"][0]["class"] == "x" and len(out["top"]) == 2
    assert [c["class"] for c in out["clips"]] == ["x", "x", "y"]
    assert out["clips"][2]["start_sec"] == 4.0 and out["clips"][2]["end_sec"] == 5.0
    p_mean = video_probabilities(probe, clips, "mean_probability")
    p_emb = video_probabilities(probe, clips, "mean_embedding")
    assert p_mean.sum() == pytest.approx(1) and p_emb.sum() == pytest.approx(1)
    assert not np.allclose(p_mean, p_emb)
    with pytest.raises(ValueError):
        video_probabilities(probe, clips, "vote")


def test_metrics_by_hand():
    classes = ["a", "b", "c"]
    probs = np.array([[0.7, 0.2, 0.1],   # a -> a
                      [0.5, 0.4, 0.1],   # b -> a (b second)
                      [0.1, 0.3, 0.6],   # c -> c
                      [0.2, 0.5, 0.3]])  # c -> b (c second)
    m = evaluate_predictions(probs, ["a", "b", "c", "c"], classes)
    assert m["top1"] == 0.5 and m["top5"] == 1.0
    assert m["per_class"] == {"a": 1.0, "b": 0.0, "c": 0.5}
    assert m["confusion"] == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    m2 = evaluate_predictions(probs[:, :3], ["a", "b", "zzz", "c"], classes)
    assert m2["unknown_labels"] == 1 and m2["top1"] == 0.25
    X, y = _blobs()
    assert evaluate_probe(fit_probe(X, y), X, y)["top1"] > 0.9


def test_dotted_probe_names_keep_their_own_files(tmp_path):
    """``probe.v2`` is its own probe (probe.v2.json/.npz), not a second write over ``probe.json``."""
    from vcl_infer.cli.classify import _load_probe

    X, y = _blobs()
    first = fit_probe(X, y, seed=0).save(tmp_path / "probe")
    X2, y2 = X[y != "z"], np.where(y[y != "z"] == "x", "left", "right")
    fit_probe(X2, y2, seed=0).save(tmp_path / "probe.v2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe.json", "probe.npz", "probe.v2.json", "probe.v2.npz"]
    assert list(LinearProbe.load(first).classes_) == ["x", "y", "z"]  # not overwritten
    for name in ("probe.v2", "probe.v2.json", "probe.v2.npz"):
        assert list(LinearProbe.load(tmp_path / name).classes_) == ["left", "right"]
        assert list(_load_probe(str(tmp_path / name)).classes_) == ["left", "right"]  # the CLI's loader too
