"""pass@k and coverage (SPEC 14.1): exact from the float64 log-likelihoods, against a 400-digit
reference; recorded only where asked (defaults are unchanged); the same from a run, its file, a
batch file, a continued run and RunData.pass_at_k."""

import math
from decimal import Decimal, getcontext

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastpg
from fastpg.api import BatchFile, run_into
from fastpg.metrics import coverage, crossing_k, log1m_exp, pass_at_k
from test_cli import fastpg as fastpg_cmd

getcontext().prec = 400  # 1 - p keeps every digit of p = e^-745 (about 1e-324)
SMALL = dict(d=6, k=3, N=3, n_pre=50, steps=200, n_test=32, eval_every=50, base="teacher", beta=1.0, rho=0.5,
             lr="constant", eta=1.0)


def reference_pass_at_k(loglik: float, k: int) -> float:
    """1 - (1 - p)^k in 400-digit decimal arithmetic, from log p."""
    p = Decimal(loglik).exp()
    return float(1 - (1 - p) ** k)


@settings(max_examples=300, deadline=None)
@given(st.floats(-745.0, 0.0), st.integers(1, 10**15))
def test_pass_at_k_against_a_400_digit_reference(loglik, k):
    got = float(pass_at_k(np.array([loglik]), [k])[0, 0])
    want = reference_pass_at_k(loglik, k)
    assert got == pytest.approx(want, rel=1e-11, abs=1e-300)


def test_pass_at_k_at_the_extremes():
    # p = 1e-300: pass@k = k p to full precision (a naive 1 - (1 - p)^k gives 0)
    assert pass_at_k(np.array([-300 * math.log(10)]), [1, 1000])[0] == pytest.approx([1e-300, 1e-297], rel=1e-12)
    # 1 - p = 1e-15: pass@1 = p, and pass@2 = 1 - 1e-30 (rounds to 1)
    near = math.log1p(-1e-15)
    assert pass_at_k(np.array([near]), [1])[0, 0] == pytest.approx(1 - 1e-15, rel=1e-16)
    assert pass_at_k(np.array([0.0]), [1, 7])[0].tolist() == [1.0, 1.0]  # p = 1
    assert log1m_exp(np.array([0.0]))[0] == -math.inf
    assert log1m_exp(np.array([near]))[0] == pytest.approx(math.log(1e-15), rel=1e-12)  # cancels in log1p(-p)
    # pass@k is increasing in k and in p (strictly, until it rounds to 1)
    ll = np.log(np.linspace(1e-6, 1 - 1e-6, 50))
    v = pass_at_k(ll, [1, 2, 10, 1000])
    for axis in (0, 1):
        step, before = np.diff(v, axis=axis), (v[:-1] if axis == 0 else v[:, :-1])
        assert np.all(step >= 0) and np.all(step[before < 0.99] > 0)


def test_coverage_counts_each_context_once():
    base = np.log([0.9, 0.9, 0.001, 0.001, 0.3])
    now = np.log([0.95, 0.001, 0.9, 1e-9, 0.2])
    c = coverage(now, base, k=1)  # threshold 1/2 on pass@1 = p
    assert c == {"coverage_preserved": 0.2, "coverage_expanded": 0.2, "coverage_shrunk": 0.2, "coverage_outside": 0.4}
    c = coverage(now, base, k=4)  # 1 - 0.7^4 = 0.76 and 1 - 0.8^4 = 0.59: the last context is now preserved
    assert c["coverage_preserved"] == 0.4 and c["coverage_outside"] == 0.2 and sum(c.values()) == pytest.approx(1.0)


def test_crossing_k_finds_where_the_base_overtakes():
    base = np.log([0.5, 1e-3])  # covers both contexts at large k
    sharp = np.log([0.999, 1e-6])  # better at k = 1, worse at large k
    k = crossing_k(base, sharp)

    def gap(x):
        return pass_at_k(base, [x]).mean() - pass_at_k(sharp, [x]).mean()

    assert 1 < k < 1e6 and gap(k * (1 + 1e-6)) > 0 and gap(k * (1 - 1e-6)) <= 0
    assert crossing_k(base, np.log([0.9, 0.5])) is None  # better everywhere: no crossing
    assert crossing_k(sharp, base) == 1.0  # the base is better from k = 1


