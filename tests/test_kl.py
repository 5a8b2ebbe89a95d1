"""KL to the base model: the exact KL, entropy and KL gradient against enumeration and finite
differences, the pg step with a KL term against the NumPy reference step for step, the
estimators' expected updates by Monte Carlo, and the options' errors and recorded skip."""

import numpy as np
import pytest

import naive
from conftest import new_state, random_W, random_x
from fastpg import codes as S
from fastpg.config import ConfigError, RunConfig
from fastpg.kernels.engine import Batch
from fastpg.kernels.kl import add_kl_gradient, kl_term_updates, sequence_kl_entropy
from fastpg.kernels.tables import new_table
from test_steps import _setup, advance_run, kernel_params


def exact(W, W_ref, x, features, N):
    B, k = W.shape[:2]
    return sequence_kl_entropy(W, W_ref, x, features, N, *new_table(B, k), *new_table(B, k), np.zeros((N, k + 1)))


def exact_gradient(W, W_ref, x, features, N, scale=1.0):
    B, k = W.shape[:2]
    coef, touched = np.zeros((B, k)), np.zeros(B, dtype=np.bool_)
    add_kl_gradient(W, W_ref, x, features, N, *new_table(B, k), *new_table(B, k), np.zeros((N, k + 1)),
                    np.zeros((2, k + 1)), scale, coef, touched)
    return coef[:, :, None] * x


@pytest.mark.parametrize("features", [0, 1])
def test_kl_and_entropy_match_enumeration(rng, features):
    N, k, d = 3, 3, 4
    for _ in range(3):
        W, W_ref, x = random_W(rng, features, N, k, d, 1.5), random_W(rng, features, N, k, d, 1.5), random_x(rng, d)
        kl, h = exact(W, W_ref, x, features, N)
        kl_ref, h_ref = naive.sequence_kl_entropy(W, W_ref, x, features, N)
        assert kl == pytest.approx(kl_ref, rel=1e-10) and h == pytest.approx(h_ref, rel=1e-10)
        assert kl > 0 and 0 < h <= N * np.log(k) + 1e-12
        assert exact(W, W, x, features, N)[0] == 0.0


@pytest.mark.parametrize("features", [0, 1])
def test_kl_and_entropy_stay_finite_at_extreme_logits(rng, features):
    """Likelihoods far below 1e-300 on both sides: no NaN, no inf, KL >= 0, entropy >= 0."""
    N, k, d = 4, 3, 5
    W, W_ref, x = random_W(rng, features, N, k, d, 2000.0), random_W(rng, features, N, k, d, 2000.0), random_x(rng, d)
    kl, h = exact(W, W_ref, x, features, N)
    assert np.isfinite(kl) and np.isfinite(h) and kl > 0 and h >= 0
    assert np.all(np.isfinite(exact_gradient(W, W_ref, x, features, N)))


@pytest.mark.parametrize("features", [0, 1])
def test_kl_gradient_matches_finite_differences_and_enumeration(rng, features):
    N, k, d = 3, 3, 4
    W, W_ref, x = random_W(rng, features, N, k, d), random_W(rng, features, N, k, d), random_x(rng, d)
    g = exact_gradient(W, W_ref, x, features, N)
    np.testing.assert_allclose(g, naive.kl_gradient(W, W_ref, x, features, N), rtol=1e-9, atol=1e-12)
    h = 1e-6
    fd = np.zeros_like(W)
    for idx in np.ndindex(W.shape):
        Wp, Wm = W.copy(), W.copy()
        Wp[idx] += h
        Wm[idx] -= h
        fd[idx] = (exact(Wp, W_ref, x, features, N)[0] - exact(Wm, W_ref, x, features, N)[0]) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


KL_CASES = [
    dict(kl_estimator="exact", kl_in="loss", reward="orm", G=1, baseline="none", lr="constant"),
    dict(kl_estimator="exact", kl_in="loss", reward="prm", G=3, baseline="rloo", lr="invsqrt"),
    dict(kl_estimator="k1", kl_in="reward", reward="orm", G=3, baseline="mean", lr="constant"),
    dict(kl_estimator="k1", kl_in="reward", reward="prm", G=1, baseline="none", lr="constant"),
    dict(kl_estimator="k2", kl_in="loss", reward="orm", G=3, baseline="grpo", lr="constant"),
    dict(kl_estimator="k2", kl_in="reward", reward="prm", G=3, baseline="grpo", lr="invsqrt"),
    dict(kl_estimator="k3", kl_in="loss", reward="prm", G=3, baseline="mean", lr="constant"),
    dict(kl_estimator="k3", kl_in="reward", reward="orm", G=1, baseline="none", lr="constant"),
    dict(kl_estimator="k1", kl_in="loss", reward="orm", G=1, baseline="none", lr="constant"),
]


