import numpy as np

from fastpg.rng import next_u64, normal, seed_sequence, uniform, uniform_pos, xoshiro_state

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


def test_fill_normal_moments_and_pairs():
    from fastpg.rng import fill_normal

    s = xoshiro_state(seed_sequence(3, "n", {}))
    g = np.empty(40001)  # odd length: the last pair is cut
    fill_normal(s, g)
    assert abs(g.mean()) < 5 / np.sqrt(len(g))
    assert abs(g.var() - 1.0) < 5 * np.sqrt(2 / len(g))
    assert abs(np.corrcoef(g[0:-1:2], g[1::2])[0, 1]) < 5 / np.sqrt(len(g) / 2)  # the pair is independent


def test_streams_are_keyed():
    a = xoshiro_state(seed_sequence(0, "post", {"reward": "orm"}))
    b = xoshiro_state(seed_sequence(0, "post", {"reward": "prm"}))
    c = xoshiro_state(seed_sequence(0, "post", {"reward": "orm"}))
    assert not np.array_equal(a, b)
    assert np.array_equal(a, c)
