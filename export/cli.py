"""``vcl-export``: a checkpoint (or an untrained backbone) -> a verified encoder bundle."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # --help must not load torch
    from torch import nn

    from export.pipeline import ExportResult
    from export.quantize import QuantizeResult
    from training.models.registry import Backbone
    from vcl_infer.clips.spec import ClipSpec, EncoderSpec

FORMATS = ("auto", "vcl", "torchvision", "tclr", "fame")
# training.methods.longshort.FEATURE_PARTS (not imported here: --help must not load torch), plus
# "temporal" (export.pipeline.TemporalFeatures)
FEATURES = ("all", "stationary", "non-stationary", "temporal")


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False))
@click.option("--out", "out", default=None, type=click.Path(), help="Bundle path: NAME.onnx, or a folder (then model.onnx in it). NAME.json (spec) and NAME.verify.json (report) go beside it.")
@click.option("--engine", type=click.Choice(["onnx", "trt"]), default="onnx", show_default=True, help="trt also builds a TensorRT engine NAME.engine (needs TensorRT and a CUDA GPU).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True, help="Checkpoint layout; auto detects it from the keys.")
@click.option("--arch", default=None, help="Backbone name, where the checkpoint does not say (see --list-archs). Without CHECKPOINT: export this backbone untrained.")
@click.option("--list-archs", is_flag=True, help="List the backbones and exit.")
@click.option("--pretrained", default=None, metavar="NAME", help="Export a published encoder by name (see --list-pretrained): downloaded with resume, sha256-verified (where the publisher gives only a hash prefix: that prefix on the first download, then the full hash pinned in the cache), cached in ~/.cache/vcl (VCL_CACHE).")
@click.option("--list-pretrained", is_flag=True, help="List the published encoders (VCL_REGISTRY=file.json adds entries) and exit.")
@click.option("--features", type=click.Choice(FEATURES), default="all", show_default=True, help="What one output vector is: all channels of the pooled feature; a longshort checkpoint's stationary or non-stationary half; or 'temporal', the last feature map pooled over space only, channels x time steps flattened (TCLR's retrieval feature, 512 x 4 = 2048-d for r3d_18_tclr; not L2-normalised; `vcl-eval retrieval --protocol tclr` uses it).")
@click.option("--frames", type=int, default=None, help="Frames per clip (overrides the checkpoint's spec).")
@click.option("--frame-step", type=int, default=None, help="Take every N-th frame.")
@click.option("--target-fps", type=float, default=None, help="Sample frames on timestamps at this rate instead of --frame-step.")
@click.option("--resize", type=int, default=None, help="Short side after resizing, pixels.")
@click.option("--crop", type=int, default=None, help="Centre crop side, pixels.")
@click.option("--verify-video", "verify_videos", multiple=True, type=click.Path(exists=True, dir_okay=False), help="Real video(s) to verify the export on (repeatable). Without one a synthetic clip is used.")
@click.option("--clips-per-video", type=int, default=3, show_default=True, help="Clips decoded from each --verify-video.")
@click.option("--min-cosine", type=float, default=None, help="Fail below this cosine similarity to torch [default: 0.9999].")
@click.option("--max-abs-error", type=float, default=None, help="Fail above this max abs difference to torch [default: 1e-4].")
@click.option("--opset", type=int, default=None, help="ONNX opset [default: 18].")
@click.option("--fp16", is_flag=True, help="TensorRT: allow fp16 kernels.")
@click.option("--int8", is_flag=True, help="int8: with --engine onnx, ONNX Runtime static quantization (QDQ, per channel) calibrated on --calibration DIR and verified against fp32; with --engine trt, TensorRT int8 kernels calibrated on the same clips.")
@click.option("--calibration", type=click.Path(file_okay=False, exists=True), default=None, help="Folder of real videos whose clips (decoded with the bundle's spec) calibrate --int8.")
@click.option("--calibration-clips", type=click.IntRange(min=1), default=4, show_default=True, help="Clips decoded from each calibration video.")
@click.option("--labelled", type=click.Path(file_okay=False, exists=True), default=None, help="--int8: class folders (DIR/<class>/*.mp4) to report retrieval R@1 of fp32 and int8 on.")
@click.option("--max-batch", type=int, default=32, show_default=True, help="TensorRT: largest batch of the optimisation profile.")
@click.option("--opt-batch", type=int, default=8, show_default=True, help="TensorRT: batch size the engine is tuned for.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), default=None, help="TensorRT: timing cache file (read and updated) for faster rebuilds.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def main(checkpoint, out, engine, fmt, arch, list_archs, pretrained, list_pretrained, features, frames, frame_step, target_fps, resize, crop,
         verify_videos, clips_per_video, min_cosine, max_abs_error, opset, fp16, int8, calibration,
         calibration_clips, labelled, max_batch, opt_batch, timing_cache, as_json) -> None:
    """Export CHECKPOINT as an encoder bundle: ONNX with a dynamic batch axis, its
    preprocessing spec inside (metadata key vcl.spec) and beside it (NAME.json), verified
    against torch on real clips before anything is written.

    CHECKPOINT may be a vcl checkpoint, a torchvision video state dict (r3d_18,
    r2plus1d_18), or the published TCLR R3D-18 / FAME R(2+1)D-18 checkpoints. Without
    CHECKPOINT, --arch NAME is exported untrained (for smoke tests; the spec says so).

    \b
    Examples:
      vcl-export --arch r3d_small --out models/untrained.onnx
      vcl-export tclr_r3d.pth --out models/tclr.onnx --verify-video clip.mp4
      vcl-export run/checkpoint.pt --out models/ --engine trt --fp16
      vcl-export longshort_run/checkpoint.pt --out models/static.onnx --features stationary
      vcl-export tclr_r3d.pth --out models/tclr_temporal.onnx --features temporal
      vcl-export --pretrained r2plus1d_18-k400 --out models/r2p1d.onnx
      vcl-export --pretrained r2plus1d_18-k400 --int8 --calibration videos/ --out models/r2p1d.int8.onnx
    """
    if _listed(list_archs, list_pretrained):
        return
    from export.pipeline import feature_spec_fields, select_features
    from export.tensorrt import TensorRTUnavailable, TrtOptions
    from export.verify import DEFAULT_MAX_ABS_ERROR, DEFAULT_MIN_COSINE, VerificationFailed
    from vcl_infer.clips.spec import EncoderSpec
    from vcl_infer.errors import VclError

    _check_options(out, checkpoint, arch, pretrained, int8, engine, calibration, labelled)
    try:
        if pretrained is not None:
            checkpoint, fmt, arch = _fetch_pretrained(pretrained, arch, progress=not as_json)
        loaded, arch, method, clip = _load_backbone(checkpoint, fmt, arch)
        clip = _override_clip(clip, frames, frame_step, target_fps, resize, crop)
        trained = checkpoint is not None and method != "untrained"
        module, method = select_features(loaded, method, features, clip=clip)
        spec = EncoderSpec(arch=arch, embed_dim=int(module.embed_dim), clip=clip, method=method, trained=trained,
                           **feature_spec_fields(module))
        options = TrtOptions(fp16=fp16, int8=int8, max_batch=max_batch, opt_batch=min(opt_batch, max_batch),
                             timing_cache=Path(timing_cache) if timing_cache else None)
        if not as_json:
            click.echo(f"exporting {arch} ({method}) -> {out}", err=True)
        export_options = dict(
            verify_videos=verify_videos, clips_per_video=clips_per_video, opset=opset or 18, engine=engine,
            trt_options=options, min_cosine=DEFAULT_MIN_COSINE if min_cosine is None else min_cosine,
            max_abs_error=DEFAULT_MAX_ABS_ERROR if max_abs_error is None else max_abs_error,
        )
        result: ExportResult | QuantizeResult
        if int8 and engine == "onnx":
            result = _export_int8(module, spec, out, calibration, labelled, calibration_clips, export_options)
        else:
            result = _export_fp32(module, spec, out, calibration, calibration_clips, export_options)
    except TensorRTUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    except (VerificationFailed, VclError, ValueError, KeyError) as exc:
        raise click.ClickException(str(exc)) from None
    _report(result, spec.trained, as_json)


def _listed(list_archs: bool, list_pretrained: bool) -> bool:
    """Print the backbones (``--list-archs``) or the published encoders (``--list-pretrained``)."""
    if list_archs:
        from training.models import list_backbones

        for name, description in list_backbones().items():
            click.echo(f"{name:16s} {description}")
        return True
    if list_pretrained:
        from vcl_infer.encode.pretrained import describe_published

        for name, description in describe_published().items():
            click.echo(f"{name:24s} {description}")
        return True
    return False


def _check_options(out: str | None, checkpoint: str | None, arch: str | None, pretrained: str | None, int8: bool,
                   engine: str, calibration: str | None, labelled: str | None) -> None:
    """Usage errors of option combinations that cannot work, each saying the fix."""
    if out is None:
        raise click.UsageError("Missing option '--out' (the bundle's path: NAME.onnx or a folder)")
    if checkpoint is None and arch is None and pretrained is None:
        raise click.UsageError("give a CHECKPOINT, --pretrained NAME, or --arch NAME to export an untrained backbone")
    if pretrained is not None and checkpoint is not None:
        raise click.UsageError("give either CHECKPOINT or --pretrained NAME, not both")
    if int8 and engine == "onnx" and calibration is None:
        raise click.UsageError("--int8 (ONNX Runtime) needs --calibration DIR, a folder of real videos")
    if calibration is not None and not int8:
        raise click.UsageError("--calibration is for --int8; add --int8")
    if labelled is not None and not (int8 and engine == "onnx"):
        raise click.UsageError("--labelled measures the R@1 of an --int8 (ONNX Runtime) export against fp32")


def _fetch_pretrained(pretrained: str, arch: str | None, *, progress: bool) -> tuple[str, str, str]:
    """``--pretrained NAME``: the downloaded (sha256-verified, cached) checkpoint, its format and arch."""
    from vcl_infer.encode.pretrained import fetch_checkpoint, get_entry

    entry = get_entry(pretrained)
    if arch is not None and arch != entry.arch:
        raise click.UsageError(f"{pretrained} is a {entry.arch}; drop --arch {arch}")
    return str(fetch_checkpoint(entry, progress=progress)), entry.format, entry.arch


def _load_backbone(checkpoint: str | None, fmt: str, arch: str | None) -> tuple[Backbone, str, str, ClipSpec]:
    """The backbone to export, its arch, method and clip spec: from ``checkpoint``, or untrained ``arch``."""
    from training.models import create_backbone
    from training.models.defaults import default_clip_spec

    if checkpoint is None:
        if arch is None:  # _check_options asks for one of CHECKPOINT, --pretrained, --arch
            raise click.UsageError("give a CHECKPOINT, --pretrained NAME, or --arch NAME to export an untrained backbone")
        return create_backbone(arch), arch, "untrained", default_clip_spec(arch)
    from training.checkpoint_import import import_checkpoint

    imported = import_checkpoint(checkpoint, format=fmt, arch=arch)
    for note in imported.notes:
        click.echo(f"note: {note}", err=True)
    backbone = create_backbone(imported.arch, **imported.arch_kwargs)
    backbone.load_state_dict(imported.state_dict, strict=True)
    return backbone, imported.arch, imported.method, imported.clip_spec or default_clip_spec(imported.arch)


def _export_int8(module: nn.Module, spec: EncoderSpec, out: str, calibration: str | None, labelled: str | None,
                 calibration_clips: int, export_options: dict[str, Any]) -> QuantizeResult:
    """``--int8 --engine onnx``: the verified fp32 bundle, quantised with ONNX Runtime on ``calibration``."""
    from export.quantize import export_then_quantize

    if calibration is None:  # _check_options requires --calibration for this path
        raise click.UsageError("--int8 (ONNX Runtime) needs --calibration DIR, a folder of real videos")
    return export_then_quantize(module, spec, out, calibration=calibration, labelled=labelled,
                                calibration_clips_per_video=calibration_clips, **export_options)


def _export_fp32(module: nn.Module, spec: EncoderSpec, out: str, calibration: str | None, calibration_clips: int,
                 export_options: dict[str, Any]) -> ExportResult:
    """The verified bundle (and with ``--engine trt``, the engine; TensorRT int8 reads ``calibration``'s clips)."""
    from export.pipeline import export_bundle

    if calibration is not None:  # TensorRT int8 reads the same calibration clips
        from export.calibration import calibration_clips as decode_calibration

        export_options["calibration_inputs"] = decode_calibration(
            spec.clip, calibration, clips_per_video=calibration_clips).inputs
    return export_bundle(module, spec, out, **export_options)


def _report(result: ExportResult | QuantizeResult, trained: bool, as_json: bool) -> None:
    """Print what was verified and written (or the JSON result)."""
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    for check in result.checks:
        click.echo(f"verified {check.candidate} vs {check.reference} on {check.clips} clips: "
                   f"max abs error {check.max_abs_error:.2e}, min cosine {check.min_cosine:.7f}")
    click.echo(f"wrote {result.paths.onnx} (+ {result.paths.sidecar.name}, {result.paths.report.name}"
               + (f", {result.paths.engine.name})" if result.engine_written else ")"))
    if not trained:
        click.echo("note: this encoder is UNTRAINED (random weights): for smoke tests only", err=True)


def _override_clip(clip, frames, frame_step, target_fps, resize, crop):
    changes = {}
    if frames is not None:
        changes["frames_per_clip"] = frames
    if target_fps is not None:
        changes.update(target_fps=target_fps, frame_step=None)
    if frame_step is not None:
        changes.update(frame_step=frame_step, target_fps=None)
    if resize is not None:
        changes["resize_size"] = resize
    if crop is not None:
        changes["crop_size"] = crop
        if resize is None and clip.resize_size < crop:
            changes["resize_size"] = crop
    return dataclasses.replace(clip, **changes)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
