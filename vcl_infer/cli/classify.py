"""``vcl-classify``: action recognition with a linear probe on a frozen encoder's embeddings."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import click

from vcl_infer import __version__

if TYPE_CHECKING:  # numpy is imported in the command bodies: --help stays instant
    import numpy as np

_MODEL_HELP = "Encoder bundle (.onnx); default: the bundled default encoder."
_MODE_HELP = "Multi-clip inference: average clip embeddings then classify, or average clip probabilities."
_MODES = ("mean_embedding", "mean_probability")


@contextmanager
def _errors() -> Iterator[None]:
    """Library errors -> ClickException naming the fix."""
    from vcl_infer.errors import VclError

    try:
        yield
    except (VclError, ValueError, FileNotFoundError, KeyError) as exc:
        message = str(exc)
        if "no default encoder" in message:
            message += " (pass it with --model BUNDLE.onnx)"
        raise click.ClickException(message) from exc


def _load_probe(path: str):
    from vcl_infer.probe.paths import probe_files, probe_stem

    stem = probe_stem(path)
    if not all(file.is_file() for file in probe_files(stem)):
        raise click.ClickException(f"no probe at {stem}.json/.npz; fit one with `vcl-classify fit`")
    with _errors():
        from vcl_infer.probe.linear import LinearProbe  # scikit-learn: vcl[classify]

        return LinearProbe.load(stem)


def _check_encoder(probe, embedder) -> None:
    """Refuse a probe fitted on another encoder's embeddings (its vectors mean something else)."""
    wanted = probe.info.get("encoder_fingerprint")
    have = embedder.spec.fingerprint
    if not wanted:
        click.echo("warning: the probe records no encoder fingerprint; cannot check it matches the model", err=True)
    elif wanted != have:
        raise click.ClickException(
            f"the probe was fitted on encoder {wanted} but the model is {have or 'unfingerprinted'}; "
            "pass the matching --model, or refit the probe on an index built with this model")


def _index_vectors(index, paths: list[str]) -> dict[str, np.ndarray]:
    """Pooled vector (mean of L2-normalised clip vectors, L2) of each of ``paths`` held ok in ``index``."""
    import os

    from vcl_infer.encode.pooling import pool_clips

    known = index.known_files()
    wanted = {}
    for p in paths:
        for candidate in (p, os.path.abspath(p), os.path.realpath(p)):
            if known.get(candidate, (0, 0, ""))[2] == "ok":
                wanted[candidate] = p
                break
    found: dict[str, np.ndarray] = {}
    for indexed, given in wanted.items():
        vid = index.video_id(indexed)
        if vid is not None:
            found[given] = pool_clips(index.clip_vectors(vid))
    return found


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vcl-classify")
def main() -> None:
    """Action recognition: fit a linear probe on indexed videos, classify videos, evaluate."""


@main.command()
@click.option("--index", "index_dir", required=True, help="Index folder built with `vcl-index build`.")
@click.option("--labels", "source", required=True,
              help="Labels: class-per-folder tree, UCF101/HMDB51 split layout, or CSV path,label[,split].")
@click.option("--out", "out", required=True, help="Probe path (writes OUT.npz and OUT.json).")
@click.option("--split", "--fold", "split", type=click.IntRange(1), default=1, show_default=True,
              help="Split number of a split layout (its train side is used).")
