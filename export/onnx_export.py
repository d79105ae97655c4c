"""torch backbone -> ONNX encoder with a dynamic batch axis and the spec in its metadata."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vcl_infer._optional import require
from vcl_infer.clips.spec import SPEC_METADATA_KEY, EncoderSpec

DEFAULT_OPSET = 18
MAX_EXPORT_BATCH = 4096


class EmbeddingModel(nn.Module):
    """What a bundle computes: backbone pooled features, L2-normalised when the spec says so.

    Input ``N x 3 x T x H x W`` float32 (``NCTHW``, preprocessed per the spec); output
    ``N x D`` float32.
    """

    def __init__(self, backbone: nn.Module, *, l2_normalize: bool = True):
        super().__init__()
        self.backbone = backbone
        self.l2_normalize = l2_normalize

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        features = self.backbone(clips)
        return F.normalize(features, dim=1) if self.l2_normalize else features


def export_onnx(model: EmbeddingModel, spec: EncoderSpec, path: Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """Export ``model`` to ``path`` with a dynamic batch axis; the spec goes into metadata_props.

    The graph is traced with a batch of 2 so that batch-size-specific constants cannot be
    baked in; the batch axis is symbolic (``batch``) in the file.
    """
    onnx = require("onnx")
    model = model.eval()
    example = torch.zeros((2, *spec.clip.input_shape), dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    # The exporter prints progress lines and warns about torchvision ops it cannot find;
    # neither is useful to our users, so keep them out of the CLI's output.
    quiet = io.StringIO()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[spec.input_name],
            output_names=[spec.output_name],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes={"clips": {0: batch}},
            verbose=False,
        )
    if program is None:  # only the legacy (dynamo=False) exporter returns None
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto
    set_spec_metadata(proto, spec)
    proto.doc_string = (
        f"vcl encoder {spec.arch} ({'untrained: smoke tests only' if not spec.trained else spec.method})"
    )
    onnx.save_model(proto, str(path))
    return path


def set_spec_metadata(proto, spec: EncoderSpec) -> None:
    """Write ``spec`` as JSON under ``vcl.spec`` in ``proto.metadata_props`` (replacing any)."""
    kept = [p for p in proto.metadata_props if p.key != SPEC_METADATA_KEY]
    del proto.metadata_props[:]
    for prop in kept:
        proto.metadata_props.add(key=prop.key, value=prop.value)
    proto.metadata_props.add(key=SPEC_METADATA_KEY, value=spec.to_json())
