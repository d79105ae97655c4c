"""A self-contained HTML page of search results: thumbnail strips of the query and each hit,
a player at the matched moment, and why it matched.

Frames are read in a child process (the files are untrusted), shrunk there, and inlined as
base64 JPEG (PyAV's MJPEG encoder; PNG via vcl_infer.search.png when that fails), so the
thumbnails need no access to the videos. For local files each hit also has a ``<video>``
element whose ``file:`` URI carries a media fragment (``#t=START,END``, W3C Media Fragments
URI 1.0), so the browser plays just the matched range (when the browser can decode the
file). Each hit lists which query clip matched which clip of the video, with its cosine.
Every text that comes from a file name or a query is escaped.
"""

from __future__ import annotations

import base64
import html
import os
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from vcl_infer.errors import VclError, VideoError
from vcl_infer.search.png import encode_png

THUMB_HEIGHT = 90
FRAMES_PER_STRIP = 5


def strip_frames(jobs: Sequence[tuple[str, float, float]], count: int = FRAMES_PER_STRIP,
                 height: int = THUMB_HEIGHT) -> list[list[np.ndarray] | str]:
    """In this process: per ``(path, start, end)``, ``count`` frames evenly spread over the
    range, each ``height`` pixels high (``h x w x 3`` uint8); an error string for a file
    that cannot be read."""
    from vcl_infer.clips.preprocess import resize_frames
    from vcl_infer.video.open import open_video

    out: list[list[np.ndarray] | str] = []
    for path, start, end in jobs:
        try:
            reader = open_video(path)
            try:
                ts = np.asarray(reader.timestamps, dtype=np.float64)
                wanted = np.linspace(start, max(start, end - 1e-3), count)
                idx = np.clip(np.searchsorted(ts, wanted + 1e-9, side="right") - 1, 0, ts.size - 1)
                frames = reader.get_frames(np.unique(idx))
            finally:
                reader.close()
            h, w = frames.shape[1:3]
            out.append(list(resize_frames(frames, height, max(1, round(w * height / h)))))
        except VideoError as exc:
            out.append(exc.reason)
        except Exception as exc:  # noqa: BLE001 - one unreadable hit must not lose the page
            out.append(f"{type(exc).__name__}: {exc}")
    return out


def jpeg_bytes(rgb: np.ndarray, quality: int = 5) -> bytes:
    """``h x w x 3`` uint8 -> JPEG bytes with PyAV's MJPEG encoder (``quality``: qscale, 2..31)."""
    import av

    rgb = np.ascontiguousarray(rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2], dtype=np.uint8)
    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height = rgb.shape[1], rgb.shape[0]
    ctx.pix_fmt = "yuvj420p"
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"qscale": str(quality)}
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj420p")
    packets = list(ctx.encode(frame)) + list(ctx.encode(None))
    return b"".join(bytes(p) for p in packets)


def image_uri(rgb: np.ndarray) -> str:
    """A ``data:`` URI of the frame (JPEG, or PNG when JPEG encoding is unavailable)."""
    try:
        data, mime = jpeg_bytes(rgb), "image/jpeg"
        if not data.startswith(b"\xff\xd8"):
            raise ValueError("not a JPEG")
    except Exception:  # noqa: BLE001 - any PyAV/FFmpeg trouble: PNG needs nothing
        data, mime = encode_png(rgb), "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } .hit { margin: 1em 0; padding: .6em; border: 1px solid #ddd; border-radius: 6px; }
