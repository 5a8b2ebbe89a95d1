"""The real ``fastpg`` command in a subprocess: runs, info, one-line errors, exit codes, determinism."""

import os
import signal
import subprocess
import sys

import h5py
import pytest

# -P: the child imports fastpg from where this process does (the installed package), not from the
# current directory (a checkout's fastpg/), so both share one Numba cache
FASTPG = [sys.executable, "-P", "-c", "from fastpg_cli.main import entry; entry()"]


def _default_ctrl_c():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# For a child that a test sends Ctrl-C (SIGINT): a shell that starts the test run in the
# background (``pytest &`` in a script) ignores SIGINT, children inherit that, and Python then
# never raises KeyboardInterrupt; the child starts with the default disposition instead.
CTRL_C = {"preexec_fn": _default_ctrl_c}


def fastpg(*args, env=None, cwd=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([*FASTPG, *map(str, args)], capture_output=True, text=True, env=full_env, cwd=cwd,
                          timeout=600)


def test_run_tiny_and_info(tmp_path):
    out = tmp_path / "x.h5"
    r = fastpg("run", "--preset", "tiny", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "complete" in r.stdout
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "complete"
    info = fastpg("info", out)
    assert info.returncode == 0
    assert "status       complete" in info.stdout and "expected_error=" in info.stdout


BAD = [
    (["-k", "1"], "-k"),
    (["-N", "0"], "-N"),
    (["-d", "0"], "-d"),
    (["--gamma", "50"], "--gamma"),
    (["--reward", "xyz"], "--reward"),
    (["--algorithm", "ppo"], "--algorithm"),
    (["--eta", "-1"], "--eta"),
    (["--eta", "nan"], "--eta"),
    (["--rho", "2"], "--rho"),
    (["--G", "1", "--baseline", "rloo"], "--baseline"),
    (["--G", "0"], "--G"),
    (["--M", "0.5"], "--M"),
    (["--alpha-off", "0"], "--alpha-off"),
    (["--steps", "ten"], "--steps"),
    (["--base", "file"], "--base-file"),
    (["--preset", "nope"], "--preset"),
]


@pytest.mark.parametrize("args,option", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, args, option):
    out = tmp_path / "bad.h5"
    r = fastpg("run", "--preset", "tiny", *args, "--out", out)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert option in lines[0] and "Traceback" not in r.stderr
    assert not out.exists()


def test_existing_file_is_refused_and_untouched(tmp_path):
    out = tmp_path / "keep.h5"
    out.write_bytes(b"precious data")
    r = fastpg("run", "--preset", "tiny", "--out", out)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--overwrite" in r.stderr
    assert out.read_bytes() == b"precious data"


def test_unwritable_output_reported_before_work(tmp_path):
    r = fastpg("run", "--preset", "tiny", "--out", tmp_path / "no" / "such" / "dir" / "x.h5")
    assert r.returncode == 2 and "--out" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_bit_identical_across_thread_counts(tmp_path):
    files = []
    for threads in (1, 2):
        out = tmp_path / f"t{threads}.h5"
        r = fastpg("run", "--preset", "tiny", "--algorithm", "rs", "--steps", "300", "--out", out,
                   env={"NUMBA_NUM_THREADS": str(threads)})
        assert r.returncode == 0, r.stderr
        files.append(out)

    def datasets(path):
        found = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: found.__setitem__(name, obj[...]) if isinstance(obj, h5py.Dataset) else None)
        return found

    a, b = (datasets(p) for p in files)
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        if name != "trace/wall_time":
            assert a[name].tobytes() == b[name].tobytes(), name


def test_help_lists_every_parameter():
    from fastpg.config import RunConfig, flag

    r = fastpg("run", "--help")
    assert r.returncode == 0
    for name in RunConfig.names():
        assert flag(name) in r.stdout, name


@pytest.mark.slow
def test_bench_quick_smoke(tmp_path):
    """The benchmark runner works end to end (numbers are not asserted: timings never are)."""
    import fastpg

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # fastpg from where this process imports it (site-packages in CI), bench from the checkout: one
    # Numba cache, not a second one compiled under the checkout's fastpg/
    installed = os.path.dirname(os.path.dirname(os.path.abspath(fastpg.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([installed, root]))
    r = subprocess.run([sys.executable, "-P", "-m", "bench", "--quick", "--out", str(tmp_path), "--page",
                        str(tmp_path / "docs" / "performance.md")], capture_output=True, text=True, timeout=900, cwd=root,
                       env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "results.md").exists() and "(B) PG steps, ORM" in r.stdout
    page = (tmp_path / "docs" / "performance.md").read_text()  # the page: this run's table, and which CPU and ISA
    assert (tmp_path / "results.md").read_text().split("\n\n", 1)[1].strip() in page and "**Machine**: " in page


def test_estimates_bench_runs_a_sweep(tmp_path):
    """``python -m bench.estimates`` runs the real ``fastpg sweep`` and reads its estimate line
    (times are printed, not asserted); its parser of durations reads what the CLI prints."""
    import importlib.util

    import fastpg

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # bench/ is not installed (CI's pytest cannot import it): read the module from the checkout
    spec = importlib.util.spec_from_file_location("bench_estimates", os.path.join(root, "bench", "estimates.py"))
    estimates = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(estimates)
    seconds = estimates.seconds
    assert seconds("5 s") == 5 and seconds("17 min") == 17 * 60 and seconds("3.2 h") == 3.2 * 3600
    installed = os.path.dirname(os.path.dirname(os.path.abspath(fastpg.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([installed, root]))
    r = subprocess.run([sys.executable, "-P", "-m", "bench.estimates", "--only", "rs-72-batch", "--keep", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, cwd=root, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[1].startswith("rs-72-batch") and "time taken / estimated: median" in r.stdout
    assert len(list((tmp_path / "rs-72-batch" / "batches").glob("*.h5"))) == 2  # N = 2 and 5: a batch file each
