import json

import numpy as np
import pytest

from vcl_infer.probe.linear import LinearProbe
from vcl_infer.probe.retrieval_metrics import recall_at_k


def blobs(n_per_class=30, classes=4, dim=16, spread=0.6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 2
    X = np.concatenate([c + spread * rng.normal(size=(n_per_class, dim)) for c in centres])
    y = np.repeat(np.array([f"class{i}" for i in range(classes)]), n_per_class)
    return X, y


def test_probe_learns_separable_classes_and_follows_the_estimator_contract():
    X, y = blobs()
    probe = LinearProbe()
    assert probe.fit(X, y) is probe
    assert probe.score(X, y) > 0.95
    proba = probe.predict_proba(X)
    assert proba.shape == (len(X), 4) and np.allclose(proba.sum(axis=1), 1)
    assert list(probe.classes_) == ["class0", "class1", "class2", "class3"]
    Xt, yt = blobs(seed=0)
    assert probe.score(Xt + 0.01, yt) > 0.9


def test_probe_is_at_chance_on_random_labels_of_held_out_data():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(200, 8)), rng.integers(0, 4, 200)
    probe = LinearProbe().fit(X[:100], y[:100])
    assert probe.score(X[100:], y[100:]) < 0.45


def test_probe_saves_arrays_and_json_without_pickle(tmp_path):
    X, y = blobs()
    probe = LinearProbe(C=0.5).fit(X, y)
    path = probe.save(tmp_path / "probe")
    assert json.loads(path.with_suffix(".json").read_text())["classes"][0] == "class0"
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as arrays:  # would raise on object arrays
        assert set(arrays.files) == {"coef", "intercept", "mean", "scale"}
    loaded = LinearProbe.load(tmp_path / "probe")
    assert np.array_equal(loaded.predict(X), probe.predict(X))


def test_probe_refuses_bad_input():
    with pytest.raises(ValueError):
        LinearProbe().fit(np.zeros((3, 2)), np.zeros(3))
    X, y = blobs()
    with pytest.raises(ValueError, match="C must be"):
        LinearProbe(C=0).fit(X, y)


def brute_force_recall(q, ql, g, gl, k):
    hits = 0
    for i in range(len(q)):
        sims = [float(np.dot(q[i], g[j]) / (np.linalg.norm(q[i]) * np.linalg.norm(g[j]))) for j in range(len(g))]
        top = sorted(range(len(g)), key=lambda j: -sims[j])[:k]
        hits += any(gl[j] == ql[i] for j in top)
    return hits / len(q)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_at_k_equals_a_brute_force_loop(seed):
    rng = np.random.default_rng(seed)
    q, g = rng.normal(size=(25, 6)), rng.normal(size=(40, 6))
    ql, gl = rng.integers(0, 5, 25), rng.integers(0, 5, 40)
    ours = recall_at_k(q, ql, g, gl, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert ours[k] == pytest.approx(brute_force_recall(q, ql, g, gl, k))
