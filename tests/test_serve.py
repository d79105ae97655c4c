"""``vcl-serve`` with real HTTP requests against a server started on 127.0.0.1 (one per module)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_build_corpus import moving_frames, write_video
from video_fixtures import VIDEOS

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token-0123456789abcdef"
MAX_UPLOAD_MB = 1


def make_video(path: Path, num_frames: int, seed: int) -> None:
    """A distinct 64 x 64 clip per seed (a panned random texture with a moving square)."""
    write_video(path, moving_frames(np.random.default_rng(seed), num_frames))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, the folder under --root, the index dir, a folder outside the root)."""
    from vcl_infer.index.build import build_index

    base = tmp_path_factory.mktemp("serve")
    folder = base / "videos"
    folder.mkdir()
    for i in range(4):
        make_video(folder / f"gen_{i}.mp4", num_frames=30 + 4 * i, seed=i)
    if (VIDEOS / "mmaction2/test.avi").is_file():
        shutil.copy2(VIDEOS / "mmaction2/test.avi", folder / "test.avi")
    outside = base / "outside"
    outside.mkdir()
    make_video(outside / "secret.mp4", num_frames=24, seed=99)
    os.symlink(outside / "secret.mp4", folder / "link_out.mp4")  # inside the root, pointing out of it
    index_dir = base / "index"
    build_index(folder, index_dir, clips=4, workers=2, progress=False)
    (base / "token").write_text(TOKEN + "\n")
    port = _free_port()
    log = open(base / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vcl_infer.serve.cli", "--index", str(index_dir), "--port", str(port),
         "--root", str(folder), "--token-file", str(base / "token"), "--max-upload-mb", str(MAX_UPLOAD_MB),
         "--workers", "2", "--decode-timeout", "30", "--log-level", "warning"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (base / "server.log").read_text()[-3000:]
        time.sleep(0.2)
    try:
        yield url, folder, index_dir, outside
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        assert "Traceback" not in (base / "server.log").read_text()


def _client(url: str, token: str | None = TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=60)


def _upload(client, path: Path, **fields):
    with open(path, "rb") as fh:
        return client.post("/search", files={"file": (path.name, fh, "video/mp4")},
                           data={k: str(v) for k, v in fields.items()})


def test_an_uploaded_video_finds_itself_as_the_cli_does(served):
    from vcl_infer.search.query import search_index

    url, folder, index_dir, _ = served
    with _client(url) as client:
        response = _upload(client, folder / "gen_2.mp4", k=3)
    assert response.status_code == 200, response.text
    body = response.json()
    cli = search_index(index_dir, str(folder / "gen_2.mp4"), k=3)
    assert [(r["video"], r["score"], r["start"], r["end"]) for r in body["results"]] == \
           [(h.video, round(h.score, 6), round(h.start, 3), round(h.end, 3)) for h in cli.results]
    assert body["results"][0]["video"] == str(folder / "gen_2.mp4")


def test_a_path_query_under_the_root_with_a_range_and_clip_level(served):
    url, folder, _, _ = served
    with _client(url) as client:
        response = client.post("/search", data={"path": str(folder / "gen_3.mp4"), "start": "0.5", "end": "2.5",
                                                "k": "2", "level": "clip"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["level"] == "clip" and len(body["results"]) == 2
    assert all(0.5 - 1e-6 <= a and b <= 2.5 + 1e-6 for a, b in body["query_windows"])
    assert body["results"][0]["video"] == str(folder / "gen_3.mp4")


def test_paths_outside_the_roots_are_refused_links_included(served):
    url, folder, _, outside = served
    with _client(url) as client:
        for path in (outside / "secret.mp4", folder / "link_out.mp4", folder / ".." / "outside" / "secret.mp4",
                     Path("/etc/hostname")):
            response = client.post("/search", data={"path": str(path)})
            assert response.status_code == 403, (path, response.text)
            assert "outside the folders" in response.json()["error"]


def test_a_missing_or_wrong_token_is_refused_before_the_body_is_read(served):
    url, folder, _, _ = served
    for token, words in ((None, "needs a bearer token"), ("wrong-token", "wrong token")):
        with _client(url, token) as client:
            for response in (client.get("/info"), _upload(client, folder / "gen_0.mp4"), client.get("/videos/1")):
                assert response.status_code == 401 and words in response.json()["error"]
                assert response.headers["www-authenticate"] == "Bearer"
            assert client.get("/healthz").json()["status"] == "ok"  # liveness stays open
    with _client(url) as client:
        assert client.get("/info").json()["auth"] is True


def test_a_huge_upload_is_refused_with_413(served, tmp_path):
    url, _, _, _ = served
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom((MAX_UPLOAD_MB + 1) * 2**20))
    with _client(url) as client:
        response = _upload(client, big)
        assert response.status_code == 413 and "larger than this server accepts" in response.json()["error"]

        def chunks():  # no Content-Length: counted as it streams
            boundary = b"--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp4\"\r\n\r\n"
            yield boundary
            for _ in range(MAX_UPLOAD_MB * 4 + 4):
                yield b"\0" * (256 * 1024)
            yield b"\r\n--xx--\r\n"

        streamed = client.post("/search", content=chunks(),
                               headers={"content-type": "multipart/form-data; boundary=xx"})
        assert streamed.status_code == 413, streamed.text


def test_broken_videos_get_a_json_error_with_the_reason(served, tmp_path):
    url, folder, _, _ = served
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(os.urandom(4096))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes((folder / "gen_1.mp4").read_bytes()[:600])
    with _client(url) as client:
        for path in [noise, truncated] + ([VIDEOS / "small/Mpeg4.mp4"] if (VIDEOS / "small/Mpeg4.mp4").is_file() else []):
            response = _upload(client, path)
            assert response.status_code == 422, (path, response.text)
            body = response.json()
            assert body["error"].startswith("cannot read the query video") and body["kind"]
            assert "Traceback" not in response.text


def test_bad_requests_say_what_is_wrong(served):
    url, folder, _, _ = served
    with _client(url) as client:
        cases = [({"path": str(folder / "gen_0.mp4"), "k": "0"}, "k must be between"),
                 ({"path": str(folder / "gen_0.mp4"), "start": "1"}, "both start and end"),
                 ({"path": str(folder / "gen_0.mp4"), "start": "0", "end": "5000"}, "longer than this server's limit"),
                 ({"path": str(folder / "gen_0.mp4"), "level": "frame"}, "level"),
                 ({}, "exactly one of"),
                 ({"path": str(folder / "nothing.mp4")}, "no such file")]
        for data, words in cases:
            response = client.post("/search", data=data)
            assert 400 <= response.status_code < 500 and words in response.json()["error"], (data, response.text)
        missing = client.get("/videos/99999")
        assert missing.status_code == 404 and "99999" in missing.json()["error"]
        assert client.get("/no/such/route").json() == {"error": "Not Found", "status": 404}


def test_video_records_thumbnails_info_and_docs(served):
    url, folder, index_dir, _ = served
    with _client(url) as client:
        hit = client.post("/search", data={"path": str(folder / "gen_1.mp4"), "k": "1"}).json()["results"][0]
        record = client.get(f"/videos/{hit['video_id']}").json()
        assert record["path"] == str(folder / "gen_1.mp4") and len(record["clips"]) == record["num_clips"] == 4
        png = client.get(hit["thumbnail"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
        info = client.get("/info").json()
        assert info["videos_ok"] >= 4 and info["limits"]["max_upload_bytes"] == MAX_UPLOAD_MB * 2**20
        schema = client.get("/openapi.json").json()
        assert {"/search", "/videos/{video_id}", "/videos/{video_id}/thumbnail", "/healthz", "/info"} <= set(schema["paths"])
        assert client.get("/docs").status_code == 200


def test_a_build_committing_while_requests_run_is_picked_up_without_a_restart(served):
    """Runs last: it adds videos to the served index."""
    from vcl_infer.index.build import build_index

    url, folder, index_dir, _ = served
    with _client(url) as client:
        before = client.get("/healthz").json()["generation"]
    statuses: list[int] = []
    stop = threading.Event()

    def ask(name: str) -> None:
        with _client(url) as client:
            while not stop.is_set():
                statuses.append(client.post("/search", data={"path": str(folder / name), "k": "2"}).status_code)

    threads = [threading.Thread(target=ask, args=(f"gen_{i % 4}.mp4",)) for i in range(4)]
    for t in threads:
        t.start()
    for i in range(3):
        make_video(folder / f"new_{i}.mp4", num_frames=30 + 5 * i, seed=10 + i)
    build_index(folder, index_dir, clips=4, workers=1, progress=False, commit_every=1)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(60)
    assert statuses and set(statuses) == {200}, statuses
    with _client(url) as client:
        assert client.get("/healthz").json()["generation"] > before
        response = client.post("/search", data={"path": str(folder / "new_2.mp4"), "k": "1"})
    assert response.json()["results"][0]["video"] == str(folder / "new_2.mp4")
