"""Shared helpers for the benchmarks: machine description, load, real data, a stand-in coarse map."""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from refiner.data.synthetic import coarse_like

ROOT = Path(__file__).resolve().parents[1]
#: The shared real data; ``REFINER_SHARED_DATA`` points elsewhere (the GPU machine gets a staged
#: copy of one tile, since ../shared does not travel there: benchmarks/gpu_run.py --stage).
DATA = Path(os.environ.get("REFINER_SHARED_DATA", ROOT.parent / "shared" / "data"))
ROADS = DATA / "massachusetts_roads"


def machine() -> dict:
    """CPU model, core count, torch threads, load average and date: what a number needs beside it."""
    import torch

    cpu, lscpu = platform.processor(), {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        lscpu = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in out.splitlines() if ":" in ln)}
        cpu = lscpu.get("Model name", cpu)
    except OSError:
        pass
    info = {
        "cpu": cpu,
        # "AMD EPYC" names several generations: family 23 is Zen 2, 25 Zen 3/4 (model 17: Zen 4)
        "cpu_family_model": f"{lscpu.get('CPU family', '?')}/{lscpu.get('Model', '?')}",
        "avx512": "avx512f" in lscpu.get("Flags", "").split(),
        "l3": lscpu.get("L3 cache"),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def build_with(cflags: str) -> None:
    """Have the native kernel built with extra compiler flags (``-mno-avx512f``: as for an AVX2-only
    CPU), into a temporary cache; call before the kernel is first loaded."""
    if cflags:
        os.environ["REFINER_CACHE"] = tempfile.mkdtemp(prefix="refiner-bench-")
        os.environ["CC"] = f"{os.environ.get('CC', 'cc')} {cflags}"


stand_in_coarse = coarse_like  # a coarse CNN's output stand-in (``refiner.data.synthetic.coarse_like``)


def roads_tile(name: str = "01") -> tuple[np.ndarray, np.ndarray]:
    """A real Massachusetts tile (3, 1500, 1500) in [0, 1] and its road labels (0/1)."""
    from PIL import Image

    image = np.asarray(Image.open(ROADS / "images" / f"{name}.jpg").convert("RGB"), np.float32) / 255
    mask = np.asarray(Image.open(ROADS / "masks" / f"{name}.png").convert("L"))
    return np.ascontiguousarray(image.transpose(2, 0, 1)), (mask > 127).astype(np.uint8)
