"""``vcl-index``: build and maintain a video index (FAISS vectors + SQLite catalog)."""

from __future__ import annotations

import click

from vcl_infer import __version__
from vcl_infer.cli import NOT_YET


def _not_yet(command: str) -> None:
    raise click.ClickException(NOT_YET.format(command=command, version=__version__))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vcl-index")
def main() -> None:
    """Build and maintain a video index: one vector per clip (moment search) and one per
    video, in FAISS, with a SQLite catalog of files, clips and failures.

    NOT IMPLEMENTED YET in this version: every subcommand below says so and exits 1.
    """


@main.command()
@click.argument("videos_dir", type=click.Path(file_okay=False))
@click.option("--index", "index_dir", default="./vcl-index", show_default=True, help="Index folder.")
@click.option("--model", default=None, help="Encoder bundle (.onnx); default: the bundled default encoder.")
@click.option("--clips", type=int, default=None, help="Clips embedded per video.")
@click.option("--workers", type=int, default=None, help="Decode worker processes.")
@click.option("--index-type", default=None, help="FAISS factory string (Flat, IVF1024,Flat, HNSW32, ...); chosen by size when not given.")
@click.option("--strict", is_flag=True, help="Exit non-zero if any file failed.")
def build(**_: object) -> None:
    """Index every video under VIDEOS_DIR (incremental on re-runs)."""
    _not_yet("vcl-index build")


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--index", "index_dir", default="./vcl-index", show_default=True)
def add(**_: object) -> None:
    """Add FILES to the index."""
    _not_yet("vcl-index add")


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--index", "index_dir", default="./vcl-index", show_default=True)
def remove(**_: object) -> None:
    """Remove FILES from the index."""
    _not_yet("vcl-index remove")


@main.command()
@click.option("--index", "index_dir", default="./vcl-index", show_default=True)
def info(**_: object) -> None:
    """Videos, clips, failures, encoder, index type and size on disk."""
    _not_yet("vcl-index info")


@main.command()
@click.option("--index", "index_dir", default="./vcl-index", show_default=True)
def verify(**_: object) -> None:
    """Check the FAISS files against the catalog's counts and checksums."""
    _not_yet("vcl-index verify")
