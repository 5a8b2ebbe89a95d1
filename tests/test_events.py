"""Event-driven ``pg`` on a pool (fastpg.kernels.events, fastpg.kernels.advance): exact in distribution.

The pieces against brute-force enumeration (move probabilities, classes and responses conditioned
on a move), then whole runs against stepping through (``--no-skip``) with two-sample tests on the
steps and queries to the first and the tenth update and the final test likelihoods.
"""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

import fastpg
import naive
from fastpg import codes
from fastpg.config import RunConfig
from fastpg.kernels.engine import Batch
from fastpg.kernels.events import move_probability, moving_classes, pool_classes, response_of_class
from fastpg.kernels.rng import seed_sequence, xoshiro_state
from fastpg.kernels.tables import new_table
from fastpg.runs import base_model, post_training_run
from fastpg.tasks import make_task

P_MIN = 1e-3  # a test below this p-value fails (each test is one of a few dozen: false alarms ~ 1 in 30 runs of the suite)


def _state(seed):
    return xoshiro_state(seed_sequence(seed, "test-events", {}))


def _class_probs(logf, reward):
    N = len(logf) - 1
    if reward == codes.ORM:
        p = math.exp(logf[N])
        return np.array([1 - p, p])
    return np.exp(logf)


def _moves(classes, reward, baseline):
    zero = all(c == 0 for c in classes)
    if baseline == codes.NONE:
        return not zero
    return len(set(classes)) > 1


def _logf(lp):
    """``log P(f = m)`` from the token log-probabilities ``lp`` along ``y*`` (the reference of
    :func:`fastpg.kernels.events.pool_classes`)."""
    N = len(lp)
    logf = np.empty(N + 1)
    prefix = 0.0
    for m in range(N):
        logf[m] = prefix + math.log(-math.expm1(lp[m]))
        prefix += lp[m]
    logf[N] = prefix
    return logf


def _random_logf(rng, N, k):
    return _logf(np.log(rng.dirichlet(np.ones(k), size=N)[np.arange(N), rng.integers(0, k, N)]))


@pytest.mark.parametrize("features", [codes.POSITION, codes.MARKOV])
def test_pool_classes_match_the_reference_log_likelihoods(features):
    rng = np.random.default_rng(features)
    N, k, d, n = 4, 3, 5, 6
    blocks = N if features == codes.POSITION else N * (k + 1)
    W = rng.standard_normal((blocks, k, d)) * 2
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y = rng.integers(0, k, (n, N))
    table, have = new_table(blocks, k)
    lp, logf = np.empty((n, N)), np.empty((n, N + 1))
    pool_classes(W, X, Y, features, table, have, lp, logf)
    for i in range(n):
        ref = naive.token_logliks(W, X[i], Y[i], features)
        np.testing.assert_allclose(lp[i], ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(logf[i], _logf(ref), rtol=1e-11, atol=1e-12)
        assert math.isclose(np.logaddexp.reduce(logf[i]), 0.0, abs_tol=1e-12)  # the classes cover every response


@pytest.mark.parametrize("reward", [codes.ORM, codes.PRM])
@pytest.mark.parametrize("G,baseline", [(1, codes.NONE), (3, codes.NONE), (3, codes.MEAN), (2, codes.RLOO)])
def test_move_probability_and_moving_classes_against_enumeration(reward, G, baseline):
    rng = np.random.default_rng(G + 10 * reward)
    logf = _random_logf(rng, 2, 3)
    pi = _class_probs(logf, reward)
    vectors = list(itertools.product(range(len(pi)), repeat=G))
    exact = {v: math.prod(pi[c] for c in v) for v in vectors if _moves(v, reward, baseline)}
    q = sum(exact.values())
    assert move_probability(logf, reward, G, baseline) == pytest.approx(q, rel=1e-12, abs=1e-15)
    if q == 0.0:
        return
    state, classes, work = _state(G), np.empty(G, dtype=np.int64), np.empty(16)
    n = 20000
    seen = {}
    for _ in range(n):
        moving_classes(state, logf, reward, G, baseline, classes, work)
        key = tuple(int(c) for c in classes)
        assert key in exact, key  # every draw moves W
        seen[key] = seen.get(key, 0) + 1
    keys = [v for v in exact if exact[v] / q * n >= 5]
    if len(keys) < 2:  # one possible outcome (G = 1, ORM): every draw was it
        assert len(seen) == 1
        return
    observed = np.array([seen.get(v, 0) for v in keys], dtype=float)
    expected = np.array([exact[v] / q for v in keys]) * n
    expected *= observed.sum() / expected.sum()
    assert stats.chisquare(observed, expected).pvalue > P_MIN


def test_move_probability_keeps_precision_at_the_extremes():
    logf = _logf(np.log(np.array([1e-30, 1e-40, 1e-50])))  # pi(y*) = 1e-120: q = 1 - (1 - 1e-120)^G
    assert move_probability(logf, codes.ORM, 4, codes.NONE) == pytest.approx(4e-120, rel=1e-9)
    assert move_probability(logf, codes.ORM, 4, codes.MEAN) == pytest.approx(4e-120, rel=1e-9)
    assert move_probability(logf, codes.PRM, 1, codes.NONE) == pytest.approx(1e-30, rel=1e-9)
    logf = _logf(np.array([-1e-15, -1e-15, -1e-15]))  # pi(y*) = 1 - 3e-15: all correct unless one response is not
    assert move_probability(logf, codes.ORM, 4, codes.MEAN) == pytest.approx(4 * 3e-15, rel=1e-6)


@pytest.mark.parametrize("reward", [codes.ORM, codes.PRM])
@pytest.mark.parametrize("features", [codes.POSITION, codes.MARKOV])
def test_responses_of_a_class_follow_the_model_conditioned_on_it(reward, features):
    rng = np.random.default_rng(3 + features)
    N, k, d = 3, 3, 4
    blocks = N if features == codes.POSITION else N * (k + 1)
    W = rng.standard_normal((blocks, k, d))
    x = rng.standard_normal(d)
    x /= np.linalg.norm(x)
    y_star = rng.integers(0, k, N)

    def logprob(y):
        total, prev = 0.0, k
        for i in range(N):
            b = i if features == codes.POSITION else i * (k + 1) + prev
            s = W[b] @ x
            total += s[y[i]] - np.log(np.exp(s).sum())
            prev = y[i]
        return total

    responses = list(itertools.product(range(k), repeat=N))
    prob = {y: math.exp(logprob(np.array(y))) for y in responses}
    first = {y: next((i for i in range(N) if y[i] != y_star[i]), N) for y in responses}
    logf = np.array([math.log(sum(p for y, p in prob.items() if first[y] == m)) for m in range(N + 1)])
    table, have = new_table(blocks, k)
    state, out = _state(7 + reward), np.empty(N, dtype=np.int64)
    for c in range(2 if reward == codes.ORM else N + 1):
        member = [y for y in responses if (first[y] == N) == (c == 1)] if reward == codes.ORM else \
            [y for y in responses if first[y] == c]
        total = sum(prob[y] for y in member)
        n = 6000
        seen = {}
        for _ in range(n):
            have[:] = False
            f = response_of_class(W, x, y_star, features, table, have, state, c, reward, logf, out)
            key = tuple(int(v) for v in out)
            assert key in member and f == first[key]
            seen[key] = seen.get(key, 0) + 1
        if len(member) > 1:
            observed = np.array([seen.get(y, 0) for y in member], dtype=float)
            expected = np.array([prob[y] / total for y in member]) * n
            keep = expected >= 5
            assert stats.chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum()).pvalue > P_MIN


