"""``vcl-train``: self-supervised pretraining of video encoders."""

from __future__ import annotations

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--method", default=None, help="Training method (none implemented yet).")
@click.option("--data", default=None, type=click.Path(), help="Video folder or split layout.")
@click.option("--arch", default=None, help="Backbone name (see --list-backbones).")
@click.option("--out", default=None, type=click.Path(), help="Run folder.")
@click.option("--list-backbones", is_flag=True, help="List the backbones and exit.")
@click.option("--list-methods", is_flag=True, help="List the training methods and exit.")
def main(method, data, arch, out, list_backbones, list_methods) -> None:
    """Pretrain a video encoder with a contrastive method.

    NOT IMPLEMENTED YET in this version: the backbones exist (--list-backbones) and export
    works (vcl-export), but the losses, methods, data sets and training loop arrive with the
    training work (issue 3). Running a method says so and exits 1.
    """
    if list_backbones:
        from training.models import list_backbones as backbones

        for name, description in backbones().items():
            click.echo(f"{name:16s} {description}")
        return
    if list_methods:
        click.echo("no training methods are implemented yet (simclr, moco, tclr, fame arrive with issue 3)")
        return
    raise click.ClickException(
        "vcl-train is not implemented yet: no training methods exist in this version (issue 3). "
        "Use `vcl-train --list-backbones` to see the backbones, and `vcl-export --arch NAME` to export one untrained."
    )
