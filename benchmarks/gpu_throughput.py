"""GPU throughput: RNN inference megapixels per second and fine-tuning steps per second.

    python benchmarks/gpu_throughput.py [--json out.json]

Exits with a message when no CUDA device is present (it was not measured in the session that
wrote it: no GPU there). Inference: the fused exact RNN (fp32, K = 2, T = 5) on 2048x2048 inputs
already on the device, synchronised timing. Training: ``train_rnn``'s step (bf16 autocast on
CUDA) at the default batch and patch size, and at batch 64.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import machine  # noqa: E402
from refiner.classes import ClassSpec  # noqa: E402
from refiner.models.fused import FusedRNN  # noqa: E402
from refiner.models.rnn import RefinerRNN, RNNConfig  # noqa: E402
from refiner.train import RNNTrainConfig, train_rnn  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return
    dev = torch.device("cuda")
    torch.manual_seed(0)
    net = RefinerRNN(RNNConfig(2)).to(dev).eval()
    fast = FusedRNN(net)
    n = 2048
    image = torch.randn(1, 3, n, n, device=dev)
    probs = torch.softmax(torch.randn(1, 2, n, n, device=dev), 1)
    for _ in range(3):
        fast(image, probs, keep_all=False)
    torch.cuda.synchronize()
    t0, reps = time.perf_counter(), 10
    for _ in range(reps):
        fast(image, probs, keep_all=False)
    torch.cuda.synchronize()
    mpx_per_s = reps * n * n / 1e6 / (time.perf_counter() - t0)
    rng = np.random.default_rng(0)
    img = rng.random((3, 512, 512), dtype=np.float32)
    prb = np.stack([np.full((512, 512), 0.6, np.float32), np.full((512, 512), 0.4, np.float32)])
    lab = (rng.random((512, 512)) > 0.9).astype(np.uint8)
    training = {}
    for batch in (RNNTrainConfig().batch_size, 64):
        cfg = replace(RNNTrainConfig(), steps=200, batch_size=batch, eval_every=10_000, holdout=0.0)
        t0 = time.perf_counter()
        train_rnn(img, prb, lab, ClassSpec.parse("background,road"), cfg, device="cuda")
        training[f"batch_{batch}_steps_per_s"] = round(200 / (time.perf_counter() - t0), 1)
    report = {"machine": machine(), "inference_mpx_per_s": round(mpx_per_s, 1), **training}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
