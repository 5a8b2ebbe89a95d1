"""Step kernels: skip-ahead in distribution, advantages, and the whole step loop against the reference."""

import math

import numpy as np
import pytest

import naive
from conftest import new_state, random_W
from fastpg import codes as S
from fastpg.config import RunConfig
from fastpg.kernels.advance import HELD, HOLD_FROM, advance_held, holds_updates, new_held
from fastpg.kernels.advance import advance_run as _advance_run
from fastpg.kernels.contexts import draw_labelled_tile
from fastpg.kernels.events import EV_HELD, new_event_state
from fastpg.kernels.lanes import TILE
from fastpg.kernels.rng import uniform, uniform_pos
from fastpg.kernels.steps import advantages, failures_before_success
from fastpg.kernels.tables import new_table
from fastpg.kernels.variates import log1mexp


def truncated_geometric_moments(p, M):
    """Mean and variance of min(F, M) for F ~ Geometric(p) failures before the first success.

    P(min(F, M) >= n) = q^n for 1 <= n <= M (q = 1 - p), so E[min] = sum_{n=1}^{M} q^n and
    E[min^2] = sum_{n=1}^{M} (2n - 1) q^n, in closed form (M may be 1e9).
    """
    q = 1.0 - p
    qM = q**M
    s0 = q * (1.0 - qM) / p  # sum q^n
    s1 = q * (1.0 - (M + 1) * qM + M * qM * q) / p**2  # sum n q^n
    mean = s0
    return mean, 2.0 * s1 - s0 - mean**2


@pytest.mark.parametrize("p,M", [(0.5, 10**9), (0.01, 10**9), (0.3, 3), (0.05, 40), (1e-6, 10**4), (1e-3, 10**3)])
def test_skip_ahead_matches_truncated_geometric(p, M):
    state = new_state(int(p * 1e6) + M % 97)
    n = 20000
    F = np.array([failures_before_success(math.log(p), float(M), uniform_pos(state)) for _ in range(n)])
    assert F.min() >= 0 and F.max() <= M and np.all(F == np.floor(F))
    mean, var = truncated_geometric_moments(p, M)
    se = math.sqrt(var / n)
    assert 5 * se < 0.1 * mean  # the test can tell a mean 10% off, also where the budget truncates
    assert abs(F.mean() - mean) < 5 * se
    for m in (1, 2, 5):
        if m <= M:
            frac = np.mean(F >= m)
            expect = (1 - p) ** m
            assert abs(frac - expect) < 5 * math.sqrt(expect * (1 - expect) / n) + 1e-12
    if M < 1e6:  # where truncation is visible: the fraction that spent the whole budget is q^M
        expect = (1 - p) ** M
        assert abs(np.mean(F == M) - expect) < 5 * math.sqrt(expect * (1 - expect) / n) + 1e-12


def test_skip_ahead_agrees_with_brute_force_in_distribution():
    """Failures counted by sampling Bernoulli(p) trials vs the O(1) draw: same law (two-sample test)."""
    p, M, n = 0.2, 12, 20000
    s1, s2 = new_state(1), new_state(2)
    fast = np.array([failures_before_success(math.log(p), float(M), uniform_pos(s1)) for _ in range(n)])
    slow = np.empty(n)
    for j in range(n):
        f = 0
        while f < M and uniform_pos(s2) > p:
            f += 1
        slow[j] = f
    for m in range(0, M + 1):
        a, b = np.mean(fast == m), np.mean(slow == m)
        pm = (1 - p) ** m * (p if m < M else 1.0)
        assert abs(a - b) < 5 * math.sqrt(2 * pm * (1 - pm) / n) + 1e-12


