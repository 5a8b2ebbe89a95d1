"""Sampling temperature (docs/design.md, "Temperature"): a tempered batch against the NumPy reference,
which samples from ``pi_{W/tau}`` and steps along the gradient in ``W`` of ``log pi_{W/tau}``, step
for step; what a result file records (the sampling policy's error, the base model's likelihoods under
it, the weights the kernels advance); ``tau = 1`` changes nothing."""

import h5py
import numpy as np
import pytest

import fastpg
import naive
from conftest import new_state, random_W, random_x
from fastpg import codes as S
from fastpg.config import ConfigError, RunConfig
from fastpg.kernels.engine import Batch
from test_steps import _setup, kernel_params

CASES = [
    dict(algorithm="pg", reward="orm", G=1, baseline="none", lr="constant"),
    dict(algorithm="pg", reward="prm", G=3, baseline="rloo", lr="adaptive"),
    dict(algorithm="pg", reward="orm", G=3, baseline="mean", lr="invsqrt"),
    dict(algorithm="rs", reward="orm", lr="adaptive", skip=True),
    dict(algorithm="rs", reward="prm", lr="constant", skip=False),
    dict(algorithm="pg", reward="prm", G=3, baseline="mean", lr="constant", kl_coef=0.3, kl_estimator="k3",
         kl_in="loss"),
    dict(algorithm="pg", reward="orm", G=1, baseline="none", lr="constant", kl_coef=0.3, kl_estimator="exact",
         kl_in="loss"),
]


def tempered_batch(W0, W_ref, W_star, centres, cdf, px, py, p, seed, tau, rng, features):
    N, d = py.shape[1], W0.shape[2]
    test_x = np.stack([random_x(rng, d) for _ in range(3)])
    test_y = np.array([naive.greedy_decode(W_star, x, features, N)[0] for x in test_x], dtype=np.int64)
    return Batch([dict(W=W0, W_ref=W_ref, W_star=W_star, centres=centres, cdf=cdf, pool_x=px, pool_y=py,
                       state=new_state(seed), params=np.array(p), test_x=test_x, test_y=test_y, temperature=tau)])


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("tau", [0.5, 2.5])
@pytest.mark.parametrize("features,clusters,pool", [(0, 0, 0), (1, 3, 0), (0, 2, 4)])
def test_tempered_runs_match_the_reference(rng, case, tau, features, clusters, pool):
    """The same model weights (to rounding), counters and random numbers as the reference, which
    knows nothing of the parametrisation the batch advances (V = W / tau with eta / tau^2)."""
    N, k, d, n = 3, 3, 4, 30
    W0, W_star, centres, cdf, px, py = _setup(rng, features, N, k, d, clusters, pool)
    W0 = 0.3 * W0 + 10.0 * W_star  # a base that is often right: every run gets rewarded updates
    W_ref = W0 + 0.5 * random_W(rng, features, N, k, d)
    cfg = dict(features=features, skip=False, eta=0.7, floor=1e-8, M=10**6, sigma=0.3, gamma=0.0, temperature=tau)
    cfg.update(case)
    batch = tempered_batch(W0, W_ref, W_star, centres, cdf, px, py, kernel_params(cfg, features), 3, tau, rng, features)
    assert batch.advance(n)[0] == S.OK
    ref_counters, ref_state = dict.fromkeys(S.COUNTERS, 0.0), new_state(3)
    W_naive = naive.advance_run(W0.copy(), W_star, centres, cdf, px, py, ref_state, ref_counters, cfg, n, W_ref=W_ref)
    assert ref_counters["updates"] >= 1  # the run moved
    # rounding: the two parametrisations round apart, and the adaptive rule divides by a log-loss near 0
    np.testing.assert_allclose(batch.model_W(0), W_naive, rtol=1e-7, atol=1e-10)
    np.testing.assert_array_equal(batch.counters[0], [ref_counters[c] for c in S.COUNTERS])
    np.testing.assert_array_equal(batch.states[0], ref_state)
    # the model is evaluated at W, the sampling policy at W / tau
    loglik = batch.evaluate()[0][0]
    sampling = batch.evaluate(batch.W)[0][0]
    for j in range(len(loglik)):
        x, y = batch.test_x[0, j], batch.test_y[0, j]
        assert loglik[j] == pytest.approx(naive.sequence_loglik(W_naive, x, y, features), rel=1e-7, abs=1e-10)
        assert sampling[j] == pytest.approx(naive.sequence_loglik(W_naive / tau, x, y, features), rel=1e-7, abs=1e-10)


