"""fastpg profile: a small profile end to end, its CSV against a plain recomputation, bad input."""

import csv
import math

import numpy as np
import pytest

import fastpg
import naive
from fastpg.analysis.complexity import lq_curve, lq_fit
from fastpg.paper.profile import rs_budget
from test_cli import fastpg as fastpg_cmd

SMALL = ["--grid", "N=4,5", "--grid", "gamma=0.004,0.008", "--seeds", "0-1", "--alpha", "0.1,0.01,0.001",
         "--eps", "0.3,0.1", "--steps", "3000", "--n-test", "128", "--eval-log", "40", "-d", "16", "--C", "16",
         "--n-pre", "1000"]


@pytest.fixture(scope="module")
def small_profile(tmp_path_factory):
    where = tmp_path_factory.mktemp("profile")
    out = where / "p"
    r = fastpg_cmd("profile", "p", *SMALL, cwd=where)  # a relative OUTDIR, as a user types it
    assert r.returncode == 0, r.stderr
    return out, r


@pytest.mark.slow
def test_profile_writes_its_files_and_table(small_profile):
    out, r = small_profile
    for name in ("profile.csv", "exponents.csv", "q_alpha.png", "lq.png", "pg/index.csv", "rs/index.csv"):
        assert (out / name).exists(), name
    assert "log(1/alpha)" in r.stdout and "Q / bound" in r.stdout and "runs in" in r.stdout
    rows = list(csv.DictReader(open(out / "exponents.csv")))
    assert {row["against"] for row in rows} >= {"log(1/alpha)", "log(1/eps)", "log(||W*||^2/gamma^2)", "N"}


def test_profile_csv_equals_a_plain_recomputation_from_the_stored_traces(small_profile):
    out, _ = small_profile
    rows = list(csv.DictReader(open(out / "profile.csv")))
    # pg: 2 rewards x 2 N x 2 gamma x 2 seeds, every alpha and eps (PRM also at token level);
    # rs: 2 rewards x 3 budgets x 2 seeds, its own alpha only
    assert len(rows) == 16 * 3 * 2 + 8 * 3 * 2 + 12 * 2 + 6 * 2
    for row in rows:
        run = fastpg.load(out / row["file"])
        base = run.base["loglik"] if row["level"] == "sequence" else run.base["token_loglik"].min(axis=1)
        alpha, eps = float(row["alpha"]), float(row["eps"])
        reached, queries, lo, contexts = naive.query_complexity(run.loglik, base, run.queries, alpha, eps)
        assert row["reached"] == ("true" if reached else "false")
        assert row["queries"] == ("" if queries is None else repr(queries))
        assert float(row["queries_lo"]) == lo and int(row["contexts"]) == contexts
        assert float(row["gamma"]) == run.task["realised_min_margin"] >= float(row["gamma_setting"])
        if row["algorithm"] == "rs":
            assert run.config["M"] == rs_budget(alpha)
        norm = math.sqrt(run.config["N"])  # block teacher scale, position features
        assert float(row["bound"]) == pytest.approx((1 / alpha + 1 / eps) * norm**2 / float(row["gamma"]) ** 2)


@pytest.mark.slow
def test_profile_resumes_without_rerunning(small_profile):
    out, _ = small_profile
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.h5")}
    r = fastpg_cmd("profile", out, *SMALL, "-q")
    assert r.returncode == 0, r.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.h5")} == stamps


