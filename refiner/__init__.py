"""Refiner: learn to sharpen coarse satellite classification maps (Maggiori et al., TGRS 2017).

The engine, with no UI imports: :mod:`refiner.raster` (I/O), :mod:`refiner.models` (coarse CNN
and refinement RNN), :mod:`refiner.train`, :mod:`refiner.inference`, :mod:`refiner.crf`,
:mod:`refiner.metrics`, :mod:`refiner.experiment`, :mod:`refiner.synthetic`, :mod:`refiner.cli`.
For the web app: :mod:`refiner.workspace`, :mod:`refiner.jobs`, :mod:`refiner.painting`,
:mod:`refiner.results`, :mod:`refiner.viz`, :mod:`refiner.export`.
"""

__version__ = "0.1.0"
