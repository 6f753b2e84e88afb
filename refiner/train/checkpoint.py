"""Resumable training: everything a loop needs to continue exactly where it stopped.

A long training (the shipped coarse CNN: hours on a CPU) runs over many sittings. Stopping it
must cost nothing, and continuing must give the *same* model as a run that never stopped, so the
checkpoint holds more than weights: the optimiser's state (momentum), the step (the learning-rate
schedule's position follows from it), every random generator the loop draws from (patch
sampling, augmentation, jitter), the best weights kept so far and the learning curve.

The file is one safetensors file, written atomically (a crash mid-write leaves the previous
checkpoint): the tensors (weights, optimiser buffers, torch generator states) by name, and
everything else as JSON in its header. Never pickle (as :mod:`refiner.models.store`). A
checkpoint written for other settings or other data is refused, never silently continued.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from refiner.core.atomic import atomic_write_bytes
from refiner.train.loop import BestWeights
from refiner.train.sampling import TileMix

FORMAT = "refiner-train-checkpoint"
VERSION = 1


@dataclass
class TrainState:
    """A loop's position: steps done, training seconds spent (all sittings), best weights, history.

    ``losses`` are the training losses since the last history row (the next row's mean needs them).
    """

    step: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's CPU time (the budget on a shared machine, where wall time is not)
    eval_cpu_seconds: float = 0.0  # the part of it spent validating and monitoring, not training
    best: BestWeights = field(default_factory=BestWeights)
    history: list[dict] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def fingerprint(**parts: Any) -> dict:
    """What a checkpoint must match to be continued: settings and a summary of the data, as JSON values."""
    return json.loads(json.dumps(parts, sort_keys=True, default=str))


def data_summary(images: list[np.ndarray], labels: list[np.ndarray]) -> list[list[int]]:
    """Per tile: its shape and labelled-pixel count (cheap, and changes when the data does)."""
    return [[*im.shape, int((lab != 255).sum())] for im, lab in zip(images, labels, strict=True)]


def rng_state(mix: TileMix, gen: torch.Generator) -> dict:
    """The state of every generator a coarse-training loop draws from."""
    return {
        "torch": torch.get_rng_state(),
        "jitter": gen.get_state(),
        "mix": mix.rng.bit_generator.state,
        "samplers": [s.rng.bit_generator.state for s in mix.samplers],
    }


def set_rng_state(state: dict, mix: TileMix, gen: torch.Generator) -> None:
    """Put the generators back as :func:`rng_state` found them."""
    torch.set_rng_state(state["torch"])
    gen.set_state(state["jitter"])
    mix.rng.bit_generator.state = state["mix"]
    if len(state["samplers"]) != len(mix.samplers):
        raise ValueError("the checkpoint was written for another number of training tiles")
    for sampler, s in zip(mix.samplers, state["samplers"], strict=True):
        sampler.rng.bit_generator.state = s


def _flat_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimiser's ``state_dict`` as named tensors plus JSON (its per-parameter numbers, its groups)."""
    tensors, plain = {}, {}
    for idx, per in state["state"].items():
        for key, value in per.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{idx}/{key}"] = value.detach().cpu().contiguous()
            else:
                plain[f"{idx}/{key}"] = value
    return tensors, {"numbers": plain, "param_groups": state["param_groups"]}


def _optimizer_from(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """The inverse of :func:`_flat_optimizer`."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer/"):
            _, idx, key = name.split("/", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["numbers"].items():
        idx, key = name.split("/", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: str | Path,
    *,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    rng: dict,
    fingerprint: dict,
) -> None:
    """Write the loop's whole state to ``path`` (atomically: a crash keeps the previous file)."""
    best = state.best
    tensors = {f"net/{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors.update({f"best/{k}": v.detach().cpu().contiguous() for k, v in (best.state or {}).items()})
    opt_tensors, opt_meta = _flat_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    tensors["rng/torch"], tensors["rng/jitter"] = rng["torch"], rng["jitter"]
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": fingerprint,
        "step": state.step,
        "seconds": state.seconds,
        "cpu_seconds": state.cpu_seconds,
        "eval_cpu_seconds": state.eval_cpu_seconds,
        "best": {"score": best.score, "step": best.step, "min_delta": best.min_delta, "kept": best.state is not None},
        "history": state.history,
        "losses": list(state.losses),
        "optimizer": opt_meta,
        "rng": {"mix": rng["mix"], "samplers": rng["samplers"]},
    }
    atomic_write_bytes(path, save_tensors(tensors, metadata={"refiner": json.dumps(meta)}))


def load_checkpoint(
    path: str | Path, *, net: torch.nn.Module, optimizer: torch.optim.Optimizer, fingerprint: dict
) -> tuple[TrainState, dict]:
    """Load ``path`` into ``net`` and ``optimizer``; returns the loop's state and the generators' state.

    Raises:
        ValueError: the file is no training checkpoint, or it was written for other settings or
            data (the message names what differs).
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        tensors = load_tensors(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(json.loads(data[8 : 8 + header_len])["__metadata__"]["refiner"])
    except (SafetensorError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a readable training checkpoint ({exc}); delete it to start over") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a Refiner training checkpoint; delete it to start over")
    theirs = meta["fingerprint"]
    if theirs != fingerprint:
        diff = sorted(k for k in set(theirs) | set(fingerprint) if theirs.get(k) != fingerprint.get(k))
        raise ValueError(
            f"{path} was written for another run (it differs in: {', '.join(diff)}); "
            "continue with the settings it was started with, or give another output folder"
        )
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net/")})
    optimizer.load_state_dict(_optimizer_from(tensors, meta["optimizer"]))
    b = meta["best"]
    kept = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")} if b["kept"] else None
    best = BestWeights(min_delta=b["min_delta"], score=b["score"], step=b["step"], state=kept)
    state = TrainState(step=meta["step"], seconds=meta["seconds"], cpu_seconds=meta["cpu_seconds"],
                       eval_cpu_seconds=meta["eval_cpu_seconds"], best=best,
                       history=meta["history"], losses=list(meta["losses"]))  # fmt: skip
    rng = {"torch": tensors["rng/torch"], "jitter": tensors["rng/jitter"], **meta["rng"]}
    return state, rng
