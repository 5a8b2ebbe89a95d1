"""The researcher's workflow through the real command: no silent overrides, no ignored options,
clear refusals, and plots that say what they left out."""

import re

import numpy as np
import pytest

import fastpg
from fastpg.config import RunConfig
from fastpg.store import load_batch, read_final_W
from test_cli import fastpg as fastpg_cmd


def _one_line_exit_2(r, option):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and option in r.stderr and "Traceback" not in r.stderr


def test_an_explicit_eval_every_beats_a_presets_eval_log(tmp_path):
    out = tmp_path / "e.h5"
    r = fastpg_cmd("run", "--preset", "fig1-orm", "--eval-every", "5000", "--steps", "20000", "--n-test", "64",
                   "--out", out, "-q")
    assert r.returncode == 0, r.stderr
    run = fastpg.load(out)
    np.testing.assert_array_equal(run.trace["steps"], [0, 5000, 10000, 15000, 20000])
    assert run.config["eval_log"] == 0


def test_an_explicit_gamma_beats_a_presets_gamma_quantile(tmp_path):
    out = tmp_path / "g.h5"
    r = fastpg_cmd("run", "--preset", "fig1-orm", "--gamma", "0", "--steps", "100", "--n-test", "64", "--out", out, "-q")
    assert r.returncode == 0, r.stderr
    run = fastpg.load(out)
    assert run.config["gamma_quantile"] is None and run.task["gamma"] == 0.0


def test_sweep_refuses_seed_and_empty_grid_values(tmp_path):
    _one_line_exit_2(fastpg_cmd("sweep", tmp_path / "s", "--preset", "tiny", "--seed", "5"), "--seed")
    _one_line_exit_2(fastpg_cmd("sweep", tmp_path / "s", "--preset", "tiny", "--grid", "eta=0.1,"), "--grid")
    assert not (tmp_path / "s").exists()


def test_sweep_help_lists_the_grid_parameters():
    r = fastpg_cmd("sweep", "--help")
    text = " ".join(r.stdout.split())
    for name in ("N", "reward", "eta", "gamma_quantile", "teacher_scale"):
        assert name in text


@pytest.mark.slow
def test_a_sweep_with_failed_runs_exits_1_naming_one(tmp_path):
    r = fastpg_cmd("sweep", tmp_path / "s", "--preset", "tiny", "--steps", "50", "--seeds", "0-1", "--eta", "1e200",
                   "--algorithm", "rs", "--reward", "prm", "--base", "uniform", "-q")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "2 of 2 runs are not complete" in lines[0] and "failed: eta: weights diverged" in lines[0]


@pytest.mark.slow
def test_plot_scaling_defaults_to_a_numeric_parameter_and_reports_what_it_left_out(tmp_path):
    out = tmp_path / "s"
    r = fastpg_cmd("sweep", out, "--grid", "N=2,3", "--grid", "reward=orm,prm", "--seeds", "0-1", "-d", "6", "-k", "3",
                   "--contexts", "clusters", "--C", "1", "--sigma", "0", "--base", "uniform", "--algorithm", "rs",
                   "--eta", "1", "--steps", "3", "--eval-every", "1", "--n-test", "1", "--eps", "0.001", "-q")
    assert r.returncode == 0, r.stderr
    p = fastpg_cmd("plot", "scaling", out, "--out", tmp_path / "p.png")  # no --x: the first numeric grid parameter
    assert p.returncode == 0, p.stderr
    assert "at N = " in p.stdout and "not reached" in p.stdout and (tmp_path / "p.png").exists()
    _one_line_exit_2(fastpg_cmd("plot", "scaling", out, "--x", "reward", "--out", tmp_path / "q.png"), "--x")


def test_the_default_learning_rate_rule_is_the_adaptive_one():
    assert RunConfig().lr == "adaptive"
    assert all(preset.get("lr", "adaptive") == "adaptive" for name, preset in fastpg.PRESETS.items() if name != "tiny")
    r = fastpg_cmd("run", "--help")
    assert "[default: adaptive]" in " ".join(r.stdout.split()).split("--lr")[1][:400]


