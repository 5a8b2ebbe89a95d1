"""A real Dask cluster: a scheduler and workers as separate processes, started in other directories.

These drive ``fastpg sweep --scheduler`` as a user does on a cluster: a relative OUTDIR given in
the submitting directory, workers whose working directory is elsewhere, a worker killed with
SIGKILL mid-sweep, no workers at all, and no scheduler at all.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

import fastpg

pytest.importorskip("distributed")

from test_cli import CTRL_C, FASTPG  # noqa: E402
from test_sweep import _same_files  # noqa: E402

SPEC = ["--grid", "N=2,3", "--grid", "reward=orm,prm", "--seeds", "0-1", "-d", "6", "-k", "3", "--n-pre", "100",
        "--steps", "300", "--n-test", "16", "--eval-every", "100", "--algorithm", "rs", "--batch-size", "2", "--quiet"]


def _env():
    return dict(os.environ, NUMBA_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _start_scheduler(folder):
    folder.mkdir(parents=True, exist_ok=True)
    info = folder / "scheduler.json"
    proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                             "--no-dashboard", "--scheduler-file", str(info)], cwd=folder, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        if info.exists():
            try:
                return proc, json.loads(info.read_text())["address"]
            except (json.JSONDecodeError, KeyError):
                pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the scheduler did not start")


def _start_worker(address, folder, name):
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                             "--nworkers", "1", "--no-nanny", "--no-dashboard", "--name", name], cwd=folder, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_workers(address, n, timeout=60):
    from distributed import Client

    with Client(address, timeout=10) as client:
        client.wait_for_workers(n, timeout=timeout)


@pytest.fixture
def cluster(tmp_path):
    procs = []
    sched, address = _start_scheduler(tmp_path / "scheduler")
    procs.append(sched)

    def add_worker(name, where):
        proc = _start_worker(address, where, name)
        procs.append(proc)
        return proc

    yield address, add_worker
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _sweep(args, cwd, **kw):
    return subprocess.run([*FASTPG, "sweep", *args], cwd=cwd, capture_output=True, text=True, env=_env(),
                          timeout=600, **kw)


@pytest.mark.slow
def test_relative_outdir_with_workers_elsewhere_lands_in_the_submitting_directory(tmp_path, cluster):
    address, add_worker = cluster
    add_worker("a", tmp_path / "worker-a")
    add_worker("b", tmp_path / "worker-b")
    _wait_workers(address, 2)
    submit = tmp_path / "submit"
    submit.mkdir()
    r = _sweep(["rel/out", *SPEC, "--scheduler", address], cwd=submit)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(submit / "rel" / "out" / "index.csv")))
    assert len(rows) == 8 and all(row["status"] == "complete" for row in rows)
    for where in ("worker-a", "worker-b", "scheduler"):
        assert not list((tmp_path / where).rglob("*.h5")), where  # nothing written under a worker's directory
    local = _sweep([str(tmp_path / "local"), *SPEC], cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    for row in rows:
        _same_files(submit / "rel" / "out" / row["file"], tmp_path / "local" / row["file"])
    # one file per batch, written by the workers elsewhere: the same runs
    r = _sweep(["rel/batch", *SPEC, "--layout", "batch", "--scheduler", address], cwd=submit)
    assert r.returncode == 0, r.stderr
    assert len(list((submit / "rel" / "batch" / "batches").glob("*.h5"))) == 4
    for where in ("worker-a", "worker-b", "scheduler"):
        assert not list((tmp_path / where).rglob("*.h5")), where
    batched, local = fastpg.load_sweep(submit / "rel" / "batch", loglik=True), fastpg.load_sweep(tmp_path / "local", loglik=True)
    np.testing.assert_array_equal(batched.cube(), local.cube())
    assert batched.index.drop(columns="file").equals(local.index.drop(columns="file"))


@pytest.mark.slow
def test_a_worker_killed_mid_sweep_loses_nothing_and_rewrites_no_complete_file(tmp_path, cluster):
    address, add_worker = cluster
    victim = add_worker("victim", tmp_path / "worker-v")
    add_worker("survivor", tmp_path / "worker-s")
    _wait_workers(address, 2)
    out = tmp_path / "out"
    spec = ["--grid", "N=2,3", "--seeds", "0-5", "-d", "16", "-k", "3", "--n-pre", "100", "--steps", "1000000",
            "--n-test", "16", "--eval-every", "250000", "--batch-size", "1", "--quiet"]
    proc = subprocess.Popen([*FASTPG, "sweep", str(out), *spec, "--scheduler", address], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    created = {}

    def look():
        for path in out.rglob("*.h5"):
            try:
                with h5py.File(path, "r", libver="latest", swmr=True) as f:
                    if f.attrs.get("status") == "complete":
                        created.setdefault(path, str(f.attrs["created"]))
                        assert created[path] == str(f.attrs["created"]), f"{path} was rewritten after completing"
            except OSError:
                pass

    deadline = time.time() + 300
    while len(created) < 2 and time.time() < deadline and proc.poll() is None:
        look()
        time.sleep(0.2)
    assert 2 <= len(created) < 8, len(created)  # mid-sweep: most runs still to do (each takes about a second)
    victim.send_signal(signal.SIGKILL)
    killed = time.time()
    while proc.poll() is None and time.time() < deadline:
        look()
        time.sleep(0.2)
    _, err = proc.communicate(timeout=60)
    look()
    assert proc.returncode == 0, err
    assert "a Dask worker left the cluster" in err and "reruns its tasks" in err, (err, time.time() - killed)  # even quiet
    rows = list(csv.DictReader(open(out / "index.csv")))
    assert len(rows) == 12 and all(row["status"] == "complete" for row in rows), rows
    assert len(created) == 12


@pytest.mark.slow
def test_no_workers_says_so_and_creates_nothing(tmp_path, cluster):
    address, _ = cluster
    out = tmp_path / "out"
    proc = subprocess.Popen([*FASTPG, "sweep", str(out), *SPEC, "--scheduler", address], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), **CTRL_C)
    time.sleep(8)
    assert proc.poll() is None  # still waiting, not failed
    assert not out.exists()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert "waiting for workers (0 connected)" in err
    assert proc.returncode == 130 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.slow
def test_no_scheduler_is_one_line_exit_2_and_creates_nothing(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    t0 = time.time()
    r = _sweep([str(out), *SPEC, "--scheduler", f"tcp://127.0.0.1:{port}"], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "--scheduler" in r.stderr and "Traceback" not in r.stderr
    assert time.time() - t0 < 60
    assert not out.exists()
