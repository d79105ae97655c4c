"""Search quality on the shared corpus: self-retrieval, re-encoded copies, 2-second cuts."""

from __future__ import annotations

import json
import re

import pytest
from test_build_corpus import CLIPS, built_index, bundle, corpus, queries, run_cli

from vcl_infer.errors import VclError


@pytest.fixture(scope="module")
def index_dir():
    return built_index()[0]


def _overlaps(start: float, end: float, lo: float, hi: float) -> bool:
    return start < hi and end > lo


def test_every_decodable_video_finds_itself_first(index_dir):
    from vcl_infer.encode.embedder import Embedder
    from vcl_infer.index import VideoIndex
    from vcl_infer.index.build import clip_vectors
    from vcl_infer.search.query import search_vectors
    from vcl_infer.video.isolated import DecodePool

    index = VideoIndex.open(index_dir)
    paths = [p for p, (_, _, status) in index.known_files().items() if status == "ok"]
    assert len(paths) >= 32  # 32 generated + the decodable shared files
    embedder = Embedder.load(bundle(), threads=1)
    misses = []
    with DecodePool(workers=2) as pool:
        for path, decoded in zip(paths, pool.imap([(p, embedder.spec.clip, CLIPS) for p in paths])):
            video_vec, clip_vecs = clip_vectors(embedder, decoded.clips)
            top = search_vectors(index, video_vec, clip_vecs, k=5)
            # files with identical pixels (small/webm.webm and decord/unordered.mov are both
            # plain white) tie exactly: then the query must be among the tied first hits
            tied = [h.video for h in top if h.score >= top[0].score - 1e-5]
            if path not in tied or (top[0].video != path and top[0].score < 1 - 1e-5):
                misses.append((path, [(h.video, h.score) for h in top]))
    assert not misses


def test_reencoded_copy_finds_the_original(index_dir):
    from vcl_infer.search.query import search_index

    result = search_index(index_dir, str(queries()["reencoded"]), k=3, model=bundle())
    assert result.results[0].video == str(corpus() / "gen" / "short_03.mp4")
    assert result.results[0].score > result.results[1].score


@pytest.mark.parametrize("how", ["range", "file"])
def test_two_second_cut_finds_the_long_video_and_the_range(index_dir, how):
    from vcl_infer.search.query import search_index

    long_video = str(corpus() / "gen" / "long_1.mp4")
    query = f"{long_video}@5-7" if how == "range" else str(queries()["cut"])
    top = search_index(index_dir, query, k=3, model=bundle()).results[0]
    assert top.video == long_video
    assert _overlaps(top.start, top.end, 5.0, 7.0), (top.start, top.end)
    moments = search_index(index_dir, query, k=3, moments=True, model=bundle()).results
    assert moments[0].video == long_video and _overlaps(moments[0].start, moments[0].end, 5.0, 7.0)


def test_json_output_is_exactly_the_documented_format(index_dir):
    long_video = str(corpus() / "gen" / "long_0.mp4")
    out = run_cli("vcl-search", f"{long_video}@1-3", "--index", str(index_dir), "-k", "4", "--json",
                  "--model", bundle()).stdout
    data = json.loads(out)
    assert list(data) == ["query", "results"]
    assert data["query"] == f"{long_video}@1-3"
    assert [r["rank"] for r in data["results"]] == [1, 2, 3, 4]
    for r in data["results"]:
        assert list(r) == ["rank", "video", "score", "start", "end"]
        assert isinstance(r["video"], str) and all(isinstance(r[k], float) for k in ("score", "start", "end"))
    scores = [r["score"] for r in data["results"]]
    assert scores == sorted(scores, reverse=True)
    assert data["results"][0]["video"] == long_video


def test_table_and_html_page(index_dir, tmp_path):
    page = tmp_path / "results.html"
    out = run_cli("vcl-search", str(queries()["reencoded"]), "--index", str(index_dir), "-k", "2",
                  "--html", str(page), "--model", bundle()).stdout
    assert re.search(r"^\s+1\s+\d\.\d{4}\s+[\d.]+\s+[\d.]+\s+\S*short_03\.mp4$", out, re.M), out
    text = page.read_text()
    images = re.findall(r'<img alt="frame" src="data:image/(?:jpeg|png);base64,[A-Za-z0-9+/=]{100,}"', text)
    assert len(images) >= 3 * 2  # query strip + 2 hits, several frames each
    assert "short_03.mp4" in text and "no thumbnails" not in text


def test_a_model_of_other_weights_is_refused(index_dir):
    from types import SimpleNamespace

    from vcl_infer.index import EncoderMismatch
    from vcl_infer.search.query import embedder_for_index

    other = SimpleNamespace(fingerprint="sha256:" + "0" * 64)
    with pytest.raises(EncoderMismatch, match="not the encoder this index was built with"):
        embedder_for_index(other, bundle(), index_dir)
    proc = run_cli("vcl-search", str(queries()["cut"]), "--index", str(index_dir), check=False)
    assert proc.returncode == 0  # no --model: found through the build report


def test_parse_query():
    from vcl_infer.search.query import parse_query

    q = parse_query("clip.mp4@12.5-14")
    assert (q.path, q.start, q.end) == ("clip.mp4", 12.5, 14.0)
    assert parse_query("plain.mp4").start is None
    with pytest.raises(VclError, match="END must be greater"):
        parse_query("clip.mp4@5-2")
    with pytest.raises(VclError, match="FILE@START-END"):
        parse_query("clip.mp4@5")


def test_range_outside_the_video_is_a_clear_error(index_dir):
    from vcl_infer.search.query import search_index

    with pytest.raises(VclError, match="no frame in 100-102"):
        search_index(index_dir, f"{corpus() / 'gen' / 'long_0.mp4'}@100-102", model=bundle())
