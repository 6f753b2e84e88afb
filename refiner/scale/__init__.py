"""Scenes larger than memory: windowed runs of the networks, locally or on a Dask cluster.

:mod:`.cluster` is the generic Dask plumbing (clients, ordered bounded maps, GPU workers);
:mod:`.scene` streams a scene through the networks window by window, exactly.
"""