def test_a_tempered_batch_advances_the_sampling_policy_with_eta_over_tau_squared(rng):
    """What the batch hands the kernels: ``W0 / tau``, ``W_ref / tau`` and ``eta / tau^2``; at ``tau = 1``
    the arrays given, bit for bit."""
    N, k, d = 3, 3, 4
    W0, W_star, centres, cdf, px, py = _setup(rng, 0, N, k, d, 0, 0)
    cfg = dict(algorithm="pg", lr="constant", eta=0.7, floor=1e-8, M=1, sigma=0.0, gamma=0.0)
    p = kernel_params(cfg, 0)
    hot = tempered_batch(W0, 2 * W0, W_star, centres, cdf, px, py, p, 1, 2.5, rng, 0)
    np.testing.assert_array_equal(hot.W[0], W0 / 2.5)
    np.testing.assert_array_equal(hot.W_ref[0], 2 * W0 / 2.5)
    np.testing.assert_array_equal(hot.W_base[0], 2 * W0)  # divergences: to the base model at temperature 1
    assert hot.params["eta"][0] == 0.7 / 2.5**2
    plain = tempered_batch(W0, 2 * W0, W_star, centres, cdf, px, py, p, 1, 1.0, rng, 0)
    assert not plain.tempered and plain.model_W() is plain.W
    np.testing.assert_array_equal(plain.W[0], W0)
    assert plain.params["eta"][0] == 0.7


TINY = dict(d=5, k=3, N=3, n_pre=200, steps=400, eval_every=100, n_test=24, G=2, baseline="rloo", reward="prm")


@pytest.mark.parametrize("features", ["position", "markov"])
def test_a_tempered_file_records_the_sampling_policy(tmp_path, features):
    """``/base/sampling_loglik`` is the base model's likelihood under ``pi_{W0/tau}``; the trace's
    ``expected_error_sampling`` is the sampling policy's error, ``expected_error`` and ``kl_to_base``
    are those of ``pi_W``; ``/final/W`` is ``tau`` times ``/final/W_sampling``."""
    tau = 1.7
    out = tmp_path / "hot.h5"
    data = fastpg.run({**TINY, "features": features, "temperature": tau}, out)
    fm = 0 if features == "position" else 1
    with h5py.File(out, "r") as f:
        X, Y = f["task/test_x"][...], f["task/test_y"][...]
        W0, W, V = f["base/W"][...], f["final/W"][...], f["final/W_sampling"][...]
        sampling0 = f["base/sampling_loglik"][...]
    np.testing.assert_array_equal(W, V * tau)
    expect0 = np.array([naive.sequence_loglik(W0 / tau, x, y, fm) for x, y in zip(X, Y)])
    np.testing.assert_allclose(sampling0, expect0, rtol=1e-9)
    np.testing.assert_allclose(data.base["sampling_loglik"], sampling0)
    assert not np.allclose(sampling0, data.base["loglik"])
    tr = data.trace
    assert tr["expected_error_sampling"][0] == pytest.approx(1 - np.exp(expect0).mean(), rel=1e-9)
    last = np.array([naive.sequence_loglik(V, x, y, fm) for x, y in zip(X, Y)])
    assert tr["expected_error_sampling"][-1] == pytest.approx(1 - np.exp(last).mean(), rel=1e-9)
    model = np.array([naive.sequence_loglik(W, x, y, fm) for x, y in zip(X, Y)])
    assert tr["expected_error"][-1] == pytest.approx(1 - np.exp(model).mean(), rel=1e-9)
    kl = np.mean([naive.sequence_kl_entropy(W, W0, x, fm, 3)[0] for x in X])
    assert tr["kl_to_base"][-1] == pytest.approx(kl, rel=1e-8)


def test_temperature_one_writes_what_it_always_wrote(tmp_path):
    """No sampling-policy outputs at ``tau = 1`` (the default), and the same run as without the option."""
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    fastpg.run(TINY, a)
    fastpg.run({**TINY, "temperature": 1}, b)
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for f in (fa, fb):
            assert "sampling_loglik" not in f["base"] and "W_sampling" not in f["final"]
            assert "expected_error_sampling" not in f["trace"]
        np.testing.assert_array_equal(fa["trace/loglik"][...], fb["trace/loglik"][...])
        np.testing.assert_array_equal(fa["final/W"][...], fb["final/W"][...])


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), "hot"])
def test_a_temperature_must_be_positive_and_finite(value):
    with pytest.raises(ConfigError, match="temperature"):
        RunConfig.from_dict({"temperature": value})


def test_pretraining_refuses_a_temperature():
    """A pretrain file would promise the sampling policy's outputs, and pre-training samples nothing."""
    with pytest.raises(ConfigError, match="temperature"):
        fastpg.pretrain({**TINY, "temperature": 0.5})


@pytest.mark.parametrize("layout", ["run", "batch"])
def test_a_sweep_over_temperatures_loads_with_the_sampling_error_of_the_tempered_runs(tmp_path, layout):
    """Runs at tau = 1 have no expected_error_sampling column: load_sweep gives them NaN there."""
    from test_cli import fastpg as fastpg_cmd

    out = tmp_path / "sweep"
    r = fastpg_cmd("sweep", out, "--preset", "tiny", "--steps", "200", "--eval-every", "100", "--grid",
                   "temperature=0.5,1", "--seeds", "0", "--layout", layout, "-q")
    assert r.returncode == 0, r.stderr
    traces = fastpg.load_sweep(out).traces
    hot = traces[traces["config_temperature"] == 0.5] if "config_temperature" in traces else traces[traces["temperature"] == 0.5]
    cold = traces.drop(hot.index)
    assert len(hot) == len(cold) == 3
    assert hot["expected_error_sampling"].notna().all() and cold["expected_error_sampling"].isna().all()
