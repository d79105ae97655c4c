"""Evaluation CLI of the training side: ``linear`` evaluation and ``pictures``.

Run as ``python -m training.eval_cli linear|pictures ...`` (suggested console scripts:
``vcl-linear-eval`` = ``training.eval_cli:linear`` and ``vcl-pictures`` =
``training.eval_cli:pictures``, or the group as ``vcl-train-eval`` = ``training.eval_cli:main``).
"""

from __future__ import annotations

import click

_CTX = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=_CTX)
def main() -> None:
    """Evaluate trained video encoders: linear evaluation and pictures."""


def _spec_options(f):  # noqa: ANN001, ANN202
    for opt in reversed([
        click.option("--frames", type=int, default=None, help="Frames per clip [default: the checkpoint's spec]."),
        click.option("--frame-step", type=int, default=None, help="Take every N-th frame."),
        click.option("--crop", type=int, default=None, help="Crop side, pixels."),
        click.option("--resize", type=int, default=None, help="Short side before the centre crop."),
    ]):
        f = opt(f)
    return f


@main.command(context_settings=_CTX)
@click.option("--checkpoint", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Encoder checkpoint (vcl, torchvision, TCLR or FAME); omit for an untrained --arch baseline.")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="Labelled layout: UCF101/HMDB51 split files or class folders.")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Folder for results.json and results.md.")
@click.option("--arch", default=None, help="Backbone (only when the checkpoint does not say) [default: r3d_small untrained].")
@click.option("--split", type=int, default=1, show_default=True, help="Split number.")
@click.option("--train-clips", type=int, default=1, show_default=True, help="Clips per train video.")
@click.option("--test-clips", type=int, default=10, show_default=True, help="Clips per test video (probabilities averaged).")
@click.option("--mode", type=click.Choice(["mean_probability", "mean_embedding"]), default="mean_probability",
              show_default=True, help="How a test video's clips combine (as vcl-eval linear --mode).")
@click.option("--label-fraction", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Fit the probe on this stratified fraction of the train videos.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=0, show_default=True, help="Decoding worker processes.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@_spec_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def linear(checkpoint, data, out, arch, split, train_clips, test_clips, mode, label_fraction, seed, workers, device,
           frames, frame_step, crop, resize, as_json, no_progress) -> None:
    """Linear evaluation with the frozen backbone; checks afterwards that it did not change.

    The torch side extracts the clip features; the probe, the clip combination, the metrics and
    the report (results.json, results.md) are vcl-eval linear's.

    \b
    Example:
      python -m training.eval_cli linear --checkpoint runs/tclr/checkpoint.pt --data UCF101/ --out eval/tclr
    """
    import json

    from training.linear_eval import FrozenBackboneError, LinearEvalConfig, linear_eval

    try:
        config = LinearEvalConfig(train_clips=train_clips, test_clips=test_clips, mode=mode,
                                  label_fraction=label_fraction, seed=seed, split=split, workers=workers, device=device)
        result = linear_eval(checkpoint, data, out=out, arch=arch, config=config, frames=frames,
                             frame_step=frame_step, crop=crop, resize=resize, progress=not no_progress)
    except FrozenBackboneError as exc:
        raise click.ClickException(f"frozen-backbone check failed: {exc}") from None
    except (OSError, KeyError, ValueError, ImportError) as exc:
        raise click.ClickException(str(exc).strip("\"'")) from None
    if as_json:
        click.echo(json.dumps({k: v for k, v in result.items() if k != "confusion"}, indent=1, default=str))
    else:
        click.echo(f"top-1 {100 * result['top1']:.1f}%  top-5 {100 * result['top5']:.1f}%  "
                   f"(1 clip: {100 * result['top1_1clip']:.1f}%)  on {result['test_videos']} test videos; "
                   f"frozen check {result['frozen_check']}")
        if out:
            click.echo(f"wrote {out}/results.json and results.md", err=True)


@main.group(context_settings=_CTX)
def pictures() -> None:
    """PNG pictures: training curves, embedding maps, activation maps."""


@pictures.command(context_settings=_CTX)
@click.option("--run", "run", required=True, type=click.Path(exists=True),
              help="Run folder (or its metrics.csv).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG file.")
def curves(run, out) -> None:
    """Training curves (loss, lr, clips/s, ...) from a run's metrics.csv."""
    from training.pictures import plot_training_curves

    try:
        path = plot_training_curves(run, out, title=str(run))
    except (OSError, ValueError, ImportError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(path))


@pictures.command(name="map", context_settings=_CTX)
@click.option("--checkpoint", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Encoder checkpoint; omit for an untrained --arch.")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Labelled layout.")
@click.option("--subset", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option("--split", type=int, default=1, show_default=True)
@click.option("--arch", default=None, help="Backbone when the checkpoint does not say.")
@click.option("--clips", type=int, default=4, show_default=True, help="Clips per video (features averaged).")
@click.option("--method", type=click.Choice(["pca", "tsne"]), default="pca", show_default=True)
@_spec_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG file.")
def embedding_map(checkpoint, data, subset, split, arch, clips, method, frames, frame_step, crop, resize, out) -> None:
    """2-D map of the videos' embeddings coloured by class."""
    from training.data.layouts import load_layout
    from training.linear_eval import extract_features, load_backbone, resolve_spec
    from training.pictures import plot_embedding_map

    try:
        backbone, spec, info = load_backbone(checkpoint, arch=arch)
        spec = resolve_spec(spec, frames=frames, frame_step=frame_step, crop=crop, resize=resize)
        items, classes = load_layout(data, split=split, subset=subset)
        feats, labels, _ = extract_features(backbone, items, spec, num_clips=clips)
        path = plot_embedding_map(feats.mean(axis=1), labels, out, classes=classes, method=method,
                                  title=f"{info['method']} ({info['arch']}), {subset} split, {method.upper()}")
    except (OSError, KeyError, ValueError, ImportError) as exc:
        raise click.ClickException(str(exc).strip("\"'")) from None
    click.echo(str(path))


@pictures.command(context_settings=_CTX)
@click.option("--checkpoint", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Encoder checkpoint; omit for an untrained --arch.")
@click.option("--video", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--arch", default=None, help="Backbone when the checkpoint does not say.")
@click.option("--frames-shown", type=int, default=8, show_default=True)
@_spec_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG file.")
def activations(checkpoint, video, arch, frames_shown, frames, frame_step, crop, resize, out) -> None:
    """Class-agnostic activation maps over a clip's frames (FAME Figure 1)."""
    from training.linear_eval import load_backbone, resolve_spec
    from training.pictures import plot_activation_maps

    try:
        backbone, spec, info = load_backbone(checkpoint, arch=arch)
        spec = resolve_spec(spec, frames=frames, frame_step=frame_step, crop=crop, resize=resize)
        path = plot_activation_maps(backbone, spec, video, out, frames_shown=frames_shown,
                                    title=f"{info['method']} ({info['arch']}): {video}")
    except (OSError, KeyError, ValueError, ImportError) as exc:
        raise click.ClickException(str(exc).strip("\"'")) from None
    click.echo(str(path))


linear_cli = linear
pictures_cli = pictures

if __name__ == "__main__":
    main()
