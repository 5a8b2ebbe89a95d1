"""Query complexity: Q(alpha, eps) and first passage against plain references, stored precision,
and the exponential-in-N barrier of ORM against PRM on a uniform base."""

import csv
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastpg
import naive
from fastpg.analysis.complexity import (
    conditional_error,
    context_passages,
    first_passage_queries,
    query_complexity,
    theory_bound,
)
from fastpg.analysis.fits import (
    bootstrap_censored_slope,
    bootstrap_slope,
    censored_slope,
    fit_slope,
    kaplan_meier_quantile,
)
from fastpg.sweeps.execute import execute
from fastpg.sweeps.spec import Sweep
from test_cli import fastpg as fastpg_cmd


@st.composite
def traces(draw):
    E = draw(st.integers(1, 8))
    n = draw(st.integers(1, 6))
    loglik = np.array(draw(st.lists(st.lists(st.floats(-800, 0), min_size=n, max_size=n), min_size=E, max_size=E)))
    base = np.array(draw(st.lists(st.floats(-800, 0), min_size=n, max_size=n)))
    steps = draw(st.lists(st.floats(0, 1e6), min_size=E, max_size=E))
    return loglik, base, np.cumsum(steps)


@settings(max_examples=200, deadline=None)
@given(traces(), st.sampled_from([1.0, 0.5, 1e-3, 1e-200]), st.sampled_from([0.5, 0.1, 1e-3, 1e-9]))
def test_query_complexity_matches_reference(trace, alpha, eps):
    loglik, base, queries = trace
    q = query_complexity(loglik, base, queries, alpha, eps)
    assert (q.reached, q.queries, q.queries_lo, q.contexts) == naive.query_complexity(loglik, base, queries, alpha, eps)
    if q.reached:
        assert q.queries_lo <= q.queries


@settings(max_examples=100, deadline=None)
@given(traces(), st.sampled_from([0.5, 1e-3, 1e-9]))
def test_first_passage_matches_reference(trace, eps):
    loglik, _, queries = trace
    np.testing.assert_array_equal(first_passage_queries(loglik, queries, eps),
                                  naive.first_passage_queries(loglik, queries, eps))


def test_conditional_error_resolves_tiny_errors():
    loglik = np.array([[math.log1p(-1e-12), math.log(1e-300)]])
    base = np.array([math.log(0.5), math.log(1e-250)])
    assert conditional_error(loglik, base, 0.1)[0] == pytest.approx(1e-12, rel=1e-6)
    assert conditional_error(loglik, base, 1e-260)[0] == pytest.approx(0.5 * (1 + 1e-12), rel=1e-9)
    assert np.isnan(conditional_error(loglik, base, 0.9)[0])


@pytest.mark.slow
def test_first_passage_at_eps_1e9_and_base_1e200_round_trip_through_the_file(tmp_path):
    """k = 2, N = 665, uniform base: every response has base likelihood 2^-665 = 10^-200.2; rs + PRM
    then drives the one context to within 1e-9 of 1. Both ends are read back from the file."""
    out = tmp_path / "rt.h5"
    r = fastpg_cmd("run", "-d", "2", "-k", "2", "-N", "665", "--contexts", "clusters", "--C", "1", "--sigma", "0",
                   "--base", "uniform", "--algorithm", "rs", "--reward", "prm", "--lr", "adaptive", "--eta", "400",
                   "--steps", "2000", "--eval-log", "40", "--n-test", "1", "--out", out, "-q")
    assert r.returncode == 0, r.stderr
    run = fastpg.load(out)
    assert run.base["loglik"][0] == pytest.approx(-665 * math.log(2), rel=1e-12)  # 1e-200.2, not 0
    assert run.loglik[0, 0] == run.base["loglik"][0]
    fp = first_passage_queries(run.loglik, run.queries, 1e-9)
    assert np.isfinite(fp[0])
    assert fp[0] == naive.first_passage_queries(run.loglik, run.queries, 1e-9)[0]
    e = int(np.nonzero(run.queries == fp[0])[0][0])
    assert -np.expm1(run.loglik[e, 0]) <= 1e-9 < -np.expm1(run.loglik[e - 1, 0])
    q = query_complexity(run.loglik, run.base["loglik"], run.queries, 1e-201, 1e-9)
    assert q.reached and q.queries == fp[0]
    assert run.query_complexity(1e-201, 1e-9) == q and run.first_passage(1e-9)[0] == fp[0]
    assert not run.query_complexity(1e-200, 1e-9).reached and run.query_complexity(1e-200, 1e-9).contexts == 0


