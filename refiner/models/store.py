"""Saving and loading models: ``model.safetensors`` + ``config.json`` in one folder. Never pickle.

The JSON carries everything needed to use the weights correctly: architecture, class list,
working resolution and the image normalisation the network was trained with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeAlias, TypeVar, overload

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from refiner.core.atomic import atomic_dir, check_writable
from refiner.core.classes import ClassSpec
from refiner.models.coarse import CoarseConfig, CoarseNet
from refiner.models.designs import build_coarse
from refiner.models.rnn import RefinerRNN, RNNConfig

FORMAT = "refiner-model"
VERSION = 1
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
CONFIG = "config.json"

#: The network a bundle holds: ``ModelBundle[CoarseNet]`` or ``ModelBundle[RefinerRNN]``.
NetT = TypeVar("NetT", bound="CoarseNet | RefinerRNN")


@dataclass
class ModelBundle(Generic[NetT]):
    """A network together with what it needs to be used: classes, resolution, normalisation.

    Generic in the network, so ``load_model(..., expect="rnn").net`` is typed as a
    :class:`RefinerRNN`; ``kind`` names the same thing for the files and the messages.

    Attributes:
        kind: ``"coarse"`` or ``"rnn"``.
        net: the network (a ``CoarseNet`` or a ``RefinerRNN``).
        classes: the classes it predicts, in the order of its outputs.
        resolution: metres per pixel the network works at (None: as given).
        mean: per-band mean of the training images (normalisation).
        std: per-band standard deviation of the training images.
        info: training provenance, JSON-able (``trained_steps``, scores, ...).
        optimizer_state: AdaGrad accumulators by parameter name, so training resumes exactly.

    Example:
        ```python
        rnn = refiner.load_model("models/rnn", expect="rnn")
        print(rnn.classes.names, rnn.resolution, rnn.info.get("trained_steps"))
        ```
    """

    kind: str  # "coarse" or "rnn"
    net: NetT
    classes: ClassSpec
    resolution: float | None = None  # metres per pixel the network works at; None = as given
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.25, 0.25, 0.25)
    info: dict[str, Any] = field(default_factory=dict)  # training provenance, JSON-able
    #: AdaGrad accumulators by parameter name, so "continue training" resumes exactly.
    optimizer_state: dict[str, torch.Tensor] | None = None

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> standardised per band as during training."""
        mean = torch.tensor(self.mean, dtype=image.dtype, device=image.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=image.dtype, device=image.device).view(1, -1, 1, 1)
        return (image - mean) / std

    @property
    def config(self) -> CoarseConfig | RNNConfig:
        """The network's architecture (a coarse or an RNN config)."""
        return self.net.cfg


#: A bundle of either kind, as :func:`load_model` returns when the kind is not known in advance.
AnyBundle: TypeAlias = "ModelBundle[CoarseNet] | ModelBundle[RefinerRNN]"


