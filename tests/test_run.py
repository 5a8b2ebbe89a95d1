"""End-to-end runs through the Python API: file layout, recomputation, query accounting, extremes."""

import math

import h5py
import numpy as np
import pytest

import fastpg
import naive
from fastpg import outputs, store
from fastpg.config import ConfigError, RunConfig
from fastpg.metrics import eval_points

SMALL = dict(d=6, k=3, N=3, n_pre=100, steps=120, n_test=32, eval_every=40)


def test_tiny_file_layout(tiny_result):
    with h5py.File(tiny_result.path, "r") as f:
        assert f.attrs["status"] == "complete"
        for key in ("schema_version", "fastpg_version", "created", "argv", "seed"):
            assert key in f.attrs
        cfg = f["config"].attrs
        for key in ("d k N features contexts C sigma zipf gamma seed base n_pre beta rho algorithm reward G "
                    "baseline M skip lr eta floor steps n_train n_test eval_every alpha_off json").split():
            assert key in cfg, key
        p = fastpg.PRESETS["tiny"]
        n_test, d, N, k = p["n_test"], p["d"], p["N"], p["k"]
        assert f["task/W_star"].shape == (N, k, d)
        assert f["task/test_x"].shape == (n_test, d)
        assert f["task/test_y"].shape == (n_test, N) and f["task/test_y"].dtype == np.int32
        assert f["task/test_margin"].shape == (n_test,)
        assert f["base/W"].shape == (N, k, d)
        assert f["base/loglik"].shape == (n_test,) and f["base/token_loglik"].shape == (n_test, N)
        for name in ("alpha", "cdf", "token_cdf"):
            assert f["base/lq"][name].ndim == 1
        n_eval = len(eval_points(p["steps"], p["eval_every"], 0))
        for name in outputs.TRACE_NAMES:
            ds = f["trace"][name]
            assert ds.shape == (n_eval,) and ds.chunks is not None and ds.maxshape == (None,)
            assert "units" in ds.attrs and "description" in ds.attrs
        assert f["trace/loglik"].shape == (n_eval, n_test) and f["trace/loglik"].dtype == np.float64
        assert "likelihood" not in f["trace"] and f.attrs["schema_version"] == 2
        assert f["final/W"].shape == (N, k, d)
        for name in outputs.TRACE_NAMES:
            assert np.all(np.isfinite(f["trace"][name][...]))


