"""``vcl-search``: nearest-neighbour video search over a vcl index."""

from __future__ import annotations

import json

import click

from vcl_infer import __version__


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vcl-search")
@click.argument("query")
@click.option("--index", "index_dir", default="./vcl-index", show_default=True, help="Index folder.")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Results to return.")
@click.option("--moments", is_flag=True, help="Rank individual clips (moments) instead of whole videos.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--html", type=click.Path(dir_okay=False), default=None, help="Write a results page with thumbnails.")
@click.option("--model", default=None,
              help="Encoder bundle or published encoder name; must be the one the index was built with "
                   "(default: found automatically).")
def main(query: str, index_dir: str, k: int, moments: bool, as_json: bool, html: str | None,
         model: str | None) -> None:
    """Find the videos most similar to QUERY (a video file, or FILE@START-END in seconds).

    Each result is a video, its cosine similarity, and its best-matching time range; with
    --moments, individual clips are ranked instead.
    """
    from vcl_infer.errors import VclError
    from vcl_infer.search.query import format_table, search_index

    try:
        result = search_index(index_dir, query, k=k, moments=moments, model=model)
        if html:
            from vcl_infer.search.html_report import write_html

            write_html(result, html)
    except VclError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        click.echo(format_table(result))
        if html:
            click.echo(f"page: {html}")
