"""Linear-classifier action recognition on frozen embeddings (no torch needed).

:class:`LinearProbe` follows the scikit-learn estimator contract: ``fit(X, y)`` returns
``self``, learned state ends in ``_``, plus ``predict``, ``predict_proba`` and ``score``. It
is multinomial logistic regression with L2 weight decay, trained full-batch with Adam on
standardised features; it saves as plain arrays (``.npz``, no pickle) plus JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


class LinearProbe:
    """Softmax regression on ``N x D`` embeddings.

    Args:
        weight_decay: L2 penalty on the weights (not the bias), per sample.
        max_iter: full-batch Adam steps.
        lr: Adam step size.
        seed: initialisation seed (the problem is convex; the seed only matters at the margin).
    """

    def __init__(self, weight_decay: float = 1e-3, max_iter: int = 500, lr: float = 0.05, seed: int = 0):
        if weight_decay < 0 or max_iter < 1 or lr <= 0:
            raise ValueError("need weight_decay >= 0, max_iter >= 1 and lr > 0")
        self.weight_decay = weight_decay
        self.max_iter = max_iter
        self.lr = lr
        self.seed = seed

    def get_params(self, deep: bool = True) -> dict:
        return {"weight_decay": self.weight_decay, "max_iter": self.max_iter, "lr": self.lr, "seed": self.seed}

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_

    def fit(self, X: np.ndarray, y: np.ndarray) -> "LinearProbe":
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if X.ndim != 2 or len(X) != len(y) or len(X) == 0:
            raise ValueError(f"need X of shape N x D and N labels, got {X.shape} and {y.shape}")
        self.classes_, targets = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError("a classifier needs at least two classes")
        self.mean_ = X.mean(axis=0)
        self.scale_ = X.std(axis=0) + 1e-8
        Z = self._standardise(X)
        n, d = Z.shape
        k = len(self.classes_)
        onehot = np.eye(k)[targets]
        rng = np.random.default_rng(self.seed)
        params = [rng.normal(0, 0.01, size=(d, k)), np.zeros(k)]
        moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
        for step in range(1, self.max_iter + 1):
            probs = _softmax(Z @ params[0] + params[1])
            error = (probs - onehot) / n
            grads = [Z.T @ error + self.weight_decay * params[0], error.sum(axis=0)]
            for p, g, m in zip(params, grads, moments):
                m[0] = 0.9 * m[0] + 0.1 * g
                m[1] = 0.999 * m[1] + 0.001 * g * g
                p -= self.lr * (m[0] / (1 - 0.9**step)) / (np.sqrt(m[1] / (1 - 0.999**step)) + 1e-8)
        self.coef_, self.intercept_ = params
        self.n_features_in_ = d
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return self._standardise(X) @ self.coef_ + self.intercept_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``N x K`` class probabilities, columns in ``classes_`` order."""
        return _softmax(self.decision_function(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Top-1 accuracy."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def save(self, path: str | os.PathLike, *, info: dict | None = None) -> Path:
        """Write ``PATH.npz`` (arrays, no pickle) and ``PATH.json`` (parameters, class names).

        Args:
            info: JSON-able facts about how the probe was made (encoder fingerprint,
                pooling, label source); read back as ``probe.info``.
        """
        path = Path(path).with_suffix("")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path.with_suffix(".npz"), coef=self.coef_, intercept=self.intercept_, mean=self.mean_, scale=self.scale_)
        meta = {"format": "vcl-linear-probe", "version": 1, "params": self.get_params(),
                "classes": [c.item() if hasattr(c, "item") else c for c in self.classes_],
                "info": dict(info if info is not None else getattr(self, "info", {}))}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LinearProbe":
        path = Path(path).with_suffix("")
        meta = json.loads(path.with_suffix(".json").read_text())
        if meta.get("format") != "vcl-linear-probe":
            raise ValueError(f"{path}.json is not a vcl linear probe")
        probe = cls(**meta["params"])
        with np.load(path.with_suffix(".npz"), allow_pickle=False) as arrays:
            probe.coef_, probe.intercept_ = arrays["coef"], arrays["intercept"]
            probe.mean_, probe.scale_ = arrays["mean"], arrays["scale"]
        probe.classes_ = np.asarray(meta["classes"])
        probe.info = dict(meta.get("info", {}))
        probe.n_features_in_ = probe.coef_.shape[0]
        return probe


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
