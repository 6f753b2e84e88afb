"""Networks: the coarse CNNs, the refinement RNN, and their on-disk format."""

from refiner.models.coarse import CoarseCNN, CoarseConfig, CoarseNet
from refiner.models.coarse_skip import SkipContextCNN
from refiner.models.designs import build_coarse
from refiner.models.rnn import VARIANTS, RefinerRNN, RNNConfig
from refiner.models.store import ModelBundle, load_model, save_model

__all__ = [
    "VARIANTS",
    "CoarseCNN",
    "CoarseConfig",
    "CoarseNet",
    "SkipContextCNN",
    "build_coarse",
    "ModelBundle",
    "RNNConfig",
    "RefinerRNN",
    "load_model",
    "save_model",
]