def _uniform_base_sweep(tmp_path, rewards):
    fixed = dict(d=8, k=4, contexts="clusters", C=1, sigma=0.0, base="uniform", algorithm="rs", lr="adaptive",
                 eta=1.0, steps=200, eval_log=60, n_test=1)
    sweep = Sweep(tmp_path / "u", fixed, {"N": [2, 4, 6, 8], "reward": rewards}, [0, 1, 2, 3, 4])
    execute(sweep)
    out = {}
    for run in sweep.runs:
        data = fastpg.load(run.path)
        k, N = run.config.k, run.config.N
        q = query_complexity(data.loglik, data.base["loglik"], data.queries, k ** -N * (1 - 1e-9), 0.1)
        assert q.reached and q.contexts == 1
        out.setdefault(run.point["reward"], {}).setdefault(N, []).append(q.queries)
    return {reward: (np.array(sorted(by_n)), np.array([np.median(by_n[n]) for n in sorted(by_n)]))
            for reward, by_n in out.items()}


@pytest.mark.slow
def test_uniform_base_orm_grows_like_k_to_the_n_and_prm_polynomially(tmp_path):
    """One context, base likelihood exactly k^-N: Q(alpha = k^-N, 0.1) grows like 4^N with ORM and
    polynomially with PRM (medians over 5 seeds)."""
    medians = _uniform_base_sweep(tmp_path, ["orm", "prm"])
    N, orm = medians["orm"]
    _, prm = medians["prm"]
    orm_rate = fit_slope(N, np.log(orm))
    assert 0.8 * math.log(4) < orm_rate < 1.2 * math.log(4), orm_rate
    assert fit_slope(N, np.log(prm)) < 0.5 * math.log(4)
    assert fit_slope(np.log(N), np.log(prm)) < 3.0  # polynomial of low degree
    assert np.all(orm[2:] > 10 * prm[2:])  # N = 6, 8


def test_bootstrap_slope_recovers_a_known_exponent():
    rng = np.random.default_rng(0)
    x = np.tile(np.log([10, 100, 1000, 1e4]), 6)
    groups = np.repeat(np.arange(6), 4)
    seed_slopes = 1.0 + rng.normal(0, 0.05, 6)  # each seed's own exponent, around 1
    y = seed_slopes[groups] * x + rng.normal(0, 0.2, 6)[groups]
    slope, lo, hi = bootstrap_slope(x, y, groups)
    assert slope == pytest.approx(seed_slopes.mean(), abs=1e-9)  # balanced design: the pooled fit averages them
    assert lo < seed_slopes.mean() < hi and lo < 1.0 < hi and hi - lo < 0.2
    assert math.isnan(bootstrap_slope([1, 1], [2, 3], [0, 1])[0])


def test_theory_bound_shape():
    assert theory_bound(0.1, 0.01, 0.5) == pytest.approx((10 + 100) / 0.25)
    assert theory_bound(0.1, 0.01, 0.5, teacher_norm=2.0) == pytest.approx(4 * (10 + 100) / 0.25)  # block scaling


@pytest.mark.slow
def test_sweep_index_carries_q_for_alphas_and_eps(tmp_path):
    out = tmp_path / "s"
    r = fastpg_cmd("sweep", out, "--preset", "tiny", "--steps", "300", "--eval-log", "30", "--grid", "reward=orm,prm",
                   "--seeds", "0-1", "--eps", "0.1,0.05", "--alpha", "0.1,1e-3", "-q")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(out / "index.csv")))
    assert len(rows) == 4
    for row in rows:
        run = fastpg.load(out / row["file"])
        assert float(row["realised_min_margin"]) == run.task["realised_min_margin"]
        for alpha in (0.1, 1e-3):
            for eps, name in ((0.1, "0.1"), (0.05, "0.05")):
                ref = naive.query_complexity(run.loglik, run.base["loglik"], run.queries, alpha, eps)
                cell = row[f"Q_alpha={alpha:g}_eps={name}"]
                assert cell == ("" if ref[1] is None else repr(ref[1]))
    for x in ("alpha", "eps"):
        p = fastpg_cmd("plot", "scaling", out, "--x", x, "--out", tmp_path / f"{x}.png")
        assert p.returncode == 0, p.stderr
        assert "median Q" in p.stdout and f"in log(1/{x})" in p.stdout and (tmp_path / f"{x}.png").exists()
    # --facet: one panel per alpha, each with its own short legend; a facet that is not a grouping is refused
    p = fastpg_cmd("plot", "scaling", out, "--x", "eps", "--facet", "alpha", "--out", tmp_path / "f.png")
    assert p.returncode == 0 and (tmp_path / "f.png").exists(), p.stderr
    bad = fastpg_cmd("plot", "scaling", out, "--x", "eps", "--facet", "eps", "--out", tmp_path / "g.png")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--facet" in bad.stderr
    assert not (tmp_path / "g.png").exists()
    from fastpg.analysis import plots
    from fastpg.analysis.summaries import scaling_table
    from fastpg.sweeps.index import grid_rows, q_rows, read_index

    rows = q_rows(grid_rows(read_index(out), ["reward"]), ["reward"], [0.1, 1e-3], [0.1, 0.05])
    table = scaling_table(rows, ["reward", "alpha", "eps"], "eps", "Q")
    assert len(table) == 4  # reward x alpha
    fig = plots.scaling_figure(table, "eps", y="Q", facet="alpha")
    assert [ax.get_title() for ax in fig.axes] == ["alpha = 0.001", "alpha = 0.1"]
    assert [len(ax.get_legend().get_texts()) for ax in fig.axes] == [2, 2]  # orm and prm in each panel