def test_stored_numbers_agree_with_recomputation(tiny_result):
    """Base and final likelihoods and metrics recomputed with the NumPy reference from the stored arrays."""
    with h5py.File(tiny_result.path, "r") as f:
        cfg = RunConfig.from_dict({k: v for k, v in __import__("json").loads(f["config"].attrs["json"]).items()})
        features = ("position", "markov").index(cfg.features)
        X, Y = f["task/test_x"][...], f["task/test_y"][...]
        W_star, W0, W1 = f["task/W_star"][...], f["base/W"][...], f["final/W"][...]
        base_ll, base_tok = f["base/loglik"][...], f["base/token_loglik"][...]
        trace = {name: f["trace"][name][...] for name in f["trace"]}
        lq_cdf = f["base/lq/cdf"][...]
        alpha = f["base/lq/alpha"][...]
    for j in range(len(X)):
        y_ref, m_ref = naive.greedy_decode(W_star, X[j], features, cfg.N)
        np.testing.assert_array_equal(Y[j], y_ref)
        tok = naive.token_logliks(W0, X[j], Y[j], features)
        np.testing.assert_allclose(base_tok[j], tok, rtol=1e-8, atol=1e-12)
        assert base_ll[j] == pytest.approx(tok.sum(), rel=1e-8, abs=1e-12)
    final_ll = np.array([naive.sequence_loglik(W1, X[j], Y[j], features) for j in range(len(X))])
    np.testing.assert_allclose(trace["loglik"][-1], final_ll, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(trace["loglik"][0], base_ll)
    assert trace["expected_error"][-1] == pytest.approx(1 - np.exp(final_ll).mean(), rel=1e-10)
    assert trace["mean_loglik"][-1] == pytest.approx(final_ll.mean(), rel=1e-10)
    greedy_ok = [np.array_equal(naive.greedy_decode(W1, X[j], features, cfg.N)[0], Y[j]) for j in range(len(X))]
    assert trace["greedy_error"][-1] == pytest.approx(1 - np.mean(greedy_ok))
    off = base_ll < math.log(cfg.alpha_off)
    lik = np.exp(final_ll)
    assert trace["offsupport_likelihood"][-1] == pytest.approx(lik[off].mean() if off.any() else 0.0)
    assert trace["onsupport_likelihood"][-1] == pytest.approx(lik[~off].mean() if (~off).any() else 0.0)
    np.testing.assert_allclose(lq_cdf, [(base_ll <= math.log(a)).mean() for a in alpha])
    assert trace["steps"][-1] == cfg.steps


@pytest.mark.parametrize("algorithm,reward", [("pg", "orm"), ("pg", "prm"), ("rs", "orm"), ("rs", "prm")])
@pytest.mark.parametrize("features", ["position", "markov"])
def test_every_algorithm_and_reward_runs(algorithm, reward, features):
    r = fastpg.run(dict(SMALL, algorithm=algorithm, reward=reward, features=features, M=1000))
    assert r.trace["steps"][-1] == SMALL["steps"]
    queries = r.trace["orm_queries"] if reward == "orm" else r.trace["prm_queries"]
    other = r.trace["prm_queries"] if reward == "orm" else r.trace["orm_queries"]
    assert queries[-1] > 0 and other[-1] == 0
    assert all(np.all(np.isfinite(v)) for v in r.trace.values())


@pytest.mark.parametrize("baseline", ["mean", "rloo", "grpo"])
@pytest.mark.parametrize("reward", ["orm", "prm"])
def test_pg_baselines_with_groups(baseline, reward):
    r = fastpg.run(dict(SMALL, algorithm="pg", reward=reward, G=4, baseline=baseline))
    assert r.trace["sequences"][-1] == 4 * SMALL["steps"]
    assert r.trace["tokens"][-1] == 4 * SMALL["steps"] * SMALL["N"]


def _expected_queries(p, M):
    """E[min(F + 1, M)] for F ~ Geometric(p): sum_{n=0}^{M-1} (1-p)^n."""
    return (1.0 - (1.0 - p) ** M) / p


@pytest.mark.parametrize("skip", [True, False])
def test_orm_query_accounting_uniform_base(skip):
    k, N, S, M = 3, 3, 400, 60
    p = k**-N
    r = fastpg.run(dict(d=4, k=k, N=N, base="uniform", algorithm="rs", reward="orm", eta=0.0, skip=skip, M=M,
                        steps=S, n_test=8, eval_every=S, seed=3))
    expected = S * _expected_queries(p, M)
    q = (1 - p) ** np.arange(M)
    var = np.sum((2 * np.arange(M) + 1) * q) - _expected_queries(p, M) ** 2  # Var[min(F+1, M)]
    assert abs(r.trace["orm_queries"][-1] - expected) < 5 * math.sqrt(S * var)
    assert r.trace["sequences"][-1] == r.trace["orm_queries"][-1]
    assert r.trace["tokens"][-1] == N * r.trace["orm_queries"][-1]
    assert r.trace["updates"][-1] == 0


@pytest.mark.parametrize("skip", [True, False])
def test_prm_query_accounting_uniform_base(skip):
    """Token-wise: with eta = 0 every token has p = 1/k, budget M per token."""
    k, N, S, M = 4, 5, 400, 3
    p = 1.0 / k
    r = fastpg.run(dict(d=4, k=k, N=N, base="uniform", algorithm="rs", reward="prm", eta=0.0, skip=skip, M=M,
                        steps=S, n_test=8, eval_every=S, seed=4))
    per_token = _expected_queries(p, M)
    success = 1 - (1 - p) ** M
    # positions reached: the response stops at the first token whose budget runs out
    reach = np.array([success**i for i in range(N)])  # P(position i is attempted)
    expected = S * per_token * reach.sum()
    q = (1 - p) ** np.arange(M)
    ex2 = np.sum((2 * np.arange(M) + 1) * q)
    var_upper = N * N * ex2  # crude bound on Var of the per-step total
    assert abs(r.trace["prm_queries"][-1] - expected) < 5 * math.sqrt(S * var_upper)
    assert abs(r.trace["prm_queries"][-1] - expected) < 0.1 * expected
    assert r.trace["tokens"][-1] == r.trace["prm_queries"][-1]
    assert r.trace["sequences"][-1] == S


def test_likelihoods_below_1e300_give_no_nan():
    r = fastpg.run(dict(d=8, k=4, N=6, base="teacher", beta=20000.0, rho=0.9, algorithm="rs", reward="orm",
                        steps=50, n_test=64, eval_every=10, alpha_off=1e-300))
    assert np.min(r.base["loglik"]) < math.log(1e-300)
    for name, v in r.trace.items():
        assert np.all(np.isfinite(v)), name
    assert np.all(np.isfinite(r.likelihood))


def test_large_eta_fails_cleanly(tmp_path):
    out = tmp_path / "boom.h5"
    with pytest.raises(fastpg.RunFailed, match="^eta: "):
        fastpg.run(dict(SMALL, base="uniform", eta=1e308, lr="constant", algorithm="rs", reward="prm"), out)
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "failed"
        for name in outputs.TRACE_NAMES:
            assert np.all(np.isfinite(f["trace"][name][...]))


def test_infeasible_gamma_names_option_and_suggests():
    with pytest.raises(ConfigError) as err:
        fastpg.run(dict(SMALL, gamma=10.0))
    assert err.value.parameter == "gamma" and err.value.option == "--gamma"
    assert "quantiles" in err.value.message and "such as" in err.value.message


def test_gamma_quantile_conditions_contexts():
    r = fastpg.run(dict(SMALL, gamma_quantile=0.5, steps=0))
    assert r.trace["steps"][-1] == 0
    from fastpg.tasks import make_task

    task = make_task(RunConfig.from_dict(dict(SMALL, gamma_quantile=0.5)))
    assert task.gamma > 0 and task.test_margin.min() >= task.gamma
    assert 0.3 < task.acceptance < 0.7  # the median pilot margin accepts about half of the contexts
    # the pilot a conditioned task draws is the one fastpg.margin_quantiles shows without running anything
    shown = fastpg.margin_quantiles(RunConfig.from_dict(dict(SMALL, gamma_quantile=0.5)))
    assert shown == task.pilot_margin_quantiles and set(shown) == {"q01", "q10", "q50", "q90", "q99"}
    assert fastpg.margin_quantiles(dict(SMALL, gamma_quantile=0.5)) == shown  # a dict, as fastpg.run takes
    assert shown["q50"] == task.gamma


def test_tasks_without_a_margin_draw_no_pilot():
    """The pilot only feeds the margin condition (its stream is its own: skipping it moves no other)."""
    from fastpg.tasks import make_task

    task = make_task(RunConfig.from_dict(dict(SMALL, gamma=0.0)))
    assert task.pilot_margin_quantiles == {} and task.acceptance == 1.0


def test_gamma_is_respected(tmp_path):
    out = tmp_path / "g.h5"
    fastpg.run(dict(SMALL, gamma_quantile=0.7, steps=10), out)
    with h5py.File(out, "r") as f:
        gamma = f["task"].attrs["gamma"]
        assert gamma > 0
        assert f["task/test_margin"][...].min() >= gamma
        assert f["task"].attrs["realised_min_margin"] >= gamma


def test_base_file_roundtrip(tiny_result):
    p = fastpg.PRESETS["tiny"]
    r = fastpg.run(dict(p, base="file", base_file=tiny_result.path, steps=0))
    with h5py.File(tiny_result.path, "r") as f:
        np.testing.assert_array_equal(r.W, f["final/W"][...])
    with pytest.raises(ConfigError, match="^base_file: "):
        fastpg.run(dict(p, d=p["d"] + 1, base="file", base_file=tiny_result.path, steps=0))


def test_same_task_for_orm_and_prm():
    a = fastpg.run(dict(SMALL, reward="orm"))
    b = fastpg.run(dict(SMALL, reward="prm"))
    np.testing.assert_array_equal(a.base["loglik"], b.base["loglik"])
    c = fastpg.run(dict(SMALL, reward="orm"))
    for name in a.trace:
        if name != "wall_time":
            np.testing.assert_array_equal(a.trace[name], c.trace[name])


def test_eval_points():
    np.testing.assert_array_equal(eval_points(10, 4, 0), [0, 4, 8, 10])
    np.testing.assert_array_equal(eval_points(0, 4, 0), [0])
    pts = eval_points(1000, 1, 5)
    assert pts[0] == 0 and pts[-1] == 1000 and np.all(np.diff(pts) > 0)


def test_token_trace_stored(tmp_path):
    out = tmp_path / "tok.h5"
    r = fastpg.run(dict(SMALL, token_trace=True), out)
    with h5py.File(out, "r") as f:
        tok = f["trace/token_loglik"][...]
        assert tok.shape == (len(r.trace["steps"]), SMALL["n_test"], SMALL["N"]) and tok.dtype == np.float64
        np.testing.assert_allclose(tok.sum(axis=2), f["trace/loglik"][...], rtol=1e-12, atol=1e-12)
    data = fastpg.load(out)
    np.testing.assert_array_equal(data.token_loglik, tok)
    np.testing.assert_array_equal(data.loglik, r.loglik)


def test_value_types_do_not_change_streams():
    """sigma=0 (int, Python) and sigma=0.0 (float, command line) are the same run."""
    a = fastpg.run(dict(SMALL, contexts="clusters", sigma=0, steps=40))
    b = fastpg.run(dict(SMALL, contexts="clusters", sigma=0.0, steps=40.0))
    np.testing.assert_array_equal(a.W, b.W)
    assert a.config == b.config


def test_longer_run_extends_shorter_one():
    """steps, n_test and the evaluation schedule do not change the dynamics (docs/design.md, "Random streams")."""
    short = fastpg.run(dict(SMALL, steps=60, eval_every=20, n_test=16))
    long = fastpg.run(dict(SMALL, steps=120, eval_every=30, n_test=32))
    i_short = list(short.trace["steps"]).index(60)
    i_long = list(long.trace["steps"]).index(60)
    for name in ("orm_queries", "sequences", "updates", "mistakes"):
        assert short.trace[name][i_short] == long.trace[name][i_long]
    np.testing.assert_array_equal(short.likelihood[i_short], long.likelihood[i_long][:16])


def test_pretraining_with_more_samples_extends_fewer():
    a = fastpg.pretrain(dict(SMALL, n_pre=80, eval_every=40))
    b = fastpg.pretrain(dict(SMALL, n_pre=40, eval_every=40))
    np.testing.assert_array_equal(a.likelihood[1], b.likelihood[-1])


def test_attributes_are_readable_by_other_hdf5_tools(tiny_result):
    """No HDF5 enum (boolean) attributes anywhere: HDF5 1.10's h5dump cannot show them. The pilot
    margin quantiles are JSON."""
    import json

    found = []
    with h5py.File(tiny_result.path, "r") as f:
        def visit(name, obj):
            for key in obj.attrs:
                tid = obj.attrs.get_id(key).get_type()
                found.append((name, key))
                assert tid.get_class() != h5py.h5t.ENUM, (name, key)
        visit("/", f)
        f.visititems(visit)
        assert int(f["config"].attrs["skip"]) in (0, 1) and int(f["config"].attrs["token_trace"]) == 0
        assert json.loads(f["task"].attrs["pilot_margin_quantiles"]) == {}  # no margin condition: no pilot
    assert len(found) > 30
    assert fastpg.load(tiny_result.path).config["skip"] is True  # the JSON keeps the real booleans


@pytest.mark.parametrize("shape, dtype", [((), "f8"), ((5,), "f8"), ((3, 4), "f4"), ((2,), "i8")])
def test_append_row_writes_what_h5py_writes(tmp_path, shape, dtype):
    """store.append_row (h5py's low-level calls) gives the bytes h5py's resize + ``ds[n] = value``
    gives, casting as h5py does (floats to int truncate, float64 to float32 round), in SWMR mode."""
    rng = np.random.default_rng(0)
    rows = [rng.normal(size=shape) * 100 for _ in range(4)]
    with h5py.File(tmp_path / "a.h5", "w", libver="latest") as f:
        low = f.create_dataset("low", shape=(0, *shape), maxshape=(None, *shape), dtype=dtype)
        high = f.create_dataset("high", shape=(0, *shape), maxshape=(None, *shape), dtype=dtype)
        f.swmr_mode = True
        for n, row in enumerate(rows):
            store.append_row(low, n, row)
            high.resize((n + 1, *shape))
            high[n] = row
        f.flush()
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert f["low"].shape == f["high"].shape == (4, *shape) and f["low"].dtype == f["high"].dtype
        assert f["low"][()].tobytes() == f["high"][()].tobytes()
