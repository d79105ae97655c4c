"""The linear probe is a scikit-learn estimator: estimator checks, bad input refused, old files load."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

from vcl_infer.probe.linear import LinearProbe  # noqa: E402


def _blobs(classes=4, n=25, dim=12, seed=0):
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.normal(size=(classes, dim))
    X = centres[np.repeat(np.arange(classes), n)] + rng.normal(size=(classes * n, dim))
    return X, np.repeat(np.array([f"c{i}" for i in range(classes)]), n)


def test_passes_every_scikit_learn_estimator_check():
    results = check_estimator(LinearProbe(), on_fail=None, on_skip=None)
    failed = {r["check_name"]: repr(r["exception"])[:200] for r in results if r["status"] == "failed"}
    assert failed == {}
    assert len(results) > 40


@pytest.mark.parametrize("bad, why", [(np.nan, "NaN"), (np.inf, "infinity")])
def test_a_nan_or_inf_embedding_is_refused_with_a_clear_error(bad, why):
    X, y = _blobs()
    X[3, 5] = bad
    with pytest.raises(ValueError, match=why) as raised:
        LinearProbe().fit(X, y)
    assert "drop the rows" in str(raised.value)
    probe = LinearProbe().fit(*_blobs())
    with pytest.raises(ValueError, match=why):
        probe.predict(X)


def test_empty_input_one_class_and_two_column_targets_are_refused():
    X, y = _blobs()
    with pytest.raises(ValueError, match="0 sample"):
        LinearProbe().fit(X[:0], y[:0])
    with pytest.raises(ValueError, match="one class"):
        LinearProbe().fit(X, np.full(len(X), "a"))
    with pytest.raises(ValueError, match="1d array"):
        LinearProbe().fit(X, np.stack([y, y], axis=1))
    with pytest.raises(ValueError, match="features"):
        LinearProbe().fit(X, y).predict(X[:, :5])


def test_predicts_what_plain_scikit_learn_predicts():
    X, y = _blobs(classes=5, seed=1)
    Xt, _ = _blobs(classes=5, seed=2)
    ours = LinearProbe(C=0.3).fit(X, y)
    plain = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=1000)).fit(X, y)
    assert np.array_equal(ours.predict(Xt), plain.predict(Xt))
    assert np.allclose(ours.predict_proba(Xt), plain.predict_proba(Xt), atol=1e-8)


def test_binary_decision_function_is_one_column_like_scikit_learn():
    X, y = _blobs(classes=2)
    probe = LinearProbe().fit(X, y)
    assert probe.decision_function(X).shape == (len(X),)
    assert probe.predict_proba(X).shape == (len(X), 2)


@pytest.mark.parametrize("classes", [2, 3])
def test_a_version_1_probe_file_still_loads_and_predicts_as_before(tmp_path, classes):
    """Version 1 (the numpy softmax probe) stored ``D x K`` weights; its predictions must not change."""
    rng = np.random.default_rng(classes)
    d = 6
    coef, intercept = rng.normal(size=(d, classes)), rng.normal(size=classes)
    mean, scale = rng.normal(size=d), rng.uniform(0.5, 2, size=d)
    np.savez(tmp_path / "old.npz", coef=coef, intercept=intercept, mean=mean, scale=scale)
    names = [f"k{i}" for i in range(classes)]
    (tmp_path / "old.json").write_text(json.dumps({
        "format": "vcl-linear-probe", "version": 1, "classes": names, "info": {"encoder_fingerprint": "sha256:x"},
        "params": {"weight_decay": 1e-3, "max_iter": 500, "lr": 0.05, "seed": 0}}))
    X = rng.normal(size=(40, d))
    logits = (X - mean) / scale @ coef + intercept
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    probe = LinearProbe.load(tmp_path / "old")
    assert np.allclose(probe.predict_proba(X), expected, atol=1e-10)
    assert list(probe.predict(X)) == [names[i] for i in expected.argmax(axis=1)]
    assert probe.info["encoder_fingerprint"] == "sha256:x"


def test_saved_probe_reloads_exactly_without_pickle(tmp_path):
    X, y = _blobs()
    probe = LinearProbe().fit(X, y)
    path = probe.save(tmp_path / "p", info={"encoder_fingerprint": "sha256:abc"})
    meta = json.loads((tmp_path / "p.json").read_text())
    assert meta["version"] == 2 and meta["params"]["C"] == 1.0
    loaded = LinearProbe.load(path)
    assert np.array_equal(loaded.predict_proba(X), probe.predict_proba(X))
    assert loaded.score(X, y) == probe.score(X, y)
