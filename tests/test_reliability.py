"""Hardening: live reading, crash safety, interrupts, write errors, extremes, validation everywhere.

Each test drives the real ``fastpg`` command in a subprocess unless it checks a library property.
"""

import contextlib
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
from fastpg import driver
from fastpg.config import PARAMS, flag
from test_cli import CTRL_C, FASTPG
from test_cli import fastpg as fastpg_cmd

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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.parametrize("sig,code,word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_sigterm_and_an_inherited_ignored_sigint_end_a_run_and_mark_it_failed(tmp_path, sig, code, word):
    """SIGTERM (what kill, timeout and batch systems send) is handled as Ctrl-C is; a SIGINT that the
    process inherited as ignored (started with & from a script) is taken back at start-up."""
    out = tmp_path / "sig.h5"
    ignore_int = {"preexec_fn": lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)}
    proc = subprocess.Popen([*FASTPG, *LONG_RUN, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **ignore_int)
    _wait_rows(out, 1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert len(err.strip().splitlines()) == 1 and word in err and "Traceback" not in err
    data = fastpg.load(out)
    assert data.status == "failed" and word in data.message and data.rows >= 1


def test_sigterm_ends_a_sweep_with_every_file_failed(tmp_path):
    args = ["sweep", str(tmp_path / "s"), "--seeds", "0-1", "-d", "32", "-N", "8", "--steps", "100000000",
            "--eval-every", "20000", "--n-test", "32", "--n-pre", "50", "--quiet"]
    proc = subprocess.Popen([*FASTPG, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_rows(tmp_path / "s" / "seed=0.h5", 1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and "terminated" in err and "Traceback" not in err, (proc.returncode, err)
    for seed in (0, 1):
        data = fastpg.load(tmp_path / "s" / f"seed={seed}.h5")
        assert data.status == "failed" and "terminated" in data.message


def test_a_signal_inside_the_engine_waits_for_its_next_check():
    """While the engine runs, a signal is recorded and raised between kernel calls, never inside a
    finalizer where Python would print and drop it; a second one is raised at once."""
    from fastpg import interrupts

    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            signal.raise_signal(signal.SIGINT)
            seen = interrupts._pending  # recorded, not raised
            assert seen == signal.SIGINT
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)  # the second: at once
            signal.raise_signal(signal.SIGINT)
            interrupts.check()
    assert interrupts._pending is None and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            signal.raise_signal(signal.SIGINT)
    # a run interrupted this way in process: its file is marked failed
    assert interrupts._pending is None


def test_results_do_not_depend_on_chunking(monkeypatch):
    cfg = dict(d=6, k=3, N=3, n_pre=50, steps=3000, eval_every=1000, n_test=16, algorithm="rs", reward="prm")
    ref = fastpg.run(cfg)

    class Tiny(driver.Chunker):
        def observe(self, n, seconds):
            self.n = 1 + (self.n * 7) % 13  # odd, varying sizes

    monkeypatch.setattr(driver, "Chunker", Tiny)
    other = fastpg.run(cfg)
    np.testing.assert_array_equal(ref.W, other.W)
    for name in ref.trace:
        if name != "wall_time":
            np.testing.assert_array_equal(ref.trace[name], other.trace[name])


@pytest.mark.slow
def test_write_error_during_a_run_fails_cleanly(tmp_path):
    """A file-size limit (like a full disk) hit while streaming: one line, non-zero exit, no traceback."""
    out = tmp_path / "full.h5"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))  # above the space reserve (store.SpaceReserve)

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


@contextlib.contextmanager
def _tmpfs(where, options):
    """A real small file system (tmpfs) mounted at ``where``; the test is skipped where mounting is
    not allowed (it needs root)."""
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 1.2 MB file system."""
    with _tmpfs(tmp_path / "disk", "size=1200k") as where:
        yield where


def _statuses(folder):
    return sorted(fastpg.load(p).status for p in folder.rglob("*.h5") if "batches" not in p.parts)


@pytest.mark.slow
@pytest.mark.parametrize("what", ["run", "sweep", "sweep-early", "batch"])
def test_a_full_disk_fails_in_one_line_and_leaves_no_file_complete(small_disk, what):
    """A disk that fills while runs stream (or before a file can start): one line, exit 1, no
    segfault, no h5py noise, every file ``failed`` (with its rows) or ``running``, nothing left behind."""
    stream = ["--n-test", "512", "--steps", "100000", "--eval-every", "100", "--n-pre", "50", "--quiet"]
    args = {"run": ["run", *stream, "--out", str(small_disk / "a.h5")],
            "sweep": ["sweep", str(small_disk / "s"), *stream, "--seeds", "0-1"],
            "sweep-early": ["sweep", str(small_disk / "s"), "--preset", "tiny", "--seeds", "0-39", "--quiet"],
            "batch": ["sweep", str(small_disk / "s"), *stream, "--seeds", "0-1", "--layout", "batch"]}[what]
    r = fastpg_cmd(*args)
    assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
    assert len(r.stderr.strip().splitlines()) == 1 and "No space left on device" in r.stderr, r.stderr[-3000:]
    files = [p for p in small_disk.rglob("*.h5")]
    assert files
    for path in files:
        if "batches" in path.parts:
            with h5py.File(path, "r") as f:
                assert f.attrs["status"] in ("failed", "running")
        else:
            data = fastpg.load(path)
            assert data.status in ("failed", "running"), (path, data.status)
            if data.status == "failed":
                assert "No space left on device" in data.message
                if what != "sweep-early":
                    assert data.rows > 1  # what was written before the disk filled is kept
    assert not [p for p in small_disk.rglob("*") if p.name.startswith(".fastpg-reserve") or p.suffix == ".tmp"]
    if what != "run":
        info = fastpg_cmd("info", small_disk / "s")
        assert info.returncode == 0 and "Traceback" not in info.stderr


def test_a_batch_that_fails_is_logged_as_it_fails(small_disk):
    """Without --quiet, a failed batch has its own line when it fails, before the summary's error."""
    r = fastpg_cmd("sweep", small_disk / "s", "--n-test", "512", "--steps", "100000", "--eval-every", "100",
                   "--n-pre", "50", "--seeds", "0-1")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    failed = [i for i, line in enumerate(r.stderr.splitlines()) if "failed on the backend" in line]
    error = [i for i, line in enumerate(r.stderr.splitlines()) if line.startswith("fastpg: error:")]
    assert failed and error and failed[0] < error[0], r.stderr[-3000:]
    assert "No space left on device" in r.stderr.splitlines()[failed[0]]


@pytest.mark.parametrize("steps", ["100000000000000", "10000000000"])
def test_a_trace_too_large_to_hold_is_refused_up_front(tmp_path, steps):
    """Evaluation points are counted before anything is allocated: one line naming --eval-every and
    pointing to --eval-log, exit 2, no file (instead of a numpy memory error or a growing process)."""
    t0 = time.time()
    r = fastpg_cmd("run", "--steps", steps, "--out", tmp_path / "x.h5")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("fastpg: error: --eval-every:") and "--eval-log" in r.stderr
    assert time.time() - t0 < 60 and not (tmp_path / "x.h5").exists()
    assert fastpg_cmd("run", "--steps", steps, "--eval-log", "5", "--out", tmp_path / "y.h5", "--help").returncode == 0


def test_a_read_only_file_system_is_named_before_anything_is_printed(tmp_path):
    with _tmpfs(tmp_path / "ro", "size=1m,ro") as where:
        for args, option in ((["sweep", where / "s", "--preset", "tiny", "--seeds", "0-1"], "OUTDIR"),
                             (["run", "--preset", "tiny", "--out", where / "a.h5"], "--out")):
            r = fastpg_cmd(*args)
            assert r.returncode == 2 and r.stderr.strip().splitlines() == [
                f"fastpg: error: {option}: cannot write in {where} (Read-only file system)"], r.stderr


def test_a_grid_parameter_given_twice_is_refused(tmp_path):
    r = fastpg_cmd("sweep", tmp_path / "s", "--preset", "tiny", "--grid", "N=2,3", "--grid", "N=4")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--grid: N is given twice" in r.stderr and "N=2,3,4" in r.stderr and not (tmp_path / "s").exists()


@pytest.mark.slow
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
    import contextlib
    import io

    from fastpg_cli.main import cli

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


EDGES = [["-k", "2"], ["-N", "1"], ["-d", "1"], ["--G", "1", "--baseline", "none"], ["--M", "1", "--algorithm", "rs"],
         ["--steps", "0"], ["--n-test", "1"],
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
