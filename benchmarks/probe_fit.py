"""Fit time of vcl's LinearProbe vs the same model in plain scikit-learn, side by side.

Plain scikit-learn is ``make_pipeline(StandardScaler(), LogisticRegression())`` with the
probe's settings; the two are fitted alternately (``--repeats`` each) on the same data, so
load on a shared machine hits both alike. Reported: median and min-max fit seconds, the
ratio of medians (1.0: the wrapper costs nothing), held-out accuracy of each, the load
average, and whether a NaN embedding is refused.

Data: scikit-learn's bundled digits (1797 x 64, 10 classes, no download) and generated
Gaussian classes shaped like a UCF101 probe (8000 x 512, 101 classes).

    python benchmarks/probe_fit.py                 # ~1 min on 2 busy cores
    python benchmarks/probe_fit.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def _datasets(seed: int):
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(101, 512))
    labels = rng.integers(0, 101, size=10000)
    features = centres[labels] + 4.0 * rng.normal(size=(10000, 512))
    order = rng.permutation(len(digits.target))
    return {
        "digits 1797x64, 10 classes": (digits.data[order[:1300]], digits.target[order[:1300]],
                                       digits.data[order[1300:]], digits.target[order[1300:]]),
        "generated 8000x512, 101 classes": (features[:8000], labels[:8000], features[8000:], labels[8000:]),
    }


def _timed(make, X, y, Xt, yt) -> tuple[float, float]:
    start = time.perf_counter()
    model = make().fit(X, y)
    seconds = time.perf_counter() - start
    return seconds, float((model.predict(Xt) == yt).mean())


def _nan_refused() -> str:
    import numpy as np

    from vcl_infer.probe.linear import LinearProbe

    X = np.random.default_rng(0).normal(size=(20, 4))
    X[3, 1] = np.nan
    try:
        LinearProbe().fit(X, np.arange(20) % 2)
    except ValueError as exc:
        return f"refused: {str(exc)[:90]}..."
    return "NOT refused"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="fits of each, alternating")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from vcl_infer.probe.linear import LinearProbe

    contenders = {
        "vcl LinearProbe": lambda: LinearProbe(),
        "plain scikit-learn": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, tol=1e-4)),
    }
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("| data | fitter | median s | min-max s | held-out acc |\n|---|---|---|---|---|")
    for name, (X, y, Xt, yt) in _datasets(args.seed).items():
        times: dict[str, list[float]] = {k: [] for k in contenders}
        accuracy = {}
        for _ in range(args.repeats):
            for who, make in contenders.items():
                seconds, accuracy[who] = _timed(make, X, y, Xt, yt)
                times[who].append(seconds)
        for who in contenders:
            t = times[who]
            print(f"| {name} | {who} | {statistics.median(t):.3f} | {min(t):.3f}-{max(t):.3f} | {accuracy[who]:.3f} |")
        ratio = statistics.median(times["vcl LinearProbe"]) / statistics.median(times["plain scikit-learn"])
        print(f"| {name} | ratio vcl / plain | {ratio:.2f} | | |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"NaN embedding: {_nan_refused()}")


if __name__ == "__main__":
    main()
