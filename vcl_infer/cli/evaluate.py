"""``vcl-eval``: the papers' evaluation protocols (retrieval R@k, linear probe) on a labelled split."""

from __future__ import annotations

import json
from typing import Any

import click

from vcl_infer import __version__
from vcl_infer.cli.classify import _MODE_HELP, _MODEL_HELP, _MODES, _errors

_LABELS_HELP = "Labelled data with train/test sides: UCF101/HMDB51 split layout, or CSV path,label,split."


def _sides(source: str, split: int):
    from vcl_infer.probe.labels import load_labels, source_has_splits

    if not source_has_splits(source):
        raise click.ClickException(
            f"{source} has no train/test sides; give a UCF101/HMDB51 split layout or a CSV with a third "
            "column 'train'/'test'")
    train, classes = load_labels(source, split=split, subset="train")
    test, _ = load_labels(source, split=split, subset="test")
    if not train or not test:
        raise click.ClickException(f"{source} split {split}: {len(train)} train and {len(test)} test videos; "
                                   "both sides need videos")
    return train, test, classes


def _report_failures(failures, as_json: bool) -> None:
    if not as_json:
        for path, why in failures:
            click.echo(f"unreadable, left out: {path}: {why}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vcl-eval")
def main() -> None:
    """Evaluate a frozen encoder the way TCLR and FAME report it: retrieval R@k and linear probe."""


@main.command()
@click.option("--labels", "source", required=True, help=_LABELS_HELP)
@click.option("--split", "--fold", "split", type=click.IntRange(1), default=1, show_default=True,
              help="Split number.")
@click.option("--model", default=None, help=_MODEL_HELP)
@click.option("--protocol", type=click.Choice(("tclr", "fame", "vcl")), default="tclr", show_default=True,
              help="tclr: 9 clips, mean of the clip features, L2 (TCLR's 512 x 4 layer4 feature when the bundle "
                   "was exported with --features temporal); fame: 10 clips, ImageNet mean/std, per-clip L2, mean, "
                   "per-set centering, L2; vcl: 8 clips, mean of normalised clips.")
@click.option("--clips", type=click.IntRange(1), default=None, help="Override the protocol's clip count.")
@click.option("--bundle-normalization", is_flag=True,
              help="Normalise frames with the bundle's mean/std even where the protocol's paper uses others (fame).")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Decode processes.")
@click.option("--out", "out_dir", default=None, help="Write results.json and results.md here.")
@click.option("--json", "as_json", is_flag=True)
def retrieval(source: str, split: int, model: str | None, protocol: str, clips: int | None,
              bundle_normalization: bool, workers: int, out_dir: str | None, as_json: bool) -> None:
    """Test videos query the train videos; R@1/5/10/20/50 (hit: a same-class video in the top k)."""
    import dataclasses

    from vcl_infer.encode.embedder import Embedder
    from vcl_infer.probe.evaluation import (
        embed_split,
        encoder_info,
        evaluate_retrieval,
        feature_layer_report,
        protocol_clip_spec,
        retrieval_protocol,
        write_results,
    )

    with _errors():
        train, test, classes = _sides(source, split)
        proto = retrieval_protocol(protocol)
        if clips is not None:
            proto = dataclasses.replace(proto, num_clips=clips)
        embedder = Embedder.load(model)
        layer = feature_layer_report(proto, embedder.spec)
        if "note" in layer:
            click.echo(f"note: {layer['note']}", err=True)
        clip = protocol_clip_spec(proto, embedder.spec.clip, keep_bundle_normalization=bundle_normalization)
        train_v, train_y, fail_train = embed_split(embedder, train, proto.num_clips, workers=workers,
                                                   progress=not as_json, clip=clip)
        test_v, test_y, fail_test = embed_split(embedder, test, proto.num_clips, workers=workers,
                                                progress=not as_json, clip=clip)
        if not train_v or not test_v:
            raise click.ClickException("no readable videos on one side of the split")
        scores = evaluate_retrieval(train_v, train_y, test_v, test_y, protocol=proto)
        result: dict[str, Any] = {"task": f"retrieval ({protocol} protocol)",
                  "metrics": {**scores["recall"], "queries": scores["num_queries"], "gallery": scores["num_gallery"]},
                  "config": {"labels": source, "split": split, "protocol": scores["protocol"], "classes": len(classes),
                             "chance_R@1": _chance(train_y, test_y), "feature_layer": layer,
                             "normalization": {"mean": list(clip.mean), "std": list(clip.std),
                                               "channel_order": clip.channel_order,
                                               "from": "bundle" if clip is embedder.spec.clip else "protocol"}},
                  "encoder": encoder_info(embedder), "failures": fail_train + fail_test}
        paths = write_results(result, out_dir) if out_dir else None
    _report_failures(result["failures"], as_json)
    if as_json:
        click.echo(json.dumps({**result["metrics"], "protocol": protocol, "feature_layer": layer["bundle_layer"],
                               "paper_feature_layer": layer["matches"], "failures": len(result["failures"]),
                               "results": str(paths[0]) if paths else None}, indent=2))
        return
    click.echo(f"{protocol}: " + "  ".join(f"{k} {v:.3f}" for k, v in scores["recall"].items())
               + f"  ({scores['num_queries']} queries, {scores['num_gallery']} gallery)")
    if paths:
        click.echo(f"wrote {paths[0]}, {paths[1]}")


