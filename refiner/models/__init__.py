"""Networks: the coarse CNN, the refinement RNN, and their on-disk format."""

from refiner.models.coarse import CoarseCNN, CoarseConfig
from refiner.models.rnn import VARIANTS, RefinerRNN, RNNConfig
from refiner.models.store import ModelBundle, load_model, save_model

__all__ = [
    "VARIANTS",
    "CoarseCNN",
    "CoarseConfig",
    "ModelBundle",
    "RNNConfig",
    "RefinerRNN",
    "load_model",
    "save_model",
]
