"""``vcl-index``: build and maintain a video index (FAISS vectors + SQLite catalog)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Iterator

import click

from vcl_infer import __version__

_INDEX_HELP = "Index folder."
_MODEL_HELP = "Encoder bundle (.onnx); default: the bundled default encoder."


def _sampling_options(f):
    """``--clip-every/--min-clips/--max-clips/--clips``: how videos are cut into clips."""
    f = click.option("--clips", type=click.IntRange(min=1), default=None,
                     help="Instead of a stride: exactly N evenly spaced clips per video, however long.")(f)
    f = click.option("--max-clips", type=click.IntRange(min=1), default=None,
                     help="Cap per video (default 3600); longer videos get a wider stride.")(f)
    f = click.option("--min-clips", type=click.IntRange(min=1), default=None,
                     help="Floor for short videos (default 8, evenly spaced).")(f)
    f = click.option("--clip-every", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
                     help="Start a clip every SECONDS (default 1): moment search is precise to about one stride.")(f)
    return f


@contextmanager
def _errors(model: str | None = None) -> Iterator[None]:
    """VclError -> ClickException with the fix; a missing default encoder names --model."""
    from vcl_infer.errors import VclError

    try:
        yield
    except VclError as exc:
        message = str(exc)
        if model is None and "no default encoder" in message:
            message += " (pass it with --model BUNDLE.onnx)"
        raise click.ClickException(message) from exc


def _print_report(report, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    for failure in report.failed:
        click.echo(f"failed  {failure.path}: [{failure.kind}] {failure.reason}", err=True)
    click.echo(report.summary())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vcl-index")
def main() -> None:
    """Build and maintain a video index: one vector per clip (moment search) and one per
    video, in FAISS, with a SQLite catalog of files, clips and failures."""


@main.command()
@click.argument("videos_dir", type=click.Path(file_okay=False))
@click.option("--index", "index_dir", default="./vcl-index", show_default=True, help=_INDEX_HELP)
@click.option("--model", default=None, help=_MODEL_HELP)
@_sampling_options
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Decode worker processes (default: one per core, at most 8).")
@click.option("--index-type", default=None,
              help="FAISS factory string (Flat, IVF1024,Flat, HNSW32, ...); chosen by size when not given.")
@click.option("--strict", is_flag=True, help="Exit non-zero if any file failed.")
@click.option("--json", "as_json", is_flag=True, help="Print the build report as JSON.")
@click.option("--commit-every", type=click.IntRange(min=1), default=None, hidden=True,
              help="Videos per commit (default 32).")
def build(videos_dir: str, index_dir: str, model: str | None, clip_every: float | None, min_clips: int | None,
          max_clips: int | None, clips: int | None, workers: int | None,
          index_type: str | None, strict: bool, as_json: bool, commit_every: int | None) -> None:
    """Index every video under VIDEOS_DIR (incremental on re-runs).

    Each video is cut into clips every --clip-every seconds (between --min-clips and
    --max-clips of them), each clip gets a vector, and the video gets their mean. The rule
    is recorded in INDEX/sampling.json and kept by later builds and `add`. Unchanged files
    are skipped, changed ones re-embedded, vanished ones removed. Files that cannot be read
    are listed with their reason and the build goes on; the report is written to
    INDEX/build_report.json.
    """
    from vcl_infer.build import DEFAULT_COMMIT_EVERY, REPORT_NAME, build_index

    with _errors(model):
        report = build_index(videos_dir, index_dir, model=model, clips=clips, clip_every=clip_every,
                             min_clips=min_clips, max_clips=max_clips, workers=workers,
                             index_type=index_type, progress=not as_json,
                             commit_every=commit_every or DEFAULT_COMMIT_EVERY)
    _print_report(report, as_json)
    if not as_json:
        click.echo(f"report: {index_dir.rstrip('/')}/{REPORT_NAME}")
    if strict and report.failed:
        raise click.ClickException(f"{len(report.failed)} file(s) could not be indexed (--strict)")


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--index", "index_dir", default="./vcl-index", show_default=True, help=_INDEX_HELP)
@click.option("--model", default=None, help=_MODEL_HELP)
@_sampling_options
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Decode worker processes.")
@click.option("--strict", is_flag=True, help="Exit non-zero if any file failed.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def add(files: tuple[str, ...], index_dir: str, model: str | None, clip_every: float | None, min_clips: int | None,
        max_clips: int | None, clips: int | None, workers: int | None, strict: bool, as_json: bool) -> None:
    """Add FILES to the index (files already in it are re-embedded).

    Clips are cut by the rule the index was built with; sampling options may only repeat it.
    """
    from vcl_infer.build import add_files

    with _errors(model):
        report = add_files(index_dir, files, model=model, clips=clips, clip_every=clip_every, min_clips=min_clips,
                           max_clips=max_clips, workers=workers, progress=not as_json)
    _print_report(report, as_json)
    if strict and report.failed:
        raise click.ClickException(f"{len(report.failed)} file(s) could not be indexed (--strict)")


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--index", "index_dir", default="./vcl-index", show_default=True, help=_INDEX_HELP)
def remove(files: tuple[str, ...], index_dir: str) -> None:
    """Remove FILES from the index."""
    from vcl_infer.build import remove_files

    with _errors():
        report = remove_files(index_dir, files)
    click.echo(f"removed {report.removed} of {len(files)} file(s)")


def _open(index_dir: str):
    from vcl_infer.index import VideoIndex

    return VideoIndex.open(index_dir)


_WHERE = click.argument("where", required=False, metavar="[INDEX_DIR]")


@main.command()
@_WHERE
@click.option("--index", "index_dir", default="./vcl-index", show_default=True, help=_INDEX_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(where: str | None, index_dir: str, as_json: bool) -> None:
    """Videos, clips, failures, encoder, index type and size on disk."""
    index_dir = where or index_dir
    with _errors():
        index = _open(index_dir)
        data = dict(index.info())
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    for key, value in data.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value, default=str)
        click.echo(f"{key:>16}: {value}")


@main.command()
@_WHERE
@click.option("--index", "index_dir", default="./vcl-index", show_default=True, help=_INDEX_HELP)
def verify(where: str | None, index_dir: str) -> None:
    """Check the FAISS files against the catalog's counts and checksums."""
    index_dir = where or index_dir
    with _errors():
        problems = list(_open(index_dir).verify())
    if problems:
        for p in problems:
            click.echo(f"problem: {p}", err=True)
        raise click.ClickException(f"{len(problems)} problem(s); fix with `vcl-index repair --index {index_dir}`")
    click.echo("ok: the FAISS files match the catalog")


@main.command()
@_WHERE
@click.option("--index", "index_dir", default="./vcl-index", show_default=True, help=_INDEX_HELP)
def repair(where: str | None, index_dir: str) -> None:
    """Rebuild the FAISS files from the vectors stored in the catalog (INDEX_DIR or --index)."""
    index_dir = where or index_dir
    from vcl_infer.index import VideoIndex

    with _errors():
        index = VideoIndex.open(index_dir, writable=True, repair=True)  # rebuilds without reading them
        data = dict(index.info())
        index.close()
    click.echo(f"repaired: {data.get('videos_ok', 0)} videos, {data.get('clips', 0)} clips re-indexed from the catalog")
