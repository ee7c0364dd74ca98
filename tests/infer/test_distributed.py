"""The U-Net stage on a dask.distributed LocalCluster: same tracks as a local run, lost workers
retried, clear errors for an unreachable or malformed scheduler."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sys
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from napari_cellect.cli import main  # noqa: E402
from napari_cellect.data.images import open_sequence  # noqa: E402
from napari_cellect.data.synthetic import PRESETS, write_synthetic  # noqa: E402
from napari_cellect.errors import InputError, SchedulerError  # noqa: E402
from napari_cellect.infer.distributed import connect, parse_scheduler  # noqa: E402
from napari_cellect.model.bundle import ModelBundle  # noqa: E402
from napari_cellect.pipeline import make_labeler, track_images  # noqa: E402

#: nothing listens on the discard port of this machine
UNREACHABLE = "tcp://127.0.0.1:9"
#: a cluster run that takes longer is stopped (Cancelled), so a broken cluster fails, not hangs
RUN_LIMIT_S = 300


def within_limit():
    """A ``should_stop`` that turns a hanging run into a Cancelled error."""
    deadline = time.monotonic() + RUN_LIMIT_S
    return lambda: time.monotonic() > deadline


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return ModelBundle.load_default()


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    config = dataclasses.replace(PRESETS["default"], frames=5, shape=(8, 64, 64), n_cells=6, seed=3)
    root = write_synthetic(tmp_path_factory.mktemp("dist") / "embryo", config).root
    return config, open_sequence(root / "images")


@pytest.fixture(scope="module")
def client():
    """Two one-thread worker processes (torch on one thread each, as in the tests' process)."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster, timeout=60) as client,
    ):
        client.wait_for_workers(2, timeout=120)
        yield client


@pytest.fixture(scope="module")
def local_run(bundle, sequence):
    config, seq = sequence
    return track_images(seq, bundle, z_ratio=config.z_ratio, keep_foreground=True)


def _same_tracks(a, b) -> None:
    assert len(a.graph) > 0
    left, right = a.graph.to_dataframe(), b.graph.to_dataframe()
    assert left.equals(right), f"\n{left}\n!=\n{right}"


def test_a_local_cluster_gives_the_same_tracks_and_masks_as_a_local_run(
    bundle, sequence, client, local_run
):
    config, seq = sequence
    result = track_images(
        seq,
        bundle,
        z_ratio=config.z_ratio,
        keep_foreground=True,
        scheduler=client,
        should_stop=within_limit(),
    )
    _same_tracks(local_run, result)
    labels = [
        make_labeler(r.graph, r.shape, z_ratio=config.z_ratio, foreground=r.foreground)
        for r in (local_run, result)
    ]
    for t in range(len(seq)):
        np.testing.assert_array_equal(labels[0](t), labels[1](t))
    assert result.foreground.get(0) is not None


def test_images_only_in_memory_travel_with_their_tasks(bundle, sequence, client, local_run):
    config, seq = sequence
    result = track_images(
        np.asarray(seq.data),
        bundle,
        z_ratio=config.z_ratio,
        scheduler=client,
        should_stop=within_limit(),
    )
    _same_tracks(local_run, result)


def test_a_worker_killed_mid_run_has_its_frame_pairs_retried(bundle, sequence, client, local_run):
    config, seq = sequence
    killed: list[str] = []
    too_long = within_limit()

    def kill_a_busy_worker() -> bool:
        busy = [
            addr
            for addr, keys in client.processing().items()
            if any("cellect-frame" in str(k) for k in keys)
        ]
        if busy and not killed:
            pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(busy[0])
        return too_long()

    result = track_images(
        seq, bundle, z_ratio=config.z_ratio, scheduler=client, should_stop=kill_a_busy_worker
    )
    assert killed, "no worker was busy with a frame pair while the client waited"
    _same_tracks(local_run, result)
    client.wait_for_workers(2, timeout=120)  # the nanny restarts it for the next test


def test_a_running_scheduler_is_reached_by_its_address(client):
    """The path --scheduler tcp://HOST:PORT takes: handshake, client, workers; leaving closes
    only this client, not the cluster."""
    address = client.scheduler.address
    assert address.startswith("tcp://")
    with connect(address) as other:
        assert other is not client and other.nthreads() == client.nthreads()
        assert other.submit(sum, [1, 2], pure=False).result(timeout=60) == 3
    assert other.status == "closed" and client.nthreads()


def test_an_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(SchedulerError, match=r"cannot reach the dask scheduler at tcp://127\.0\.0"):
        with connect(UNREACHABLE):
            pass