def test_load_sweep_gives_the_index_long_traces_and_the_loglik_cube(tmp_path):
    out = tmp_path / "s"
    r = fastpg_cmd("sweep", out, "--preset", "tiny", "--steps", "200", "--grid", "reward=orm,prm", "--seeds", "0-1", "-q")
    assert r.returncode == 0, r.stderr
    data = fastpg.load_sweep(out, loglik=True)
    assert len(data.index) == 4 and set(data.index["status"]) == {"complete"}
    runs = [fastpg.load(out / f) for f in data.index["file"]]
    assert len(data.traces) == sum(run.rows for run in runs)
    assert list(data.traces.columns[:4]) == ["reward", "seed", "run", "file"] and "queries" in data.traces
    first = data.traces[data.traces["file"] == data.index["file"][0]]
    np.testing.assert_array_equal(first["queries"], runs[0].queries)
    assert data.cube().shape == (4, runs[0].rows, runs[0].config["n_test"])
    np.testing.assert_array_equal(data.cube()[1], runs[1].loglik)
    try:
        fastpg.load(out)
    except IsADirectoryError as exc:
        assert "fastpg.load_sweep" in str(exc)
    else:
        raise AssertionError("fastpg.load on a sweep folder must point to load_sweep")


def test_to_xarray_holds_every_run_padded_where_runs_stopped_early(tmp_path):
    """SweepData.to_xarray: run x eval x context, the trace columns and loglik as data, steps,
    queries and base_loglik as coordinates, each equal to the run's own file; a run stopped early
    by --stop-eps is NaN after its last row."""
    out = tmp_path / "s"
    r = fastpg_cmd("sweep", out, "--preset", "tiny", "--steps", "400", "--grid", "reward=orm,prm", "--seeds", "0-1",
                   "--stop-eps", "0.05", "-q")
    assert r.returncode == 0, r.stderr
    data = fastpg.load_sweep(out, loglik=True)
    ds = data.to_xarray()
    runs = {rid: fastpg.load(out / f) for rid, f in zip(data.index["run"], data.index["file"])}
    lengths = {run.rows for run in runs.values()}
    assert len(lengths) > 1, lengths  # some runs stopped early: the padding is exercised
    assert dict(ds.sizes) == {"run": 4, "eval": max(lengths), "context": 64}
    assert list(ds["reward"].values) == [run.config["reward"] for run in runs.values()]
    for rid, run in runs.items():
        one = ds.sel(run=rid)
        assert int(one["seed"]) == run.config["seed"]
        np.testing.assert_array_equal(one["loglik"].values[:run.rows], run.loglik)
        np.testing.assert_array_equal(one["queries"].values[:run.rows], run.queries)
        np.testing.assert_array_equal(one["steps"].values[:run.rows], run.trace["steps"])
        np.testing.assert_array_equal(one["expected_error"].values[:run.rows], run.trace["expected_error"])
        np.testing.assert_array_equal(one["base_loglik"].values, run.base["loglik"])
        assert np.isnan(one["loglik"].values[run.rows:]).all() and np.isnan(one["steps"].values[run.rows:]).all()
    with pytest.raises(ValueError, match="loglik=True"):
        fastpg.load_sweep(out).to_xarray()