@pytest.mark.parametrize("args,option", [
    (["--alpha", "0"], "--alpha"), (["--alpha", "2"], "--alpha"), (["--alpha", ","], "--alpha"),
    (["--eps", "1"], "--eps"), (["--eps", "-0.1"], "--eps"), (["--eps", "x"], "--eps"),
    (["--grid", "N="], "--grid"), (["--grid", "eta=0.1,0.2"], "--grid"), (["--grid", "algorithm=ppo"], "--grid"),
    (["--seeds", ""], "--seeds"), (["-N", "4", "--grid", "N=4,5"], "-N"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, option):
    r = fastpg_cmd("profile", tmp_path / "p", *args)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and option in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "p").exists()


def test_lq_curve_is_the_base_error_above_one_and_the_lq_below():
    base = np.log(np.array([1e-9, 1e-5, 0.01, 0.5, 0.9]))
    assert lq_curve(base, [0.0])[0] == pytest.approx(np.mean(1 - np.exp(base)))
    assert lq_curve(base, [math.log(1e-4)])[0] == pytest.approx((2 - 1e-9 - 1e-5) / 5)
    token = np.log(np.array([0.3, 0.3, 0.3, 0.6, 0.9]))
    assert lq_curve(base, [math.log(0.4)], token)[0] == pytest.approx((3 - 1e-9 - 1e-5 - 0.01) / 5)


def test_lq_fit_recovers_c_on_a_synthetic_trace():
    rng = np.random.default_rng(0)
    base = np.log(10 ** rng.uniform(-8, 0, 500))
    T = np.unique(np.round(np.logspace(0, 7, 60)))
    err = lq_curve(base, np.log(300.0) - np.log(T))
    fit = lq_fit(T, err, base)
    assert fit["c"] == pytest.approx(300.0, rel=0.03) and fit["max_gap"] < 0.01


def _plain_passages(out, eps, keep_alpha=0.0):
    """Survival data of the pg + ORM runs at N = 4, gamma = 0.004, recomputed from the stored traces
    with the plain first passage to ``1 - eps``, for the contexts with base likelihood >= ``keep_alpha``."""
    x, y, reached, log_alpha, queries, seeds = [], [], [], [], [], []
    for path in sorted((out / "pg").rglob("*.h5")):
        run = fastpg.load(path)
        if run.config["reward"] != "orm" or run.config["N"] != 4 or run.config["gamma"] != 0.004:
            continue
        for j in range(run.loglik.shape[1]):
            if keep_alpha and run.base["loglik"][j] < math.log(keep_alpha):
                continue
            above = np.nonzero(run.loglik[:, j] >= math.log(1 - eps))[0]
            T = run.queries[above[0]] if len(above) else run.queries[-1]
            if len(above) and T == 0:
                continue  # there at the start: no passage
            x.append(math.log(math.exp(-run.base["loglik"][j]) + 1 / eps))
            y.append(math.log(T))
            reached.append(len(above) > 0)
            log_alpha.append(run.base["loglik"][j])
            queries.append(T)
            seeds.append(run.config["seed"])
    return x, y, reached, log_alpha, queries, seeds


def test_per_context_exponents_against_a_plain_recomputation(small_profile):
    """context_exponents.csv: the censored fit over every test context of the pg runs at the
    reference N and gamma, recomputed here from the stored traces with the plain first passage;
    and the fit whose spread is in eps (contexts with alpha_j >= the largest eps, every eps)."""
    from fastpg.analysis.fits import censored_slope, kaplan_meier_quantile

    out, r = small_profile
    assert "per test context" in r.stdout and "Kaplan-Meier" in r.stdout
    rows = {(row["algorithm"], row["reward"], row["level"], row["against"]): row
            for row in csv.DictReader(open(out / "context_exponents.csv"))}
    assert set(rows) == {(a, rw, lv, ag) for a in ("pg", "rs") for rw, lv in
                         (("orm", "sequence"), ("prm", "sequence"), ("prm", "token")) for ag in ("alpha", "eps")}
    x, y, reached, log_alpha, queries, _ = _plain_passages(out, 0.1)  # eps_ref: the middle of 0.3, 0.1
    row = rows[("pg", "orm", "sequence", "alpha")]
    assert int(row["contexts"]) == len(x) and int(row["censored"]) == len(x) - sum(reached)
    assert float(row["slope"]) == pytest.approx(censored_slope(x, y, reached)[1], rel=1e-9)
    pooled = [_plain_passages(out, eps, keep_alpha=0.3) for eps in (0.3, 0.1)]
    ex, ey, er = (sum((p[k] for p in pooled), []) for k in range(3))
    row = rows[("pg", "orm", "sequence", "eps")]
    assert int(row["contexts"]) == len(ex) > 0 and int(row["censored"]) == len(ex) - sum(er)
    assert float(row["slope"]) == pytest.approx(censored_slope(ex, ey, er)[1], rel=1e-9)
    medians = [m for m in csv.DictReader(open(out / "context_quantiles.csv"))
               if (m["algorithm"], m["reward"], m["level"]) == ("pg", "orm", "sequence")]
    assert sum(int(m["contexts"]) for m in medians) == len(x)
    decade = np.floor(-np.array(log_alpha) / math.log(10))
    for m in medians:
        keep = decade == round(-math.log10(float(m["alpha_high"])))
        assert int(m["contexts"]) == keep.sum() and int(m["reached"]) == np.array(reached)[keep].sum()
        assert float(m["median_queries"]) == kaplan_meier_quantile(np.array(queries)[keep], np.array(reached)[keep])