# -- whole runs: event by event against stepping through ---------------------------------------------
SETTINGS = {  # a uniform base on a pool of 4 contexts: moves are rare enough for the event path
    "orm": dict(d=4, k=4, N=3, reward="orm"),
    "prm": dict(d=4, k=64, N=2, reward="prm"),
    "orm-markov": dict(d=4, k=4, N=3, reward="orm", features="markov"),
    "prm-markov": dict(d=4, k=16, N=2, reward="prm", features="markov"),
}
GROUPS = [(1, "none"), (4, "none"), (4, "mean"), (4, "rloo"), (4, "grpo")]


RATES = {"adaptive": dict(lr="adaptive", eta=1.0), "slow": dict(lr="constant", eta=0.02)}  # slow: rare moves throughout


def _batch(setting, G, baseline, skip, seeds, rate="adaptive", temperature=1.0):
    runs = []
    for seed in seeds:
        cfg = RunConfig.from_dict(dict(SETTINGS[setting], base="uniform", algorithm="pg", G=G, baseline=baseline,
                                       **RATES[rate], n_train=4, n_test=16, steps=10, skip=skip, seed=seed,
                                       temperature=temperature))
        task = make_task(cfg)
        runs.append(post_training_run(cfg, task, base_model(cfg, task)))
    return Batch(runs)


def _to_updates(batch, marks=(1, 10), max_steps=20000):
    """Steps, total queries and mistakes at the step of the first and the tenth update of every run
    (one step a call)."""
    R = len(batch)
    found = {m: np.full((R, 3), np.nan) for m in marks}
    for _ in range(max_steps):
        batch.advance(1)
        c = batch.counters
        for m in marks:
            hit = np.isnan(found[m][:, 0]) & (c[:, codes.C_UPDATES] >= m)
            found[m][hit, 0] = c[hit, codes.C_STEPS]
            found[m][hit, 1] = c[hit, codes.C_ORM] + c[hit, codes.C_PRM]
            found[m][hit, 2] = c[hit, codes.C_MISTAKES]
        if all(not np.isnan(found[m]).any() for m in marks):
            break
    return found


CASES = [(s, g, b, r, 1.0) for r in RATES for s in ("orm", "prm") for g, b in GROUPS] + [
    ("orm-markov", 4, "mean", "adaptive", 1.0), ("prm-markov", 1, "none", "slow", 1.0),
    ("prm-markov", 4, "grpo", "adaptive", 1.0),
    # at a temperature the sampling policy moves (eta / tau^2 on W / tau): moves stay exact
    ("orm", 4, "mean", "adaptive", 0.5), ("prm", 1, "none", "slow", 2.0)]


