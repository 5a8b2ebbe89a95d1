"""Random variates of fastpg.kernels.variates against their exact laws (scipy.stats)."""

import numpy as np
import pytest
from numba import njit
from scipy import stats

from fastpg.kernels.rng import seed_sequence, xoshiro_state
from fastpg.kernels.variates import binomial_variate, categorical_counts, gamma_variate

P_MIN = 1e-3


def _state(seed):
    return xoshiro_state(seed_sequence(seed, "test-variates", {}))


@njit(cache=True)
def _binomials(state, n, p, m):
    out = np.empty(m)
    for i in range(m):
        out[i] = binomial_variate(state, n, p)
    return out


@njit(cache=True)
def _gammas(state, a, m):
    out = np.empty(m)
    for i in range(m):
        out[i] = gamma_variate(state, a)
    return out


@pytest.mark.parametrize("n,p", [(1, 0.5), (10, 0.3), (100, 0.7), (1000, 0.3), (5000, 0.02), (200, 0.999), (70, 0.5)])
def test_binomial_follows_its_pmf(n, p):
    x = _binomials(_state(n), float(n), p, 50000)
    assert np.all(x == np.floor(x)) and x.min() >= 0 and x.max() <= n
    values, counts = np.unique(x, return_counts=True)
    expected = stats.binom.pmf(values, n, p) * len(x)
    keep = expected >= 5
    if keep.sum() < 2:
        return
    observed = counts[keep].astype(float)
    assert stats.chisquare(observed, expected[keep] * observed.sum() / expected[keep].sum()).pvalue > P_MIN


@pytest.mark.parametrize("n,p", [(1e9, 1e-3), (1e12, 0.5), (2.0**53, 1e-9), (1e15, 0.999999)])
def test_binomial_of_huge_counts_has_the_right_mean_and_variance(n, p):
    x = _binomials(_state(int(np.log2(n))), n, p, 20000)
    mean, var = n * p, n * p * (1 - p)
    assert abs(x.mean() - mean) < 5 * np.sqrt(var / len(x))
    assert abs(x.var() / var - 1) < 5 * np.sqrt(2 / len(x))
    assert stats.kstest((x - mean) / np.sqrt(var), "norm").pvalue > P_MIN  # n p (1 - p) >> 1: normal


@pytest.mark.parametrize("a", [1.0, 2.5, 40.0, 1e4])
def test_gamma_follows_its_law(a):
    g = _gammas(_state(int(a)), a, 20000)
    assert stats.kstest(g, stats.gamma(a).cdf).pvalue > P_MIN


def test_categorical_counts_add_up_and_follow_the_weights():
    state = _state(5)
    weights = np.array([0.0, 3.0, 1.0, 1e-300, 6.0])
    out = np.empty(5)
    totals = np.zeros(5)
    for _ in range(2000):
        categorical_counts(state, 1e6, weights, out)
        assert out.sum() == 1e6 and out[0] == 0.0
        totals += out
    np.testing.assert_allclose(totals / totals.sum(), weights / weights.sum(), atol=2e-4)