def test_skip_ahead_extremes():
    M = 1e15
    assert failures_before_success(0.0, M, 0.3) == 0.0  # p = 1
    assert failures_before_success(-1e-300, M, 0.3) == 0.0  # p = 1 - 1e-300
    assert failures_before_success(-1e-20, M, 1.0) == 0.0  # u = 1
    # p rounds to 1: almost never a failure, no NaN
    assert failures_before_success(-1e-17, M, 0.5) == 0.0
    # p underflows to 0 (likelihood e^-1000): budget always runs out
    assert failures_before_success(-1000.0, M, 1e-300) == M
    # p = 1e-30: F ~ 1e30 >> M
    assert failures_before_success(math.log(1e-30), M, 0.5) == M
    # tiny p with a budget that allows success: F = -log(u)/p in log space
    f = failures_before_success(-705.0, 1e308, 0.5)
    assert f == pytest.approx(math.log(2) * math.exp(705.0), rel=1e-12)
    # p = 1e-10 with a large budget: F = floor(-log(u) / -log1p(-p))
    f = failures_before_success(math.log(1e-10), M, 0.5)
    assert f == math.floor(math.log(2) / -math.log1p(-1e-10))
    for logp in (-1e-300, -1e-12, -0.5, -0.7, -0.69, -5.0, -50.0, -745.0, -1e5):
        assert math.isfinite(log1mexp(logp)) or logp == 0.0
    assert log1mexp(-1e-12) == pytest.approx(math.log(1e-12), rel=1e-9)
    assert log1mexp(math.log(1e-30)) == pytest.approx(-1e-30, rel=1e-9)


@pytest.mark.parametrize("baseline", ["none", "mean", "rloo", "grpo"])
def test_advantages_match_reference(rng, baseline):
    for G in (2, 3, 8):
        r = (rng.random(G) < 0.4).astype(float)
        out = np.empty(G)
        advantages(r, S.BASELINE_CODES[baseline], out)
        np.testing.assert_allclose(out, naive.advantages(r, baseline), rtol=1e-12, atol=1e-12)


def advance_run(*args, carry=None, settle=True, W_ref=None):
    """One run's call as :func:`fastpg.kernels.engine.advance_runs_held` makes it, with the state the run carries
    from call to call (``carry``: its event state and held-back updates; fresh if not given),
    settled at the end of the call unless told otherwise (``W_ref``: the reference of a KL term;
    by default the starting weights)."""
    W, W_star, centres, cdf, px, py, state, counters, p, n = args
    events, held_c, held_x = new_carry(W) if carry is None else carry
    W_ref = W.copy() if W_ref is None else W_ref
    if held_x.shape[0] > 0 and holds_updates(p, px.shape[0]):
        return advance_held(W, W_ref, W_star, centres, cdf, state, counters, p, n, events, held_c, held_x, settle)
    return _advance_run(W, W_ref, *args[1:], events, settle)


def advance_in_parts(W0, W_star, centres, cdf, px, py, p, n, hold, seed, W_ref=None):
    """Advance a run of ``n > 2 TILE + 8`` steps from ``W0`` in five calls (within and across tiles
    of contexts drawn ahead; an evaluation point only after the last), carrying what a ``Batch``
    carries; returns its weights, generator state, counters and the updates held after each call."""
    W, state, counters = W0.copy(), new_state(seed), np.zeros(len(S.COUNTERS))
    carry = new_carry(W0, hold)
    parts = (1, TILE - 1, TILE + 3, 5, n - 2 * TILE - 8)
    held = []
    for i, part in enumerate(parts):
        advance_run(W, W_star, centres, cdf, px, py, state, counters, p, part, carry=carry,
                    settle=i == len(parts) - 1, W_ref=W_ref)
        held.append(carry[0][EV_HELD])
    return W, state, counters, held


def new_carry(W, hold=None):
    """A fresh event state and empty held-back updates for weights ``W`` (``hold``: as
    :func:`fastpg.kernels.advance.new_held`; by default as a ``Batch`` would)."""
    return (new_event_state(), *new_held(*W.shape, hold))


def kernel_params(cfg, features=0, max_tries=1000):
    """The parameter record of :func:`advance_run` for a test case (``cfg`` as the reference takes it)."""
    p = np.zeros((), dtype=S.RUN_PARAMS)
    p["algorithm"] = {"pg": S.PG, "rs": S.RS, "sft": S.SFT}[cfg["algorithm"]]
    p["reward"] = S.REWARD_CODES[cfg.get("reward", "orm")]
    p["G"] = cfg.get("G", 1)
    p["baseline"] = S.BASELINE_CODES[cfg.get("baseline", "none")]
    p["skip"] = int(cfg.get("skip", True))
    p["lr"] = S.LR_CODES[cfg["lr"]]
    p["features"] = features
    p["max_tries"] = max_tries
    for name in ("eta", "floor", "M", "sigma", "gamma"):
        p[name] = float(cfg[name])
    p["kl_coef"] = cfg.get("kl_coef", 0.0)
    p["kl_estimator"] = S.KL_ESTIMATOR_CODES[cfg.get("kl_estimator", "exact")]
    p["kl_in"] = S.KL_IN_CODES[cfg.get("kl_in", "loss")]
    return p[()]


