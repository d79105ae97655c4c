"""Reading an encoder bundle: an ONNX model that carries its own :class:`EncoderSpec`.

A bundle is ``<name>.onnx`` (spec as JSON in ``metadata_props['vcl.spec']``), the sidecar
``<name>.json`` (the same spec, readable without ONNX tools) and, after a TensorRT build,
``<name>.engine`` with ``<name>.engine.json``. The ONNX metadata is authoritative; a
sidecar that disagrees with it is an error, not a guess.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from vcl_infer._optional import require
from vcl_infer.clips.spec import SPEC_METADATA_KEY, EncoderSpec
from vcl_infer.encode._onnx_external import check_external_data
from vcl_infer.errors import SpecMismatch, VclError


@dataclass(frozen=True)
class BundlePaths:
    """Where each file of a bundle lives."""

    onnx: Path
    sidecar: Path
    report: Path
    engine: Path
    engine_sidecar: Path

    @classmethod
    def for_model(cls, path: str | os.PathLike) -> "BundlePaths":
        """Paths for a bundle given its ``.onnx`` file or a folder (then ``model.onnx`` in it)."""
        path = Path(path)
        if path.suffix.lower() != ".onnx":
            path = path / "model.onnx"
        # f-strings, not with_suffix: "enc.int8.onnx" must get "enc.int8.json", not "enc.json"
        stem = path.with_suffix("")
        return cls(
            onnx=path,
            sidecar=Path(f"{stem}.json"),
            report=Path(f"{stem}.verify.json"),
            engine=Path(f"{stem}.engine"),
            engine_sidecar=Path(f"{stem}.engine.json"),
        )


def _regular_file(path: Path, what: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise VclError(f"{what} {path} does not exist; export one with `vcl-export`") from None
    if not stat.S_ISREG(info.st_mode):
        raise VclError(f"{what} {path} is not a regular file (links and devices are refused)")


def read_onnx_spec(onnx_path: str | os.PathLike) -> EncoderSpec:
    """The spec stored in an ONNX model's metadata, read with ONNX Runtime (no onnx package)."""
    onnx_path = Path(onnx_path)
    _regular_file(onnx_path, "model")
    check_external_data(onnx_path)
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    if SPEC_METADATA_KEY not in metadata:
        raise SpecMismatch(
            f"{onnx_path} has no '{SPEC_METADATA_KEY}' metadata, so vcl cannot know how to feed it; "
            "export it with `vcl-export`"
        )
    return EncoderSpec.from_json(metadata[SPEC_METADATA_KEY])


def resolve_bundle(model: str | os.PathLike) -> Path:
    """The bundle path ``model`` names: a path as given, or the cached bundle of a published
    encoder's registry name (downloaded, verified and converted on first use; see
    :mod:`vcl_infer.encode.pretrained`)."""
    from vcl_infer.encode.pretrained import resolve_model

    return resolve_model(model)


def load_bundle_spec(path: str | os.PathLike) -> EncoderSpec:
    """The spec of the bundle at ``path`` (``.onnx`` file or folder, or a published encoder's
    name), cross-checked with its sidecar."""
    paths = BundlePaths.for_model(resolve_bundle(path))
    spec = read_onnx_spec(paths.onnx)
    if paths.sidecar.exists():
        _regular_file(paths.sidecar, "sidecar")
        sidecar = EncoderSpec.from_dict(json.loads(paths.sidecar.read_text()))
        if sidecar.to_dict() != spec.to_dict():
            raise SpecMismatch(
                f"{paths.sidecar} disagrees with the spec inside {paths.onnx}; the ONNX file is "
                "authoritative: delete the sidecar or re-export the bundle"
            )
    return spec