@pytest.mark.parametrize("case", KL_CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("features,clusters,pool", [(0, 0, 0), (1, 3, 0), (0, 2, 4)])
def test_pg_with_kl_matches_reference(rng, case, features, clusters, pool):
    """Step for step: the same weights (to rounding), counters and random numbers as the reference."""
    N, k, d = 3, 3, 4
    W0, W_star, centres, cdf, px, py = _setup(rng, features, N, k, d, clusters, pool)
    W_ref = W0 + 0.5 * random_W(rng, features, N, k, d)  # a reference away from the start: l != 0 at once
    cfg = dict(features=features, algorithm="pg", skip=False, eta=0.7, floor=1e-8, M=10**6, sigma=0.3, gamma=0.0,
               kl_coef=0.3)
    cfg.update(case)
    p = kernel_params(cfg, features)
    state_fast, state_ref = new_state(3), new_state(3)
    counters = np.zeros(len(S.COUNTERS))
    W_fast = W0.copy()
    assert advance_run(W_fast, W_star, centres, cdf, px, py, state_fast, counters, p, 20, W_ref=W_ref) == S.OK
    ref_counters = dict.fromkeys(S.COUNTERS, 0.0)
    W_naive = naive.advance_run(W0.copy(), W_star, centres, cdf, px, py, state_ref, ref_counters, cfg, 20, W_ref=W_ref)
    np.testing.assert_allclose(W_fast, W_naive, rtol=1e-9, atol=1e-12)
    expect = np.array([ref_counters[c] for c in S.COUNTERS])
    if cfg["baseline"] == "grpo":  # a group of equal shaped rewards: 0 or a rounding error over 1e-8
        assert abs(counters[S.C_UPDATES] - expect[S.C_UPDATES]) <= 1
        expect[S.C_UPDATES] = counters[S.C_UPDATES]
    np.testing.assert_array_equal(counters, expect)
    np.testing.assert_array_equal(state_fast, state_ref)
    if cfg["baseline"] == "none" or cfg["kl_estimator"] == "exact":
        assert counters[S.C_UPDATES] == 20  # a KL term moves W at every step (a baseline: unless a group is alike)


def mc_update(W, W_ref, x, features, estimator, kl_in, reward, n, seed, eta=1.0, beta=1.0, G=1, baseline="none"):
    """The Monte Carlo mean of the KL term's update (as a gradient array) and its standard error."""
    N = W.shape[0] if features == 0 else W.shape[0] // (W.shape[1] + 1)
    p = kernel_params(dict(algorithm="pg", reward=reward, lr="constant", eta=eta, floor=1e-8, M=1, sigma=0.0,
                           gamma=0.0, kl_coef=beta, kl_estimator=estimator, kl_in=kl_in, G=G, baseline=baseline),
                      features)
    mean, var = np.empty(W.shape[:2]), np.empty(W.shape[:2])
    kl_term_updates(W, W_ref, x, np.zeros(N, dtype=np.int64), p, new_state(seed), n, mean, var)
    return mean[:, :, None] * x, np.sqrt(var / n)[:, :, None] * np.abs(x)


PLACEMENTS = [("k1", "loss"), ("k2", "loss"), ("k3", "loss"), ("k1", "reward"), ("k2", "reward"), ("k3", "reward")]


@pytest.mark.parametrize("estimator,kl_in", PLACEMENTS)
@pytest.mark.parametrize("features,reward", [(0, "orm"), (1, "prm")])
def test_expected_kl_updates_match_enumeration(rng, estimator, kl_in, features, reward):
    """Each estimator and placement's Monte Carlo mean update at fixed W is its expectation over
    responses (enumerated), within 5 standard errors; the expectations that theory names
    (docs/design.md, "KL to the base model") are checked in the next test."""
    N, k, d = 2, 3, 3
    W, W_ref, x = random_W(rng, features, N, k, d), random_W(rng, features, N, k, d), random_x(rng, d)
    mean, se = mc_update(W, W_ref, x, features, estimator, kl_in, reward, 40000, 5)
    expect = naive.expected_kl_update(W, W_ref, x, features, N, estimator, kl_in, reward, 1.0, 1.0)
    assert np.all(np.abs(mean - expect) <= 5 * se + 1e-12), np.abs(mean - expect).max()


def test_which_estimators_follow_which_kl(rng):
    """With position features: k1 in the loss has zero expected gradient; k1 in the reward and k2
    in the loss follow the reverse KL (the exact gradient); k3 in the loss follows the forward KL
    ``KL(pi_ref || pi_W)``, whose gradient with respect to the logits of position i is
    ``pi_i - pi_ref,i``. The reverse and forward gradients differ by many standard errors here, so
    each comparison could fail."""
    N, k, d = 2, 3, 3
    W, W_ref, x = random_W(rng, 0, N, k, d, 1.5), random_W(rng, 0, N, k, d, 1.5), random_x(rng, d)
    reverse = -exact_gradient(W, W_ref, x, 0, N)
    p = np.array([np.exp(naive.token_logprobs(W, x, 0, [0] * i)) for i in range(N)])
    p0 = np.array([np.exp(naive.token_logprobs(W_ref, x, 0, [0] * i)) for i in range(N)])
    forward = -(p - p0)[:, :, None] * x
    for (estimator, kl_in), target in [(("k1", "loss"), 0 * reverse), (("k1", "reward"), reverse),
                                       (("k2", "loss"), reverse), (("k3", "loss"), forward)]:
        mean, se = mc_update(W, W_ref, x, 0, estimator, kl_in, "orm", 40000, 9)
        assert np.all(np.abs(mean - target) <= 5 * se + 1e-12), (estimator, kl_in)
    mean, se = mc_update(W, W_ref, x, 0, "k3", "loss", "orm", 40000, 9)
    assert np.abs(mean - reverse).max() > 20 * se.max()  # k3 in the loss is not the reverse KL's gradient
    mean, se = mc_update(W, W_ref, x, 0, "k3", "reward", "orm", 40000, 9)  # exactly reverse - forward, here
    assert np.all(np.abs(mean - (reverse - forward)) <= 5 * se + 1e-12)


@pytest.mark.parametrize("features,reward,G,baseline", [(1, "orm", 1, "none"), (1, "prm", 4, "rloo"),
                                                        (0, "prm", 4, "rloo")])
def test_k1_in_the_reward_follows_the_reverse_kl_in_general(rng, features, reward, G, baseline):
    """k1 in the reward is REINFORCE on -beta log(pi / pi_0), an unbiased estimate of minus the reverse
    KL's gradient whatever the features (markov too), with PRM's per-position returns and with a
    leave-one-out baseline. k2 in the loss is not, once tokens depend on the path (markov)."""
    N, k, d = 2, 3, 3
    W, W_ref, x = random_W(rng, features, N, k, d, 1.5), random_W(rng, features, N, k, d, 1.5), random_x(rng, d)
    reverse = -exact_gradient(W, W_ref, x, features, N)
    mean, se = mc_update(W, W_ref, x, features, "k1", "reward", reward, 40000, 4, G=G, baseline=baseline)
    assert np.all(np.abs(mean - reverse) <= 5 * se + 1e-12)
    if features == 1:
        mean, se = mc_update(W, W_ref, x, features, "k2", "loss", reward, 40000, 4)
        # unbiased, the distance would be about the noise's norm; here it is about ten times that
        assert np.linalg.norm(mean - reverse) > 6 * np.linalg.norm(se)


def test_kl_options_are_inert_without_a_kl_term():
    """With --kl-coef 0 the estimator and placement change nothing that runs: they key no stream
    (a control run without KL is the same run whatever they say); with a KL term they do."""
    plain = RunConfig().dynamics_params()
    assert RunConfig(kl_estimator="k2", kl_in="reward").dynamics_params() == plain
    with_kl = dict(kl_coef=0.1, lr="constant")
    assert RunConfig(**with_kl, kl_estimator="k2").dynamics_params() != RunConfig(**with_kl).dynamics_params()


@pytest.mark.parametrize("features,n", [(0, 5), (0, 40), (1, 5)])
def test_divergences_of_a_batch_match_enumeration(rng, features, n):
    """Two runs' exact KL and entropy per test context (with position features a tile of contexts at
    a time, also over more than one tile) against enumeration; 0 where the weights are the reference."""
    N, k, d = 3, 3, 4
    runs = []
    for _ in range(2):
        W0, W_star, centres, cdf, px, py = _setup(rng, features, N, k, d, 0, 0)
        X = np.array([random_x(rng, d) for _ in range(n)])
        runs.append(dict(W=W0, W_star=W_star, centres=centres, cdf=cdf, pool_x=px, pool_y=py, state=new_state(0),
                         params=kernel_params(dict(algorithm="pg", lr="constant", eta=0.1, floor=1e-8, M=1, sigma=0,
                                                   gamma=0), features),
                         test_x=X, test_y=np.zeros((n, N), dtype=np.int64)))
    batch = Batch(runs)
    kl0, h0 = batch.divergences()
    assert np.all(kl0 == 0.0)
    W = batch.W + 0.7 * rng.standard_normal(batch.W.shape)
    kl, h = batch.divergences(W)
    for r in range(2):
        for j in range(n):
            ref = naive.sequence_kl_entropy(W[r], batch.W_ref[r], batch.test_x[r, j], features, N)
            assert (kl[r, j], h[r, j]) == pytest.approx(ref, rel=1e-10)
            assert h0[r, j] == pytest.approx(naive.sequence_kl_entropy(batch.W[r], batch.W[r], batch.test_x[r, j],
                                                                       features, N)[1], rel=1e-10)


def test_kl_options_are_checked_and_the_recorded_skip_is_what_ran():
    with pytest.raises(ConfigError, match="^lr: .*allowed with --kl-coef > 0: constant, invsqrt"):
        RunConfig(kl_coef=0.1)
    with pytest.raises(ConfigError, match="^kl_coef: .*allowed: 0, or --algorithm pg"):
        RunConfig(kl_coef=0.1, lr="constant", algorithm="rs")
    with pytest.raises(ConfigError, match="^kl_in: .*allowed with --kl-estimator exact: loss"):
        RunConfig(kl_coef=0.1, lr="constant", kl_in="reward")
    with pytest.raises(ConfigError, match="^kl_estimator: .*allowed: k1, k2, k3, exact"):
        RunConfig(kl_estimator="k4")
    assert RunConfig(kl_coef=0.1, lr="constant", n_train=8).skip is False
    assert RunConfig(n_train=8).skip is True and RunConfig(kl_estimator="k2", kl_in="reward").skip is True


def test_a_run_records_kl_and_entropy(tmp_path):
    import fastpg

    cfg = dict(d=6, k=3, N=3, features="markov", n_pre=100, steps=60, eval_every=20, n_test=16, lr="constant",
               eta=0.3, kl_coef=0.5, kl_estimator="k3", n_train=8)
    data = fastpg.run(cfg, tmp_path / "kl.h5")
    assert data.config["skip"] is False or data.config["skip"] == 0
    kl, h = data.trace["kl_to_base"], data.trace["entropy"]
    assert kl[0] == 0.0 and np.all(kl[1:] > 0) and np.all(h > 0)
    assert data.trace["updates"][-1] == 59  # the first step starts at the base (l = 0, k3'(0) = 0) and was not rewarded


@pytest.mark.parametrize("hold", [False, True], ids=["applied", "held"])
@pytest.mark.parametrize("case", KL_CASES[:2] + KL_CASES[6:8], ids=lambda c: "-".join(str(v) for v in c.values()))
def test_kl_with_contexts_drawn_ahead_and_held_updates(rng, case, hold):
    """Several tiles of contexts drawn ahead, updates applied at their step or held back (the
    reference's logits then come a tile at a time, in SIMD lanes): the reference's weights (to
    rounding), counters and stream, and the same numbers whether the call is cut in pieces or not."""
    from fastpg.kernels.lanes import TILE
    from test_steps import advance_in_parts, new_carry

    N, k, d, n = 3, 8, 5, 3 * TILE + 7
    W0, W_star, centres, cdf, px, py = _setup(rng, 0, N, k, d, 0, 0)
    W_ref = W0 + 0.5 * random_W(rng, 0, N, k, d)
    cfg = dict(features=0, algorithm="pg", skip=False, eta=0.7, floor=1e-8, M=10**6, sigma=0.3, gamma=0.0, kl_coef=0.3)
    cfg.update(case)
    p = kernel_params(cfg)
    W_one, state_one, counters_one = W0.copy(), new_state(3), np.zeros(len(S.COUNTERS))
    assert advance_run(W_one, W_star, centres, cdf, px, py, state_one, counters_one, p, n, carry=new_carry(W0, hold),
                       W_ref=W_ref) == S.OK
    ref_counters = dict.fromkeys(S.COUNTERS, 0.0)
    state_ref = new_state(3)
    W_naive = naive.advance_run(W0.copy(), W_star, centres, cdf, px, py, state_ref, ref_counters, cfg, n, W_ref=W_ref)
    np.testing.assert_allclose(W_one, W_naive, rtol=1e-9, atol=1e-12)
    expect = np.array([ref_counters[c] for c in S.COUNTERS])
    if cfg["baseline"] != "none":  # a group of equal shaped rewards: 0 or a rounding error
        assert abs(counters_one[S.C_UPDATES] - expect[S.C_UPDATES]) <= 2
        expect[S.C_UPDATES] = counters_one[S.C_UPDATES]
    np.testing.assert_array_equal(counters_one, expect)
    np.testing.assert_array_equal(state_one, state_ref)
    W_parts, _, counters_parts, held = advance_in_parts(W0, W_star, centres, cdf, px, py, p, n, hold, 3, W_ref)
    assert (max(held[:-1]) > 0) == hold and held[-1] == 0
    np.testing.assert_array_equal(W_parts, W_one)
    np.testing.assert_array_equal(counters_parts, counters_one)
