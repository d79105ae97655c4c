"""torch backend: an in-memory ``nn.Module`` (training evaluation, checkpoints via export).

The runtime never imports the training code: callers that hold a model (the training loop,
``training.checkpoint_import.import_checkpoint`` + ``training.models``) pass it in.
"""

from __future__ import annotations

import numpy as np

from vcl_infer._optional import require
from vcl_infer.clips.spec import EncoderSpec
from vcl_infer.encode.backends.base import EncoderBackend
from vcl_infer.encode.backends.registry import register_backend


@register_backend("torch")
class TorchBackend(EncoderBackend):
    """Runs ``module`` (``N x 3 x T x H x W`` -> ``N x D``), L2-normalising when the spec says so.

    Args:
        module: a backbone with the ``forward`` contract of ``training.models``.
        spec: its spec.
        device: ``cuda`` when available unless given.
    """

    name = "torch"

    def __init__(self, module, spec: EncoderSpec, *, device: str | None = None, max_batch: int = 16):
        super().__init__(spec, max_batch)
        torch = require("torch")
        self._torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._module = module.eval().to(self.device)

    def _encode(self, clips: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self._module(torch.from_numpy(clips).to(self.device))
            if self.spec.l2_normalized:
                out = torch.nn.functional.normalize(out, dim=1)
        return out.float().cpu().numpy()