@click.option("--label-fraction", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Train on this stratified fraction of the labelled videos (at least one per class).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def fit(index_dir: str, source: str, out: str, split: int, label_fraction: float | None, seed: int,
        as_json: bool) -> None:
    """Fit a probe on the indexed videos that SOURCE labels (its train side when it has one)."""
    import numpy as np

    from vcl_infer.index import VideoIndex
    from vcl_infer.probe.classify import fit_probe
    from vcl_infer.probe.labels import load_labels, source_has_splits

    with _errors():
        subset = "train" if source_has_splits(source) else "all"
        items, classes = load_labels(source, split=split, subset=subset)
        with VideoIndex.open(index_dir) as index:
            vectors = _index_vectors(index, [i.path for i in items])
            fingerprint, spec_json = index.fingerprint, index.spec_json
        used = [i for i in items if i.path in vectors]
        missing = [i.path for i in items if i.path not in vectors]
        if len({i.label for i in used}) < 2:
            raise click.ClickException(
                f"only {len(used)} of {len(items)} labelled videos are in the index {index_dir} "
                f"(covering {len({i.label for i in used})} class(es)); index the labelled folder first: "
                f"`vcl-index build VIDEOS --index {index_dir}`")
        X = np.stack([vectors[i.path] for i in used])
        y = np.array([classes[i.label] for i in used])
        probe = fit_probe(X, y, label_fraction=label_fraction, seed=seed)
        arch = json.loads(spec_json or "{}").get("arch")
        info = {"encoder_fingerprint": fingerprint, "encoder_arch": arch,
                "pooling": "mean of L2-normalised clip vectors, L2 (the index's clips)",
                "labels": source, "subset": subset, "split": split, "label_fraction": label_fraction,
                "seed": seed, "train_videos": int(len(probe.train_indices_)), "labelled_in_index": len(used)}
        path = probe.save(out, info=info)
    report = {"probe": str(path), "labelled": len(items), "found_in_index": len(used), "missing": len(missing),
              "trained_on": int(len(probe.train_indices_)), "classes": len(probe.classes_),
              "train_accuracy": probe.score(X, y), "missing_examples": missing[:10]}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{len(used)} of {len(items)} labelled videos found in {index_dir}, {len(missing)} missing")
    for p in missing[:10]:
        click.echo(f"  missing: {p}", err=True)
    click.echo(f"probe on {report['trained_on']} videos, {report['classes']} classes "
               f"(train accuracy {report['train_accuracy']:.3f}) -> {path}.npz/.json")


@main.command()
@click.argument("videos", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--probe", "probe_path", required=True, help="Probe written by `vcl-classify fit`.")
@click.option("--model", default=None, help=_MODEL_HELP)
@click.option("--clips", type=click.IntRange(1), default=10, show_default=True, help="Clips per video.")
@click.option("--mode", type=click.Choice(_MODES), default="mean_embedding", show_default=True, help=_MODE_HELP)
@click.option("--top", type=click.IntRange(1), default=5, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Decode processes.")
@click.option("--json", "as_json", is_flag=True)
def predict(videos: tuple[str, ...], probe_path: str, model: str | None, clips: int, mode: str, top: int,
            workers: int, as_json: bool) -> None:
    """Classify VIDEOS: top classes with probabilities, and the best class of every clip with its time range."""
    from vcl_infer.encode.embedder import Embedder
    from vcl_infer.errors import VideoError
    from vcl_infer.probe.classify import clip_embeddings, predict_clips
    from vcl_infer.video.isolated import DecodePool

    probe = _load_probe(probe_path)
    with _errors():
        embedder = Embedder.load(model)
        _check_encoder(probe, embedder)
        results: list[dict[str, Any]] = []
        with DecodePool(workers=workers, timeout_s=60.0) as pool:
            for path, decoded in zip(videos, pool.imap([(v, embedder.spec.clip, clips) for v in videos])):
                if isinstance(decoded, VideoError):
                    results.append({"path": path, "error": f"{type(decoded).__name__}: {decoded}"})
                    continue
                vectors = clip_embeddings(embedder, decoded.clips)
                results.append({"path": path, **predict_clips(probe, vectors, decoded.windows, mode=mode, top=top)})
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" in r:
                click.echo(f"{r['path']}: cannot read: {r['error']}", err=True)
                continue
            click.echo(r["path"])
            for t in r["top"]:
                click.echo(f"  {t['probability']:.3f}  {t['class']}")
            for c in r["clips"]:
                click.echo(f"    {c['start_sec']:7.2f}-{c['end_sec']:7.2f}s  {c['class']} ({c['probability']:.2f})")
    if any("error" in r for r in results):
        raise SystemExit(1)


@main.command(name="eval")
@click.option("--probe", "probe_path", required=True, help="Probe written by `vcl-classify fit`.")
@click.option("--labels", "source", required=True, help="Labels (folder tree, split layout or CSV).")
@click.option("--split", "subset", type=click.Choice(("test", "train", "all")), default="test", show_default=True,
              help="Side of the split to evaluate on ('all' for sources without sides).")
@click.option("--fold", type=click.IntRange(1), default=1, show_default=True, help="Split number of a split layout.")
@click.option("--model", default=None, help=_MODEL_HELP)
@click.option("--clips", type=click.IntRange(1), default=10, show_default=True, help="Clips per test video.")
@click.option("--mode", type=click.Choice(_MODES), default="mean_embedding", show_default=True, help=_MODE_HELP)
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Decode processes.")
@click.option("--out", "out_dir", default="vcl-classify-eval", show_default=True,
              help="Folder for results.json, results.md and confusion.png.")
@click.option("--json", "as_json", is_flag=True)
def evaluate(probe_path: str, source: str, subset: str, fold: int, model: str | None, clips: int, mode: str,
             workers: int, out_dir: str, as_json: bool) -> None:
    """Top-1 / top-5, per-class accuracy and a confusion-matrix PNG of the probe on a labelled split."""
    from pathlib import Path

    import numpy as np

    from vcl_infer.encode.embedder import Embedder
    from vcl_infer.probe.classify import evaluate_predictions, video_probabilities
    from vcl_infer.probe.confusion_plot import confusion_png, require_matplotlib
    from vcl_infer.probe.evaluation import embed_split, encoder_info, write_results
    from vcl_infer.probe.labels import load_labels

    probe = _load_probe(probe_path)
    with _errors():
        require_matplotlib()  # for confusion.png: fail before the embedding, not after
        items, classes = load_labels(source, split=fold, subset=subset)
        embedder = Embedder.load(model)
        _check_encoder(probe, embedder)
        vectors, labels, failures = embed_split(embedder, items, clips, workers=workers, progress=not as_json)
        if not vectors:
            raise click.ClickException(f"none of the {len(items)} videos of {source} ({subset}) could be read")
        probs = np.stack([video_probabilities(probe, v, mode) for v in vectors])
        scores = evaluate_predictions(probs, [classes[i] for i in labels], probe.classes_)
        out = Path(out_dir)
        png = confusion_png(np.array(scores["confusion"]), scores["classes"], out / "confusion.png")
        result = {"task": "linear probe classification",
                  "metrics": {"top1": scores["top1"], "top5": scores["top5"], "videos": scores["num_videos"],
                              "chance": 1.0 / len(probe.classes_)},
                  "per_class": scores["per_class"], "confusion": scores["confusion"], "classes": scores["classes"],
                  "config": {"probe": probe_path, "labels": source, "subset": subset, "split": fold, "clips": clips,
                             "mode": mode, "probe_info": probe.info},
                  "encoder": encoder_info(embedder), "failures": failures}
        json_path, md_path = write_results(result, out)
    if as_json:
        click.echo(json.dumps({**result["metrics"], "per_class": scores["per_class"], "results": str(json_path),
                               "confusion_png": str(png), "failures": len(failures)}, indent=2))
        return
    click.echo(f"top-1 {scores['top1']:.3f}  top-5 {scores['top5']:.3f}  on {scores['num_videos']} videos "
               f"(chance {1 / len(probe.classes_):.3f}); {len(failures)} unreadable")
    for name, acc in scores["per_class"].items():
        click.echo(f"  {acc:.3f}  {name}")
    click.echo(f"wrote {json_path}, {md_path}, {png}")
