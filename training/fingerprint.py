"""A stable fingerprint of model weights: the identity an index checks an encoder against."""

from __future__ import annotations

import hashlib
from typing import Mapping

import torch


def weights_fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``sha256:<hex>`` over every tensor's name, dtype, shape and bytes, in sorted key order.

    Independent of dict order and device; any changed weight or buffer changes it.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(repr(tuple(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return "sha256:" + digest.hexdigest()