@pytest.mark.parametrize("args,option", [(["--alpha", "0"], "--alpha"), (["--alpha", "1.5"], "--alpha"),
                                         (["--eps", "1"], "--eps"), (["--eps", "0,0.1"], "--eps"),
                                         (["--alpha", ","], "--alpha")])
def test_bad_alpha_or_eps_is_one_line_exit_2(tmp_path, args, option):
    r = fastpg_cmd("sweep", tmp_path / "s", "--preset", "tiny", *args)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and option in r.stderr
    assert not (tmp_path / "s").exists()


def test_block_teacher_scale_gives_every_block_norm_one_and_keeps_the_default():
    from fastpg.config import RunConfig
    from fastpg.tasks import make_task

    t = make_task(RunConfig.from_dict(dict(d=8, k=4, N=5, teacher_scale="block", n_test=8)))
    np.testing.assert_allclose(np.linalg.norm(t.W_star.reshape(5, -1), axis=1), 1.0, rtol=1e-12)
    a = make_task(RunConfig.from_dict(dict(d=8, k=4, N=5, n_test=8)))
    b = make_task(RunConfig.from_dict(dict(d=8, k=4, N=5, teacher_scale="frobenius", n_test=8)))
    np.testing.assert_array_equal(a.W_star, b.W_star)
    assert np.linalg.norm(a.W_star) == pytest.approx(1.0)


def test_block_scale_with_a_fixed_gamma_keeps_the_margin_as_n_grows():
    from fastpg.config import RunConfig
    from fastpg.tasks import make_task

    for N in (2, 6, 12):
        t = make_task(RunConfig.from_dict(dict(d=8, k=4, N=N, teacher_scale="block", gamma=0.05, n_test=64)))
        assert t.gamma == 0.05 and t.realised_min_margin >= 0.05


# -- per-context first passage with censoring ---------------------------------------------------------
def test_censored_slope_is_the_log_logistic_maximum_likelihood_and_removes_the_bias_of_dropping():
    from scipy import optimize

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, 20000)
    y = 1.0 + 0.8 * x + 0.5 * rng.logistic(size=20000)
    reached = y < 6.0
    y = np.minimum(y, 6.0)  # everything above 6 is only known to be above it (38% of the points)

    def nll(t):  # the model written plainly: logistic density where reached, its tail where censored
        s = math.exp(t[2])
        z = (y - t[0] - t[1] * x) / s
        return -np.sum(np.where(reached, z - 2 * np.log1p(np.exp(z)) - t[2], -np.log1p(np.exp(z))))

    a, b, s = censored_slope(x, y, reached)
    best = optimize.minimize(nll, [1.0, 0.8, math.log(0.5)], method="Nelder-Mead",
                             options=dict(xatol=1e-9, fatol=1e-9, maxiter=4000)).x
    np.testing.assert_allclose([a, b, math.log(s)], best, atol=1e-5)
    assert abs(b - 0.8) < 0.02 and abs(a - 1.0) < 0.1 and abs(s - 0.5) < 0.02
    naive = np.polyfit(x[reached], y[reached], 1)[0]
    assert naive < 0.8 - 0.05  # what the fit on reached points alone gives: biased down
    slope, lo, hi = bootstrap_censored_slope(x[:3000], y[:3000], reached[:3000], np.arange(3000) % 5, n_boot=50)
    assert slope == censored_slope(x[:3000], y[:3000], reached[:3000])[1] and lo < slope < hi
    assert math.isnan(censored_slope([1.0, 2.0], [1.0, 2.0], [True, False])[1])  # one reached point: no fit


def test_kaplan_meier_quantile_with_and_without_censoring():
    t = np.arange(1.0, 11.0)
    assert kaplan_meier_quantile(t, np.ones(10, bool)) == 5.0  # S(5) = 0.5
    assert kaplan_meier_quantile(t, np.ones(10, bool), q=0.9) == 9.0
    # all but the first three censored at 4: S never falls to 1/2
    assert kaplan_meier_quantile(np.minimum(t, 4.0), t < 4.0) == math.inf
    rng = np.random.default_rng(1)
    T, cens = rng.exponential(1.0, 20000), rng.exponential(2.0, 20000)
    med = kaplan_meier_quantile(np.minimum(T, cens), T < cens)
    assert abs(med - math.log(2)) < 0.03  # the exponential's median, with a third of the data censored
    assert abs(np.median(np.minimum(T, cens)) - math.log(2)) > 0.1  # the naive median is far off


