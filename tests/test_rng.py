import numpy as np

from fastpg.kernels.rng import discard, next_u64, normal, seed_sequence, uniform, uniform_pos, xoshiro_state
from naive import xoshiro256ss


def test_xoshiro_matches_reference():
    state = xoshiro_state(seed_sequence(7, "x", {"a": 1}))
    ref = xoshiro256ss(list(state))
    s = state.copy()
    for _ in range(1000):
        assert int(next_u64(s)) == next(ref)


def test_uniform_ranges_and_moments():
    s = xoshiro_state(seed_sequence(1, "u", {}))
    u = np.array([uniform(s) for _ in range(20000)])
    v = np.array([uniform_pos(s) for _ in range(20000)])
    assert u.min() >= 0.0 and u.max() < 1.0
    assert v.min() > 0.0 and v.max() <= 1.0
    se = np.sqrt(1 / 12 / 20000)
    assert abs(u.mean() - 0.5) < 5 * se and abs(v.mean() - 0.5) < 5 * se


def test_normal_moments():
    s = xoshiro_state(seed_sequence(2, "n", {}))
    g = np.array([normal(s) for _ in range(40000)])
    assert abs(g.mean()) < 5 / np.sqrt(40000)
    assert abs(g.var() - 1.0) < 5 * np.sqrt(2 / 40000)


def test_ziggurat_normal_law():
    """Kolmogorov-Smirnov against the normal CDF, tail mass beyond the ziggurat's base, moments."""
    from math import erf, sqrt

    from fastpg.kernels.rng import fill_normal

    s = xoshiro_state(seed_sequence(3, "n", {}))
    n = 400_000
    g = np.empty(n)
    fill_normal(s, g)
    x = np.sort(g)
    cdf = 0.5 * (1.0 + np.array([erf(v / sqrt(2.0)) for v in x]))
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 1.95 / np.sqrt(n)  # the 0.1% critical value of the KS statistic
    for t in (1.0, 2.0, 3.0, 3.442619855899, 4.0):  # the tail beyond the base layer is sampled exactly
        p = 1.0 - erf(t / sqrt(2.0))
        assert abs(np.mean(np.abs(g) > t) - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-12
    assert abs(g.mean()) < 5 / np.sqrt(n) and abs(g.var() - 1.0) < 5 * np.sqrt(2 / n)
    assert abs(np.mean(g**3)) < 5 * np.sqrt(15 / n) and abs(np.mean(g**4) - 3.0) < 5 * np.sqrt(96 / n)
    assert abs(np.corrcoef(g[:-1], g[1:])[0, 1]) < 5 / np.sqrt(n)


def test_fill_normal_equals_repeated_normal():
    """The register-held state of fill_normal gives the stream of repeated normal() calls,
    wedge and tail draws included (about 1.2% of draws leave the fast path)."""
    from fastpg.kernels.rng import fill_normal

    s1 = xoshiro_state(seed_sequence(4, "n", {}))
    s2 = s1.copy()
    g = np.empty(50_000)
    fill_normal(s1, g)
    h = np.array([normal(s2) for _ in range(50_000)])
    np.testing.assert_array_equal(g, h)
    np.testing.assert_array_equal(s1, s2)
    assert np.sum(np.abs(g) > 3.442619855899) > 0  # the tail path was taken


def test_streams_are_keyed():
    a = xoshiro_state(seed_sequence(0, "post", {"reward": "orm"}))
    b = xoshiro_state(seed_sequence(0, "post", {"reward": "prm"}))
    c = xoshiro_state(seed_sequence(0, "post", {"reward": "orm"}))
    assert not np.array_equal(a, b)
    assert np.array_equal(a, c)


def test_discard_skips_outputs():
    for n in (0, 1, 17, 100):
        a, b = xoshiro_state(seed_sequence(5, "discard", {})), xoshiro_state(seed_sequence(5, "discard", {}))
        discard(a, n)
        for _ in range(n):
            next_u64(b)
        np.testing.assert_array_equal(a, b)
