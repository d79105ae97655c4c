"""The HTTP API (FastAPI): routes, bearer-token auth, the upload limit, JSON errors.

Every error is a JSON body ``{"error": "<what happened and what to do>", "status": N}``
(plus ``kind`` for an unreadable video), never a traceback. Auth and the upload limit are
checked in an ASGI layer in front of the app, before a byte of the body is parsed.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import shutil
import tempfile
from contextlib import asynccontextmanager
from typing import Any, Literal, Sequence

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException

from vcl_infer import __version__
from vcl_infer.errors import VclError, VideoError
from vcl_infer.serve.config import ServeConfig
from vcl_infer.serve.engine import Busy, QueryEngine
from vcl_infer.serve.state import IndexState

log = logging.getLogger("vcl.serve")
OPEN_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
_bearer = HTTPBearer(auto_error=False, description="Only when the server was started with --token-file.")


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than this server accepts ({limit} bytes); "
                              "send a shorter video or cut it first")


async def _send_json(send, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class Gate:
    """ASGI layer: the bearer token, then the body size (by header, and counted as it streams)."""

    def __init__(self, app, token: str | None, max_body: int):
        self.app, self.token, self.max_body = app, token, max_body

    def _auth_error(self, scope) -> str | None:
        if self.token is None or scope["path"] in OPEN_PATHS:
            return None
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return "this server needs a bearer token: send the header 'Authorization: Bearer <token>'"
        if not hmac.compare_digest(value.strip().encode(), self.token.encode()):
            return "wrong token: send the token of the server's --token-file"
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        problem = self._auth_error(scope)
        if problem:
            return await _send_json(send, 401, problem, [(b"www-authenticate", b"Bearer")])
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return await _send_json(send, 413, BodyTooLarge(self.max_body).detail)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        return await self.app(scope, counted, send)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, "status": status, **extra}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException):
        response = _error(exc.status_code, str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}" for e in exc.errors()]
        return _error(422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(VideoError)
    async def unreadable(_request: Request, exc: VideoError):
        return _error(422, f"cannot read the query video: {exc.reason}", kind=exc.kind)

    @app.exception_handler(VclError)
    async def vcl_error(_request: Request, exc: VclError):
        return _error(400, str(exc))

    @app.exception_handler(PermissionError)
    async def refused(_request: Request, exc: PermissionError):
        return _error(403, str(exc))

    @app.exception_handler(KeyError)
    async def not_found(_request: Request, exc: KeyError):
        return _error(404, str(exc.args[0]) if exc.args else "not found")

    @app.exception_handler(Busy)
    async def busy(_request: Request, exc: Busy):
        response = _error(503, str(exc))
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception):
        log.exception("internal error")
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the details")


def _check_query(config: ServeConfig, start: float | None, end: float | None, k: int) -> None:
    if not 1 <= k <= config.max_k:
        raise HTTPException(422, f"k must be between 1 and {config.max_k}, got {k}")
    if (start is None) != (end is None):
        raise HTTPException(422, "give both start and end (seconds), or neither for the whole video")
    if start is not None and end is not None:
        if start < 0 or not end > start:
            raise HTTPException(422, f"the range {start:g}-{end:g} s is empty or negative: need 0 <= start < end")
        if end - start > config.max_range_s:
            raise HTTPException(422, f"the range is {end - start:g} s, longer than this server's limit of "
                                     f"{config.max_range_s:g} s; query a shorter range")


def _search_upload(engine: QueryEngine, upload: UploadFile, start, end, k, level) -> dict:
    suffix = os.path.splitext(upload.filename or "")[1]
    suffix = suffix if suffix[1:].isalnum() and len(suffix) <= 8 else ".video"
    handle, tmp = tempfile.mkstemp(prefix="vcl-serve-", suffix=suffix)
    try:
        with os.fdopen(handle, "wb") as out:
            upload.file.seek(0)
            shutil.copyfileobj(upload.file, out, 1 << 20)
        result = engine.search(tmp, start, end, k, level)
    finally:
        os.unlink(tmp)
    result["query"] = {"upload": upload.filename, "start": start, "end": end}
    return result


def _search_path(engine: QueryEngine, path: str, start, end, k, level) -> dict:
    real = engine.config.allowed_path(path)
    if not real.exists():
        raise KeyError(f"{path}: no such file under the served roots")
    result = engine.search(str(real), start, end, k, level)
    result["query"] = {"path": path, "start": start, "end": end}
    return result


async def _run(engine: QueryEngine, fn, *args):
    return await asyncio.wrap_future(engine.submit(fn, *args))


def create_app(config: ServeConfig, state: IndexState | None = None) -> Any:
    """The ASGI application serving ``config.index_dir`` (the index is opened here).

    Raises:
        VclError: no index at ``config.index_dir``, a damaged one, or no matching encoder.
    """
    state = state or IndexState(config)
    engine = QueryEngine(config, state)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        engine.close()
        state.close()

    app = FastAPI(title="vcl search", version=__version__, lifespan=lifespan,
                  description="Search a vcl video index with a video: ranked videos, or moments (clips), "
                              "with the matched time ranges.")
    app.state.engine = engine
    _add_error_handlers(app)
    auth = [Depends(_bearer)]

    @app.post("/search", dependencies=auth, summary="Search with an uploaded video or a path under --root")
    async def search(file: UploadFile | None = File(None, description="the query video"),
                     path: str | None = Form(None, description="a file under the server's --root folders"),
                     start: float | None = Form(None, description="query range start, seconds"),
                     end: float | None = Form(None, description="query range end, seconds"),
                     k: int = Form(10, description="results to return"),
                     level: Literal["video", "clip"] = Form("video", description="rank videos or clips")):
        _check_query(config, start, end, k)
        if (file is None) == (path is None):
            raise HTTPException(422, "send exactly one of: a video upload (form field 'file') or 'path'")
        if file is not None:
            return await _run(engine, _search_upload, engine, file, start, end, k, level)
        return await _run(engine, _search_path, engine, path, start, end, k, level)

    @app.get("/videos/{video_id}", dependencies=auth, summary="A video of the index and its clips")
    async def video(video_id: int):
        return await _run(engine, engine.video, video_id)

    @app.get("/videos/{video_id}/thumbnail", dependencies=auth, summary="PNG of a frame (default: the middle)",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def thumbnail(video_id: int, t: float | None = Query(None, description="seconds into the video")):
        png = await _run(engine, engine.thumbnail, video_id, t)
        return Response(png, media_type="image/png")

    @app.get("/healthz", summary="Liveness and the generation served")
    async def healthz():
        return {"status": "ok" if state.problem is None else "degraded", "generation": state.generation,
                "problem": state.problem, "in_flight": engine.in_flight}

    @app.get("/info", dependencies=auth, summary="The index, its encoder and this server's limits")
    async def info():
        def read() -> dict:
            with state.use() as handle, handle.lock:
                data = dict(handle.index.info())
            data.update(query_clips=handle.num_clips.count, query_sampling=handle.num_clips.to_dict(), encoder=str(state.embedder.path),
                        limits={"max_upload_bytes": config.max_upload_bytes,
                                "decode_timeout_s": config.decode_timeout_s, "max_range_s": config.max_range_s,
                                "max_k": config.max_k, "workers": config.workers, "max_queue": config.max_queue},
                        path_queries=bool(config.roots), auth=config.token is not None)
            return data
        return await _run(engine, read)

    return Gate(app, config.token, config.max_upload_bytes)