def image_stats(images: list[np.ndarray]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and std over images (C, H, W) in [0, 1], for ``ModelBundle`` normalisation."""
    flat = np.concatenate([im.reshape(im.shape[0], -1) for im in images], axis=1)
    std = np.maximum(flat.std(axis=1), 1e-3)
    return tuple(float(x) for x in flat.mean(axis=1)), tuple(float(x) for x in std)


CHECKPOINT_SUFFIX = ".checkpoint"


def is_model_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a saved model (it has a ``config.json``)."""
    return (Path(folder) / CONFIG).is_file()


def check_model_output(folder: str | Path) -> Path:
    """Refuse, before any work, a model output that could not be written or would destroy other files.

    ``folder`` may be new, empty or a model folder (replaced whole); not a file, and not a folder
    with other things in it; and it must be writable (:func:`refiner.core.atomic.check_writable`).
    """
    folder = Path(folder)
    if folder.is_file() or (folder.exists() and not folder.is_dir()):
        raise ValueError(f"{folder} is a file, and a model is a folder — give a new folder name for the model")
    if folder.is_dir() and any(folder.iterdir()) and not is_model_folder(folder):
        raise ValueError(
            f"{folder} is a folder with other files in it, not a Refiner model — give a new or empty folder "
            "(a model folder is replaced whole)"
        )
    check_writable(folder)
    return folder


def save_model(bundle: AnyBundle, folder: str | Path) -> Path:
    """Write weights and config as one folder, whole or not at all (:func:`refiner.core.atomic.atomic_dir`).

    A crash, a ``kill -9`` or a full disk leaves either the previous model or the new one under
    ``folder``, never a mix, and no temporary files. Never pickle: ``model.safetensors`` (and
    ``optimizer.safetensors`` when the bundle has AdaGrad state) and ``config.json``.

    Args:
        bundle: the network with its classes, resolution and normalisation.
        folder: the model folder to write (replaced whole if it exists).

    Returns:
        ``folder``.

    Raises:
        ValueError: ``folder`` holds other files than a model, or the weights are not finite
            (NaN or infinite: a diverged training; such a model is never written).

    Example:
        ```python
        result = refiner.train_rnn(tile.image, probs, labels, classes)
        refiner.save_model(result.bundle, "models/rnn")
        ```
    """
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()) and not is_model_folder(folder):
        check_model_output(folder)  # never replace a folder of other files
    config = {
        "format": FORMAT,
        "version": VERSION,
        "kind": bundle.kind,
        "architecture": bundle.config.to_dict(),
        "classes": bundle.classes.to_dict(),
        "resolution": bundle.resolution,
        "normalisation": {
            "rule": "x = (pixel scaled to [0, 1] - mean) / std, per band",
            "mean": list(bundle.mean),
            "std": list(bundle.std),
        },
        "info": bundle.info,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in bundle.net.state_dict().items()}
    bad = sum(int((~torch.isfinite(v)).sum()) for v in state.values() if v.is_floating_point())
    if bad:  # a model that refines every tile to NaN is worse than none: never written
        raise ValueError(
            f"the model has {bad:,} NaN or infinite weights, so it was not saved — train it again from finite "
            "imagery and probabilities (NaN pixels declared as nodata) or with a lower learning rate"
        )
    optimizer = {k: v.detach().cpu().contiguous() for k, v in (bundle.optimizer_state or {}).items()}
    with atomic_dir(folder) as tmp:
        save_file(state, str(tmp / WEIGHTS))
        if optimizer:
            save_file(optimizer, str(tmp / OPTIMIZER))
        (tmp / CONFIG).write_text(json.dumps(config, indent=2))
    return folder


def save_checkpoint(bundle: AnyBundle, folder: str | Path, step: int) -> Path:
    """A checkpoint of a training run at ``step``, written whole like :func:`save_model`.

    A model folder whose ``info`` says so (``"stopped": "checkpoint"``).
    """
    info = bundle.info
    bundle.info = {**info, "stopped": "checkpoint", "checkpoint_step": int(step)}
    try:
        return save_model(bundle, folder)
    finally:
        bundle.info = info


def _check_safetensors(path: Path) -> None:
    """Refuse a weights file that is not safetensors before anything parses it: it is never unpickled.

    A ``torch.save`` pickle renamed, say.
    """
    with open(path, "rb") as f:
        head = f.read(9)
    size = path.stat().st_size
    n = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if len(head) < 9 or not 0 < n <= size - 8 or head[8:9] != b"{":
        kind = "a zip or torch.save file" if head.startswith(b"PK") else "a pickle" if head[:1] == b"\x80" else ""
        raise ValueError(
            f"{path} is not a safetensors file{f' (it looks like {kind})' if kind else ''}; Refiner never "
            "loads pickles — convert the weights with safetensors.torch.save_file, or train the model again"
        )


def _config_error(cfg_path: Path, what: str) -> ValueError:
    return ValueError(f"{cfg_path} {what} — restore the model folder's original config.json, or train the model again")


ArchT = TypeVar("ArchT", CoarseConfig, RNNConfig)


