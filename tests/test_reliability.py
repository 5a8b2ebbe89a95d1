"""Hardening: live reading, crash safety, interrupts, write errors, extremes, validation everywhere.

Each test drives the real ``fastpg`` command in a subprocess unless it checks a library property.
"""

import resource
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastpg
from fastpg import api
from fastpg.config import PARAMS, flag

from test_cli import CTRL_C, FASTPG, fastpg as fastpg_cmd

LONG_RUN = ["run", "-d", "32", "-k", "4", "-N", "8", "--steps", "100000000", "--eval-every", "20000",
            "--n-test", "64", "--n-pre", "100", "--quiet"]


def _start(out, extra=()):
    return subprocess.Popen([*FASTPG, *LONG_RUN, *extra, "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **CTRL_C)


def _wait_rows(out, rows, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if out.exists():
            try:
                with h5py.File(out, "r", libver="latest", swmr=True) as f:
                    ds = f["trace/steps"]
                    ds.refresh()
                    if ds.shape[0] >= rows:
                        return ds.shape[0]
            except (OSError, KeyError):
                pass
        time.sleep(0.1)
    raise AssertionError(f"{out} never reached {rows} rows")


def test_live_reading_then_kill9_leaves_an_incomplete_file(tmp_path):
    out = tmp_path / "live.h5"
    proc = _start(out)
    try:
        _wait_rows(out, 3)
        info = fastpg_cmd("info", out)
        assert info.returncode == 0 and "running" in info.stdout and "Traceback" not in info.stderr
        assert "/ 100000000 steps" in info.stdout
        live = fastpg.load(out)
        assert live.status == "running" and live.rows >= 3 and live.likelihood.shape[0] == live.rows
        assert np.all(np.diff(live.trace["steps"]) > 0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    info = fastpg_cmd("info", out)
    assert info.returncode == 0 and "incomplete" in info.stdout and "Traceback" not in info.stderr + info.stdout
    assert fastpg.load(out).status == "running"


def test_ctrl_c_ends_a_run_promptly_with_status_130(tmp_path):
    out = tmp_path / "int.h5"
    proc = _start(out, ["--eval-every", "50000000"])  # evaluation points far apart: chunks keep it prompt
    _wait_rows(out, 1)
    time.sleep(0.5)
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.time() - t0 < 5
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err and "Traceback" not in err
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "failed" and "interrupted" in f.attrs["message"]


def test_ctrl_c_ends_a_sweep_and_resume_finishes_it(tmp_path):
    args = ["sweep", str(tmp_path / "s"), "--seeds", "0-1", "-d", "32", "-N", "8", "--steps", "100000000",
            "--eval-every", "20000", "--n-test", "32", "--n-pre", "50", "--quiet"]
    proc = subprocess.Popen([*FASTPG, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **CTRL_C)
    _wait_rows(tmp_path / "s" / "seed=0.h5", 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err, (proc.returncode, err)
    for seed in (0, 1):
        data = fastpg.load(tmp_path / "s" / f"seed={seed}.h5")
        assert data.status == "failed", (seed, data.status, data.message, err)


def test_results_do_not_depend_on_chunking(monkeypatch):
    cfg = dict(d=6, k=3, N=3, n_pre=50, steps=3000, eval_every=1000, n_test=16, algorithm="rs", reward="prm")
    ref = fastpg.run(cfg)

    class Tiny(api._Chunker):
        def observe(self, n, seconds):
            self.n = 1 + (self.n * 7) % 13  # odd, varying sizes

    monkeypatch.setattr(api, "_Chunker", Tiny)
    other = fastpg.run(cfg)
    np.testing.assert_array_equal(ref.W, other.W)
    for name in ref.trace:
        if name != "wall_time":
            np.testing.assert_array_equal(ref.trace[name], other.trace[name])


def test_write_error_during_a_run_fails_cleanly(tmp_path):
    """A file-size limit (like a full disk) hit while streaming: one line, non-zero exit, no traceback."""
    out = tmp_path / "full.h5"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    proc = subprocess.run([*FASTPG, "run", "--n-test", "4096", "--steps", "4000", "--eval-every", "100", "--n-pre",
                           "50", "--quiet", "--out", str(out)], capture_output=True, text=True, preexec_fn=limit,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "I/O error" in proc.stderr
    info = fastpg_cmd("info", out)  # the writer could not close: HDF5 may flag the file as still open
    assert info.returncode == 0 and "Traceback" not in info.stderr + info.stdout
    assert "status       complete" not in info.stdout
    assert "incomplete" in info.stdout or "failed" in info.stdout


def test_unwritable_output_places(tmp_path):
    for place in ("/proc/fastpg-test.h5", str(tmp_path / "missing" / "x.h5")):
        r = fastpg_cmd("run", "--preset", "tiny", "--out", place)
        assert r.returncode == 2 and "--out" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    folder = tmp_path / "is-a-folder.h5"
    folder.mkdir()
    r = fastpg_cmd("run", "--preset", "tiny", "--out", folder)
    assert r.returncode == 2 and "folder" in r.stderr


def test_extremes_run_without_nan(tmp_path):
    """k = 2, N = 1, N = 200 with rs and skip-ahead, M = 1e15: finite metrics, exact counters."""
    r = fastpg.run(dict(d=3, k=2, N=1, steps=200, n_test=8, eval_every=50, algorithm="pg", n_pre=20))
    assert all(np.all(np.isfinite(v)) for v in r.trace.values())
    S = 8
    out = tmp_path / "long.h5"
    res = fastpg.run(dict(d=4, k=4, N=200, base="uniform", algorithm="rs", reward="orm", M=10**15, steps=S,
                          n_test=4, eval_every=1), out)
    assert res.trace["orm_queries"][-1] == S * 10**15  # every step spends its budget: p = 4^-200
    assert res.trace["tokens"][-1] == S * 10**15 * 200
    assert res.trace["mistakes"][-1] == S * 10**15 and res.trace["updates"][-1] == 0
    res = fastpg.run(dict(d=4, k=4, N=200, base="uniform", algorithm="rs", reward="prm", M=10**15, steps=S,
                          n_test=4, eval_every=1, lr="adaptive"))
    assert all(np.all(np.isfinite(v)) for v in res.trace.values())
    assert res.trace["prm_queries"][-1] >= S * 200 and res.trace["prm_queries"][-1] == int(res.trace["prm_queries"][-1])
    data = fastpg.load(out)
    assert np.all(np.isfinite(data.base["loglik"])) and data.base["loglik"].max() < np.log(1e-100)


def test_diverging_eta_fails_naming_eta(tmp_path):
    out = tmp_path / "div.h5"
    r = fastpg_cmd("run", "--base", "uniform", "--algorithm", "rs", "--reward", "prm", "--eta", "1e200",
                   "--steps", "100", "--eval-every", "10", "--out", out)
    assert r.returncode == 1 and "--eta" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "failed"
        for name in f["trace"]:
            assert np.all(np.isfinite(f["trace"][name][...]))


# -- validation of every option: random invalid values, in process (the same entry point as the command) --
INVALID = {
    "int": st.sampled_from(["-1", "0.5", "abc", "", "1e400", "nan"]),
    "float": st.sampled_from(["abc", "nan", "inf", "-inf", ""]),
    "choice": st.sampled_from(["nope", "ORM ", "", "1"]),
}
# drawn from the parameter table itself, so a new parameter is covered without editing this file
KINDS = {p.name: p.kind for p in PARAMS if p.kind in ("int", "float", "choice")}
MINIMA = {p.name: int(p.low) for p in PARAMS if p.kind == "int" and p.low is not None}


def _invoke(args, tmp_path):
    from fastpg_cli.main import cli

    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli(list(args))
    return code, err.getvalue()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(KINDS)), data=st.data())
def test_any_invalid_option_value_is_one_line_exit_2(tmp_path, name, data):
    kind = KINDS[name]
    value = data.draw(INVALID[kind])
    if kind == "int" and name in MINIMA and value == "0.5":
        value = str(MINIMA[name] - 1)
    if kind == "int" and value in ("-1",) and MINIMA.get(name, 0) == 0 and name not in MINIMA:
        value = "abc"
    out = tmp_path / f"v-{name}.h5"
    code, err = _invoke(["run", "--preset", "tiny", flag(name), value, "--out", str(out)], tmp_path)
    assert code == 2, (name, value, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert flag(name) in err or flag(name).lstrip("-") in err, (name, value, err)
    assert not out.exists()


EDGES = [["-k", "2"], ["-N", "1"], ["-d", "1"], ["--G", "1", "--baseline", "none"], ["--M", "1", "--algorithm", "rs"], ["--steps", "0"], ["--n-test", "1"],
         ["--eta", "0"], ["--rho", "1", "--base", "teacher"], ["--gamma-quantile", "0"], ["--gamma-quantile", "0.9"],
         ["--alpha-off", "1"], ["--n-pre", "0"], ["--eval-log", "3"], ["--n-train", "1"], ["--features", "markov"],
         ["--sigma", "0"], ["--zipf", "0"], ["--C", "1"]]


@pytest.mark.parametrize("args", EDGES, ids=" ".join)
def test_valid_edge_values_work(tmp_path, args):
    out = tmp_path / "edge.h5"
    code, err = _invoke(["run", "--preset", "tiny", "--steps", "40", *args, "--out", str(out)], tmp_path)
    assert code == 0, (args, err)
    assert fastpg.load(out).status == "complete"


@pytest.mark.parametrize("cmd", [
    ["sweep", "{d}", "--grid", "k=1,2"],
    ["sweep", "{d}", "--grid", "bogus=1"],
    ["sweep", "{d}", "--seeds", "x"],
    ["sweep", "{d}", "--dask-workers", "0"],
    ["sweep", "{d}", "--eps", "2"],
    ["sweep", "{d}", "--batch-size", "0"],
    ["fig1", "{d}", "-N", "0"],
    ["pretrain", "{d}", "--gamma-quantiles", "x"],
    ["plot", "nope", "{d}", "--out", "{d}/p.png"],
    ["info", "{d}/missing.h5"],
    ["run", "--gamma-quantile", "1", "--out", "{t}/x.h5"],  # the largest pilot margin: infeasible, said clearly
])
def test_other_commands_validate_up_front(tmp_path, cmd):
    args = [a.format(d=tmp_path / "w", t=tmp_path) for a in cmd]
    code, err = _invoke(args, tmp_path)
    assert code == 2, (cmd, err)
    if "--gamma-quantile" in cmd:
        assert "--gamma-quantile" in err and "quantiles" in err and not (tmp_path / "x.h5").exists()
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    h5 = list((tmp_path / "w").rglob("*.h5")) if (tmp_path / "w").exists() else []
    assert not h5


def test_a_writer_waits_for_a_reader_that_holds_the_file(tmp_path):
    """HDF5 locks a file while a reader has it open: a sweep that redoes a run while ``fastpg info``
    (or a script) reads its old file waits for the reader instead of failing the run."""
    import sys

    from fastpg.store import open_for_writing

    path = tmp_path / "held.h5"
    with h5py.File(path, "w") as f:
        f.attrs["status"] = "running"
    reader = subprocess.Popen([sys.executable, "-c", "import h5py, sys, time; f = h5py.File(sys.argv[1], 'r'); "
                               "print('open', flush=True); time.sleep(1.0)", str(path)], stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "open"
    with pytest.raises(BlockingIOError):  # what a plain writer gets while the reader holds the file
        h5py.File(path, "w")
    t = time.perf_counter()
    with open_for_writing(path, "w") as f:
        f.attrs["status"] = "complete"
    assert time.perf_counter() - t > 0.3  # it waited for the reader to let go
    reader.wait(timeout=30)
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "complete"
