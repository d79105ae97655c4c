"""Import checkpoints of several formats (vcl, torchvision, TCLR, FAME) into vcl backbones.

Every file is read with ``torch.load(..., weights_only=True)`` (or as safetensors); every
tensor is then checked against the backbone (names, shapes, dense strided float), so the
returned state dict loads with ``create_backbone(arch, **arch_kwargs).load_state_dict(sd,
strict=True)``.

Key layouts of the published code (read from the official repositories, not copied):

* torchvision ``r3d_18`` / ``r2plus1d_18``: flat ``stem.*``, ``layer1..4.*``, ``fc.*``
  (Kinetics-400 classifier, dropped). R3D and R(2+1)D state dicts differ in shapes (``stem.0``
  is ``64x3x3x7x7`` vs ``45x3x1x7x7``), so the architecture is detected.
* TCLR, ``DAVEISHAN/TCLR`` @ 850efa942e2343837d36f9e5036311087b1b4c91:
  ``tclr_pretraining/train_gen_all_step.py`` saves ``{"epoch", "state_dict", "optimizer",
  "learning_rate", "amp_scaler" (a pickled GradScaler), ...}``; ``state_dict`` is that of
  ``nn.DataParallel(nn.Sequential(r3d_backbone, mlp))`` (``tclr_pretraining/model.py``), so
  keys are ``module.0.<torchvision r3d name>`` (backbone, no ``fc``: ``r3d.py`` has none) and
  ``module.1.{fc1,bn1,fc2,bn2}.*`` (projection head, dropped); without DataParallel the
  prefixes are ``0.`` / ``1.``. ``linear_eval/model.py`` also accepts a ``bb_state_dict`` key
  and linear-eval checkpoints (``linear_eval/train.py``) are a DataParallel classifier:
  ``module.<torchvision name>`` plus ``module.fc.*`` (dropped). The backbone is R3D-18 with
  layer4's temporal stride replaced by temporal dilation 2 (``r3d_18_tclr``); inputs are BGR
  in [0, 1] without mean/std (README; ``linear_eval/dl_linear.py``).
* FAME, ``Mark12Ding/FAME`` @ 0600c0e9e08c00f9e92f18ec604c5720fad57156: ``train.py`` saves
  ``{"epoch", "arch": "r2plus1d_18" | "I3D", "state_dict", "optimizer"}`` where ``state_dict``
  is that of ``DistributedDataParallel(MoCo)`` (``moco/builder.py``): ``module.encoder_q.*``
  (kept), ``module.encoder_k.*``, ``module.queue``, ``module.queue_ptr`` (dropped);
  ``encoder_q.fc`` is ``Sequential(Linear, ReLU, Linear)`` for R(2+1)D (``fc.0``, ``fc.2``,
  dropped). ``backbone/r2plus1d.py`` names layers exactly as torchvision (its extra
  ``dropout`` has no parameters), so no renaming is needed. ``eval.py`` fine-tuned checkpoints
  are ``module.<name>`` plus ``module.fc.*``. Pretraining normalises with Kinetics mean/std
  (RGB). FAME's I3D backbone is not supported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.checkpoint import FORMAT_NAME, CheckpointError, load_checkpoint, read_weights_file
from training.models import create_backbone
from vcl_infer.clips.spec import KINETICS_MEAN, KINETICS_STD, ClipSpec

FORMATS = ("auto", "vcl", "torchvision", "tclr", "fame")
# Architectures tried, in order, when a checkpoint does not name its own.
_CANDIDATES = {
    "torchvision": ("r3d_18", "r2plus1d_18"),
    "tclr": ("r3d_18_tclr", "r2plus1d_18"),
    "fame": ("r2plus1d_18", "r3d_18"),
    "vcl": ("r3d_18", "r2plus1d_18", "r3d_small", "r2plus1d_small"),
}
_CLIP_SPECS = {
    # TCLR: OpenCV (BGR) frames in [0, 1], no normalisation; 16 frames at skip 2, centre crop
    # of 0.8 x short side resized to 112 (= short side 140, crop 112).
    "tclr": ClipSpec(
        frames_per_clip=16,
        frame_step=2,
        resize_size=140,
        crop_size=112,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        channel_order="BGR",
    ),
    "fame": ClipSpec(
        frames_per_clip=16, frame_step=2, resize_size=128, crop_size=112, mean=KINETICS_MEAN, std=KINETICS_STD
    ),
    "torchvision": ClipSpec(
        frames_per_clip=16, frame_step=2, resize_size=128, crop_size=112, mean=KINETICS_MEAN, std=KINETICS_STD
    ),
}


class _Inert:
    """Stand-in for pickled training-state objects (TCLR's AMP GradScaler); keeps nothing."""

    def __setstate__(self, state: Any) -> None:
        pass


def _inert(*args: Any, **kwargs: Any) -> None:
    return None


# Only these names resolve, and only to the inert stand-ins above: nothing pickled runs.
_INERT_GLOBALS: list[Any] = [(_inert, "collections.defaultdict")] + [
    pair
    for mod in ("torch.cuda.amp.grad_scaler", "torch.amp.grad_scaler")
    for pair in ((_Inert, f"{mod}.GradScaler"), (_inert, f"{mod}._refresh_per_optimizer_state"))
]


@dataclass
class ImportedCheckpoint:
    """A checkpoint converted to a vcl backbone's state dict.

    Attributes:
        arch: backbone registry name.
        arch_kwargs: keyword arguments for ``create_backbone``.
        state_dict: validated tensors; ``load_state_dict(state_dict, strict=True)`` succeeds.
        method: what produced the weights (``tclr``, ``fame``, ``supervised``, ``unknown``, ...).
        source_format: ``vcl``, ``torchvision``, ``tclr`` or ``fame``.
        clip_spec: preprocessing the weights expect, when known.
        notes: human-readable record of what was dropped, detected or assumed.
    """

    arch: str
    arch_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    method: str
    source_format: str
    clip_spec: ClipSpec | None
    notes: list[str] = field(default_factory=list)


def _strip(key: str, prefixes: tuple[str, ...] = ("module.", "_orig_mod.")) -> str:
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    return key


def _summarise(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _find_state_dict(obj: Any, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(state_dict, top_level_dict)`` from a loaded checkpoint object."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    for key in ("state_dict", "bb_state_dict", "model", "model_state_dict"):
        if isinstance(obj.get(key), dict):
            return obj[key], obj
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    raise CheckpointError(
        f"{path}: no state dict found (top-level keys: {_summarise(sorted(map(str, obj)))}); expected "
        "a dict of tensors or one under 'state_dict' / 'bb_state_dict' / 'model'"
    )


def _detect(keys: list[str]) -> str:
    if any(k.startswith("encoder_q.") for k in keys):
        return "fame"
    if any(k.startswith("0.") for k in keys) and all(k.split(".", 1)[0] in ("0", "1") for k in keys):
        return "tclr"
    return "torchvision"


def _select_backbone(sd: dict[str, Any], fmt: str, notes: list[str]) -> dict[str, Any]:
    """Keep the backbone's entries of a stripped state dict, noting what was dropped."""
    if fmt == "fame" and any(k.startswith("encoder_q.") for k in sd):
        sd = _fame_query_encoder(sd, notes)
    elif fmt == "tclr" and any(k.startswith("0.") for k in sd):
        sd = _tclr_backbone(sd, notes)
    return _without_classifier(sd, notes)


def _fame_query_encoder(sd: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """FAME's MoCo state dict -> its query encoder (``encoder_q.``), the rest dropped."""
    dropped = sorted({k.split(".", 1)[0] for k in sd if not k.startswith("encoder_q.")})
    notes.append(f"FAME MoCo checkpoint: kept encoder_q, dropped {', '.join(dropped)}")
    return {k[len("encoder_q.") :]: v for k, v in sd.items() if k.startswith("encoder_q.")}


def _tclr_backbone(sd: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """TCLR's ``Sequential(backbone, head)`` -> the backbone (``0.``), the head (``1.``) dropped."""
    head = [k[2:] for k in sd if k.startswith("1.")]
    if head:
        parts = ", ".join(sorted({k.rsplit(".", 1)[0] + ".*" for k in head}))
        notes.append(f"dropped TCLR projection head (module.1.): {parts} ({len(head)} tensors)")
    return {k[2:]: v for k, v in sd.items() if k.startswith("0.")}


def _without_classifier(sd: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """``sd`` without a classifier (``fc.*``), noting its shapes."""
    fc = sorted(k for k in sd if k.startswith("fc."))
    if fc:
        shapes = ", ".join(f"{k} {tuple(sd[k].shape)}" if isinstance(sd[k], torch.Tensor) else k for k in fc)
        notes.append(f"dropped classifier {shapes}")
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    return sd


def _reference(arch: str, arch_kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return create_backbone(arch, **arch_kwargs).state_dict()


def _mismatch(sd: dict[str, Any], ref: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    missing = [k for k in ref if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = sorted(k for k in sd if k not in ref)
    wrong = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(ref[k].shape)}"
        for k in ref
        if isinstance(sd.get(k), torch.Tensor) and tuple(sd[k].shape) != tuple(ref[k].shape)
    ]
    return missing, unexpected, wrong


def _choose_arch(sd: dict[str, Any], fmt: str, path: Path) -> str:
    tried = []
    for name in _CANDIDATES[fmt]:
        missing, unexpected, wrong = _mismatch(sd, _reference(name, {}))
        if not (missing or unexpected or wrong):
            return name
        tried.append(
            f"{name} ({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} wrong shapes)"
        )
    raise CheckpointError(
        f"{path}: the weights fit none of the known architectures: {'; '.join(tried)}. "
        "Pass arch=... (vcl-export --arch) to see the offending keys"
    )


def _validate(
    sd: dict[str, Any], arch: str, arch_kwargs: dict[str, Any], path: Path, notes: list[str]
) -> dict[str, torch.Tensor]:
    ref = _reference(arch, arch_kwargs)
    _check_fit(sd, ref, arch, path)
    out: dict[str, torch.Tensor] = {}
    bad, cast, filled = [], set(), []
    for key, want in ref.items():
        t = sd.get(key)
        if t is None:  # only num_batches_tracked may be absent (checked above)
            out[key] = torch.zeros((), dtype=torch.long)
            filled.append(key)
            continue
        problem = _tensor_problem(t, want)
        if problem is not None:
            bad.append(f"{key} ({problem})")
            continue
        if t.dtype != want.dtype:
            cast.add(str(t.dtype).removeprefix("torch."))
        out[key] = t.detach().to(dtype=want.dtype).contiguous()
    if bad:
        raise CheckpointError(
            f"{path}: unusable tensors: {_summarise(bad, 4)}; re-save them as dense float tensors"
        )
    if cast:
        notes.append(f"cast {', '.join(sorted(cast))} tensors to the model's dtypes")
    if filled:
        notes.append(f"filled {len(filled)} absent BatchNorm num_batches_tracked buffers with 0")
    return out


def _check_fit(sd: dict[str, Any], ref: dict[str, torch.Tensor], arch: str, path: Path) -> None:
    """Raise :class:`CheckpointError` naming the missing, unexpected and wrongly shaped keys."""
    missing, unexpected, wrong = _mismatch(sd, ref)
    problems = []
    if missing:
        problems.append(f"missing keys: {_summarise(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_summarise(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {_summarise(wrong, 4)}")
    if problems:
        raise CheckpointError(
            f"{path}: does not fit backbone {arch!r}: {'; '.join(problems)}. Check arch= / format= "
            "(the checkpoint may be of another architecture or layout)"
        )


def _tensor_problem(t: Any, want: torch.Tensor) -> str | None:
    """Why checkpoint entry ``t`` cannot stand for the model's ``want`` (None: it can)."""
    if type(t) not in (torch.Tensor, torch.nn.Parameter):
        return f"{type(t).__name__}, not a tensor"
    if t.layout != torch.strided or t.is_quantized or t.is_meta:
        return f"layout {t.layout}{', quantized' if t.is_quantized else ''}: need a dense tensor"
    if want.is_floating_point() != t.is_floating_point() or t.is_complex():
        return f"dtype {t.dtype}, need {'float' if want.is_floating_point() else want.dtype}"
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        return "contains NaN or Inf"
    return None


def import_checkpoint(
    path: str | os.PathLike[str], *, format: str = "auto", arch: str | None = None
) -> ImportedCheckpoint:
    """Read a checkpoint of a known layout into a vcl backbone state dict.

    Args:
        path: ``.pt`` / ``.pth`` / ``.pth.tar`` (``torch.save``) or ``.safetensors`` file.
        format: ``auto`` (detect from keys), ``vcl``, ``torchvision``, ``tclr`` or ``fame``.
        arch: backbone registry name; needed only when neither the checkpoint nor its tensor
            shapes tell (e.g. to import TCLR weights as plain ``r3d_18``).

    Returns:
        An :class:`ImportedCheckpoint`.

    Raises:
        CheckpointError: unsafe / unreadable file, unknown layout, or weights that do not fit
            the backbone (the message names the offending keys).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    path = Path(path)
    obj, meta = read_weights_file(path, inert_globals=_INERT_GLOBALS)
    notes: list[str] = []
    is_vcl = (meta or {}).get("format") == FORMAT_NAME or (
        isinstance(obj, dict) and obj.get("format") == FORMAT_NAME
    )
    if format == "vcl" and not is_vcl:
        raise CheckpointError(f"{path}: not a vcl checkpoint; try format='auto'")
    if is_vcl and format in ("auto", "vcl"):
        return _import_vcl(path, arch, notes)
    return _import_foreign(obj, path, format, arch, notes)


def _import_vcl(path: Path, arch: str | None, notes: list[str]) -> ImportedCheckpoint:
    """A vcl checkpoint: its backbone, arch, method and clip spec (``arch`` overrides its arch)."""
    ckpt = load_checkpoint(path)
    use_arch = arch or ckpt["arch"]
    kwargs = dict(ckpt.get("arch_kwargs") or {}) if use_arch == ckpt["arch"] else {}
    sd = _validate(dict(ckpt["model"]), use_arch, kwargs, path, notes)
    spec = ClipSpec.from_dict(ckpt["clip_spec"]) if ckpt.get("clip_spec") else None
    return ImportedCheckpoint(use_arch, kwargs, sd, ckpt.get("method") or "unknown", "vcl", spec, notes)


def _import_foreign(obj: Any, path: Path, format: str, arch: str | None, notes: list[str]) -> ImportedCheckpoint:
    """A torchvision, TCLR or FAME checkpoint (``format`` ``auto`` detects which from the keys)."""
    raw, top = _find_state_dict(obj, path)
    sd = {_strip(str(k)): v for k, v in raw.items()}
    fmt = _detect(list(sd)) if format == "auto" else format
    if format == "auto":
        notes.append(f"detected {fmt} layout")
    had_fc = any(k.startswith("fc.") for k in sd)
    sd = _select_backbone(sd, fmt, notes)
    arch = _foreign_arch(sd, fmt, top, arch, path, notes)
    if fmt == "tclr" and arch == "r2plus1d_18":
        notes.append(
            "TCLR R(2+1)D: the official repo does not show its layer4 temporal dilation; "
            "imported as plain r2plus1d_18"
        )
    state = _validate(sd, arch, {}, path, notes)
    if fmt == "torchvision":
        method = "supervised" if had_fc else "unknown"
        spec = _CLIP_SPECS["torchvision"] if had_fc else None
    else:
        method, spec = fmt, _CLIP_SPECS.get(fmt)
    if fmt == "fame":
        notes.append(
            "FAME pretrains on Kinetics mean/std (used here); its retrieval eval uses ImageNet mean/std"
        )
    return ImportedCheckpoint(arch, {}, state, method, fmt, spec, notes)


def _foreign_arch(sd: dict[str, Any], fmt: str, top: dict[str, Any], arch: str | None, path: Path,
                  notes: list[str]) -> str:
    """``arch`` if given, else the one a FAME checkpoint names, else the one the shapes fit."""
    ckpt_arch = top.get("arch") if isinstance(top.get("arch"), str) else None
    if arch is None and ckpt_arch is not None and fmt == "fame":
        if ckpt_arch != "r2plus1d_18":
            raise CheckpointError(
                f"{path}: FAME checkpoint of arch {ckpt_arch!r}; only r2plus1d_18 is supported"
            )
        arch = ckpt_arch
    if arch is None:
        arch = _choose_arch(sd, fmt if fmt in _CANDIDATES else "torchvision", path)
        notes.append(f"architecture {arch} inferred from tensor shapes")
    return arch