def _arch(cfg_path: Path, cls: type[ArchT], arch: dict[str, Any]) -> ArchT:
    """The architecture dataclass from ``config.json``, with unknown or bad keys named."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(arch) - known)
    if unknown:
        raise _config_error(cfg_path, f"has unknown architecture key(s) {unknown}")
    try:
        return cls(**arch)
    except (TypeError, ValueError) as exc:
        raise _config_error(cfg_path, f"has an invalid architecture ({exc})") from exc


def _load_weights(net: torch.nn.Module, w_path: Path, cfg_path: Path) -> None:
    try:
        state = load_file(str(w_path))
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise ValueError(f"{w_path} cannot be read ({exc}) — copy the model folder again, or train again") from exc
    want = net.state_dict()
    missing = sorted(set(want) - set(state))
    extra = sorted(set(state) - set(want))
    shapes = [k for k in want if k in state and tuple(state[k].shape) != tuple(want[k].shape)]
    if missing or extra or shapes:
        if shapes:
            k = shapes[0]
            detail = f"{k} is {tuple(state[k].shape)} in the weights but {tuple(want[k].shape)} by the config"
        else:
            detail = f"weights {(missing or extra)[:3]} are {'missing' if missing else 'unexpected'}"
        raise ValueError(
            f"{w_path} and {cfg_path.name} do not match: {detail} — restore the model folder's original "
            "config.json, or train the model again"
        )
    net.load_state_dict(state)


@overload
def load_model(
    folder: str | Path, *, expect: Literal["coarse"], device: str | torch.device = "cpu"
) -> ModelBundle[CoarseNet]: ...
@overload
def load_model(
    folder: str | Path, *, expect: Literal["rnn"], device: str | torch.device = "cpu"
) -> ModelBundle[RefinerRNN]: ...
@overload
def load_model(folder: str | Path, *, expect: str | None = None, device: str | torch.device = "cpu") -> AnyBundle: ...
def load_model(
    folder: str | Path, *, expect: str | None = None, device: str | torch.device = "cpu"
) -> ModelBundle[Any]:
    """Load a model folder written by :func:`save_model`; ``expect`` checks its kind.

    Args:
        folder: the model folder (``config.json`` and ``model.safetensors``).
        expect: ``"coarse"`` or ``"rnn"``: refuse a model of the other kind.
        device: where to put the weights.

    Returns:
        The network with its classes, resolution and normalisation (:class:`ModelBundle`).

    Raises:
        FileNotFoundError: the folder holds no (finished) model; the message says how to make one,
            or how to continue an unfinished training from its checkpoint.
        ValueError: the config cannot be read, or the model is not of the ``expect``-ed kind.

    Example:
        ```python
        coarse = refiner.load_model(refiner.pretrained_root() / "coarse_1m", expect="coarse")
        ```
    """
    folder = Path(folder)
    cfg_path, w_path = folder / CONFIG, folder / WEIGHTS
    if not w_path.is_file() and is_model_folder(folder.with_name(folder.name + CHECKPOINT_SUFFIX)):
        ck = folder.with_name(folder.name + CHECKPOINT_SUFFIX)
        raise FileNotFoundError(
            f"there is no finished model in {folder}: its training did not finish — continue it from the last "
            f"checkpoint with `python -m refiner finetune ... --resume {ck} --out {folder}`"
        )
    if not folder.is_dir() or not cfg_path.is_file() or not w_path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a Refiner model folder (it needs {CONFIG} and {WEIGHTS}) — "
            "train one with `python -m refiner train-coarse` or `finetune`"
        )
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _config_error(cfg_path, f"is not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise _config_error(cfg_path, 'is not a Refiner model config (no "format": "refiner-model")')
    missing = [k for k in ("kind", "architecture", "classes") if k not in config]
    if missing:
        raise _config_error(cfg_path, f"lacks {missing}")
    kind = config["kind"]
    if expect and kind != expect:
        raise ValueError(f"{folder} holds a {kind} model, but a {expect} model is needed here")
    arch = config["architecture"]
    if not isinstance(arch, dict):
        raise _config_error(cfg_path, "has an architecture that is not a JSON object")
    if kind == "coarse":
        net: CoarseNet | RefinerRNN = build_coarse(_arch(cfg_path, CoarseConfig, arch))
    elif kind == "rnn":
        net = RefinerRNN(_arch(cfg_path, RNNConfig, arch))
    else:
        raise _config_error(cfg_path, f"names an unknown model kind {kind!r} (coarse or rnn)")
    _check_safetensors(w_path)
    _load_weights(net, w_path, cfg_path)
    net.to(device).eval()
    norm = config.get("normalisation", {})
    try:
        classes = ClassSpec.from_dict(config["classes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _config_error(cfg_path, f"has an invalid class list ({exc})") from exc
    optimizer = None
    if (folder / OPTIMIZER).is_file():
        _check_safetensors(folder / OPTIMIZER)
        optimizer = load_file(str(folder / OPTIMIZER))
    return ModelBundle(
        kind=kind,
        net=net,
        classes=classes,
        resolution=config.get("resolution"),
        mean=tuple(norm.get("mean", (0.5, 0.5, 0.5))),
        std=tuple(norm.get("std", (0.25, 0.25, 0.25))),
        info=config.get("info", {}),
        optimizer_state=optimizer,
    )
