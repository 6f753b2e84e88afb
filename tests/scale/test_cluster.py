"""The Dask backend: a LocalCluster's scene files equal the single-process ones byte for byte."""

from contextlib import contextmanager

import pytest
import torch

from refiner.scale.scene import predict_scene, refine_scene
from tests.scale.test_scene import at_pixel_size, files  # noqa: F401  (module fixture: random models and a small scene)

pytestmark = pytest.mark.slow  # each test starts a Dask LocalCluster

distributed = pytest.importorskip("dask.distributed")


@contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def test_cluster_scene_equals_single_process_byte_for_byte(files, client, tmp_path):  # noqa: F811
    d = files["dir"]
    args = (d / "rnn", d / "image.tif", d / "probs.tif")
    local = {n: tmp_path / f"local_{n}.tif" for n in ("map", "probs", "iters")}
    dist = {n: tmp_path / f"dask_{n}.tif" for n in ("map", "probs", "iters")}
    with one_thread():  # the workers' intra-op thread count, for identical bits (see below)
        refine_scene(*args, local["map"], probs_out=local["probs"], iterations_out=local["iters"], window=64)
    refine_scene(*args, dist["map"], probs_out=dist["probs"], iterations_out=dist["iters"], window=64, scheduler=client)
    for n in local:
        assert local[n].read_bytes() == dist[n].read_bytes(), n
    # The coarse CNN's convolutions (oneDNN) sum in an order that depends on the number of
    # intra-op threads; Dask workers run one thread each, so the local run does too.
    with one_thread():
        predict_scene(d / "coarse", d / "image.tif", tmp_path / "c_local.tif", window=64)
    predict_scene(d / "coarse", d / "image.tif", tmp_path / "c_dask.tif", window=64, scheduler=client)
    assert (tmp_path / "c_local.tif").read_bytes() == (tmp_path / "c_dask.tif").read_bytes()
    # the windows really ran on the workers: each loaded the models there
    cached = client.run(lambda: __import__("refiner.scale.scene").scale.scene._cached_model.cache_info().currsize)
    assert sum(cached.values()) > 0


def test_cluster_runs_scenes_at_another_resolution_on_the_working_grid(files, client, tmp_path):  # noqa: F811
    """The working-grid windows carry their grids to the workers, which resample their own inputs."""
    image, probs = at_pixel_size(files, tmp_path, 0.5)
    with one_thread():
        refine_scene(files["dir"] / "rnn", image, probs, tmp_path / "local.tif", window=32)
    refine_scene(files["dir"] / "rnn", image, probs, tmp_path / "dask.tif", window=32, scheduler=client)
    assert (tmp_path / "local.tif").read_bytes() == (tmp_path / "dask.tif").read_bytes()


def test_finetuning_falls_back_clearly_without_gpu_workers(client):
    from refiner.scale.cluster import has_gpu_workers, run_on_gpu_worker

    assert not has_gpu_workers(client)
    messages = []
    assert run_on_gpu_worker(client, pow, 2, 10, log=messages.append) == 1024
    assert "no Dask worker declares a GPU" in messages[0]


def test_cli_scheduler_option_runs_on_the_cluster(files, client, tmp_path):  # noqa: F811
    from refiner.cli import main

    d = files["dir"]
    base = ["refine", "--model", str(d / "rnn"), "--image", str(d / "image.tif"), "--probs", str(d / "probs.tif")]
    with one_thread():  # same intra-op threads as the workers: see docs/scale.md
        assert main([*base, "--out", str(tmp_path / "a.tif"), "--window", "64"]) == 0
    address = client.scheduler.address
    assert main([*base, "--out", str(tmp_path / "b.tif"), "--window", "64", "--scheduler", address]) == 0
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()


def test_app_training_jobs_run_on_a_cluster_worker(client, tmp_path):
    import os

    from refiner.app import jobs
    from refiner.scale.cluster import DaskBackend
    from tests.helpers import make_workspace

    ws = make_workspace(tmp_path, with_rnn=False)
    backend = DaskBackend(client)
    assert not backend.gpu  # no worker declares GPU=1: any worker takes the job
    params = jobs.TrainParams(steps=4, eval_every=2, batch_size=2, patch_size=24, resume=False)
    jobs.start_training(ws, params, backend=backend)
    done = jobs.TRAINING.wait(ws, timeout=180)
    assert done.state == "finished", done.message
    assert done.step == 4 and ws.has_model("rnn")
    assert done.host and int(done.host.rsplit(":", 1)[1]) != os.getpid()  # a worker process trained it
    workers = client.run(os.getpid)
    assert int(done.host.rsplit(":", 1)[1]) in workers.values()


def test_scheduler_settings_and_clear_errors(tmp_path, monkeypatch):
    from refiner.app import jobs
    from refiner.scale.cluster import check_address
    from tests.helpers import make_workspace

    ws = make_workspace(tmp_path, with_rnn=False)
    monkeypatch.delenv("REFINER_SCHEDULER", raising=False)
    assert jobs.scheduler_setting(ws) == "" and isinstance(jobs.backend_for(""), jobs.ThreadBackend)
    monkeypatch.setenv("REFINER_SCHEDULER", "tcp://10.0.0.5:8786")
    assert jobs.scheduler_setting(ws) == "tcp://10.0.0.5:8786"  # the operator's setting...
    ws.update_settings(compute={"scheduler": ""})
    assert jobs.scheduler_setting(ws) == "tcp://10.0.0.5:8786"  # ...which no workspace setting overrides
    assert check_address("  tcp://h:1 ") == "tcp://h:1" and check_address("local") == "local"
    for bad in ("10.0.0.5:8786", "http://h:8786", "tcp://"):
        with pytest.raises(ValueError, match="not a Dask scheduler address"):
            jobs.backend_for(bad)
    with pytest.raises(RuntimeError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9.*REFINER_SCHEDULER"):
        jobs.backend_for("tcp://127.0.0.1:9")


def test_app_scene_runs_send_windows_to_the_cluster(files, client, tmp_path):  # noqa: F811
    from refiner.app.jobs import scene as scene_job
    from refiner.scale.cluster import close_shared_clients
    from tests.helpers import make_workspace

    ws = make_workspace(tmp_path)
    d = files["dir"]

    def calls():  # model lookups by window tasks on the workers
        info = client.run(lambda: __import__("refiner.scale.scene").scale.scene._cached_model.cache_info())
        return sum(i.hits + i.misses for i in info.values())

    before = calls()
    try:
        scene_job.start_scene_job(
            ws, str(d / "image.tif"), coarse=str(d / "probs.tif"), scheduler=client.scheduler.address
        )
        done = scene_job.SCENE.wait(ws, timeout=300)
    finally:
        close_shared_clients()
    assert done.state == "finished", done.message
    with one_thread():  # the workers' thread count, for identical bits (see above)
        refine_scene(ws.model_dir("rnn"), d / "image.tif", d / "probs.tif", tmp_path / "local.tif")
    assert scene_job.scene_outputs(ws)["refined_map"].read_bytes() == (tmp_path / "local.tif").read_bytes()
    assert calls() > before  # the windows were computed by the workers
