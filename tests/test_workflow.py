"""The researcher's workflow through the real command: no silent overrides, no ignored options,
clear refusals, and plots that say what they left out."""

import numpy as np

import fastpg
from fastpg.config import RunConfig

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


def test_a_sweep_with_failed_runs_exits_1_naming_one(tmp_path):
    r = fastpg_cmd("sweep", tmp_path / "s", "--preset", "tiny", "--steps", "50", "--seeds", "0-1", "--eta", "1e200",
                   "--algorithm", "rs", "--reward", "prm", "--base", "uniform", "-q")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "2 of 2 runs are not complete" in lines[0] and "--eta" in lines[0]


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


def test_info_tells_a_killed_run_from_a_slow_one_and_summarises_seeds(tmp_path):
    import os
    import signal
    import subprocess
    import time

    from fastpg.sweep import Sweep
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


def test_a_huge_sweep_prints_its_size_and_needs_yes(tmp_path):
    r = fastpg_cmd("sweep", tmp_path / "big", "--preset", "tiny", "--seeds", "0-20000")
    _one_line_exit_2(r, "--yes")
    assert "20001 runs to do, about 1.75 GB on disk" in r.stderr
    assert not (tmp_path / "big").exists()
    small = fastpg_cmd("sweep", tmp_path / "small", "--preset", "tiny", "--steps", "40", "--seeds", "0-1")
    assert small.returncode == 0 and "2 runs, 2 to do: about 0.17" in small.stderr
    from fastpg.sweep import Sweep, estimate

    sweep = Sweep(tmp_path / "x", dict(fastpg.PRESETS["tiny"], steps=40), {}, [0, 1])
    size = estimate(sweep.runs)
    actual = sum(p.stat().st_size for p in (tmp_path / "small").rglob("*.h5"))
    assert 0.8 < size["bytes"] / actual < 1.25  # the disk estimate is within 25% of what was written
