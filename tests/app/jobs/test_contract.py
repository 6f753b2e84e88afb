"""Every kind of background job passes the same contract (:mod:`tests.app.jobs.contract`)."""

from __future__ import annotations

import pytest

from refiner.app import jobs
from refiner.app.jobs import adapt as adapt_job
from refiner.app.jobs import crf as crf_job
from refiner.app.jobs import scene as scene_job
from tests.app.jobs.contract import JobKindContract
from tests.helpers import make_workspace
from tests.scale.test_scene import files  # noqa: F401  (module fixture: a small georeferenced scene)


class TestTraining(JobKindContract):
    kind = jobs.TRAINING

    @pytest.fixture()
    def ws(self, tmp_path):
        return make_workspace(tmp_path, with_rnn=False)

    def start(self, ws, backend):
        params = jobs.TrainParams(steps=4, eval_every=2, eval_seconds=None, batch_size=2, patch_size=24, resume=False)
        return jobs.start_training(ws, params, backend=backend)


class TestCRFSearch(JobKindContract):
    kind = crf_job.CRF_SEARCH

    @pytest.fixture()
    def ws(self, tmp_path):
        return make_workspace(tmp_path, with_rnn=False)

    def start(self, ws, backend):
        return crf_job.start_crf_search(ws, backend=backend)


class TestScene(JobKindContract):
    kind = scene_job.SCENE

    @pytest.fixture()
    def ws(self, tmp_path, files):  # noqa: F811
        ws = make_workspace(tmp_path)
        self.scene = files["dir"]
        return ws

    def start(self, ws, backend):
        d = self.scene
        return scene_job.start_scene_job(ws, str(d / "image.tif"), coarse=str(d / "probs.tif"), backend=backend)


class TestAdapt(JobKindContract):
    kind = adapt_job.ADAPT

    @pytest.fixture()
    def ws(self, tmp_path):
        return make_workspace(tmp_path, with_rnn=False)

    def start(self, ws, backend):
        return adapt_job.start_adapt(ws, seconds=4.0, backend=backend)


def test_every_kind_of_job_passes_the_contract():
    """A new kind (declared with :class:`~refiner.app.jobs.base.JobKind`) adds its class here."""
    tested = {c.kind.name for c in JobKindContract.__subclasses__()}
    assert tested == set(jobs.KINDS), f"job kinds without a contract test: {set(jobs.KINDS) - tested}"
