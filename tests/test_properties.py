"""Property-based checks (hypothesis) of the model kernels over shapes and weight scales."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import naive
from fastpg.kernels.sampling import greedy_decode
from fastpg.kernels.tables import new_table, token_logliks

shapes = st.tuples(st.integers(0, 1), st.integers(1, 5), st.integers(2, 5), st.integers(1, 6))


@settings(max_examples=60, deadline=None)
@given(shape=shapes, scale=st.sampled_from([0.0, 1e-3, 1.0, 50.0, 3e4]), seed=st.integers(0, 2**31))
def test_logliks_finite_normalised_and_match_reference(shape, scale, seed):
    features, N, k, d = shape
    rng = np.random.default_rng(seed)
    blocks = N if features == 0 else N * (k + 1)
    W = scale * rng.standard_normal((blocks, k, d))
    x = rng.standard_normal(d)
    x /= np.linalg.norm(x)
    y = rng.integers(0, k, N)
    logp, have = new_table(blocks, k)
    out = np.empty(N)
    total = token_logliks(W, x, y, features, logp, have, out)
    assert math.isfinite(total) and np.all(out <= 1e-12)
    np.testing.assert_allclose(out, naive.token_logliks(W, x, y, features), rtol=1e-9, atol=1e-9)
    # every computed row is a normalised distribution
    for b in np.nonzero(have)[0]:
        assert abs(np.logaddexp.reduce(logp[0, :, b])) < 1e-9
        np.testing.assert_allclose(logp[1, :, b], np.exp(logp[0, :, b]), rtol=1e-12, atol=1e-300)
        assert abs(logp[1, :, b].sum() - 1.0) < 1e-12
    yg = np.empty(N, dtype=np.int64)
    m = greedy_decode(W, x, features, new_table(blocks, k)[0], yg, True)
    assert m >= 0.0
    if scale == 0.0:
        assert m == 0.0 and np.all(yg == 0)


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(0, 9), min_size=1, max_size=4), dtype=st.sampled_from([np.float64, np.int64, np.uint64]))
def test_batch_arrays_are_cache_line_aligned_copies(shape, dtype):
    from fastpg.kernels.engine import ALIGN, aligned_copy

    a = np.arange(math.prod(shape), dtype=np.float64).reshape(shape)
    b = aligned_copy(a, dtype)
    assert b.flags.c_contiguous and b.flags.writeable
    assert b.size == 0 or b.ctypes.data % ALIGN == 0  # an empty array has no data to align
    assert b.dtype == dtype and b.shape == a.shape and np.array_equal(b, a.astype(dtype))
    b[...] = 0
    assert np.array_equal(a, np.arange(a.size, dtype=np.float64).reshape(shape))  # a copy, not a view


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 4), k=st.integers(1, 9), d=st.integers(1, 20), groups=st.integers(1, 6),
       start=st.integers(0, 6), scale=st.sampled_from([0.0, 1e-3, 1.0, 3e4]), seed=st.integers(0, 2**31))
def test_tile_logits_in_lanes_over_shapes(B, k, d, groups, start, scale, seed):
    """The tile product with the contexts in SIMD lanes (``lane_scores``), for any number of rows
    (groups of 4 and the rest), features, and vectors of 8 contexts (groups of 32 and the rest),
    from any vector on: ``W x`` to rounding, nothing written before the start or past the tile."""
    from fastpg.kernels.lanes import lane_scores
    from fastpg.kernels.simd import LANES

    rng = np.random.default_rng(seed)
    T, t0 = groups * LANES, min(start, groups - 1) * LANES
    W = scale * rng.standard_normal((B, k, d))
    XT = rng.standard_normal((d, T))
    D = np.full((k, B * T + 5), np.nan)  # five guard columns past the tile
    lane_scores(W, XT, t0, D)
    got = D[:, :B * T].reshape(k, B, T)
    np.testing.assert_allclose(got[:, :, t0:], np.einsum("bvj,jt->vbt", W, XT)[:, :, t0:], rtol=1e-12,
                               atol=1e-12 * max(scale, 1.0))
    assert np.isnan(got[:, :, :t0]).all() and np.isnan(D[:, B * T:]).all()