@pytest.mark.slow
@pytest.mark.parametrize("setting,G,baseline,rate,tau", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_event_driven_runs_match_stepping_through(setting, G, baseline, rate, tau):
    seeds_a, seeds_b = range(0, 300), range(1000, 1300)
    events = _to_updates(_batch(setting, G, baseline, True, seeds_a, rate, tau))
    steps = _to_updates(_batch(setting, G, baseline, False, seeds_b, rate, tau))
    for m in events:
        assert not np.isnan(events[m]).any() and not np.isnan(steps[m]).any()
        for col, what in enumerate(("steps", "queries", "mistakes")):
            p = stats.ks_2samp(events[m][:, col], steps[m][:, col]).pvalue
            assert p > P_MIN, f"{what} to update {m}: KS p = {p:.2g}"
    # the test likelihoods after many steps, each batch advanced in one call
    a, b = _batch(setting, G, baseline, True, seeds_a, rate, tau), _batch(setting, G, baseline, False, seeds_b, rate, tau)
    a.advance(3000)
    b.advance(3000)
    la, lb = a.evaluate()[0].mean(axis=1), b.evaluate()[0].mean(axis=1)
    assert stats.ks_2samp(la, lb).pvalue > P_MIN
    for name in ("steps", "sequences", "tokens"):
        i = codes.COUNTERS.index(name)
        assert np.array_equal(a.counters[:, i], b.counters[:, i])  # what every step costs, skipped or not


@pytest.mark.parametrize("setting,G,baseline", [("orm", 4, "mean"), ("prm", 4, "grpo"), ("prm", 1, "none"),
                                                ("orm-markov", 4, "rloo")])
def test_event_driven_runs_do_not_depend_on_how_they_are_cut(setting, G, baseline):
    one, parts = _batch(setting, G, baseline, True, range(8)), _batch(setting, G, baseline, True, range(8))
    one.advance(5000)
    for n in (1, 2, 997, 1000, 2000, 1000):
        parts.advance(n, settle=False)
    parts.advance(0)  # the evaluation point: counts what was deferred
    np.testing.assert_array_equal(one.W, parts.W)
    np.testing.assert_array_equal(one.counters, parts.counters)
    np.testing.assert_array_equal(one.states, parts.states)


def test_no_skip_steps_through_a_pool_and_skip_is_the_default():
    cfg = dict(SETTINGS["orm"], base="uniform", algorithm="pg", n_train=4, n_test=8, steps=2000, eval_every=1000)
    assert RunConfig().skip is True
    a, b = fastpg.run(cfg), fastpg.run(dict(cfg, skip=False))
    assert a.trace["steps"][-1] == b.trace["steps"][-1] == 2000
    assert not np.array_equal(a.loglik, b.loglik)  # different paths through the stream, same law


# -- eta = 0: no step moves W, yet every step's responses must be counted as what they are ------------
def _prm_queries_law(k, N, G):
    """Mean and variance of one step's PRM queries from a uniform base: ``G`` responses, each scored
    with ``min(f + 1, N)`` queries where ``P(f >= i) = k^-i``."""
    f = np.arange(N + 1)
    pf = np.where(f < N, (1.0 / k) ** f * (1 - 1.0 / k), (1.0 / k) ** N)  # P(f = i), f = N: all correct
    cost = np.minimum(f + 1, N)
    mean = float((pf * cost).sum())
    return G * mean, G * float((pf * cost**2).sum() - mean**2)


@pytest.mark.parametrize("reward,G,baseline,steps", [("orm", 1, "none", 20_000_000_000), ("orm", 4, "mean", 2_000_000_000),
                                                     ("prm", 1, "none", 400_000), ("prm", 4, "mean", 100_000)])
def test_eta_zero_counts_every_skipped_step_exactly(reward, G, baseline, steps):
    """With ``eta = 0`` on a one-context pool from a uniform base, steps are i.i.d. draws from
    ``pi_0``: successes are Binomial(G steps, k^-N) and PRM queries a sum of i.i.d. costs. Before,
    event-driven pg counted every skipped step as all-wrong (0 successes where 19,073 are due)."""
    k, N = 4, 10 if reward == "orm" else 3
    cfg = dict(d=4, k=k, N=N, base="uniform", algorithm="pg", reward=reward, G=G, baseline=baseline, lr="constant",
               eta=0.0, n_train=1, n_test=4, steps=steps, eval_every=steps, seed=3)
    trace = fastpg.run(cfg).trace
    n = G * float(trace["steps"][-1])
    p = float(k) ** -N
    successes = n - float(trace["mistakes"][-1])
    z = (successes - n * p) / math.sqrt(n * p * (1 - p))
    assert abs(z) < 5, f"successes {successes:.0f} against {n * p:.1f} expected: z = {z:.2f}"
    if reward == "prm":
        mean, var = _prm_queries_law(k, N, G)
        z = (float(trace["prm_queries"][-1]) - steps * mean) / math.sqrt(steps * var)
        assert abs(z) < 5, f"PRM queries z = {z:.2f}"
    else:
        assert float(trace["orm_queries"][-1]) == n
