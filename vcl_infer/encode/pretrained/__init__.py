"""Published encoders by name: a registry (URL, sha256, format, licence), a verified resumable
download into the user's cache, and a one-time conversion to an encoder bundle.

``resolve_model("r2plus1d_18-k400")`` returns the cached bundle's path; a path is returned as
it is. Importing this package loads neither torch nor the network stack's heavy parts.
"""

from vcl_infer.encode.pretrained.cache import CACHE_ENV, cache_root
from vcl_infer.encode.pretrained.convert import ConversionFailed
from vcl_infer.encode.pretrained.download import DownloadError, HashMismatch
from vcl_infer.encode.pretrained.entries import (
    REGISTRY_ENV,
    PretrainedEntry,
    RegistryError,
    get_entry,
    load_registry,
)
from vcl_infer.encode.pretrained.pins import PinError
from vcl_infer.encode.pretrained.resolve import (
    describe_published,
    fetch_checkpoint,
    pretrained_bundle,
    resolve_model,
)

__all__ = [
    "CACHE_ENV", "REGISTRY_ENV", "ConversionFailed", "DownloadError", "HashMismatch", "PinError",
    "PretrainedEntry", "RegistryError", "cache_root", "describe_published", "fetch_checkpoint", "get_entry", "load_registry",
    "pretrained_bundle", "resolve_model",
]
