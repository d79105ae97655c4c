"""Linear-classifier action recognition on frozen embeddings: a scikit-learn estimator.

:class:`LinearProbe` is a scikit-learn classifier (``BaseEstimator`` + ``ClassifierMixin``,
passing ``sklearn.utils.estimator_checks.check_estimator``) wrapping a ``Pipeline`` of
``StandardScaler`` and multinomial ``LogisticRegression`` (L-BFGS). It refuses NaN, inf,
empty input and 2-D targets with an error that says what is wrong, and saves as plain
arrays (``.npz``, no pickle) plus JSON, so a probe file is data, never code.

Importing this module imports scikit-learn (``pip install 'vcl[classify]'``);
``import vcl_infer`` does not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vcl_infer._optional import require
from vcl_infer.probe.paths import probe_files, probe_stem

require("sklearn")

from sklearn.base import BaseEstimator, ClassifierMixin  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.multiclass import check_classification_targets  # noqa: E402
from sklearn.utils.validation import check_is_fitted, validate_data  # noqa: E402

FORMAT = "vcl-linear-probe"
VERSION = 2  # 1: the hand-written numpy probe (coef D x K, softmax); still loads


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression on standardised ``N x D`` embeddings.

    Args:
        C: inverse L2 strength of :class:`sklearn.linear_model.LogisticRegression`
            (smaller is stronger); the bias is not penalised.
        max_iter: L-BFGS iterations at most.
        tol: L-BFGS stopping tolerance.
        seed: kept for the record and passed as ``random_state`` (L-BFGS is deterministic).

    Attributes:
        classes_: the labels seen in ``fit``, sorted.
        n_features_in_: ``D``.
        n_iter_: L-BFGS iterations used (0 for a loaded probe).
        pipeline_: the fitted ``StandardScaler -> LogisticRegression`` pipeline.
        info: JSON-able facts about how the probe was made (set by callers, saved along).
    """

    def __init__(self, C: float = 1.0, max_iter: int = 1000, tol: float = 1e-4, seed: int = 0):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed

    def _check_params(self) -> None:
        if not (isinstance(self.C, (int, float)) and self.C > 0):
            raise ValueError(f"LinearProbe: C must be a number > 0, got {self.C!r}")
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            raise ValueError(f"LinearProbe: max_iter must be an integer >= 1, got {self.max_iter!r}")
        if not (isinstance(self.tol, (int, float)) and self.tol > 0):
            raise ValueError(f"LinearProbe: tol must be a number > 0, got {self.tol!r}")

    def _validate(self, X, *y, reset: bool):
        """scikit-learn's validation (of ``X``, or ``X, y`` when given), its message followed by what to do."""
        try:
            return validate_data(self, X, *y, reset=reset, dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"LinearProbe: {exc} Embeddings must be a finite N x D array with N >= 1 "
                             "(and one label per row); drop the rows of videos whose embedding failed.") from exc

    def fit(self, X, y) -> "LinearProbe":
        """Fit on ``N x D`` embeddings ``X`` and ``N`` labels ``y`` (names or ids); returns ``self``."""
        self._check_params()
        X, y = self._validate(X, y, reset=True)
        check_classification_targets(y)
        if len(np.unique(y)) < 2:
            raise ValueError(f"LinearProbe: a classifier needs at least two classes, got one class: "
                             f"{np.unique(y).tolist()}; label videos of two or more classes")
        self.pipeline_ = Pipeline([
            ("scale", StandardScaler()),
            ("logreg", LogisticRegression(C=self.C, max_iter=self.max_iter, tol=self.tol, random_state=self.seed)),
        ]).fit(X, y)
        self.classes_ = self.pipeline_.classes_
        self.n_iter_ = self.pipeline_["logreg"].n_iter_
        return self

    def decision_function(self, X) -> np.ndarray:
        """Logits: ``N x K``, or ``(N,)`` for two classes (scikit-learn's convention)."""
        check_is_fitted(self)
        return self.pipeline_.decision_function(self._validate(X, reset=False))

    def predict_proba(self, X) -> np.ndarray:
        """``N x K`` class probabilities, columns in ``classes_`` order."""
        check_is_fitted(self)
        return self.pipeline_.predict_proba(self._validate(X, reset=False))

    def predict(self, X) -> np.ndarray:
        """The most probable class of every row."""
        check_is_fitted(self)
        return self.pipeline_.predict(self._validate(X, reset=False))

    def save(self, path: str | os.PathLike, *, info: dict | None = None) -> Path:
        """Write ``PATH.npz`` (arrays, no pickle) and ``PATH.json`` (parameters, class names).

        Args:
            info: JSON-able facts about how the probe was made (encoder fingerprint,
                pooling, label source); read back as ``probe.info``.
        """
        check_is_fitted(self)
        path = probe_stem(path)
        meta_file, arrays_file = probe_files(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        scaler, logreg = self.pipeline_["scale"], self.pipeline_["logreg"]
        np.savez(arrays_file, coef=logreg.coef_, intercept=logreg.intercept_,
                 mean=scaler.mean_, scale=scaler.scale_)
        meta = {"format": FORMAT, "version": VERSION, "params": self.get_params(),
                "classes": [_plain(c) for c in self.classes_],
                "info": dict(info if info is not None else getattr(self, "info", {}))}
        meta_file.write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LinearProbe":
        """Read a probe written by :meth:`save` (this version or version 1)."""
        path = probe_stem(path)
        meta_file, arrays_file = probe_files(path)
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT or meta.get("version") not in (1, VERSION):
            raise ValueError(f"{path}.json is not a vcl linear probe of version 1 or {VERSION}")
        with np.load(arrays_file, allow_pickle=False) as arrays:
            coef, intercept = arrays["coef"], arrays["intercept"]
            mean, scale = arrays["mean"], arrays["scale"]
        classes = np.asarray(meta["classes"])
        if meta["version"] == 1:
            coef, intercept = _from_softmax_layout(coef, intercept)
        params = {k: v for k, v in meta["params"].items() if k in cls._get_param_names()}
        probe = cls(**params)
        probe.pipeline_ = _rebuilt_pipeline(probe, coef, intercept, mean, scale, classes)
        probe.classes_ = classes
        probe.n_features_in_ = int(mean.shape[0])
        probe.n_iter_ = probe.pipeline_["logreg"].n_iter_
        probe.info = dict(meta.get("info", {}))
        return probe


def _from_softmax_layout(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Version-1 ``D x K`` softmax weights -> scikit-learn's ``K x D`` (``1 x D`` for two classes:
    softmax over two logits is the sigmoid of their difference)."""
    if coef.shape[1] == 2:
        return (coef[:, 1] - coef[:, 0])[None], intercept[1:] - intercept[:1]
    return coef.T.copy(), intercept


def _rebuilt_pipeline(probe: LinearProbe, coef, intercept, mean, scale, classes) -> Pipeline:
    """A fitted pipeline from saved arrays, without refitting (and without unpickling)."""
    scaler = StandardScaler()
    scaler.mean_, scaler.scale_, scaler.var_ = mean, scale, scale**2
    scaler.n_features_in_, scaler.n_samples_seen_ = int(mean.shape[0]), 0
    logreg = LogisticRegression(C=probe.C, max_iter=probe.max_iter, tol=probe.tol, random_state=probe.seed)
    logreg.coef_, logreg.intercept_, logreg.classes_ = coef, intercept, classes
    logreg.n_features_in_, logreg.n_iter_ = int(coef.shape[1]), np.zeros(1, dtype=np.int32)
    return Pipeline([("scale", scaler), ("logreg", logreg)])


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
