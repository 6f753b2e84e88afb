"""Refiner: learn to sharpen coarse satellite classification maps (Maggiori et al., TGRS 2017).

The engine, with no UI imports: :mod:`refiner.data` (I/O), :mod:`refiner.models` (coarse CNN
and refinement RNN), :mod:`refiner.train`, :mod:`refiner.models.inference`, :mod:`refiner.baselines.crf`,
:mod:`refiner.core.metrics`, :mod:`refiner.recipes.experiment`, :mod:`refiner.data.synthetic`, :mod:`refiner.cli`.
For the web app: :mod:`refiner.app.workspace`, :mod:`refiner.app.jobs`, :mod:`refiner.app.painting`,
:mod:`refiner.app.results`, :mod:`refiner.app.viz`, :mod:`refiner.data.export`.
"""

__version__ = "0.1.0"
