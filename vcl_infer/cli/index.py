"""``vcl-index``: build and maintain a video index (FAISS vectors + SQLite catalog)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import click

from vcl_infer import __version__

if TYPE_CHECKING:  # the build module loads numpy and more; only its type is needed here
    from vcl_infer.index.build import BuildReport

_INDEX_HELP = "Index folder."
_MODEL_HELP = ("Encoder bundle (.onnx or its folder), or a published encoder's name (e.g. r2plus1d_18-k400; "
               "`vcl-export --list-pretrained`), downloaded, verified and converted once into ~/.cache/vcl; "
               "default: the bundled default encoder.")


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
    from vcl_infer.index.catalog import printable_path

    for failure in report.failed:
        click.echo(f"failed  {printable_path(failure.path)}: [{failure.kind}] {failure.reason}", err=True)
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
              help="flat, ivf, ivf-pq, hnsw (sized automatically) or a FAISS factory string (IVF1024,Flat, "
                   "HNSW32, ...); chosen by size and memory when not given.")
@click.option("--recall", "target_recall", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Target recall@10 vs exact search that nprobe/efSearch are tuned to (default 0.95).")
@click.option("--strict", is_flag=True, help="Exit non-zero if any file failed.")
@click.option("--json", "as_json", is_flag=True, help="Print the build report as JSON.")
@click.option("--commit-every", type=click.IntRange(min=1), default=None, hidden=True,
              help="Videos per commit (default 32).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: decode workers on this machine. ray: Ray Data decode tasks and encoder actors "
                   "(one per GPU) writing Parquet shards, ingested here (needs vcl[distributed]).")
@click.option("--address", default=None, help="--engine ray: the Ray cluster (HOST:PORT or ray://...); "
                                              "default: a local Ray instance on loopback.")
@click.option("--shards", "shards_dir", default=None, help="--engine ray: shard folder (default INDEX/shards).")
@click.option("--no-ingest", is_flag=True, help="--engine ray: only write shards (ingest later with `vcl-index ingest`).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="--engine ray: files per batch and shard (default 8).")
def build(videos_dir: str, index_dir: str, model: str | None, clip_every: float | None, min_clips: int | None,
          max_clips: int | None, clips: int | None, workers: int | None,
          index_type: str | None, target_recall: float | None, strict: bool, as_json: bool,
          commit_every: int | None, engine: str, address: str | None, shards_dir: str | None,
          no_ingest: bool, batch_size: int | None) -> None:
    """Index every video under VIDEOS_DIR (incremental on re-runs).

    Each video is cut into clips every --clip-every seconds (between --min-clips and
    --max-clips of them), each clip gets a vector, and the video gets their mean. The rule
    is recorded in INDEX/sampling.json and kept by later builds and `add`. Unchanged files
    are skipped, changed ones re-embedded, vanished ones removed. Files that cannot be read
    are listed with their reason and the build goes on; the report is written to
    INDEX/build_report.json.
    """
    from vcl_infer.index.build import DEFAULT_COMMIT_EVERY, REPORT_NAME, build_index

    if engine == "local" and (address or shards_dir or no_ingest or batch_size):
        raise click.ClickException("--address, --shards, --no-ingest and --batch-size need --engine ray")
    report: BuildReport  # or its RayBuildReport subclass
    with _errors(model):
        if engine == "ray":
            from vcl_infer.distributed.pipeline import DEFAULT_BATCH, build_with_ray

            report = build_with_ray(videos_dir, index_dir, address=address, model=model, clips=clips,
                                    clip_every=clip_every, min_clips=min_clips, max_clips=max_clips,
                                    shards_dir=shards_dir, ingest=not no_ingest, index_type=index_type,
                                    target_recall=target_recall, batch_size=batch_size or DEFAULT_BATCH,
                                    progress=not as_json)
        else:
            report = build_index(videos_dir, index_dir, model=model, clips=clips, clip_every=clip_every,
                                 min_clips=min_clips, max_clips=max_clips, workers=workers,
                                 index_type=index_type, progress=not as_json,
                                 commit_every=commit_every or DEFAULT_COMMIT_EVERY,
                                 target_recall=target_recall)
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
    from vcl_infer.index.build import add_files

    with _errors(model):
        report = add_files(index_dir, files, model=model, clips=clips, clip_every=clip_every, min_clips=min_clips,
                           max_clips=max_clips, workers=workers, progress=not as_json)
    _print_report(report, as_json)
    if strict and report.failed:
        raise click.ClickException(f"{len(report.failed)} file(s) could not be indexed (--strict)")


@main.command()
@click.argument("shards", nargs=-1, required=True)
@click.option("--index", "index_dir", default="./vcl-index", show_default=True, help=_INDEX_HELP)
@click.option("--index-type", default=None, help="For a new index: as in `build` (chosen by size when not given).")
@click.option("--recall", "target_recall", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="For a new index: target recall@10 vs exact search (default 0.95).")
@click.option("--json", "as_json", is_flag=True, help="Print the ingest report as JSON.")
def ingest(shards: tuple[str, ...], index_dir: str, index_type: str | None, target_recall: float | None,
           as_json: bool) -> None:
    """Put vector shards (files or folders written by `build --engine ray`) into the index.

    The single writer: atomic commits (one per shard), idempotent (files already indexed with
    the same size and mtime are skipped), a damaged shard is reported and writes nothing.
    """
    from vcl_infer.distributed.ingest import ingest_shards

    with _errors():
        report = ingest_shards(list(shards), index_dir, index_type=index_type, target_recall=target_recall,
                               progress=not as_json)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for failure in report.failed:
            click.echo(f"failed  {failure.path}: [{failure.kind}] {failure.reason}", err=True)
        click.echo(report.summary())
    if report.bad_shards:
        for problem in report.bad_shards:
            click.echo(f"bad shard: {problem}", err=True)
        raise click.ClickException(f"{len(report.bad_shards)} shard(s) could not be ingested (see above)")


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--index", "index_dir", default="./vcl-index", show_default=True, help=_INDEX_HELP)
@click.option("--missing-ok", is_flag=True, help="Exit 0 even when none of FILES was in the index.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (files not removed under 'failed').")
def remove(files: tuple[str, ...], index_dir: str, missing_ok: bool, as_json: bool) -> None:
    """Remove FILES from the index (as the build recorded them: absolute paths, or as given).

    Each file that is not removed is named with the reason: not in the index, in it under
    another spelling of the path (which is shown), or not on disk either.

    Exit status: 0 when at least one of FILES was removed (or --missing-ok), 1 when none was.
    """
    from vcl_infer.index.build import remove_files

    with _errors():
        report = remove_files(index_dir, files)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for failure in report.failed:
            click.echo(f"not removed  {failure.path}: {failure.reason}", err=True)
        click.echo(f"removed {report.removed} of {len(files)} file(s)")
    if report.removed == 0 and not missing_ok:
        raise click.ClickException("nothing was removed: none of the files is in the index "
                                   "(see above; --missing-ok to accept that)")


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
    """Check the catalog (SQLite integrity, a CRC-32 per stored vector) and the FAISS files against
    the catalog's counts and checksums. Exits 1 with each problem and its fix."""
    index_dir = where or index_dir
    with _errors():
        problems = list(_open(index_dir).verify())
    if problems:
        for p in problems:
            click.echo(f"problem: {p}", err=True)
        raise click.ClickException(f"{len(problems)} problem(s); fix with `vcl-index repair --index {index_dir}`")
    click.echo("ok: the catalog is sound, every stored vector matches its checksum, the FAISS files match the catalog")


