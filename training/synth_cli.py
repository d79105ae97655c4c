"""``vcl-synth``: write the synthetic motion-class data set (see :mod:`training.data.synthetic`),
optionally with a long-tailed train split (see :mod:`training.data.long_tail`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from training.data.long_tail import LongTailSplit
    from training.data.synthetic import SynthConfig


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--classes", type=int, default=6, show_default=True, help="Motion classes (first N of the list, max 10).")
@click.option("--videos-per-class", type=int, default=20, show_default=True)
@click.option("--frames", type=int, default=16, show_default=True, help="Frames per video (25 fps).")
@click.option("--size", type=int, default=64, show_default=True, help="Frame side in pixels (even).")
@click.option("--background-bias", type=float, default=0.0, show_default=True,
              help="Probability that a TRAIN video shows its class's own background (test: always random).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--test-fraction", type=float, default=0.3, show_default=True,
              help="Fraction of each class's groups held out for the test split.")
@click.option("--workers", type=int, default=0, help="Processes to render with; 0: one per core (up to 8) from 40 videos on.")
@click.option("--long-tail", "rho", type=float, default=None, metavar="RHO",
              help="Also write a long-tailed train split with imbalance ratio RHO (n_max / n_min) as a new "
                   "split number; the test list is copied unchanged.")
@click.option("--existing", is_flag=True,
              help="With --long-tail: OUT_DIR is an existing labelled data set (UCF101 split files, e.g. UCF101 "
                   "itself, or class folders); write only the long-tailed split, generate nothing.")
@click.option("--split", "source_split", type=int, default=1, show_default=True,
              help="With --long-tail: the split to subsample.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
def main(out_dir: str, classes: int, videos_per_class: int, frames: int, size: int, background_bias: float,
         seed: int, test_fraction: float, workers: int, rho: float | None, existing: bool, source_split: int,
         as_json: bool) -> None:
    """Write a synthetic action data set, whose class is the motion, to OUT_DIR (UCF101 layout).

    Train with `vcl-train` on OUT_DIR; splits are in OUT_DIR/splits, parameters in
    OUT_DIR/synth.json.

    \b
    Long-tailed splits (TSC / KCL):
      vcl-synth data/ --long-tail 10              generate, plus split 2 = long-tailed split 1
      vcl-synth UCF101/ --long-tail 10 --existing  only the long-tailed split (here split 4)
      vcl-train --method tsc --data data/ --set split=2 ...
    """
    import json
    from pathlib import Path

    from training.data.synthetic import SynthConfig

    if rho is not None and not rho >= 1:
        raise click.ClickException(f"--long-tail must be an imbalance ratio >= 1, got {rho}")
    if existing:
        if rho is None:
            raise click.ClickException("--existing only writes a long-tailed split: give --long-tail RHO")
        _echo_long_tail(_long_tail(out_dir, rho, source_split, seed), as_json, {"out_dir": out_dir})
        return
    try:
        config = SynthConfig(classes=classes, videos_per_class=videos_per_class, frames=frames, size=size,
                             background_bias=background_bias, seed=seed, test_fraction=test_fraction)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    _check_test_split(config)
    if (Path(out_dir) / "videos").exists() and any((Path(out_dir) / "videos").iterdir()):
        raise click.ClickException(f"{out_dir}/videos is not empty; pick a new OUT_DIR or delete it first")
    summary = _generate(out_dir, config, workers, as_json)
    if rho is not None:
        _echo_long_tail(_long_tail(out_dir, rho, source_split, seed), as_json, summary)
    elif as_json:
        click.echo(json.dumps(summary))


def _generate(out_dir: str, config: SynthConfig, workers: int, as_json: bool) -> dict[str, Any]:
    """Write the data set (``workers <= 0``: one process per core, up to 8, from 40 videos on); its summary."""
    import os
    import time

    from training.data.synthetic import generate

    start = time.perf_counter()
    total = config.classes * config.videos_per_class
    if workers <= 0:
        workers = min(8, os.cpu_count() or 1) if total >= 40 else 1
    meta = generate(out_dir, config, progress=not as_json and total >= 50, workers=workers)
    seconds = time.perf_counter() - start
    counts = {s: sum(v["split"] == s for v in meta["videos"]) for s in ("train", "test")}
    summary = {"out_dir": out_dir, "classes": meta["classes"], "codec": meta["codec"],
               "seconds": round(seconds, 3), **counts}
    if not as_json:
        click.echo(f"wrote {counts['train']} train + {counts['test']} test videos of {len(meta['classes'])} "
                   f"classes to {out_dir} ({meta['codec']}, {seconds:.1f} s)")
    return summary


def _check_test_split(config) -> None:
    """Refuse a set that asks for a test split but cannot have one (it used to write 0 test videos silently).

    Videos are cut ``clips_per_group`` per source group and a group never straddles train and
    test, so a class needs two groups, ``clips_per_group + 1`` videos, before one can be held out.
    """
    import math

    groups = math.ceil(config.videos_per_class / config.clips_per_group)
    if config.test_fraction > 0 and groups < 2:
        need = config.clips_per_group + 1
        raise click.ClickException(
            f"--videos-per-class {config.videos_per_class} gives 0 test videos: videos are cut "
            f"{config.clips_per_group} per source group and a group is never split between train and test, so "
            f"a test split needs at least {need} videos per class; pass --videos-per-class {need} or more, "
            "or --test-fraction 0 for a train-only set")


def _long_tail(root: str, rho: float, split: int, seed: int) -> LongTailSplit:
    from training.data.long_tail import write_long_tail_split

    try:
        return write_long_tail_split(root, rho, split=split, seed=seed)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


def _echo_long_tail(result: LongTailSplit, as_json: bool, summary: dict) -> None:
    import json

    if as_json:
        click.echo(json.dumps({**summary, "long_tail": {"split": result.split, "source_split": result.source_split,
                                                         "rho": result.rho, "counts": result.counts}}))
        return
    counts = list(result.counts.values())
    click.echo(f"wrote long-tailed split {result.split} ({result.train_list}, rho {result.rho:g}: "
               f"{sum(counts)} train videos, {max(counts)} to {min(counts)} per class; test list of split "
               f"{result.source_split} copied); train on it with --set split={result.split}")


if __name__ == "__main__":
    main()
