"""``vcl-train``: self-supervised pretraining of video encoders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # --help must not load torch
    from training.config import TrainConfig
    from training.loop import TrainResult


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--method", default=None, help="Training method (see --list-methods).")
@click.option("--data", default=None, type=click.Path(), help="Video folder or UCF101/HMDB51 split layout.")
@click.option("--arch", default=None, help="Backbone name (see --list-backbones) [default: r3d_small].")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Run folder (checkpoints, config.yaml, metrics.csv).")
@click.option("--config", "config_file", default=None, type=click.Path(exists=True, dir_okay=False), help="YAML or TOML config; flags override it.")
@click.option("--epochs", type=int, default=None, help="Epochs [default: 100].")
@click.option("--batch-size", type=int, default=None, help="Videos per step per process [default: 8].")
@click.option("--lr", type=float, default=None, help="Learning rate [default: the method's paper value].")
@click.option("--optimizer", type=click.Choice(["sgd", "adam", "adamw"]), default=None, help="Optimiser [default: the method's].")
@click.option("--workers", type=int, default=None, help="Decoding worker processes [default: 2].")
@click.option("--max-steps", type=int, default=None, help="Stop after N optimiser steps in total (resumable).")
@click.option("--save-every", type=int, default=None, help="Also checkpoint every N steps.")
@click.option("--frames", type=int, default=None, help="Frames per clip [default: the backbone's spec].")
@click.option("--frame-step", type=int, default=None, help="Take every N-th frame.")
@click.option("--crop", type=int, default=None, help="Crop side, pixels.")
@click.option("--resize", type=int, default=None, help="Short side before cropping (evaluation/export).")
@click.option("--seed", type=int, default=None, help="Seed of everything random [default: 0].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Compute device [default: auto].")
@click.option("--init", "init", default=None, type=click.Path(exists=True, dir_okay=False), help="Start the backbone from this checkpoint (vcl/torchvision/TCLR/FAME); --arch defaults to its architecture.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.pt.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config field, or a method hyperparameter (temperature=0.2, queue_size=4096, ...). Repeatable.")
@click.option("--dense-weight", type=float, default=None, metavar="W", help="Add DenseCL's dense contrast over feature-map locations with weight W to a MoCo-based method (loss + W * dense loss; see --list-methods). Same as --set dense_weight=W.")
@click.option("--eval-data", default=None, type=click.Path(exists=True), help="Labelled split layout to monitor the run on: every --eval-every steps the frozen backbone's kNN top-1 (train split as memory, test split as queries) goes to metrics.csv (knn_top1) and the progress bar.")
@click.option("--eval-every", type=int, default=None, help="Steps between two kNN evaluations of --eval-data [default: 50].")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--list-methods", is_flag=True, help="List the training methods and exit.")
@click.option("--list-backbones", is_flag=True, help="List the backbones and exit.")
def main(method, data, arch, out, config_file, epochs, batch_size, lr, optimizer, workers, max_steps, save_every,
         frames, frame_step, crop, resize, seed, device, init, resume, sets, dense_weight, eval_data, eval_every,
         no_progress, list_methods,
         list_backbones) -> None:
    """Pretrain a video encoder with a contrastive method.

    \b
    Example:
      vcl-train --method tclr --data UCF101/ --arch r3d_18_tclr --out runs/tclr
      vcl-export runs/tclr/checkpoint.pt --out tclr.onnx
      vcl-train --method supervised --init runs/tclr/checkpoint.pt --data UCF101/ --out runs/ft

    A run stops cleanly on SIGTERM / Ctrl-C (checkpoint saved); --resume continues it to
    exactly the weights an uninterrupted run would reach. Under torchrun it trains with DDP.
    """
    if _listed(list_backbones, list_methods):
        return
    import logging

    from training.loop import TrainError, train

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    flags: dict[str, Any] = dict(
        method=method, data=data, arch=arch, out=out, epochs=epochs, batch_size=batch_size, lr=lr,
        optimizer=optimizer, workers=workers, max_steps=max_steps, save_every=save_every, frames=frames,
        frame_step=frame_step, crop=crop, resize=resize, seed=seed, device=device, init=init,
        eval_data=eval_data, eval_every=eval_every,
    )
    config = _config(flags, sets, dense_weight, resume=resume, config_file=config_file)
    try:
        result = train(config, resume=resume, progress=not no_progress)
    except TrainError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        is_main = _is_main()
        from training.distributed import cleanup

        cleanup()
    if is_main:
        _report(result, config.out)


def _listed(list_backbones: bool, list_methods: bool) -> bool:
    """Print the backbones (``--list-backbones``) or the methods (``--list-methods``)."""
    if list_backbones:
        from training.models import list_backbones as backbones

        for name, description in backbones().items():
            click.echo(f"{name:16s} {description}")
        return True
    if list_methods:
        from training.methods import list_methods as methods

        for name, description in methods().items():
            click.echo(f"{name:13s} {description}")
        return True
    return False


def _config(flags: dict[str, Any], sets: tuple[str, ...], dense_weight: float | None, *, resume: bool,
            config_file: str | None) -> TrainConfig:
    """The run's config: the flags over ``--config`` (or over the saved run with ``--resume``), plus ``--set``.

    ``--set KEY=VALUE`` goes to the config when KEY is a config field, else to the method's
    hyperparameters (checked here, so a typo fails before any data is read).
    """
    import dataclasses

    from training.config import TrainConfig, parse_set

    try:
        extra = parse_set(sets)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config_sets = {k: v for k, v in extra.items() if k in fields}
    method_sets = {k: v for k, v in extra.items() if k not in fields}
    method, data, out = flags["method"], flags["data"], flags["out"]  # as given, before --set
    if flags["init"] and not flags["arch"] and not resume:
        flags["arch"] = _arch_of(flags["init"])
    flags.update(config_sets)
    if dense_weight is not None:
        method_sets["dense_weight"] = dense_weight
    if method_sets:
        flags["method_args"] = method_sets
    return _checked_config(flags, resume=resume, config_file=config_file, method=method, data=data, out=out)


def _checked_config(flags: dict[str, Any], *, resume: bool, config_file: str | None, method: str | None,
                    data: str | None, out: str | None) -> TrainConfig:
    """The config of :func:`_config`'s merged flags, with the method's hyperparameters validated."""
    from training.config import load_config
    from training.methods import method_hparams

    try:
        if resume:
            config = _saved_config(out, config_file).replace(**flags)
        else:
            if not method and not config_file:
                raise click.ClickException("give --method (see --list-methods) or --config")
            if not data and not config_file:
                raise click.ClickException("give --data: a folder of videos or a UCF101/HMDB51 layout")
            config = load_config(config_file, **flags)
        _check_dense(config.method, config.method_args)
        method_hparams(config.method, **config.method_args)
    except (KeyError, ValueError) as exc:
        raise click.ClickException(str(exc).strip("\"'")) from None
    return config


def _saved_config(out: str | None, config_file: str | None) -> TrainConfig:
    """``--resume``: the config saved in the run's checkpoint (the run is --out, or --config's out)."""
    from pathlib import Path

    from training.checkpoint import load_checkpoint
    from training.config import TrainConfig, load_config
    from training.loop import CHECKPOINT_NAME

    run = Path(out) if out else None
    if run is None and config_file:
        run = Path(load_config(config_file).out)
    if run is None or not (run / CHECKPOINT_NAME).is_file():
        raise click.ClickException(f"--resume: no {CHECKPOINT_NAME} in {run or '(give --out)'}")
    return TrainConfig.from_dict(load_checkpoint(run / CHECKPOINT_NAME)["config"])


def _report(result: TrainResult, out: str) -> None:
    """How the run ended, where its checkpoint is and how to continue it (on stderr)."""
    where = result.checkpoint or "(none)"
    if result.stopped_by in ("SIGTERM", "SIGINT", "signal"):
        click.echo(f"stopped by {result.stopped_by} at step {result.global_step}; checkpoint saved to {where}; "
                   f"continue with: vcl-train --out {out} --resume", err=True)
    elif result.stopped_by == "max_steps":
        click.echo(f"stopped at --max-steps {result.global_step}; checkpoint {where} (--resume continues)", err=True)
    else:
        click.echo(f"done: {result.epoch} epoch(s), {result.global_step} steps; checkpoint {where}", err=True)
    if result.skipped:
        click.echo(f"skipped {result.skipped} unreadable video(s) (see the warnings above)", err=True)


def _arch_of(path: str) -> str:
    from training.checkpoint_import import import_checkpoint

    try:
        return import_checkpoint(path).arch
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"--init {path}: {exc}") from None


def _is_main() -> bool:
    from training.distributed import get_rank

    return get_rank() == 0


if __name__ == "__main__":
    main()


def _check_dense(method: str, method_args: dict) -> None:
    """The dense term exists on MoCo-based methods only: say which, instead of "no hyperparameter"."""
    from training.methods import list_methods, method_class
    from training.methods.moco import MoCo

    if "dense_weight" in method_args and not issubclass(method_class(method), MoCo):
        moco_based = sorted(name for name in list_methods() if issubclass(method_class(name), MoCo))
        raise click.ClickException(
            f"--dense-weight needs a MoCo-based method ({', '.join(moco_based)}); {method!r} is not one"
        )