@pytest.mark.parametrize("layout", ["run", "batch"])
def test_netcdf_readers_see_named_linked_trace_axes(tmp_path, layout):
    """The trace datasets carry HDF5 dimension scales: xarray (through h5netcdf) opens /trace with
    named dimensions (steps, context, position in a run file; eval, run, context in a batch file)
    and the coordinates' values; fastpg's own readers are unchanged."""
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    out = tmp_path / "s"
    r = fastpg_cmd("sweep", out, "--preset", "tiny", "--seeds", "0-1", "--token-trace", "--layout", layout, "-q")
    assert r.returncode == 0, r.stderr
    data = fastpg.load_sweep(out)
    path = out / data.index["file"][0]
    ds = xr.open_dataset(path, engine="h5netcdf", group="trace")
    if layout == "run":
        run = fastpg.load(path)
        assert ds["loglik"].dims == ("steps", "context") and ds["expected_error"].dims == ("steps",)
        assert ds["token_loglik"].dims == ("steps", "context", "position")
        np.testing.assert_array_equal(ds["steps"].values, run.trace["steps"])
        np.testing.assert_array_equal(ds["loglik"].values, run.loglik)
        assert set(run.trace) == set(ds.data_vars) - {"loglik", "token_loglik"} | {"steps"}
    else:
        run = fastpg.load(path, run="seed=0")
        assert ds["loglik"].dims == ("eval", "run", "context") and ds["steps"].dims == ("eval", "run")
        assert ds["token_loglik"].dims == ("eval", "run", "context", "position")
        assert list(ds["run"].values) == ["seed=0", "seed=1"] and list(ds["eval"].values) == list(range(run.rows))
        np.testing.assert_array_equal(ds["loglik"].sel(run="seed=0").values, run.loglik)
    np.testing.assert_array_equal(ds["context"].values, np.arange(64))
    ds.close()


@pytest.mark.slow
def test_parameters_named_like_results_keep_their_values(tmp_path):
    """``steps`` (the budget) and ``contexts`` (the distribution) are also result columns (steps
    taken, contexts drawn). A sweep with cases that set ``steps`` and a grid over ``contexts``
    keeps both: ``index.csv`` has one column per name, the parameters as ``config_steps`` and
    ``config_contexts`` (before, the counters overwrote them and the header named ``steps`` twice);
    ``load_sweep`` reads it (before, a ValueError); ``plot scaling`` groups by the distribution."""
    import csv

    cfg = tmp_path / "c.toml"
    cfg.write_text('seeds = "0-1"\n[fixed]\nd = 8\nk = 2\nbase = "uniform"\nalgorithm = "rs"\nn_test = 8\n'
                   'eval_every = 10\n[[cases]]\nsteps = 20\n[[cases]]\nsteps = 40\n'
                   '[grid]\nN = [2, 3]\ncontexts = ["sphere", "clusters"]\n')
    out = tmp_path / "s"
    r = fastpg_cmd("sweep", out, "--config", cfg, "-q")
    assert r.returncode == 0, r.stderr
    with open(out / "index.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert len(header) == len(set(header)) and {"config_steps", "config_contexts", "steps", "contexts"} <= set(header)
    data = fastpg.load_sweep(out, loglik=True)
    assert data.columns == ["config_steps", "N", "config_contexts"]
    assert set(data.index["config_contexts"]) == {"sphere", "clusters"}
    np.testing.assert_array_equal(data.index["contexts"], data.index["config_steps"])  # rs: one context a step
    last = data.traces.groupby("run").tail(1)
    np.testing.assert_array_equal(last["steps"], last["config_steps"])
    assert set(data.traces["config_contexts"]) == {"sphere", "clusters"} and data.traces["contexts"].dtype.kind == "f"
    assert len(data.traces.groupby(data.columns, dropna=False)) == 8
    r = fastpg_cmd("plot", "scaling", out, "--x", "N", "--out", tmp_path / "p.png")
    assert r.returncode == 0, r.stderr
    groups = [line.split(":")[0] for line in r.stdout.splitlines() if ": median" in line]
    assert sorted(groups) == sorted(f"steps={s}, contexts={c}" for s in (20, 40) for c in ("sphere", "clusters"))


@pytest.mark.slow
def test_progress_lines_in_a_log_without_a_terminal(tmp_path):
    r = fastpg_cmd("run", "-d", "32", "-N", "8", "--steps", "400000", "--eval-every", "100000", "--n-test", "32",
                   "--n-pre", "50", "--out", tmp_path / "p.h5", env={"FASTPG_PROGRESS_SECONDS": "0"})
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("fastpg: post-training:")]
    assert lines and all("steps/s" in line and "left" in line and "/400000 steps" in line for line in lines)
    s = fastpg_cmd("sweep", tmp_path / "s", "--preset", "tiny", "--steps", "40", "--seeds", "0-2", "--batch-size", "1",
                   env={"FASTPG_PROGRESS_SECONDS": "0"})
    assert s.returncode == 0, s.stderr
    assert "fastpg: sweep: 3/3 runs (100%)" in s.stderr