def _file_datasets(path) -> dict:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_a_run_records_pass_at_k_and_coverage_only_where_asked(tmp_path):
    plain = fastpg.run(SMALL, tmp_path / "plain.h5")
    ks = [1, 4, 64]
    run = fastpg.run(dict(SMALL, pass_k="64,1,4,4"), tmp_path / "k.h5")
    assert run.config["pass_k"] == ks  # sorted, no repeats
    # defaults: no new dataset, and every dataset the same as with pass_k (it measures, it does not act)
    a, b = _file_datasets(tmp_path / "plain.h5"), _file_datasets(tmp_path / "k.h5")
    added = set(b) - set(a)
    assert added == {"trace/pass_at_k", *(f"trace/coverage_{c}" for c in ("preserved", "expanded", "shrunk", "outside"))}
    for name in a:
        if name != "trace/wall_time":
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert "coverage_expanded" not in plain.trace
    with h5py.File(tmp_path / "k.h5", "r") as f:
        stored = f["trace/pass_at_k"][...]
        assert f["trace/pass_at_k"].attrs["k"].tolist() == ks and f["trace/pass_at_k"].attrs["units"] == "probability"
    loaded = fastpg.load(tmp_path / "k.h5")
    cube = loaded.pass_at_k(ks)
    assert cube.shape == (loaded.rows, SMALL["n_test"], 3)
    np.testing.assert_array_equal(stored, cube.mean(axis=1))  # the stored curve is the mean over test contexts
    np.testing.assert_array_equal(run.pass_at_k(ks), cube)
    for i in range(loaded.rows):
        c = coverage(loaded.loglik[i], loaded.base["loglik"], 64)
        for name, value in c.items():
            assert loaded.trace[name][i] == value == run.trace[name][i]
    # step 0 is the base model itself: nothing expanded or shrunk
    assert loaded.trace["coverage_expanded"][0] == loaded.trace["coverage_shrunk"][0] == 0.0
    np.testing.assert_array_equal(cube[0], pass_at_k(loaded.base["loglik"], ks))


def test_pass_at_k_in_a_batch_file_and_a_continued_run(tmp_path):
    cfg = dict(SMALL, pass_k=[2, 8])
    run_into(BatchFile(tmp_path / "b.h5", ["s0", "s1"]), [cfg, dict(cfg, seed=1)])
    alone = fastpg.run(dict(cfg, seed=1), tmp_path / "alone.h5")
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert f["trace/pass_at_k"].shape == (alone.rows, 2, 2)
        np.testing.assert_array_equal(f["trace/pass_at_k"][:, 1], alone.pass_at_k([2, 8]).mean(axis=1))
    in_batch = fastpg.load(tmp_path / "b.h5", run="s1")
    np.testing.assert_array_equal(in_batch.trace["coverage_preserved"], alone.trace["coverage_preserved"])
    # continued to twice the budget: the file a 400-step run writes
    fastpg.run(dict(cfg, steps=200), tmp_path / "short.h5")
    fastpg.continue_run(tmp_path / "short.h5", 400)
    fastpg.run(dict(cfg, steps=400), tmp_path / "long.h5")
    a, b = _file_datasets(tmp_path / "short.h5"), _file_datasets(tmp_path / "long.h5")
    assert set(a) == set(b)
    for name in a:
        if name != "trace/wall_time":
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_pass_k_on_the_command_line(tmp_path):
    r = fastpg_cmd("run", "--preset", "tiny", "--steps", "50", "--pass-k", "1,16", "--out", tmp_path / "a.h5", "-q")
    assert r.returncode == 0, r.stderr
    assert fastpg.load(tmp_path / "a.h5").config["pass_k"] == [1, 16]
    for bad in ("0", "1,x", "2.5"):
        r = fastpg_cmd("run", "--preset", "tiny", "--pass-k", bad, "--out", tmp_path / "b.h5")
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--pass-k" in r.stderr, r.stderr
        assert not (tmp_path / "b.h5").exists()
    with pytest.raises(fastpg.ConfigError, match="pass_k"):
        fastpg.load(tmp_path / "a.h5").pass_at_k([0])
