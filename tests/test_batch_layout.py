"""``fastpg sweep --layout batch``: one HDF5 file per batch of runs (docs/design.md, "Batch files").

The same runs as the file-per-run layout, bit for bit; the same resume guarantee (a killed sweep
loses no complete run and rewrites no complete file); the same live reading; and one loader.
"""

import csv
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest

import fastpg
from fastpg.store import load_batch
from test_cli import FASTPG
from test_cli import fastpg as fastpg_cmd

TINY = ["--preset", "tiny", "--steps", "300", "--quiet"]


def _rows(folder):
    with open(folder / "index.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_batch_files_hold_the_runs_of_files_per_run_bit_for_bit(tmp_path):
    spec = [*TINY, "--grid", "reward=orm,prm", "--seeds", "0-4", "--batch-size", "4", "--alpha", "0.01"]
    assert fastpg_cmd("sweep", tmp_path / "r", *spec).returncode == 0
    r = fastpg_cmd("sweep", tmp_path / "b", *spec, "--layout", "batch")
    assert r.returncode == 0, r.stderr
    files = sorted((tmp_path / "b" / "batches").glob("*.h5"))
    assert len(files) == 3 and not list((tmp_path / "b").glob("reward=*"))  # 10 runs: batches of 4, 4 and 2
    per_run, batched = fastpg.load_sweep(tmp_path / "r", loglik=True), fastpg.load_sweep(tmp_path / "b", loglik=True)
    same = [c for c in per_run.index.columns if c != "file"]
    assert per_run.index[same].equals(batched.index[same])
    assert (batched.index["file"].str.startswith("batches/b-")).all()
    np.testing.assert_array_equal(per_run.cube(), batched.cube())
    cols = [c for c in per_run.traces.columns if c not in ("file", "wall_time")]
    assert per_run.traces[cols].equals(batched.traces[cols])
    for row in batched.index.to_dict("records"):  # every dataset of a run, through the one-run reader
        a, b = fastpg.load(tmp_path / "r" / f"{row['run']}.h5"), fastpg.load(tmp_path / "b" / row["file"], run=row["run"])
        assert a.config == b.config and a.status == b.status == "complete"
        for name in ("loglik", "token_loglik"):
            np.testing.assert_array_equal(a.base[name], b.base[name])
        for name in a.lq:
            np.testing.assert_array_equal(a.lq[name], b.lq[name])
        assert a.task == b.task
        with h5py.File(a.path) as fa, h5py.File(b.path) as fb:
            slot = [x.decode() for x in fb["runs/id"][...]].index(row["run"])
            np.testing.assert_array_equal(fa["final/W"][...], fb["final/W"][slot])
            np.testing.assert_array_equal(fa["task/test_x"][...], fb["task/test_x"][slot])
    with pytest.raises(ValueError, match="batch file of"):
        fastpg.load(files[0])


@pytest.mark.slow
def test_a_folder_keeps_its_layout(tmp_path):
    out = tmp_path / "b"
    assert fastpg_cmd("sweep", out, *TINY, "--seeds", "0-1", "--layout", "batch").returncode == 0
    r = fastpg_cmd("sweep", out, *TINY, "--seeds", "0-3")  # no --layout: the folder's
    assert r.returncode == 0, r.stderr
    assert len(_rows(out)) == 4 and not list(out.glob("seed=*.h5"))
    r = fastpg_cmd("sweep", out, *TINY, "--seeds", "0-3", "--layout", "run")
    assert r.returncode == 2 and "layout: batch (folder) -> run (now)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@pytest.mark.slow
def test_a_failed_run_is_recorded_and_redone_in_a_new_file_leaving_the_complete_one(tmp_path):
    out = tmp_path / "f"
    spec = ["--base", "uniform", "--algorithm", "rs", "--reward", "prm", "--grid", "eta=0.1,1e200", "--steps", "100",
            "--eval-every", "10", "--n-test", "8", "-q", "--layout", "batch"]
    r = fastpg_cmd("sweep", out, *spec)
    assert r.returncode == 1 and "not complete" in r.stderr
    rows = {row["eta"]: row for row in _rows(out)}
    assert rows["0.1"]["status"] == "complete" and rows["1e+200"]["status"] == "failed"
    assert rows["1e+200"]["message"].startswith("eta: weights diverged") and rows["0.1"]["file"] == rows["1e+200"]["file"]
    first = out / rows["0.1"]["file"]
    before = first.read_bytes()
    failed = fastpg.load(first, run=rows["1e+200"]["run"])
    assert failed.status == "failed" and 0 < failed.rows < 11 and np.isfinite(failed.trace["steps"]).all()
    assert "1 failed" in fastpg_cmd("info", first).stdout
    r = fastpg_cmd("sweep", out, *spec)  # the failed run is redone (and fails again) in a file of its own
    assert r.returncode == 1
    assert first.read_bytes() == before and len(list((out / "batches").glob("*.h5"))) == 2
    rows = {row["eta"]: row for row in _rows(out)}
    assert rows["0.1"]["status"] == "complete" and rows["0.1"]["file"] == str(first.relative_to(out))


@pytest.mark.slow
def test_a_killed_batch_sweep_is_read_live_and_resumes_without_rewriting_complete_files(tmp_path):
    out = tmp_path / "k"
    spec = ["--seeds", "0-5", "-d", "16", "-k", "3", "--n-pre", "50", "--steps", "400000", "--eval-every", "50000",
            "--n-test", "16", "--batch-size", "1", "--layout", "batch", "--quiet"]
    proc = subprocess.Popen([*FASTPG, "sweep", str(out), *spec], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    complete, live = {}, None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and (len(complete) < 2 or live is None):
        for path in (out / "batches").glob("*.h5") if (out / "batches").exists() else []:
            try:
                (run,) = load_batch(path).values()
            except (OSError, KeyError, ValueError):
                continue
            if run.status == "complete":
                complete.setdefault(path, path.read_bytes())
            elif run.status == "running" and run.rows >= 2:
                live = run  # read while being written (SWMR)
        time.sleep(0.05)
    assert len(complete) >= 2 and live is not None
    assert live.trace["steps"][1] == 50000 and live.loglik.shape == (live.rows, 16)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    statuses = {p: load_batch(p) for p in (out / "batches").glob("*.h5")}
    assert any(next(iter(runs.values())).status == "running" for runs in statuses.values())  # the killed batch
    r = subprocess.run([*FASTPG, "sweep", str(out), *spec], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert len(_rows(out)) == 6 and all(row["status"] == "complete" for row in _rows(out))
    for path, data in complete.items():
        assert path.read_bytes() == data, f"{path} was rewritten"
    remaining = list((out / "batches").glob("*.h5"))
    assert len(remaining) == 6 and all(next(iter(load_batch(p).values())).status == "complete" for p in remaining)