@pytest.mark.slow
def test_info_tells_a_killed_run_from_a_slow_one_and_summarises_seeds(tmp_path):
    import os
    import signal
    import subprocess
    import time

    from fastpg.sweeps.spec import Sweep
    from test_cli import FASTPG
    from test_reliability import LONG_RUN, _wait_rows

    out = tmp_path / "live.h5"
    proc = subprocess.Popen([*FASTPG, *LONG_RUN, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_rows(out, 3)
        live = fastpg_cmd("info", out)
        assert "running:" in live.stdout and "steps/s" in live.stdout and "left" in live.stdout
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    old = time.time() - 3600
    os.utime(out, (old, old))
    stale = fastpg_cmd("info", out)
    assert "stale: no new row for 60 min" in stale.stdout and "incomplete" in stale.stdout
    Sweep(tmp_path / "big", {"steps": 10}, {}, list(range(2001))).claim_folder()
    info = fastpg_cmd("info", tmp_path / "big")
    assert info.returncode == 0 and "seeds=0-2000 (2001 seeds)" in info.stdout
    assert max(len(line) for line in info.stdout.splitlines()) < 200


@pytest.mark.slow
def test_a_folder_is_the_same_sweep_by_resolved_values_and_may_grow(tmp_path):
    out = tmp_path / "s"
    args = ["--preset", "tiny", "--steps", "40", "--grid", "N=2,3", "-q"]
    assert fastpg_cmd("sweep", out, *args).returncode == 0
    toml = tmp_path / "same.toml"  # the same sweep, with defaults spelled out
    toml.write_text('[fixed]\nd = 8\nk = 3\ncontexts = "clusters"\nC = 4\nsigma = 0.2\nzipf = 1.5\nn_pre = 200\n'
                    'steps = 40\nalgorithm = "pg"\nreward = "prm"\nG = 4\nbaseline = "rloo"\nn_test = 64\n'
                    'eval_every = 100\nlr = "adaptive"\nM = 1000000000000\n[grid]\nN = [2, 3]\n')
    r = fastpg_cmd("sweep", out, "--config", toml, "-q")
    assert r.returncode == 0, r.stderr
    grown = fastpg_cmd("sweep", out, "--preset", "tiny", "--steps", "40", "--grid", "N=2,3,4", "-q")  # values may grow
    assert grown.returncode == 0, grown.stderr
    assert (out / "N=4" / "seed=0.h5").exists()
    other = fastpg_cmd("sweep", out, "--preset", "tiny", "--steps", "50", "--grid", "N=2,3", "-q")
    _one_line_exit_2(other, "OUTDIR")
    assert "steps: 40 (folder) -> 50 (now)" in other.stderr


@pytest.mark.slow
def test_a_huge_sweep_prints_its_size_and_needs_yes(tmp_path):
    r = fastpg_cmd("sweep", tmp_path / "big", "--preset", "tiny", "--seeds", "0-20000")
    _one_line_exit_2(r, "--yes")
    assert re.search(r"20001 runs to do, about \d\.\d+ GB on disk and \d+ min on \d+ cores", r.stderr), r.stderr
    assert not (tmp_path / "big").exists()
    small = fastpg_cmd("sweep", tmp_path / "small", "--preset", "tiny", "--steps", "40", "--seeds", "0-1")
    assert small.returncode == 0 and re.search(r"2 runs, 2 to do: about 0\.\d+ MB on disk and \d s", small.stderr), small.stderr
    assert "--layout batch" not in small.stderr  # two runs: not told of the batch layout
    from fastpg.sweeps.execute import estimate
    from fastpg.sweeps.spec import Sweep

    sweep = Sweep(tmp_path / "x", dict(fastpg.PRESETS["tiny"], steps=40), {}, [0, 1])
    size = estimate(sweep.runs)
    actual = sum(p.stat().st_size for p in (tmp_path / "small").rglob("*.h5"))
    assert 0.8 < size["bytes"] / actual < 1.25  # the disk estimate is within 25% of what was written


def _same_prefix(stopped, full):
    rows = stopped.rows
    assert 0 < rows <= full.rows
    for name in stopped.trace:
        if name != "wall_time":
            np.testing.assert_array_equal(stopped.trace[name], full.trace[name][:rows])
    np.testing.assert_array_equal(stopped.loglik, full.loglik[:rows])


@pytest.mark.slow
def test_stop_eps_and_max_queries_end_runs_early_with_the_same_rows(tmp_path):
    """A run stops at the first evaluation point that meets --stop-eps (or --max-queries), complete,
    with its reason; what it wrote is the unstopped run's rows up to there, bit for bit, and its
    weights are those of a run whose budget ends at that step. In a sweep each run stops on its
    own; the others go on unaffected (both layouts)."""
    spec = ["--preset", "tiny", "--steps", "3000", "--eval-every", "100", "--seeds", "0-3", "-q"]
    assert fastpg_cmd("sweep", tmp_path / "full", *spec).returncode == 0
    for layout in ("run", "batch"):
        out = tmp_path / f"stop-{layout}"
        r = fastpg_cmd("sweep", out, *spec, "--stop-eps", "0.1", "--layout", layout)
        assert r.returncode == 0, r.stderr
        runs = load_batch(next((out / "batches").glob("*.h5"))) if layout == "batch" else {
            p.stem: fastpg.load(p) for p in out.glob("seed=*.h5")}
        assert len(runs) == 4
        stopped = 0
        for name, run in runs.items():
            full = fastpg.load(tmp_path / "full" / f"{name.split('/')[-1]}.h5")
            assert run.status == "complete"
            _same_prefix(run, full)
            hit = np.nonzero(full.trace["expected_error"] <= 0.1)[0]
            if len(hit):
                assert run.rows == hit[0] + 1 and run.message.startswith("stopped early at step")
                stopped += 1
            else:
                assert run.rows == full.rows and run.message == ""
        assert stopped >= 1
    one = tmp_path / "one.h5"
    r = fastpg_cmd("run", "--preset", "tiny", "--steps", "3000", "--eval-every", "100", "--max-queries", "5000",
                   "--out", one)
    assert r.returncode == 0 and "stopped early" in r.stdout and "max_queries 5000" in r.stdout, r.stdout
    run = fastpg.load(one)
    q = run.trace["prm_queries"]
    assert q[-1] >= 5000 > q[-2]
    short = fastpg.run({**fastpg.PRESETS["tiny"], "steps": int(run.trace["steps"][-1]), "eval_every": 100})
    np.testing.assert_array_equal(read_final_W(one), short.W)


@pytest.mark.slow
def test_a_folder_made_before_a_parameter_existed_resumes(tmp_path):
    """sweep.json of an older fastpg lacks parameters added since (here stop_eps, max_queries): its
    runs ran with their defaults, so the folder is the same sweep and resumes."""
    import json

    out = tmp_path / "s"
    spec = ["--preset", "tiny", "--steps", "200", "--seeds", "0-1", "-q"]
    assert fastpg_cmd("sweep", out, *spec).returncode == 0
    manifest = json.loads((out / "sweep.json").read_text())
    for key in ("stop_eps", "max_queries"):
        manifest["resolved"].pop(key)
    (out / "sweep.json").write_text(json.dumps(manifest))
    r = fastpg_cmd("sweep", out, *spec, "--seeds", "0-2")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("*.h5")) == ["seed=0.h5", "seed=1.h5", "seed=2.h5"]
    _one_line_exit_2(fastpg_cmd("sweep", out, *spec, "--stop-eps", "0.1"), "stop_eps")


def _datasets(path):
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[...]) if hasattr(obj, "shape") else None)
    return out