@main.command()
@_WHERE
@click.option("--index", "index_dir", default="./vcl-index", show_default=True, help=_INDEX_HELP)
def repair(where: str | None, index_dir: str) -> None:
    """Repair the index (INDEX_DIR or --index); it never leaves it worse than it was.

    First the catalog is checked (PRAGMA integrity_check): a damaged one is replaced by a
    recovered copy only when every row could be read (the counts recorded at the last commit
    and the FAISS files' ids prove it), else nothing is touched and the message says to
    rebuild. Stored vectors failing their checksum are restored exactly from the FAISS files
    where possible, else their videos are removed so the next build embeds them again. Then
    both FAISS files are rebuilt from the catalog and their search parameters re-tuned.
    """
    index_dir = where or index_dir
    from vcl_infer.index import VideoIndex
    from vcl_infer.index.catalog import printable_path

    with _errors():
        index = VideoIndex.open(index_dir, writable=True, repair=True)  # checks the catalog first
        data = dict(index.info())
        done = dict(index.repair_report)
        index.close()
    if done.get("catalog") == "recovered":
        click.echo(f"catalog: damaged; every row recovered into a new catalog (the damaged one kept as "
                   f"{done.get('damaged_copy')})")
    if done.get("restored"):
        click.echo(f"vectors: {done['restored']} damaged stored vector(s) restored exactly from the FAISS files")
    for path in done.get("removed", []):
        click.echo(f"removed  {printable_path(path)}: its stored vectors were damaged; re-run the build "
                   "to embed it again", err=True)
    click.echo(f"repaired: {data.get('videos_ok', 0)} videos, {data.get('clips', 0)} clips re-indexed from the catalog")


@main.command()
@click.argument("sources", nargs=-1, required=True, metavar="INDEX_DIR...")
@click.option("--into", "into", required=True, type=click.Path(file_okay=False),
              help="New (or empty) folder for the merged index.")
@click.option("--json", "as_json", is_flag=True, help="Print the merge report as JSON.")
def merge(sources: tuple[str, ...], into: str, as_json: bool) -> None:
    """Merge indexes built with the same encoder into a new one (INTO).

    Each source is checked (FAISS checksums, vector checksums) and its vectors copied bit for
    bit; the encoder fingerprint and preprocessing spec must match. INTO appears only when
    complete. A file held by several sources is taken from the first one listed.
    """
    from tqdm import tqdm

    from vcl_infer.index.merge import merge_indexes

    if len(sources) < 2:
        raise click.ClickException("give at least two indexes to merge")
    bar = tqdm(unit="video", desc="merging", disable=as_json, dynamic_ncols=True)
    with _errors():
        report = merge_indexes(sources, into, progress=bar.update)
    bar.close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    click.echo(f"merged {len(sources)} indexes into {into}: {report.videos} videos, {report.clips} clips, "
               f"{report.failures} failure records; {len(report.duplicates)} file(s) held twice, taken once")
