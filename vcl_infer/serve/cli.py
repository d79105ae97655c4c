"""``vcl-serve``: the search service over one index (FastAPI on uvicorn)."""

from __future__ import annotations

import click

from vcl_infer import __version__


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vcl-serve")
@click.option("--index", "index_dir", required=True, help="Index folder to serve (read-only).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; 0.0.0.0 exposes it to the network (use --token-file then).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="TCP port.")
@click.option("--root", "roots", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Folder whose files may be queried by path (repeatable); without it only uploads are searched.")
@click.option("--token-file", default=None, type=click.Path(dir_okay=False),
              help="File holding a bearer token every request but /healthz must send.")
@click.option("--model", default=None, help="Encoder bundle (default: the one the index was built with).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Queries decoded and embedded at once (each has its own decode process).")
@click.option("--max-queue", type=click.IntRange(min=0), default=32, show_default=True,
              help="Requests that may wait for a worker; beyond that: 503.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0.001), default=200.0, show_default=True,
              help="Largest upload (MiB).")
@click.option("--decode-timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Hard decode time limit per query (s).")
@click.option("--max-range", type=click.FloatRange(min=0.1), default=600.0, show_default=True,
              help="Longest start-end range a query may ask for (s).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True, help="uvicorn's log level.")
def main(index_dir: str, host: str, port: int, roots: tuple[str, ...], token_file: str | None, model: str | None,
         workers: int, max_queue: int, max_upload_mb: float, decode_timeout: float, max_range: float,
         log_level: str) -> None:
    """Serve INDEX over HTTP: POST /search (upload a video, or a path under --root; optional
    start/end, k, level=video|clip), GET /videos/{id}, GET /videos/{id}/thumbnail,
    GET /info, GET /healthz, docs at /docs. New generations written by a build are served
    without a restart."""
    from pathlib import Path

    from vcl_infer._optional import require
    from vcl_infer.errors import VclError
    from vcl_infer.serve.config import ServeConfig, read_token_file

    try:
        require("fastapi")
        uvicorn = require("uvicorn")
        require("multipart")
        from vcl_infer.serve.app import create_app

        config = ServeConfig(index_dir=Path(index_dir), model=model, roots=tuple(Path(r) for r in roots),
                             token=read_token_file(token_file) if token_file else None, workers=workers,
                             max_queue=max_queue, max_upload_bytes=int(max_upload_mb * 2**20),
                             decode_timeout_s=decode_timeout, max_range_s=max_range)
        app = create_app(config)
    except VclError as exc:
        raise click.ClickException(str(exc)) from exc
    if host not in ("127.0.0.1", "localhost", "::1") and config.token is None:
        click.echo(f"warning: serving {host} without --token-file: anyone who can reach it may search", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)


if __name__ == "__main__":
    main()
