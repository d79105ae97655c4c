"""Search parameters tuned to a target recall: the tuned setting reaches it on queries it never saw."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vcl_infer.index import VideoIndex
from vcl_infer.index import faiss_ops as F
from vcl_infer.index import tuning as T

DIM = 32


def _clustered(rng, n, centres):
    x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, DIM), dtype=np.float32) / np.sqrt(DIM)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _data(n, nq, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // 100, DIM), dtype=np.float32) / np.sqrt(DIM)
    return _clustered(rng, n, centres), _clustered(rng, nq, centres)  # queries: fresh, never indexed


def _recall(found, truth):
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))


@pytest.mark.parametrize("factory,target,n", [("IVF256,Flat", 0.9, 30_000), ("IVF256,Flat", 0.97, 30_000),
                                              ("HNSW16", 0.95, 8_000)])
def test_tuned_setting_reaches_the_target_on_held_out_queries(factory, target, n):
    base, queries = _data(n, 400)
    ids = np.arange(len(base), dtype=np.int64) * 5 + 3
    index = F.build(factory, DIM, ids, base)
    params = T.tune(index, factory, ids, base, target)
    truth = ids[_exact(base, queries)[1]]
    _, found = index.search(queries, 10)
    held_out = _recall(found, truth)
    knob = "nprobe" if "IVF" in factory else "efsearch"
    print(f"{factory} target {target}: {knob} {params[knob]}, sample {params['recall']:.3f}, held-out {held_out:.3f}")
    assert held_out >= target, (params, held_out)
    if "IVF" in factory:  # and not just the exhaustive setting
        assert params["nprobe"] < 256


def _exact(base, queries):
    sims = queries @ base.T
    top = np.argsort(-sims, axis=1)[:, :10]
    return np.take_along_axis(sims, top, axis=1), top


def _add_videos(ix, base, per_video):
    """``base`` as videos of ``per_video`` consecutive clips, named /v/0.mp4, /v/1.mp4, ..."""
    for v in range(len(base) // per_video):
        cv = base[v * per_video:(v + 1) * per_video]
        ix.add_video(f"/v/{v}.mp4", size=1, mtime_ns=1, content_hash="", info={}, video_vector=cv.mean(0),
                     clip_vectors=cv, windows=[(j, j + 1.0) for j in range(per_video)])


def test_the_index_records_its_tuned_setting_and_retunes_to_a_new_target(tmp_path):
    base, queries = _data(12_000, 300, seed=1)
    path = tmp_path / "ix"
    per_video = 20
    with VideoIndex.create(path, fingerprint="e" * 64, spec_json=json.dumps({}), dim=DIM,
                           index_type="IVF64,Flat", target_recall=0.9) as ix:
        _add_videos(ix, base, per_video)
    with VideoIndex.open(path) as ix:
        info = ix.info()
        assert info["index_types"]["clip"] == "IVF64,Flat" and info["target_recall"] == 0.9
        low = info["nprobe"]["clip"]
        assert 1 <= low < 64 and info["recall_at_10"]["clip"] >= 0.9
        _, found = ix.search(queries, 10, level="clip")
        _, top = _exact(base, queries)
        clip_ids = np.array([[c.id for c in ix.clips_of(ix.video_id(f"/v/{v}.mp4"))] for v in range(len(base) // per_video)])
        assert _recall(found, clip_ids.reshape(-1)[top]) >= 0.9
    with VideoIndex.open_or_create(path, fingerprint="e" * 64, spec_json="{}", dim=DIM, target_recall=0.99) as ix:
        pass  # a new target: re-tuned at the commit that closes the writer
    with VideoIndex.open(path) as ix:
        info = ix.info()
        assert info["target_recall"] == 0.99 and info["nprobe"]["clip"] > low and info["recall_at_10"]["clip"] >= 0.99


def test_target_recall_is_validated(tmp_path):
    with pytest.raises(ValueError, match="target recall"):
        VideoIndex.create(tmp_path / "x", fingerprint="e" * 64, spec_json="{}", dim=DIM, target_recall=1.5)


@pytest.mark.slow
def test_pq_with_exact_re_ranking_reaches_the_target_that_its_codes_alone_cannot(tmp_path):
    """IVF-PQ: 8-byte codes of 32-d vectors bound the recall; re-ranking k x factor candidates with
    the stored vectors (tuned like nprobe, recorded in the catalog) reaches the target on fresh queries."""
    base, queries = _data(12_000, 300, seed=2)
    factory = "IVF64,PQ8"
    path = tmp_path / "ix"
    per_video = 20
    with VideoIndex.create(path, fingerprint="e" * 64, spec_json="{}", dim=DIM, index_type=factory) as ix:
        _add_videos(ix, base, per_video)
    with VideoIndex.open(path) as ix:
        info = ix.info()
        assert info["index_types"]["clip"] == factory and info["rerank"]["clip"] >= 2
        ids = np.array([c.id for v in range(len(base) // per_video) for c in ix.clips_of(ix.video_id(f"/v/{v}.mp4"))])
        truth = ids[_exact(base, queries)[1]]
        _, found = ix.search(queries, 10, level="clip")
        codes_alone = _recall(ix.files.loaded["clip"].search(queries, 10, info["nprobe"]["clip"])[1], truth)
        re_ranked = _recall(found, truth)
        print(f"{factory}: nprobe {info['nprobe']['clip']}, rerank x{info['rerank']['clip']}: "
              f"codes alone {codes_alone:.3f}, re-ranked {re_ranked:.3f}")
        assert codes_alone < 0.9 and re_ranked >= 0.95