def _setup(rng, features, N, k, d, n_clusters, pool):
    W0 = random_W(rng, features, N, k, d, scale=0.7)
    W_star = random_W(rng, features, N, k, d)
    W_star /= np.linalg.norm(W_star)
    if n_clusters:
        centres = rng.standard_normal((n_clusters, d))
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        cdf = np.cumsum(np.full(n_clusters, 1.0 / n_clusters))
    else:
        centres, cdf = np.zeros((0, d)), np.zeros(0)
    if pool:
        px = rng.standard_normal((pool, d))
        px /= np.linalg.norm(px, axis=1, keepdims=True)
        py = np.array([naive.greedy_decode(W_star, x, features, N)[0] for x in px], dtype=np.int64)
    else:
        px, py = np.zeros((0, d)), np.zeros((0, N), dtype=np.int64)
    return W0, W_star, centres, cdf, px, py


CASES = [
    dict(algorithm="pg", reward="orm", G=1, baseline="none", lr="constant"),
    dict(algorithm="pg", reward="orm", G=4, baseline="mean", lr="adaptive"),
    dict(algorithm="pg", reward="orm", G=3, baseline="grpo", lr="invsqrt"),
    dict(algorithm="pg", reward="prm", G=1, baseline="none", lr="adaptive"),
    dict(algorithm="pg", reward="prm", G=4, baseline="rloo", lr="constant"),
    dict(algorithm="pg", reward="prm", G=3, baseline="grpo", lr="adaptive"),
    dict(algorithm="rs", reward="orm", skip=True, lr="adaptive"),
    dict(algorithm="rs", reward="orm", skip=False, lr="constant", M=5),
    dict(algorithm="rs", reward="prm", skip=True, lr="invsqrt", M=3),
    dict(algorithm="rs", reward="prm", skip=False, lr="adaptive", M=4),
    dict(algorithm="sft", reward="orm", lr="adaptive"),
    dict(algorithm="sft", reward="orm", lr="constant"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("features,clusters,pool", [(0, 0, 0), (1, 3, 0), (0, 2, 5), (1, 0, 4)])
def test_advance_run_matches_reference(rng, case, features, clusters, pool):
    N, k, d = 3, 3, 4
    W0, W_star, centres, cdf, px, py = _setup(rng, features, N, k, d, clusters, pool)
    cfg = dict(features=features, G=1, baseline="none", skip=True, eta=0.7, floor=1e-8, M=10**6,
               sigma=0.3, gamma=0.0, reward="orm")
    cfg.update(case)
    if cfg["algorithm"] == "pg":
        cfg["skip"] = False  # step through: pg on a pool with skip goes event by event (tests/test_events.py)
    p = kernel_params(cfg, features)
    state_fast, state_ref = new_state(7), new_state(7)
    counters = np.zeros(len(S.COUNTERS))
    W_fast = W0.copy()
    status = advance_run(W_fast, W_star, centres, cdf, px, py, state_fast, counters, p, 25)
    assert status == S.OK
    ref_counters = dict.fromkeys(S.COUNTERS, 0.0)
    W_ref = naive.advance_run(W0.copy(), W_star, centres, cdf, px, py, state_ref, ref_counters, cfg, 25)
    np.testing.assert_allclose(W_fast, W_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(counters, [ref_counters[c] for c in S.COUNTERS])
    np.testing.assert_array_equal(state_fast, state_ref)  # the same random numbers were consumed
    assert counters[S.C_STEPS] == 25


@pytest.mark.parametrize("case", CASES[:6] + [CASES[7]], ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("near", [0.0, 300.0], ids=["weak-base", "near-teacher"])
def test_long_responses_match_reference(rng, case, near):
    """Responses longer than a chunk of the position table (19 tokens: chunks of 8, 8 and 3). From
    a weak base most responses go wrong early, so a step fills its table chunk by chunk; near the
    teacher most do not, so after its first steps (chunk by chunk) it fills the whole table at once.
    Either way: the reference's weights, counters and stream. The same for ``rs`` without skip-ahead,
    whose failures are drawn up to their first mistake too."""
    N, k, d, n = 19, 3, 4, 60
    W0, W_star, centres, cdf, px, py = _setup(rng, 0, N, k, d, 0, 0)
    W0 += near * W_star
    cfg = dict(features=0, G=1, baseline="none", skip=False, eta=0.7, floor=1e-8, M=10**6,
               sigma=0.3, gamma=0.0, reward="orm")
    cfg.update(case)
    p = kernel_params(cfg)
    state_fast, state_ref = new_state(11), new_state(11)
    counters = np.zeros(len(S.COUNTERS))
    W_fast = W0.copy()
    assert advance_run(W_fast, W_star, centres, cdf, px, py, state_fast, counters, p, n) == S.OK
    ref_counters = dict.fromkeys(S.COUNTERS, 0.0)
    W_ref = naive.advance_run(W0.copy(), W_star, centres, cdf, px, py, state_ref, ref_counters, cfg, n)
    # weights of size 300: rounding relative to the largest (a small weight can be a cancellation)
    np.testing.assert_allclose(W_fast, W_ref, rtol=1e-9, atol=1e-11 * max(1.0, np.abs(W_ref).max()))
    np.testing.assert_array_equal(counters, [ref_counters[c] for c in S.COUNTERS])
    np.testing.assert_array_equal(state_fast, state_ref)
    assert counters[S.C_MISTAKES] > 0
    assert counters[S.C_UPDATES] > 0 or (near == 0.0 and cfg["reward"] == "orm")  # k^-N: no correct response


@pytest.mark.parametrize("hold", [False, True], ids=["applied", "held"])
@pytest.mark.parametrize("case", [CASES[1], CASES[4], CASES[10]], ids=["pg-orm", "pg-prm", "sft"])
def test_contexts_drawn_ahead_match_reference_and_chunking(rng, case, hold):
    """Several tiles of contexts drawn ahead (k = 8: the register tile's row quads) give the reference's
    stream, counters and weights, and advancing in pieces (without evaluation points between them)
    gives exactly the same as in one call; with updates applied at their step, or held back (as
    ``Batch`` does for large ``W``; more than ``HELD`` updates, so held ones are applied mid-call)."""
    N, k, d, n = 3, 8, 5, 3 * TILE + 7
    W0, W_star, centres, cdf, px, py = _setup(rng, 0, N, k, d, 0, 0)
    W0 += 40.0 * W_star  # a base near the teacher: many steps move W
    cfg = dict(features=0, G=1, baseline="none", skip=True, eta=0.7, floor=1e-8, M=10**6,
               sigma=0.3, gamma=0.0, reward="orm")
    cfg.update(case)
    p = kernel_params(cfg)
    W_one, state_one, counters_one = W0.copy(), new_state(3), np.zeros(len(S.COUNTERS))
    assert advance_run(W_one, W_star, centres, cdf, px, py, state_one, counters_one, p, n,
                       carry=new_carry(W0, hold)) == S.OK
    assert counters_one[S.C_UPDATES] > HELD
    ref_counters = dict.fromkeys(S.COUNTERS, 0.0)
    state_ref = new_state(3)
    W_ref = naive.advance_run(W0.copy(), W_star, centres, cdf, px, py, state_ref, ref_counters, cfg, n)
    np.testing.assert_allclose(W_one, W_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(counters_one, [ref_counters[c] for c in S.COUNTERS])
    np.testing.assert_array_equal(state_one, state_ref)
    W_parts, state_parts, counters_parts, held = advance_in_parts(W0, W_star, centres, cdf, px, py, p, n, hold, 3)
    # updates stay held across calls between evaluation points, none after one
    assert (max(held[:-1]) > 0) == hold and held[-1] == 0
    np.testing.assert_array_equal(W_parts, W_one)
    np.testing.assert_array_equal(state_parts, state_one)
    np.testing.assert_array_equal(counters_parts, counters_one)


@pytest.mark.parametrize("m,gap,clusters", [(1, 0, 0), (5, 7, 2), (TILE, 3, 0)])
def test_draw_labelled_tile_matches_step_by_step(rng, m, gap, clusters):
    """Contexts, teacher labels and saved states equal drawing one context, saving the state and
    taking ``gap`` draws, context after context."""
    N, k, d = 4, 8, 6
    _, W_star, centres, cdf, _, _ = _setup(rng, 0, N, k, d, clusters, 0)
    Xt = np.full((TILE, d), np.nan)
    XT = np.full((d, TILE), np.nan)
    Yt = np.empty((TILE, N), dtype=np.int64)
    St = np.empty((TILE, 4), dtype=np.uint64)
    state = new_state(11)
    draw_labelled_tile(state, W_star, centres, cdf, 0.3, m, gap, Xt, XT, Yt, St, new_table(TILE * N, k)[0])
    ref = new_state(11)
    for i in range(m):
        x = naive.draw_context(ref, centres, cdf, 0.3, d)
        np.testing.assert_allclose(Xt[i], x, rtol=1e-13, atol=1e-15)
        np.testing.assert_array_equal(Yt[i], naive.greedy_decode(W_star, x, 0, N)[0])
        np.testing.assert_array_equal(St[i], ref)
        for _ in range(gap):
            uniform(ref)
    np.testing.assert_array_equal(state, ref)
    assert np.all(Xt[m:] == 0.0)
    np.testing.assert_array_equal(XT, Xt.T)  # the tile as columns, for the model's logits


def test_non_finite_weights_are_reported(rng):
    N, k, d = 2, 2, 3
    W0, W_star, centres, cdf, px, py = _setup(rng, 0, N, k, d, 0, 0)
    p = kernel_params(dict(algorithm="sft", lr="constant", eta=1e308, floor=1e-8, M=1, sigma=0, gamma=0), max_tries=10)
    status = advance_run(W0, W_star, centres, cdf, px, py, new_state(0), np.zeros(len(S.COUNTERS)), p, 50)
    assert status == S.NON_FINITE


@pytest.mark.parametrize("reward", ["orm", "prm"])
def test_zero_rate_never_moves(rng, reward):
    """With ``eta = 0`` no step counts as an update and ``W`` stays put, as in the reference (the
    rewarded-prefix shortcut of PRM without a baseline must not count zero-weight updates)."""
    N, k, d, n = 3, 8, 5, 40
    W0, W_star, centres, cdf, px, py = _setup(rng, 0, N, k, d, 0, 0)
    W0 += 40.0 * W_star  # most steps are rewarded
    cfg = dict(features=0, algorithm="pg", reward=reward, G=1, baseline="none", lr="constant", skip=True, eta=0.0,
               floor=1e-8, M=10**6, sigma=0.3, gamma=0.0)
    p = kernel_params(cfg)
    W, counters = W0.copy(), np.zeros(len(S.COUNTERS))
    assert advance_run(W, W_star, centres, cdf, px, py, new_state(5), counters, p, n) == S.OK
    ref_counters = dict.fromkeys(S.COUNTERS, 0.0)
    naive.advance_run(W0.copy(), W_star, centres, cdf, px, py, new_state(5), ref_counters, cfg, n)
    np.testing.assert_array_equal(counters, [ref_counters[c] for c in S.COUNTERS])
    assert counters[S.C_UPDATES] == 0 and counters[S.C_PRM if reward == "prm" else S.C_ORM] > 0
    np.testing.assert_array_equal(W, W0)


@pytest.mark.parametrize("reward", ["orm", "prm"])
def test_batch_with_large_W_holds_updates_whatever_the_chunking(reward):
    """A ``Batch`` whose ``W`` is over ``HOLD_FROM`` bytes holds updates back (its own parallel entry
    point); cut into calls without evaluation points between them it gives the same bits as one
    call, and updates stay held across those calls."""
    from fastpg.kernels.engine import Batch
    from fastpg.runs import base_model, post_training_run
    from fastpg.tasks import make_task

    cfg = RunConfig.from_dict(dict(d=1100, k=8, N=4, base="teacher", beta=2000.0, rho=0.05, algorithm="pg",
                                   reward=reward, lr="constant", eta=0.01, n_test=8, steps=10))
    assert cfg.N * cfg.k * cfg.d * 8 > HOLD_FROM
    runs = []
    for seed in range(2):
        c = cfg.replace(seed=seed)
        task = make_task(c)
        runs.append(post_training_run(c, task, base_model(c, task)))
    one, parts = Batch(runs), Batch(runs)
    assert one.held_x.shape[1] == HELD
    one.advance(300)
    held = []
    for n in (7, 50, 100, 143):
        parts.advance(n, settle=False)
        held.append(parts.events[:, EV_HELD].copy())
    parts.advance(0)  # an evaluation point: held updates are applied
    assert np.all(one.counters[:, S.COUNTERS.index("updates")] > HELD)
    assert max(h.max() for h in held) > 0 and np.all(parts.events[:, EV_HELD] == 0)
    np.testing.assert_array_equal(one.W, parts.W)
    np.testing.assert_array_equal(one.counters, parts.counters)
    np.testing.assert_array_equal(one.states, parts.states)
