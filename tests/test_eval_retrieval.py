"""vcl-eval retrieval protocols: R@k equals a brute-force reference written from the papers' recipes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vcl_infer.probe.evaluation import PROTOCOLS, evaluate_retrieval, pool_videos, retrieval_protocol

KS = (1, 5, 10, 20, 50)


def _video_vector(clips, normalize_clips):
    total = [0.0] * len(clips[0])
    for clip in clips:
        norm = math.sqrt(sum(v * v for v in clip)) if normalize_clips else 1.0
        for d, v in enumerate(clip):
            total[d] += v / norm
    return [t / len(clips) for t in total]


def _set_vectors(stacks, normalize_clips, center):
    vectors = [_video_vector(s.tolist(), normalize_clips) for s in stacks]
    if center:
        mean = [sum(v[d] for v in vectors) / len(vectors) for d in range(len(vectors[0]))]
        vectors = [[v[d] - mean[d] for d in range(len(v))] for v in vectors]
    return [[x / math.sqrt(sum(y * y for y in v)) for x in v] for v in vectors]


def brute_force_recall(train, train_y, test, test_y, normalize_clips, center):
    """Loops only: test queries the train gallery, hit at k when a same-class video is in the top k."""
    gallery = _set_vectors(train, normalize_clips, center)
    queries = _set_vectors(test, normalize_clips, center)
    recall = {}
    for k in KS:
        hits = 0
        for q, qy in zip(queries, test_y):
            sims = [(sum(a * b for a, b in zip(q, g)), i) for i, g in enumerate(gallery)]
            ranked = [i for _, i in sorted(sims, key=lambda s: -s[0])]
            hits += any(train_y[i] == qy for i in ranked[:k])
        recall[f"R@{k}"] = hits / len(queries)
    return recall


def _data(seed=0, classes=6, train=60, test=30, dim=16, offset=3.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    common = offset * rng.normal(size=dim)  # a shared offset: what mean-centering removes

    def videos(n):
        labels = rng.integers(classes, size=n)
        stacks = [centres[y] + common + 1.5 * rng.normal(size=(int(rng.integers(1, 6)), dim))
                  * rng.uniform(0.5, 2.0, size=(1, 1)) for y in labels]
        return stacks, labels

    (tr, try_), (te, tey) = videos(train), videos(test)
    return tr, try_, te, tey


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_recall_matches_brute_force(name):
    proto = retrieval_protocol(name)
    tr, try_, te, tey = _data(seed=1)
    got = evaluate_retrieval(tr, try_, te, tey, protocol=name, ks=KS)
    want = brute_force_recall(tr, list(try_), te, list(tey), proto.normalize_clips, proto.center)
    assert got["recall"] == pytest.approx(want, abs=1e-12)
    assert got["num_queries"] == 30 and got["num_gallery"] == 60
    assert 0 < got["recall"]["R@1"] < 1  # not a degenerate case


def test_centering_changes_the_answer_and_is_per_set():
    tr, try_, te, tey = _data(seed=2, offset=6.0)
    fame = evaluate_retrieval(tr, try_, te, tey, protocol="fame")["recall"]
    uncentred = brute_force_recall(tr, list(try_), te, list(tey), True, False)
    assert fame != uncentred  # the test data is sensitive to mean-centering
    # per-set centering: the query set and the gallery set each lose their own mean, so a
    # constant added to every query vector after pooling (TCLR-style raw pooling) changes nothing
    raw_centred = retrieval_protocol("tclr").__class__("raw-centred", 1, False, True, "test")
    shifted = [s + 50.0 for s in te]
    assert (evaluate_retrieval(tr, try_, shifted, tey, protocol=raw_centred)["recall"]
            == evaluate_retrieval(tr, try_, te, tey, protocol=raw_centred)["recall"])


def test_protocol_settings_follow_the_papers():
    assert (PROTOCOLS["tclr"].num_clips, PROTOCOLS["tclr"].normalize_clips, PROTOCOLS["tclr"].center) == (9, False, False)
    assert (PROTOCOLS["fame"].num_clips, PROTOCOLS["fame"].normalize_clips, PROTOCOLS["fame"].center) == (10, True, True)
    assert PROTOCOLS["vcl"].num_clips == 8
    with pytest.raises(ValueError, match="fame"):
        retrieval_protocol("nope")


def test_tclr_pools_raw_features_vcl_normalised_clips():
    clips = [np.array([[3.0, 0.0], [0.0, 1.0]])]
    assert np.allclose(pool_videos(clips, PROTOCOLS["tclr"]), [[1.5, 0.5]])
    assert np.allclose(pool_videos(clips, PROTOCOLS["vcl"]), [[0.5, 0.5]])