.meta { font-size: .9em; margin-bottom: .4em; } .strip img { height: %dpx; margin-right: 3px; }
.score { font-weight: bold; } .err { color: #a00; font-size: .9em; } code { word-break: break-all; }
video { max-height: 180px; max-width: 100%%; margin: .3em 0; background: #000; }
table.why { border-collapse: collapse; font-size: .85em; margin-top: .4em; }
table.why td, table.why th { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
.about { font-size: .9em; color: #444; max-width: 60em; }
""" % THUMB_HEIGHT

SCORE_HELP = (
    "Scores are cosine similarities of L2-normalised clip embeddings: from -1 to 1, where 1 means the "
    "encoder sees the same content (a re-encoded copy scores about 0.99) and unrelated videos score lower. "
    "A video's score averages, over the query's clips, each query clip's best cosine among the video's clips "
    "(Chamfer similarity); a moment's score is the cosine of that one clip. Scores compare results of one "
    "index and encoder; they are not probabilities."
)


def media_uri(path: str, start: float, end: float) -> str | None:
    """``file:`` URI of a local file with a ``#t=START,END`` media fragment; None when the
    path is not an existing local file (nothing to play)."""
    p = Path(path)
    if not p.is_file():
        return None
    return f"{p.resolve().as_uri()}#t={max(0.0, start):.2f},{max(start, end):.2f}"


def player_html(path: str, start: float, end: float) -> str:
    """A ``<video>`` element playing ``[start, end]`` of ``path``, or '' for a non-local file."""
    from vcl_infer.index.catalog import printable_path  # a non-UTF-8 name shows as \\xff, not a crash

    try:
        uri = media_uri(path, start, end)
    except (UnicodeError, ValueError):  # a name the URI cannot carry: no player, the rest stands
        uri = None
    if uri is None:
        return ""
    shown = printable_path(path)
    return (f'<div><video controls preload="metadata" src="{html.escape(uri, quote=True)}" '
            f'title="{html.escape(f"{shown} {start:.2f}-{end:.2f} s", quote=True)}"></video></div>')


def why_html(matches) -> str:
    """A table: each query clip, the clip of the result it matched, and their cosine."""
    if not matches:
        return ""
    rows = "".join(
        f"<tr><td>{m.query_start:.2f}&ndash;{m.query_end:.2f} s</td><td>{m.start:.2f}&ndash;{m.end:.2f} s</td>"
        f"<td>{m.score:.4f}</td></tr>" for m in matches)
    return ('<table class="why"><tr><th>query clip</th><th>matched clip of this video</th><th>cosine</th></tr>'
            f"{rows}</table>")


def _strip_html(frames: list[np.ndarray] | str) -> str:
    if isinstance(frames, str):
        return f'<div class="err">no thumbnails: {html.escape(frames)}</div>'
    return '<div class="strip">' + "".join(f'<img alt="frame" src="{image_uri(f)}">' for f in frames) + "</div>"


def write_html(result, out_html: str | os.PathLike, *, timeout_s: float = 120.0) -> Path:
    """Write the results page of a :class:`vcl_infer.search.query.SearchResult` to ``out_html``.

    The query strip spans the query's range (or its clips' span); each hit's strip spans
    its matched time range.
    """
    from vcl_infer.search.query import parse_query
    from vcl_infer.video.isolated import run_isolated

    query = parse_query(result.query)
    q_range: tuple[float, float]
    if query.start is not None and query.end is not None:  # parse_query sets both or neither
        q_range = (query.start, query.end)
    elif result.query_windows:
        q_range = (result.query_windows[0][0], result.query_windows[-1][1])
    else:
        q_range = (0.0, 1e9)
    jobs = [(query.path, *q_range)] + [(h.video, h.start, h.end) for h in result.results]
    try:
        strips = run_isolated(strip_frames, (jobs,), query.path, timeout_s)
    except VideoError as exc:
        strips = [exc.reason] * len(jobs)
    kind = "moments" if result.moments else "videos"
    parts = [
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">",
        f"<title>vcl-search: {html.escape(result.query)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Query <code>{html.escape(result.query)}</code></h1>",
        f'<div class="hit"><div class="meta">query frames, {q_range[0]:.2f}&ndash;{min(q_range[1], 1e8):.2f} s</div>',
        _strip_html(strips[0]), player_html(query.path, q_range[0], min(q_range[1], 1e8)), "</div>",
        f"<h2>{len(result.results)} most similar {kind}</h2>",
        f'<p class="about">{html.escape(SCORE_HELP)}</p>',
    ]
    from vcl_infer.index.catalog import printable_path  # a non-UTF-8 name shows as \\xff, not a crash

    for hit, strip in zip(result.results, strips[1:]):
        parts += [
            '<div class="hit"><div class="meta">',
            f'#{hit.rank} <span class="score">{hit.score:.4f}</span> ',
            f"<code>{html.escape(printable_path(hit.video))}</code> {hit.start:.2f}&ndash;{hit.end:.2f} s</div>",
            _strip_html(strip), player_html(hit.video, hit.start, hit.end),
            why_html(getattr(hit, "matches", ())), "</div>",
        ]
    parts.append("</body></html>\n")
    out = Path(out_html)
    if out.parent and not out.parent.is_dir():
        raise VclError(f"cannot write {out}: folder {out.parent} does not exist")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(parts), encoding="utf-8")
    os.replace(tmp, out)
    return out
