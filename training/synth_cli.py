"""``vcl-synth``: write the synthetic motion-class data set (see :mod:`training.data.synthetic`)."""

from __future__ import annotations

import click


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
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
def main(out_dir: str, classes: int, videos_per_class: int, frames: int, size: int, background_bias: float,
         seed: int, test_fraction: float, workers: int, as_json: bool) -> None:
    """Write a synthetic action data set, whose class is the motion, to OUT_DIR (UCF101 layout).

    Train with `vcl-train` on OUT_DIR; splits are in OUT_DIR/splits, parameters in
    OUT_DIR/synth.json.
    """
    import json
    import os
    import time
    from pathlib import Path

    from training.data.synthetic import SynthConfig, generate

    try:
        config = SynthConfig(classes=classes, videos_per_class=videos_per_class, frames=frames, size=size,
                             background_bias=background_bias, seed=seed, test_fraction=test_fraction)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if (Path(out_dir) / "videos").exists() and any((Path(out_dir) / "videos").iterdir()):
        raise click.ClickException(f"{out_dir}/videos is not empty; pick a new OUT_DIR or delete it first")
    start = time.perf_counter()
    total = classes * videos_per_class
    if workers <= 0:
        workers = min(8, os.cpu_count() or 1) if total >= 40 else 1
    meta = generate(out_dir, config, progress=not as_json and total >= 50, workers=workers)
    seconds = time.perf_counter() - start
    counts = {s: sum(v["split"] == s for v in meta["videos"]) for s in ("train", "test")}
    if as_json:
        click.echo(json.dumps({"out_dir": out_dir, "classes": meta["classes"], "codec": meta["codec"],
                               "seconds": round(seconds, 3), **counts}))
    else:
        click.echo(f"wrote {counts['train']} train + {counts['test']} test videos of {len(meta['classes'])} "
                   f"classes to {out_dir} ({meta['codec']}, {seconds:.1f} s)")


if __name__ == "__main__":
    main()