@pytest.mark.parametrize("extra", [
    ["--preset", "tiny"],  # pg, PRM, G=4, rloo, fresh contexts
    ["--preset", "tiny", "--n-train", "8", "--reward", "orm", "--G", "1", "--baseline", "none"],  # event-driven pool
    ["-d", "6", "-k", "3", "-N", "4", "--algorithm", "rs", "--reward", "prm", "--n-pre", "50", "--token-trace"],
    ["--preset", "tiny", "--temperature", "0.7"],  # the kernels' weights W / tau restored, not recomputed from W
    ["--preset", "tiny", "--filter-groups", "--lr", "constant", "--M", "50"],  # groups_discarded carried on
])
@pytest.mark.slow
def test_a_continued_run_is_the_run_made_with_the_larger_budget(tmp_path, extra):
    """fastpg run --continue FILE --steps S2 rewrites FILE as the run made with S2 from the start:
    every dataset bit for bit, wall_time aside (generator, counters and event state restored)."""
    short, long = tmp_path / "short.h5", tmp_path / "long.h5"
    assert fastpg_cmd("run", *extra, "--steps", "1000", "--eval-every", "100", "--out", short, "-q").returncode == 0
    assert fastpg_cmd("run", *extra, "--steps", "3000", "--eval-every", "100", "--out", long, "-q").returncode == 0
    r = fastpg_cmd("run", "--continue", short, "--steps", "3000")
    assert r.returncode == 0 and "3000 steps" in r.stdout, r.stderr
    a, b = _datasets(short), _datasets(long)
    assert a.keys() == b.keys() and "final/state" in a
    for name in a:
        if name != "trace/wall_time":
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert fastpg.load(short).config["steps"] == 3000 and not list(tmp_path.glob(".*"))


