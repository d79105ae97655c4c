"""``vcl-search``: nearest-neighbour video search over a vcl index."""

from __future__ import annotations

import click

from vcl_infer import __version__
from vcl_infer.cli import NOT_YET


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vcl-search")
@click.argument("query")
@click.option("--index", "index_dir", default="./vcl-index", show_default=True, help="Index folder.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Results to return.")
@click.option("--moments", is_flag=True, help="Rank individual clips (moments) instead of whole videos.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--html", type=click.Path(dir_okay=False), default=None, help="Write a results page with thumbnails.")
def main(**_: object) -> None:
    """Find the videos most similar to QUERY (a video file, or FILE@START-END in seconds).

    NOT IMPLEMENTED YET in this version: it says so and exits 1.
    """
    raise click.ClickException(NOT_YET.format(command="vcl-search", version=__version__))
