"""Saving and loading models: ``model.safetensors`` + ``config.json`` in one folder. Never pickle.

The JSON carries everything needed to use the weights correctly: architecture, class list,
working resolution and the image normalisation the network was trained with.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from refiner.classes import ClassSpec
from refiner.models.coarse import CoarseCNN, CoarseConfig
from refiner.models.rnn import RefinerRNN, RNNConfig

FORMAT = "refiner-model"
VERSION = 1
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
CONFIG = "config.json"


@dataclass
class ModelBundle:
    """A network together with what it needs to be used: classes, resolution, normalisation."""

    kind: str  # "coarse" or "rnn"
    net: torch.nn.Module
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
        return self.net.cfg  # type: ignore[return-value]


def image_stats(images: list[np.ndarray]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and std over images (C, H, W) in [0, 1], for ``ModelBundle`` normalisation."""
    flat = np.concatenate([im.reshape(im.shape[0], -1) for im in images], axis=1)
    std = np.maximum(flat.std(axis=1), 1e-3)
    return tuple(float(x) for x in flat.mean(axis=1)), tuple(float(x) for x in std)


def save_model(bundle: ModelBundle, folder: str | Path) -> Path:
    """Write weights and config atomically (a crash never leaves a half-written model)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
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
    _save_tensors(state, folder / WEIGHTS)
    if bundle.optimizer_state:
        _save_tensors(bundle.optimizer_state, folder / OPTIMIZER)
    tmp_c = folder / (CONFIG + ".tmp")
    tmp_c.write_text(json.dumps(config, indent=2))
    os.replace(tmp_c, folder / CONFIG)
    return folder


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
        tmp = f.name
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp)
    os.chmod(tmp, 0o644)  # NamedTemporaryFile makes it private; a model is an ordinary file
    os.replace(tmp, path)


def load_model(folder: str | Path, *, expect: str | None = None, device: str | torch.device = "cpu") -> ModelBundle:
    """Load a model folder written by :func:`save_model`; ``expect`` checks its kind."""
    folder = Path(folder)
    cfg_path, w_path = folder / CONFIG, folder / WEIGHTS
    if not folder.is_dir() or not cfg_path.is_file() or not w_path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a Refiner model folder (it needs {CONFIG} and {WEIGHTS}); "
            "train one with `python -m refiner train-coarse` or `finetune`"
        )
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cfg_path} is not valid JSON: {exc}") from exc
    if config.get("format") != FORMAT:
        raise ValueError(f"{cfg_path} is not a Refiner model config (format {config.get('format')!r})")
    kind = config["kind"]
    if expect and kind != expect:
        raise ValueError(f"{folder} holds a {kind} model, but a {expect} model is needed here")
    arch = config["architecture"]
    if kind == "coarse":
        net: torch.nn.Module = CoarseCNN(CoarseConfig(**arch))
    elif kind == "rnn":
        net = RefinerRNN(RNNConfig(**arch))
    else:
        raise ValueError(f"{cfg_path}: unknown model kind {kind!r}")
    net.load_state_dict(load_file(str(w_path)))
    net.to(device).eval()
    norm = config.get("normalisation", {})
    return ModelBundle(
        kind=kind,
        net=net,
        classes=ClassSpec.from_dict(config["classes"]),
        resolution=config.get("resolution"),
        mean=tuple(norm.get("mean", (0.5, 0.5, 0.5))),
        std=tuple(norm.get("std", (0.25, 0.25, 0.25))),
        info=config.get("info", {}),
        optimizer_state=load_file(str(folder / OPTIMIZER)) if (folder / OPTIMIZER).is_file() else None,
    )