def _chance(train_y, test_y) -> float:
    """R@1 of a random gallery pick: mean over queries of the share of same-class gallery videos."""
    import numpy as np

    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    return float(np.mean([(train_y == y).mean() for y in test_y]))


@main.command()
@click.option("--labels", "source", required=True, help=_LABELS_HELP)
@click.option("--split", "--fold", "split", type=click.IntRange(1), default=1, show_default=True,
              help="Split number.")
@click.option("--model", default=None, help=_MODEL_HELP)
@click.option("--clips", type=click.IntRange(1), default=10, show_default=True,
              help="Clips per video (TCLR's linear eval: 10 at test).")
@click.option("--mode", type=click.Choice(_MODES), default="mean_probability", show_default=True, help=_MODE_HELP)
@click.option("--label-fraction", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Train the probe on this stratified fraction of the train videos.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Decode processes.")
@click.option("--out", "out_dir", default=None, help="Write results.json, results.md and confusion.png here.")
@click.option("--json", "as_json", is_flag=True)
def linear(source: str, split: int, model: str | None, clips: int, mode: str, label_fraction: float | None,
           seed: int, workers: int, out_dir: str | None, as_json: bool) -> None:
    """Linear probe on the frozen encoder's train embeddings, accuracy on the test split."""
    from pathlib import Path

    import numpy as np

    from vcl_infer._optional import require
    from vcl_infer.encode.embedder import Embedder
    from vcl_infer.probe.classify import linear_evaluation
    from vcl_infer.probe.confusion_plot import confusion_png, require_matplotlib
    from vcl_infer.probe.evaluation import embed_split, encoder_info, write_results

    with _errors():
        require("sklearn")  # the probe; fail before the embedding, not after
        if out_dir:
            require_matplotlib()  # for confusion.png
        train, test, classes = _sides(source, split)
        embedder = Embedder.load(model)
        train_v, train_y, fail_train = embed_split(embedder, train, clips, workers=workers, progress=not as_json)
        test_v, test_y, fail_test = embed_split(embedder, test, clips, workers=workers, progress=not as_json)
        if not train_v or not test_v:
            raise click.ClickException("no readable videos on one side of the split")
        probe, scores = linear_evaluation(train_v, [classes[i] for i in train_y], test_v, [classes[i] for i in test_y],
                                          mode=mode, label_fraction=label_fraction, seed=seed)
        result = {"task": "linear evaluation (frozen encoder)",
                  "metrics": {"top1": scores["top1"], "top5": scores["top5"], "test_videos": scores["num_videos"],
                              "train_videos": int(len(probe.train_indices_)), "chance": 1.0 / len(classes)},
                  "per_class": scores["per_class"], "confusion": scores["confusion"], "classes": scores["classes"],
                  "config": {"labels": source, "split": split, "clips": clips, "mode": mode,
                             "train_pooling": "mean of L2-normalised clip vectors, L2",
                             "label_fraction": label_fraction, "seed": seed, "probe": probe.get_params()},
                  "encoder": encoder_info(embedder), "failures": fail_train + fail_test}
        paths = None
        if out_dir:
            paths = write_results(result, out_dir)
            confusion_png(np.array(scores["confusion"]), scores["classes"], Path(out_dir) / "confusion.png")
    _report_failures(result["failures"], as_json)
    if as_json:
        click.echo(json.dumps({**result["metrics"], "per_class": scores["per_class"],
                               "failures": len(result["failures"]), "results": str(paths[0]) if paths else None},
                              indent=2))
        return
    click.echo(f"linear probe: top-1 {scores['top1']:.3f}  top-5 {scores['top5']:.3f} on {scores['num_videos']} "
               f"test videos (chance {1 / len(classes):.3f}), trained on {len(probe.train_indices_)}")
    if paths:
        click.echo(f"wrote {paths[0]}, {paths[1]}")