def test_a_scheduler_that_never_answers_is_an_error_within_the_timeout(monkeypatch):
    """A port that accepts the connection but never speaks (a firewall, a hung scheduler): the
    error comes after CONNECT_TIMEOUT_S, not after dask's own 30 s connect timeout."""
    import napari_cellect.infer.distributed as on_cluster

    monkeypatch.setattr(on_cluster, "CONNECT_TIMEOUT_S", 1.0)
    raised: list[BaseException] = []

    def connect_to(address: str) -> None:
        try:
            with connect(address):
                pass
        except BaseException as err:
            raised.append(err)

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        trying = threading.Thread(target=connect_to, args=(address,), daemon=True)
        trying.start()
        trying.join(20)  # a thread, so a connect that waits for ever fails the test, not hangs it
        assert not trying.is_alive(), "connect waited out the scheduler's silence"
    assert len(raised) == 1 and isinstance(raised[0], SchedulerError)
    assert "cannot reach the dask scheduler at tcp://127.0.0.1" in str(raised[0])
    assert "within 1 s" in str(raised[0])


def test_each_worker_loads_the_model_once_for_every_run(bundle, sequence, client):
    """The model reaches a worker as bytes with the first task; later tasks and later runs with
    the same model use the bundle that worker process already loaded."""
    config, seq = sequence

    def remember() -> int:  # on each worker: hold on to the bundles it has loaded
        from napari_cellect.infer import distributed as on_worker

        on_worker._seen_by_test = dict(on_worker._models)  # type: ignore[attr-defined]
        return len(on_worker._models)

    def still_the_same() -> bool:
        from napari_cellect.infer import distributed as on_worker

        seen = on_worker._seen_by_test  # type: ignore[attr-defined]
        return all(on_worker._models.get(key) is model for key, model in seen.items())

    track_images(seq, bundle, z_ratio=config.z_ratio, scheduler=client, should_stop=within_limit())
    loaded = list(client.run(remember).values())
    assert 1 in loaded and set(loaded) <= {0, 1}  # one model per worker that ran a pair
    track_images(seq, bundle, z_ratio=config.z_ratio, scheduler=client, should_stop=within_limit())
    assert all(client.run(still_the_same).values())


def test_cli_track_on_a_local_cluster_writes_the_tracks_of_a_local_run(sequence, tmp_path):
    _, seq = sequence
    here, there = tmp_path / "here.csv", tmp_path / "there.csv"
    images = str(seq.origin[0])
    assert main(["track", images, "-o", str(here), "--no-cache"]) == 0
    assert main(["track", images, "-o", str(there), "--no-cache", "--scheduler", "local:2"]) == 0
    assert len(here.read_text().splitlines()) > 1
    assert here.read_text() == there.read_text()


@pytest.mark.parametrize("text", ["local:0", "local:two", "127.0.0.1:8786", ""])
def test_a_malformed_scheduler_says_what_was_expected(text):
    with pytest.raises(InputError, match="expected"):
        parse_scheduler(text)


def test_an_unknown_address_scheme_says_what_was_expected():
    with pytest.raises(InputError, match=r"expected an address like tcp://.*unknown address"):
        with connect("foo://10.0.0.1:8786"):
            pass


def test_parse_scheduler_accepts_addresses_and_local_clusters():
    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler(" tcp://10.0.0.1:8786 ") == ("address", "tcp://10.0.0.1:8786")


def test_cli_track_with_an_unreachable_scheduler_exits_2_with_one_line(sequence, tmp_path, capsys):
    _, seq = sequence
    out = tmp_path / "tracks.csv"
    code = main(["track", str(seq.origin[0]), "-o", str(out), "--scheduler", UNREACHABLE])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "cannot reach the dask scheduler" in err
    assert not out.exists()


def test_without_dask_distributed_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` fails
    with pytest.raises(SchedulerError, match=r"pip install 'napari-cellect\[distributed\]'"):
        with connect("local:1"):
            pass


def test_a_cluster_without_workers_is_an_error_not_a_hang(bundle, sequence, monkeypatch):
    import napari_cellect.infer.distributed as on_cluster

    config, seq = sequence
    monkeypatch.setattr(on_cluster, "WORKER_WAIT_S", 1.0)
    with (
        distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as empty,
        distributed.Client(empty) as client,
    ):
        with pytest.raises(SchedulerError, match="no worker for 1 s"):
            track_images(
                seq, bundle, z_ratio=config.z_ratio, scheduler=client, should_stop=within_limit()
            )