def test_context_passages_read_first_passages_and_censoring_off_a_trace():
    # three contexts, four evaluation points: passes at point 2, never, already at the start
    loglik = np.log(np.array([[0.1, 0.5, 1e-3], [0.5, 0.7, 1e-3], [0.95, 0.8, 0.99], [0.99, 0.85, 0.999]]))
    out = context_passages(loglik, np.array([0.0, 10.0, 100.0, 1000.0]), np.log([0.1, 0.5, 1e-3]), eps=0.1)
    assert out["at_start"] == 0 and list(out["queries"]) == [100.0, 1000.0, 100.0]
    assert list(out["reached"]) == [True, False, True]
    np.testing.assert_allclose(out["x"], np.log([10.0 + 10.0, 2.0 + 10.0, 1000.0 + 10.0]))
    out = context_passages(loglik[1:], np.array([10.0, 100.0, 1000.0]) - 10.0, np.log([0.1, 0.5, 1e-3]), eps=0.1)
    assert out["at_start"] == 0
    out = context_passages(loglik[2:], np.array([0.0, 5.0]), np.log([0.1, 0.5, 1e-3]), eps=0.1)
    assert out["at_start"] == 2 and list(out["reached"]) == [False]


def test_censored_medians_and_the_alpha_axis_of_scaling():
    """A run that never reached eps is more than its budget, not left out: the median is a reached
    value while at most half are censored, else '> budget' (inf). Q against alpha is fitted in
    log(1/alpha): Q = c/alpha gives slope 1 (the old fit in linear alpha gave about 1e4)."""
    from fastpg.analysis.fits import censored_quantile
    from fastpg.analysis.summaries import growth_text, median_text, scaling_table

    assert censored_quantile([5, None, 1]) == 5  # 1, 5, >budget
    assert censored_quantile([5, None, None, 1]) == 5  # half reached: the smallest t with P[T > t] <= 1/2
    assert censored_quantile([5, None, None, 1, None]) == math.inf and median_text(math.inf) == "> budget"
    assert censored_quantile([3.0, 1.0, 2.0]) == 2.0
    rows = [{"status": "complete", "reward": "orm", "alpha": a, "seed": s,
             "Q": (None if (a == 1e-4 and s > 0) else 30.0 / a * (1 + 0.1 * s))}
            for a in (1e-1, 1e-2, 1e-3, 1e-4) for s in range(3)]
    (g,) = scaling_table(rows, ["reward", "alpha"], "alpha", "Q")
    assert list(g["reached"]) == [1, 3, 3, 3] and list(g["missing"]) == [2, 0, 0, 0]  # alpha ascending
    assert math.isinf(g["median"][0])  # alpha sorted ascending: 1e-4 first, 2 of 3 censored
    assert g["fit"]["exp_slope"] == pytest.approx(1.0, abs=1e-9)  # the three determined medians
    assert growth_text(g["fit"], "alpha") == "slope of log queries in log(1/alpha): 1.000"


def test_q_in_long_form_with_its_bracket_and_typed_columns(tmp_path):
    """index.csv carries reached, queries_lo and n_contexts beside each Q; SweepData.q_table() is the
    long form with integer and boolean columns, checked against the plain recomputation."""
    out = tmp_path / "s"
    r = fastpg_cmd("sweep", out, "--preset", "tiny", "--steps", "300", "--eval-log", "30", "--grid", "N=2,3",
                   "--seeds", "0-1", "--eps", "0.1,0.01", "--alpha", "0.1,1e-9", "-q")
    assert r.returncode == 0, r.stderr
    data = fastpg.load_sweep(out)
    assert data.index["seed"].dtype == "int64" and data.index["N"].dtype == "int64"
    table = data.q_table()
    assert len(table) == 4 * 2 * 2
    assert table["seed"].dtype == "int64" and table["n_contexts"].dtype == "int64" and table["reached"].dtype == bool
    assert set(table["level"]) == {"sequence"}
    for row in table.to_dict("records"):
        run = fastpg.load(out / f"{row['run']}.h5")
        ref = naive.query_complexity(run.loglik, run.base["loglik"], run.queries, row["alpha"], row["eps"])
        assert (row["reached"], row["queries_lo"], row["n_contexts"]) == (ref[0], ref[2], ref[3])
        assert (math.isnan(row["Q"]) and ref[1] is None) or row["Q"] == ref[1]
