"""Sweeps: grid and seed parsing, run ids, index, resume after SIGKILL, batch independence, Dask."""

import csv
import os
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest

import fastpg
from fastpg.config import ConfigError
from fastpg.sweeps.execute import execute
from fastpg.sweeps.index import queries_to_eps
from fastpg.sweeps.spec import Sweep, load_toml, parse_grid, parse_seeds, run_id
from test_cli import FASTPG
from test_cli import fastpg as fastpg_cmd

FIXED = dict(d=6, k=3, N=3, n_pre=100, steps=200, n_test=16, eval_every=50, algorithm="rs", lr="adaptive")


def test_parse_seeds_and_grid():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("5,1,2-3") == [1, 2, 3, 5]
    for bad in ("", "a", "3-1", "-2"):
        with pytest.raises(ConfigError, match="^seeds: "):
            parse_seeds(bad)
    grid = parse_grid(["N=2,4", "reward=orm,prm", "eta=0.1,1e-2", "M=1e6"])
    assert grid == {"N": [2, 4], "reward": ["orm", "prm"], "eta": [0.1, 0.01], "M": [10**6]}
    for bad in (["N"], ["nope=1"], ["seed=1,2"], ["N=two"]):
        with pytest.raises(ConfigError, match="^grid: "):
            parse_grid(bad)
    assert run_id({"reward": "orm", "N": 8}, 3) == "reward=orm/N=8/seed=3"


def test_toml_example_parses():
    spec = load_toml(os.path.join(os.path.dirname(__file__), "..", "examples", "exp_in_N.toml"))
    assert spec["grid"]["N"] == [2, 5, 8, 11, 14] and spec["seeds"] == [0, 1, 2, 3, 4] and spec["eps"] == [0.1]


def _datasets(path):
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.__setitem__(name, obj[...]) if isinstance(obj, h5py.Dataset) else None)
        found["status"] = f.attrs["status"]
    found.pop("trace/wall_time")
    return found


def _same_files(a, b):
    da, db = _datasets(a), _datasets(b)
    assert da.keys() == db.keys()
    for name in da:
        assert np.array_equal(da[name], db[name]), (a, name)


