"""Shared helpers for the benchmarks: machine description, load, real data, a stand-in coarse map."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
ROADS = DATA / "massachusetts_roads"


def machine() -> dict:
    """CPU model, core count, torch threads, load average and date: what a number needs beside it."""
    import torch

    cpu = platform.processor()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), cpu)
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def stand_in_coarse(labels: np.ndarray, k: int = 2, *, sigma: float = 2.5, stride: int = 4) -> np.ndarray:
    """A coarse CNN's output stand-in: one-hot labels averaged on a 4x coarser grid, upsampled, blurred
    (the same rule as ``tests/conftest.py``): objects found, outlines soft and blocky."""
    onehot = np.stack([(labels == c).astype(np.float32) for c in range(k)])
    h, w = labels.shape
    small = (
        onehot[:, : h - h % stride, : w - w % stride].reshape(k, h // stride, stride, w // stride, stride).mean((2, 4))
    )
    up = np.repeat(np.repeat(small, stride, 1), stride, 2)
    up = np.pad(up, ((0, 0), (0, h - up.shape[1]), (0, w - up.shape[2])), mode="edge")
    p = 0.85 * ndimage.gaussian_filter(up, (0, sigma, sigma)) + 0.15 / k
    return (p / p.sum(0, keepdims=True)).astype(np.float32)


def roads_tile(name: str = "01") -> tuple[np.ndarray, np.ndarray]:
    """A real Massachusetts tile (3, 1500, 1500) in [0, 1] and its road labels (0/1)."""
    from PIL import Image

    image = np.asarray(Image.open(ROADS / "images" / f"{name}.jpg").convert("RGB"), np.float32) / 255
    mask = np.asarray(Image.open(ROADS / "masks" / f"{name}.png").convert("L"))
    return np.ascontiguousarray(image.transpose(2, 0, 1)), (mask > 127).astype(np.uint8)