@pytest.mark.slow
def test_what_cannot_be_continued_is_refused_in_one_line(tmp_path):
    f = tmp_path / "f.h5"
    assert fastpg_cmd("run", "--preset", "tiny", "--steps", "1000", "--eval-every", "100", "--out", f, "-q").returncode == 0
    before = f.read_bytes()
    _one_line_exit_2(fastpg_cmd("run", "--continue", f, "--steps", "500"), "--steps")
    _one_line_exit_2(fastpg_cmd("run", "--continue", f), "--steps")
    _one_line_exit_2(fastpg_cmd("run", "--continue", f, "--steps", "2000", "--eta", "1"), "--continue")
    _one_line_exit_2(fastpg_cmd("run", "--continue", tmp_path / "none.h5", "--steps", "2000"), "--continue")
    _one_line_exit_2(fastpg_cmd("run", "--steps", "10"), "--out")
    g = tmp_path / "g.h5"
    assert fastpg_cmd("run", "--preset", "tiny", "--steps", "1000", "--eval-log", "9", "--out", g, "-q").returncode == 0
    _one_line_exit_2(fastpg_cmd("run", "--continue", g, "--steps", "2000"), "--continue")
    assert f.read_bytes() == before


@pytest.mark.slow
def test_a_sweep_continued_to_a_larger_steps_equals_the_sweep_made_with_it(tmp_path):
    spec = ["--preset", "tiny", "--eval-every", "100", "--seeds", "0-2", "-q"]
    short, long = tmp_path / "short", tmp_path / "long"
    assert fastpg_cmd("sweep", short, *spec, "--steps", "1000").returncode == 0
    _one_line_exit_2(fastpg_cmd("sweep", short, *spec, "--steps", "3000"), "--continue")  # refused without it
    r = fastpg_cmd("sweep", short, *spec, "--steps", "3000", "--continue")
    assert r.returncode == 0, r.stderr
    assert fastpg_cmd("sweep", long, *spec, "--steps", "3000").returncode == 0
    for seed in range(3):
        a, b = _datasets(short / f"seed={seed}.h5"), _datasets(long / f"seed={seed}.h5")
        for name in a:
            if name != "trace/wall_time":
                np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert fastpg.load_sweep(short).index["steps"].tolist() == fastpg.load_sweep(long).index["steps"].tolist()
    b = tmp_path / "b"
    assert fastpg_cmd("sweep", b, *spec, "--steps", "1000", "--layout", "batch").returncode == 0
    _one_line_exit_2(fastpg_cmd("sweep", b, *spec, "--steps", "3000", "--continue"), "--continue")