def test_sweep_runs_equal_single_runs_and_index(tmp_path):
    sweep = Sweep(tmp_path / "s", dict(FIXED), {"N": [2, 3], "reward": ["orm", "prm"]}, [0, 1], eps=0.5, batch_size=3)
    index = execute(sweep)
    with open(tmp_path / "s" / "index.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and all(r["status"] == "complete" for r in rows)
    assert list(rows[0])[:5] == ["N", "reward", "seed", "run", "file"] and "queries_to_eps" in rows[0]
    run = sweep.runs[5]
    single = tmp_path / "single.h5"
    fastpg.run(run.config, single)
    _same_files(run.path, single)  # batch composition does not change results
    data = fastpg.load(run.path)
    row = index.rows[run.id]
    assert row["expected_error"] == data.trace["expected_error"][-1]
    q = queries_to_eps(data.trace, 0.5)
    assert row["queries_to_eps"] == ("" if q is None else q)


def test_resume_skips_complete_and_refuses_other_sweeps(tmp_path):
    out = tmp_path / "s"
    sweep = Sweep(out, dict(FIXED), {"N": [2, 3]}, [0, 1])
    execute(sweep)
    mtimes = {r.id: r.path.stat().st_mtime_ns for r in sweep.runs}
    execute(Sweep(out, dict(FIXED), {"N": [2, 3]}, [0, 1]))
    assert mtimes == {r.id: r.path.stat().st_mtime_ns for r in sweep.runs}
    with pytest.raises(ConfigError, match="different sweep.*grid parameters: N .folder. -> k .now."):
        execute(Sweep(out, dict(FIXED), {"k": [2, 4]}, [0, 1]))
    with pytest.raises(ConfigError, match=r"different sweep: eta: 0.5 \(folder\) -> 0.3 \(now\)"):
        execute(Sweep(out, dict(FIXED, eta=0.3), {"N": [2, 3]}, [0, 1]))
    r = fastpg_cmd("sweep", out, "--grid", "N=2,4", "-d", "7")
    assert r.returncode == 2 and "different sweep" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    """24 runs killed mid-sweep, re-run with the same command: same datasets as an uninterrupted sweep."""
    args = ["sweep", "--grid", "N=2,3,4", "--grid", "reward=orm,prm", "--seeds", "0-3", "--batch-size", "2",
            "-d", "16", "-k", "4", "--n-pre", "200", "--steps", "60000", "--n-test", "32", "--eval-every", "10000",
            "--algorithm", "pg", "--lr", "adaptive", "--quiet"]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen([*FASTPG, args[0], str(killed), *args[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until some runs are complete, then kill in the middle of a batch
        index = killed / "index.csv"
        if index.exists() and sum(r["status"] == "complete" for r in csv.DictReader(open(index))) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows = list(csv.DictReader(open(killed / "index.csv")))
    for row in rows:  # the index never claims a run that is not complete
        if row["status"] == "complete":
            assert fastpg.load(killed / row["file"]).status == "complete"
    n_complete = sum(r["status"] == "complete" for r in rows)
    assert 2 <= n_complete < 24, n_complete
    assert fastpg_cmd(args[0], killed, *args[1:]).returncode == 0
    assert fastpg_cmd(args[0], clean, *args[1:]).returncode == 0
    rows = list(csv.DictReader(open(killed / "index.csv")))
    assert len(rows) == 24 and all(r["status"] == "complete" for r in rows)
    for row in rows:
        _same_files(killed / row["file"], clean / row["file"])


@pytest.mark.slow
def test_dask_backend_matches_local(tmp_path):
    pytest.importorskip("distributed")
    spec = ["--grid", "N=2,3", "--grid", "reward=orm,prm", "--seeds", "0-1", "-d", "6", "-k", "3", "--n-pre", "100",
            "--steps", "300", "--n-test", "16", "--eval-every", "100", "--algorithm", "rs", "--quiet"]
    assert fastpg_cmd("sweep", tmp_path / "local", *spec).returncode == 0
    r = fastpg_cmd("sweep", tmp_path / "dask", *spec, "--dask-workers", "2")
    assert r.returncode == 0, r.stderr
    local_rows = list(csv.DictReader(open(tmp_path / "local" / "index.csv")))
    dask_rows = list(csv.DictReader(open(tmp_path / "dask" / "index.csv")))
    assert len(dask_rows) == 8 and all(r["status"] == "complete" for r in dask_rows)
    for a, b in zip(local_rows, dask_rows):
        _same_files(tmp_path / "local" / a["file"], tmp_path / "dask" / b["file"])


@pytest.mark.slow
def test_sweep_summary_and_scaling_plot(tmp_path):
    out = tmp_path / "s"
    r = fastpg_cmd("sweep", out, "--grid", "N=2,3,4", "--grid", "reward=orm,prm", "--seeds", "0-1", "-d", "6",
                   "-k", "3", "--contexts", "clusters", "--C", "1", "--sigma", "0", "--base", "uniform",
                   "--algorithm", "rs", "--lr", "adaptive", "--eta", "1", "--steps", "60", "--eval-every", "1",
                   "--n-test", "1", "--eps", "0.1")
    assert r.returncode == 0, r.stderr
    assert "queries_to_eps" in r.stdout and "3/3" not in r.stdout and "2/2" in r.stdout
    p = fastpg_cmd("plot", "scaling", out, "--x", "N", "--out", tmp_path / "s.png")
    assert p.returncode == 0, p.stderr
    assert "slope of log queries in N" in p.stdout and (tmp_path / "s.png").exists()
    info = fastpg_cmd("info", out)
    assert info.returncode == 0 and "12 runs: 12 complete" in info.stdout
    bad = fastpg_cmd("plot", "scaling", out, "--x", "k", "--out", tmp_path / "t.png")
    assert bad.returncode == 2 and "allowed: N " in bad.stderr  # reward is not numeric


@pytest.mark.slow
def test_cases_cross_the_grid_and_base_files_fill_placeholders(tmp_path):
    """[[cases]] sets of parameters times the grid; base_file = ".../N={N}.h5" gives each N its own base."""
    bases = tmp_path / "bases"
    bases.mkdir()
    for N in (2, 3):
        fastpg.run(dict(FIXED, N=N, base="uniform", algorithm="pg", reward="prm", steps=60), bases / f"N={N}.h5")
    toml = tmp_path / "s.toml"
    toml.write_text(f'seeds = "0-1"\n[fixed]\nd = 6\nk = 3\nsteps = 30\nn_test = 8\nbase_file = "{bases}/N={{N}}.h5"\n'
                    '[grid]\nN = [2, 3]\n[[cases]]\nbase = "sgd"\nn_pre = 50\n[[cases]]\nbase = "teacher"\nbeta = 2.0\n'
                    '[[cases]]\nbase = "file"\n')
    r = fastpg_cmd("sweep", tmp_path / "s", "--config", toml, "-q")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "s" / "index.csv")))
    assert len(rows) == 3 * 2 * 2 and all(row["status"] == "complete" for row in rows)
    assert {row["file"].split("/")[0] for row in rows} == {"base=sgd", "base=teacher", "base=file"}
    for row in rows:
        run = fastpg.load(tmp_path / "s" / row["file"])
        if row["base"] == "file":
            with h5py.File(bases / f"N={row['N']}.h5", "r") as f:
                np.testing.assert_array_equal(run.base["loglik"].shape, (8,))
                W_file = f["final/W"][...]
            with h5py.File(tmp_path / "s" / row["file"], "r") as f:
                np.testing.assert_array_equal(f["base/W"][...], W_file)
        assert run.config["base"] == row["base"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[grid]\nN = [2]\n[[cases]]\nN = 3\n')
    r = fastpg_cmd("sweep", tmp_path / "b", "--config", bad)
    assert r.returncode == 2 and "case parameter N" in r.stderr


def test_a_file_base_keys_runs_by_content_so_moving_folders_changes_nothing(tmp_path):
    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        fastpg.run(dict(FIXED, base="uniform", algorithm="pg", reward="prm", steps=60), tmp_path / where / "base.h5")
    runs = [fastpg.run(dict(FIXED, base="file", base_file=str(tmp_path / where / "base.h5"), steps=100))
            for where in ("a", "b")]
    np.testing.assert_array_equal(runs[0].W, runs[1].W)
    np.testing.assert_array_equal(runs[0].trace["orm_queries"], runs[1].trace["orm_queries"])


def test_a_finished_batch_without_a_complete_file_is_marked_with_the_reason(tmp_path):
    from fastpg.sweeps.index import Index

    sweep = Sweep(tmp_path / "s", dict(FIXED), {"N": [2]}, [0, 1])
    sweep.claim_folder()
    index = Index(sweep)
    index.refresh(sweep.runs, {}, {sweep.runs[0].id: None})  # run 0's batch finished; run 1 never ran
    first, second = (index.rows[r.id] for r in sweep.runs)
    assert first["status"] == "missing" and "no complete file at" in first["message"] and "OUTDIR" in first["message"]
    assert second["status"] == "missing" and second["message"] == ""
