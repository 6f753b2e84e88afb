"""Refiner: learn to sharpen coarse satellite classification maps (Maggiori et al., TGRS 2017).

The public API is the names in ``__all__``, each imported from its module on first use:
``import refiner`` itself loads neither torch nor rasterio, so ``refiner --help``, a script that
needs only :mod:`refiner.core.classes` or a Dask worker pays only for what it uses::

    import refiner

    tile = refiner.read_image("tile.tif")
    probs = refiner.predict_coarse(refiner.load_model("models/coarse"), tile)

The package is in layers; a module imports only its own layer and those below it
(``tests/test_layers.py`` enforces it, ``docs/architecture.md`` draws it), lowest first:

* :mod:`refiner.core`: class lists (:class:`ClassSpec`), scores (:func:`evaluate`), atomic
  files, windows, the device, where the shipped files are (:mod:`refiner.core.paths`);
* :mod:`refiner.data`: tiles, labels and maps in and out of files (:func:`read_image`,
  :func:`write_probs`), vector labels, resampling, exports, synthetic scenes;
* :mod:`refiner.models`: the coarse CNN and the refinement RNN, their on-disk format
  (:func:`load_model`), inference (:func:`predict_coarse`, :func:`refine`), the shipped
  pretrained models;
* :mod:`refiner.train` (:func:`train_coarse`, :func:`train_rnn`) beside
  :mod:`refiner.baselines` (:func:`dense_crf`);
* :mod:`refiner.scale` (scenes larger than memory, locally or on Dask: :func:`refine_scene`)
  beside :mod:`refiner.recipes` (TOML-driven runs: the paper's experiment, the pretrained
  models, the demo data);
* :mod:`refiner.app`: what only the web app needs (workspaces, sessions, jobs; no Streamlit);
* :mod:`refiner.cli`: the command line, ``refiner`` or ``python -m refiner``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: The public names by the module that defines them, imported when a name is first used; the
#: same as the ``if TYPE_CHECKING:`` imports below, which type checkers read instead.
_LAZY = {
    "refiner.core.classes": ("IGNORE", "ClassSpec"),
    "refiner.core.metrics": ("Scores", "evaluate"),
    "refiner.data.tile": ("Georef", "Tile"),
    "refiner.data.read": ("read_image", "read_labels", "read_probs"),
    "refiner.data.write": ("write_raster", "write_probs", "write_class_map"),
    "refiner.data.synthetic": ("make_scene",),
    "refiner.models.store": ("ModelBundle", "load_model", "save_model"),
    "refiner.models.inference": ("Refinement", "predict_coarse", "refine"),
    "refiner.models.pretrained": ("pretrained_root",),
    "refiner.train.coarse": ("CoarseTrainConfig", "train_coarse"),
    "refiner.train.rnn": ("RNNTrainConfig", "RNNTrainResult", "train_rnn", "finetune_from_pretrained"),
    "refiner.train.adapt": ("AdaptConfig", "Adaptation", "adapt"),
    "refiner.baselines.crf": ("CRFParams", "dense_crf", "grid_search"),
    "refiner.scale.scene": ("predict_scene", "refine_scene"),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}

__all__ = [
    "__version__",
    # core: classes and scores
    "IGNORE",
    "ClassSpec",
    "Scores",
    "evaluate",
    # data: files in and out
    "Georef",
    "Tile",
    "read_image",
    "read_labels",
    "read_probs",
    "write_raster",
    "write_probs",
    "write_class_map",
    "make_scene",
    # models: storage, inference, the shipped models
    "ModelBundle",
    "load_model",
    "save_model",
    "Refinement",
    "predict_coarse",
    "refine",
    "pretrained_root",
    # train
    "CoarseTrainConfig",
    "train_coarse",
    "RNNTrainConfig",
    "RNNTrainResult",
    "train_rnn",
    "finetune_from_pretrained",
    "AdaptConfig",
    "Adaptation",
    "adapt",
    # baselines
    "CRFParams",
    "dense_crf",
    "grid_search",
    # scale: scenes larger than memory
    "predict_scene",
    "refine_scene",
]

if TYPE_CHECKING:
    from refiner.baselines.crf import CRFParams, dense_crf, grid_search
    from refiner.core.classes import IGNORE, ClassSpec
    from refiner.core.metrics import Scores, evaluate
    from refiner.data.read import read_image, read_labels, read_probs
    from refiner.data.synthetic import make_scene
    from refiner.data.tile import Georef, Tile
    from refiner.data.write import write_class_map, write_probs, write_raster
    from refiner.models.inference import Refinement, predict_coarse, refine
    from refiner.models.pretrained import pretrained_root
    from refiner.models.store import ModelBundle, load_model, save_model
    from refiner.scale.scene import predict_scene, refine_scene
    from refiner.train.adapt import Adaptation, AdaptConfig, adapt
    from refiner.train.coarse import CoarseTrainConfig, train_coarse
    from refiner.train.rnn import RNNTrainConfig, RNNTrainResult, finetune_from_pretrained, train_rnn


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562) and keep the name here."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'refiner' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)