def test_progress_rates_leave_out_the_compilation(monkeypatch, capsys):
    """A first update long after the start is said to be compilation, and the rate (so the time left)
    is measured from it: a first run no longer shows 1 step/s and minutes left while compiling."""
    from fastpg_cli.progress import Progress

    monkeypatch.setenv("FASTPG_PROGRESS_SECONDS", "0")
    clock = iter([100.0, 190.0, 200.0])  # start; first update after 90 s of compiling; 10 s later
    monkeypatch.setattr("fastpg_cli.progress.time.perf_counter", lambda: next(clock))
    bar = Progress(1000, "steps", "post-training")
    bar.tty, bar.bar = False, None
    bar.update(100)
    bar.update(600)
    err = capsys.readouterr().err.splitlines()
    assert "the first 100 steps of the post-training took 90 s, most of it compiling kernels" in err[0]
    assert err[-1].startswith("fastpg: post-training: 600/1000 steps (60%), 50 steps/s, about 8 s left"), err
    assert len(err) == 2  # no rate line at the first update: its only rate would include the compilation


def test_a_sweep_times_itself_after_its_first_batches(tmp_path):
    """The pilot: once every slot has finished a batch after the first, the time left is said from
    their timing, beside the estimate made before starting."""
    from fastpg.sweeps.execute import execute
    from fastpg.sweeps.spec import Sweep

    sweep = Sweep(tmp_path / "s", dict(fastpg.PRESETS["tiny"], steps=40), {}, list(range(6)), 0.1, 2)
    lines, works = [], []
    execute(sweep, report=lines.append, progress=lambda done, total, work=None: works.append(work))
    timed = [line for line in lines if line.startswith("timed 1 batch after the first: about")]
    assert len(timed) == 1 and "(4/6 runs done; the estimate before starting was" in timed[0], lines
    assert works[-1] == pytest.approx(1.0) and works[1:] == sorted(works[1:])  # modelled work, to the end


def test_many_small_runs_are_told_of_the_batch_layout(tmp_path, monkeypatch):
    """A new sweep of many small runs in the run layout says that --layout batch exists (before it
    starts); with --layout given, or few runs, it does not."""
    from click.testing import CliRunner

    import fastpg.sweeps.execute
    from fastpg_cli.main import main as cli

    def stop(*args, **kwargs):
        raise KeyboardInterrupt  # only what is printed before the runs start is looked at

    monkeypatch.setattr(fastpg.sweeps.execute, "execute", stop)
    runner = CliRunner()
    many = runner.invoke(cli, ["sweep", str(tmp_path / "a"), "--preset", "tiny", "--seeds", "0-599"])
    assert "600 small runs: --layout batch writes them 64 to a file" in many.output, many.output
    for args in (["--seeds", "0-599", "--layout", "run"], ["--seeds", "0-9"]):
        r = runner.invoke(cli, ["sweep", str(tmp_path / "b"), "--preset", "tiny", *args])
        assert "--layout batch writes" not in r.output and "to do: about" in r.output, r.output
