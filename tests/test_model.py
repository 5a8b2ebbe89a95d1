"""Model kernels against the NumPy reference: likelihoods, greedy decoding, gradients, sampling."""

import math
from fractions import Fraction

import numpy as np
import pytest

import naive
from conftest import new_state, random_W, random_x
from fastpg.kernels.advance import HELD, add_held_scores, apply_held, held_gram, hold_update, new_held
from fastpg.kernels.sampling import greedy_decode, greedy_matches, sample_response
from fastpg.kernels.tables import DIFF, new_table, reset_table, scores_planes, token_logliks
from fastpg.kernels.updates import accumulate_score, apply_update

SHAPES = [(0, 1, 2, 3), (0, 3, 3, 5), (1, 3, 2, 4), (1, 4, 3, 2), (1, 1, 5, 3)]  # features, N, k, d


def table(W):
    return new_table(W.shape[0], W.shape[1])


@pytest.mark.parametrize("features,N,k,d", SHAPES)
def test_token_logliks_match_reference(rng, features, N, k, d):
    for _ in range(5):
        W = random_W(rng, features, N, k, d, scale=3.0)
        x = random_x(rng, d)
        y = rng.integers(0, k, N)
        logp, have = table(W)
        out = np.empty(N)
        total = token_logliks(W, x, y, features, logp, have, out)
        ref = naive.token_logliks(W, x, y, features)
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
        assert total == pytest.approx(ref.sum(), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("features", [0, 1])
def test_likelihoods_below_1e300_stay_finite(rng, features):
    N, k, d = 6, 3, 4
    W = random_W(rng, features, N, k, d, scale=20000.0)
    x = random_x(rng, d)
    y_greedy, _ = naive.greedy_decode(W, x, features, N)
    y = (y_greedy + 1) % k  # every token wrong: likelihood far below 1e-300
    logp, have = table(W)
    out = np.empty(N)
    total = token_logliks(W, x, y, features, logp, have, out)
    assert np.all(np.isfinite(out)) and math.isfinite(total)
    assert total < math.log(1e-300)
    np.testing.assert_allclose(out, naive.token_logliks(W, x, y, features), rtol=1e-10)


@pytest.mark.parametrize("features,N,k,d", SHAPES)
def test_greedy_decode_and_margin(rng, features, N, k, d):
    for _ in range(5):
        W = random_W(rng, features, N, k, d)
        x = random_x(rng, d)
        logp, have = table(W)
        y = np.empty(N, dtype=np.int64)
        m = greedy_decode(W, x, features, table(W)[0], y, True)
        y_ref, m_ref = naive.greedy_decode(W, x, features, N)
        np.testing.assert_array_equal(y, y_ref)
        assert m == pytest.approx(m_ref, rel=1e-9, abs=1e-12)
        assert greedy_matches(W, x, y_ref, features, logp, have)
        y_bad = y_ref.copy()
        y_bad[-1] = (y_bad[-1] + 1) % k
        reset_table(have)
        assert not greedy_matches(W, x, y_bad, features, logp, have)


@pytest.mark.parametrize("features,N,k,d", SHAPES)
def test_score_gradient_matches_reference_and_finite_differences(rng, features, N, k, d):
    W = random_W(rng, features, N, k, d)
    x = random_x(rng, d)
    y = rng.integers(0, k, N)
    weights = rng.standard_normal(N)
    logp, have = table(W)
    coef = np.zeros((W.shape[0], k))
    touched = np.zeros(W.shape[0], dtype=np.bool_)
    W_new = W.copy()
    accumulate_score(W_new, x, y, weights, features, logp, have, coef, touched)
    apply_update(W_new, x, coef, touched)
    grad = W_new - W
    np.testing.assert_allclose(grad, naive.score_gradient(W, x, y, weights, features), rtol=1e-10, atol=1e-13)
    assert not coef.any() and not touched.any()

    def objective(V):
        return float(np.dot(weights, naive.token_logliks(V, x, y, features)))

    h = 1e-6
    fd = np.zeros_like(W)
    for idx in np.ndindex(W.shape):
        e = np.zeros_like(W)
        e[idx] = h
        fd[idx] = (objective(W + e) - objective(W - e)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("features,N,k", [(0, 2, 2), (0, 2, 3), (1, 2, 3), (1, 3, 2)])
def test_sampling_frequencies_match_softmax(rng, features, N, k):
    d = 3
    W = random_W(rng, features, N, k, d, scale=1.5)
    x = random_x(rng, d)
    ys, p = naive.response_distribution(W, x, features, N)
    index = {y: j for j, y in enumerate(ys)}
    state = new_state(features * 100 + N * 10 + k)
    logp, have = table(W)
    n = 40000
    counts = np.zeros(len(ys))
    y = np.empty(N, dtype=np.int64)
    for _ in range(n):
        sample_response(W, x, features, logp, have, state, y)
        counts[index[tuple(y)]] += 1
    se = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(counts / n - p) < 5 * se + 1e-12)
    # Pearson chi-square against the softmax probabilities: 5-sigma bound on its mean df
    chi2 = np.sum((counts - n * p) ** 2 / (n * p))
    df = len(ys) - 1
    assert chi2 < df + 5 * np.sqrt(2 * df)


def test_sample_batch_matches_sample_response(rng):
    from fastpg.kernels.engine import sample_batch

    W = random_W(rng, 1, 3, 3, 4)
    X = np.array([random_x(rng, 4) for _ in range(5)])
    Y = np.empty((5, 3), dtype=np.int64)
    s1, s2 = new_state(9), new_state(9)
    sample_batch(W, X, 1, s1, Y)
    logp, have = table(W)
    y = np.empty(3, dtype=np.int64)
    for b in range(5):
        reset_table(have)
        sample_response(W, X[b], 1, logp, have, s2, y)
        np.testing.assert_array_equal(Y[b], y)


def elementwise(f):
    """``out[i] = f(vals[i])`` as the kernels' loops call ``f`` (inlined, compiled with their flags)."""
    from numba import njit

    from fastpg.kernels.vecmath import FAST

    @njit(fastmath=FAST, error_model="numpy")
    def loop(vals, out):
        for i in range(vals.shape[0]):
            out[i] = f(vals[i])

    return loop


def test_vector_exp_matches_math_exp():
    from fastpg.kernels.vecmath import EXP_FLUSH, exp_le0

    exp_nonpositive = elementwise(exp_le0)

    rng = np.random.default_rng(1)
    x = np.concatenate([-rng.random(20000) * 745.0, -rng.random(20000) * 5.0, [0.0, -1e-300, -0.5, -708.0, -708.5,
                                                                               -745.0, -1e4]])
    out = np.empty_like(x)
    exp_nonpositive(x, out)
    ref = np.exp(x)
    ok = x >= EXP_FLUSH
    np.testing.assert_allclose(out[ok], ref[ok], rtol=4e-16 * 4, atol=0)
    assert np.all(out[~ok] == 0.0) and np.all(ref[~ok] <= np.exp(EXP_FLUSH))


def test_inverse_cdf_is_the_first_token_past_u():
    """The branch-free count equals the early-exit rule "first v with u < CDF_v", also at u equal to a
    CDF value, with zero-probability tokens, and when rounding leaves the CDF short of u."""
    from fastpg.kernels.sampling import inverse_cdf
    from fastpg.kernels.tables import PROB

    def early_exit(p, u):
        c, last = 0.0, 0
        for v, pv in enumerate(p):
            if pv > 0.0:
                last = v
            c += pv
            if u < c:
                return v
        return last

    rng = np.random.default_rng(5)
    k, R = 6, 400
    P = rng.random((k, R)) * (rng.random((k, R)) < 0.7)  # about 30% zeros
    P[:, 0] = 0.0
    P[2, 0] = 1.0  # one certain token
    P /= np.maximum(P.sum(axis=0), 1e-300)
    table = np.zeros((6, k, R))
    table[PROB] = P
    for r in range(R):
        cdf = np.cumsum(P[:, r])
        for u in [*rng.random(5), *cdf, 0.0, np.nextafter(1.0, 0.0), cdf[-1] + 1e-16]:
            assert inverse_cdf(table, PROB, r, 1.0, u) == early_exit(P[:, r], u)


def test_vector_log_matches_math_log():
    from fastpg.kernels.vecmath import log_pos

    log_positive = elementwise(log_pos)

    rng = np.random.default_rng(2)
    x = np.concatenate([1.0 + 7.0 * rng.random(20000), np.exp(rng.uniform(-700.0, 700.0, 20000)),
                        [1.0, 2.0, 8.0, math.sqrt(2.0), np.nextafter(math.sqrt(2.0), 2.0), 0.5, 1e-300, 1e300,
                         1.0 + 2.0**-52, 1.0 - 2.0**-53, np.finfo(float).tiny, np.finfo(float).max]])
    out = np.empty_like(x)
    log_positive(x, out)
    ref = np.log(x)
    assert out[0 + 40000] == 0.0  # log 1
    np.testing.assert_allclose(out, ref, rtol=4 * 2.0**-52, atol=0)
    log_positive(x, x)  # in place
    np.testing.assert_array_equal(x, out)


@pytest.mark.parametrize("tiles", [0, 2])
def test_position_sample_batch_matches_sample_response(rng, tiles):
    """Position features sample a tile of contexts at once; the tokens are those of sample_response."""
    from fastpg.kernels.engine import TILE, sample_batch

    N, k, d = 6, 5, 7
    W = random_W(rng, 0, N, k, d, scale=2.0)
    n = tiles * TILE + 3  # fewer contexts than a tile, or a ragged last tile
    X = np.array([random_x(rng, d) for _ in range(n)])
    Y = np.empty((n, N), dtype=np.int64)
    s1, s2 = new_state(4), new_state(4)
    sample_batch(W, X, 0, s1, Y)
    logp, have = table(W)
    y = np.empty(N, dtype=np.int64)
    for b in range(n):
        reset_table(have)
        sample_response(W, X[b], 0, logp, have, s2, y)
        np.testing.assert_array_equal(Y[b], y)
    np.testing.assert_array_equal(s1, s2)


@pytest.mark.parametrize("features,N,k,d", SHAPES)
def test_whole_table_equals_row_by_row(rng, features, N, k, d):
    from fastpg.kernels.tables import ensure_row, fill_table

    W = random_W(rng, features, N, k, d, scale=5.0)
    x = random_x(rng, d)
    t1, h1 = table(W)
    t2, h2 = table(W)
    fill_table(W, x, t1, h1)
    for b in range(W.shape[0]):
        ensure_row(W, x, b, t2, h2)
    assert h1.all() and h2.all()
    np.testing.assert_allclose(t1[0], t2[0], rtol=1e-13, atol=1e-14)  # log-probabilities: absolute near 0
    np.testing.assert_allclose(t1[1], t2[1], rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("n", [1, 4, 7, 13, 70])
def test_tiled_evaluation_matches_reference(rng, n):
    """Position features are evaluated in tiles of test contexts; any n (whole tiles read in place,
    a ragged last tile through a zero-padded copy)."""
    from fastpg.kernels.engine import evaluate_runs

    N, k, d = 5, 3, 6
    W = random_W(rng, 0, N, k, d, scale=4.0)[None]
    X = np.array([random_x(rng, d) for _ in range(n)])[None]
    Y = rng.integers(0, k, (1, n, N))
    Y[0, 0] = naive.greedy_decode(W[0], X[0, 0], 0, N)[0]  # at least one greedy-correct context
    ll, tok, ok = np.empty((1, n)), np.empty((1, n, N)), np.empty((1, n), dtype=np.bool_)
    evaluate_runs(W, X, Y, 0, ll, tok, ok)
    for j in range(n):
        ref = naive.token_logliks(W[0], X[0, j], Y[0, j], 0)
        np.testing.assert_allclose(tok[0, j], ref, rtol=1e-12, atol=1e-12)
        assert ll[0, j] == pytest.approx(ref.sum(), rel=1e-12, abs=1e-12)
        assert ok[0, j] == np.array_equal(naive.greedy_decode(W[0], X[0, j], 0, N)[0], Y[0, j])


@pytest.mark.parametrize("k,R", [(8, 512), (3, 7), (2, 5), (16, 64)])
def test_log_partition_planes(rng, k, R):
    """The evaluation's softmax statistics: row maxima, ``log sum exp`` and the first maximising
    token (exact ties included) equal NumPy's to rounding, and are bit for bit those of the
    general kernels (softmax, first maximum) as the docstring says; the general softmax's centred
    logits are those of ``center_planes``."""
    from fastpg.kernels.tables import (
        BITS,
        DIFF,
        EXPS,
        STATS,
        center_planes,
        first_max_planes,
        log_partition_planes,
        softmax_planes,
    )

    D = rng.standard_normal((k, R)) * np.array([0.1, 5.0, 300.0])[rng.integers(0, 3, R)]
    D[:, ::5] = np.round(D[:, ::5])  # rows with exact ties of the maximum
    D[:, 1] = D[0, 1]  # a row with all tokens tied
    table = np.full((6, k, R), np.nan)
    table[DIFF] = D
    log_partition_planes(table)
    np.testing.assert_array_equal(table[DIFF], D)  # the logits are left as they are
    m = D.max(axis=0)
    np.testing.assert_array_equal(table[STATS, 0], m)
    np.testing.assert_allclose(table[STATS, 1], np.log(np.exp(D - m).sum(axis=0)), rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(table[BITS, 0], D.argmax(axis=0))
    old = np.full((6, k, R), np.nan)
    old[DIFF] = D
    softmax_planes(old, True)
    first_max_planes(old, old[BITS, 0])
    np.testing.assert_array_equal(table[STATS, 1], old[STATS, 0])
    np.testing.assert_array_equal(table[BITS, 0], old[BITS, 0])
    np.testing.assert_array_equal(D - table[STATS, 0], old[DIFF])
    np.testing.assert_allclose(old[EXPS], np.exp(D - m), rtol=2e-15, atol=1e-300)
    np.testing.assert_allclose(old[STATS, 1], 1.0 / np.exp(D - m).sum(axis=0), rtol=1e-14, atol=0)
    centred = np.full((6, k, R), np.nan)
    centred[DIFF] = D
    center_planes(centred)
    np.testing.assert_array_equal(centred[DIFF], old[DIFF])


def fma_chain(w, x):
    """``sum_j w[j] x[j]`` as a chain of fused multiply-adds in order of ``j``: each step
    ``s <- round(s + w[j] x[j])`` is formed exactly with fractions and rounded once."""
    s = 0.0
    for wj, xj in zip(w, x):
        s = float(Fraction(s) + Fraction(float(wj)) * Fraction(float(xj)))
    return s


@pytest.mark.parametrize("k,d", [(4, 32), (8, 64), (3, 5), (6, 13), (1, 1)])
def test_lane_scores_are_fused_chains_of_each_context(rng, k, d):
    """Logits with the contexts in SIMD lanes: every logit is the fused multiply-add chain over
    ``j`` of its own row and context, bit for bit (so it does not depend on the other contexts of
    the tile, its lane, or whether it falls in a group of 32 contexts or of 8), laid out
    block-major (``D[v, b T + t]``); a range from ``t0`` leaves the columns before it alone; and
    ``load_lanes`` puts contexts in columns, zeros past the end."""
    from fastpg.kernels.lanes import LANE_TILE, TILE, lane_scores, load_lanes
    from fastpg.kernels.simd import LANES

    B, T = 3, LANE_TILE + LANES  # one group of 32 contexts and one of 8
    W = rng.standard_normal((B, k, d))
    X = rng.standard_normal((T + 5, d))
    XT = np.full((d, T), np.nan)
    assert load_lanes(X, 0, XT) == T
    np.testing.assert_array_equal(XT, X[:T].T)
    D = np.full((k, B * T), np.nan)
    lane_scores(W, XT, 0, D)
    for b in range(B):
        for v in range(k):
            for t in (0, 1, 7, 8, 13, LANE_TILE - 1, LANE_TILE, T - 1):
                assert D[v, b * T + t] == fma_chain(W[b, v], X[t]), (b, v, t)
    np.testing.assert_allclose(D.reshape(k, B, T), np.einsum("bvj,tj->vbt", W, X[:T]), rtol=1e-12, atol=1e-12)
    perm = rng.permutation(T)  # the same contexts in other lanes and groups
    D2 = np.full_like(D, np.nan)
    lane_scores(W, np.ascontiguousarray(X[:T][perm].T), 0, D2)
    np.testing.assert_array_equal(D2.reshape(k, B, T), D.reshape(k, B, T)[:, :, perm])
    D3 = np.full_like(D, np.nan)  # from the second vector on: 8 x 3 contexts, none in a group of 32
    lane_scores(W, XT, LANES, D3)
    np.testing.assert_array_equal(D3.reshape(k, B, T)[:, :, LANES:], D.reshape(k, B, T)[:, :, LANES:])
    assert np.isnan(D3.reshape(k, B, T)[:, :, :LANES]).all()
    for bad_XT, bad_t0 in ((np.zeros((d, T - 1)), 0), (XT, 3), (np.zeros((d + 1, T)), 0)):
        with pytest.raises(ValueError, match="multiples of LANES"):  # the vector loads check no bounds
            lane_scores(W, bad_XT, bad_t0, D)
    XT = np.full((d, TILE), np.nan)
    assert load_lanes(X, TILE, XT) == T + 5 - TILE  # a ragged last tile: the rest are zero contexts
    np.testing.assert_array_equal(XT[:, :T + 5 - TILE], X[TILE:].T)
    np.testing.assert_array_equal(XT[:, T + 5 - TILE:], 0.0)


def test_simd_loads_take_contiguous_float64_rows_only():
    """``vload`` reads eight lanes without bounds checks, so it refuses at compile time an array
    whose elements are not contiguous float64 (a strided view would read the wrong numbers)."""
    from numba import njit
    from numba.core.errors import TypingError

    from fastpg.kernels.simd import vload, vstore, vzero

    @njit
    def round_trip(a, b):
        vstore(b, 8, vload(a, 0))
        vstore(b, 0, vzero())

    a, b = np.arange(16.0), np.full(16, np.nan)
    round_trip(a, b)
    np.testing.assert_array_equal(b, np.r_[np.zeros(8), a[:8]])
    with pytest.raises(TypingError, match="contiguous 1-D float64"):
        round_trip(np.arange(32.0)[::2], b)
    with pytest.raises(TypingError, match="contiguous 1-D float64"):
        round_trip(np.arange(16, dtype=np.int64), b)


@pytest.mark.parametrize("B,k,d,m", [(3, 4, 8, HELD), (4, 8, 13, 11), (2, 3, 5, 1)])
def test_held_updates_match_updates_one_by_one(rng, B, k, d, m):
    """Held-back updates (fastpg.kernels.advance): applied together, the weights are bit for bit those of
    applying each update at its step; the held correction of a context's logits gives the logits
    under the updated weights to rounding, and the same bits however the updates are grouped."""
    W = rng.standard_normal((B, k, d))
    held_c, held_x = new_held(B, k, d, True)
    W_one = W.copy()
    for i in range(m):
        coef = rng.standard_normal((B, k)) * 0.1
        touched = rng.random(B) < 0.7
        coef[~touched] = 0.0
        x = rng.standard_normal(d)
        hold_update(coef.copy(), touched.copy(), x, held_c, held_x, i)
        np.testing.assert_array_equal(held_c[i].reshape(k, B), coef.T)
        apply_update(W_one, x, coef, touched)
    x = rng.standard_normal(d)
    logits, _ = new_table(B, k)
    scores_planes(W, x, logits)
    g = np.empty(HELD)
    held_gram(held_x, m, x, g)
    np.testing.assert_allclose(g[:m], held_x[:m] @ x, rtol=1e-12, atol=1e-12)
    diff = logits[DIFF].reshape(-1).copy()
    add_held_scores(held_c, g, m, diff)
    one_at_a_time = logits[DIFF].reshape(-1).copy()
    for i in range(m):
        add_held_scores(held_c[i:i + 1], g[i:i + 1], 1, one_at_a_time)
    np.testing.assert_array_equal(diff, one_at_a_time)
    W_held = W.copy()
    apply_held(W_held, held_c, held_x, m)
    np.testing.assert_array_equal(W_held, W_one)
    after, _ = new_table(B, k)
    scores_planes(W_one, x, after)
    np.testing.assert_allclose(diff, after[DIFF].reshape(-1), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("features,N,k,d", SHAPES + [(0, 9, 2, 3), (1, 6, 2, 3)])
def test_sampling_until_the_first_mistake(rng, features, N, k, d):
    """sample_until_mistake draws the tokens sample_response draws, up to and including the first
    mistake, and leaves the generator where sample_response leaves it; complete_response then draws
    the rest, the same tokens again."""
    from fastpg.kernels.sampling import complete_response, sample_until_mistake

    W = random_W(rng, features, N, k, d, scale=2.0)
    x = random_x(rng, d)
    seen = set()
    for seed in range(60):
        t1, h1 = table(W)
        t2, h2 = table(W)
        y_full, y_lazy = np.empty(N, dtype=np.int64), np.full(N, -1, dtype=np.int64)
        s1, s2 = new_state(seed), new_state(seed)
        paused = np.empty(4, dtype=np.uint64)
        sample_response(W, x, features, t1, h1, s1, y_full)
        # a target that agrees with the sample on a random prefix
        y_star = y_full.copy()
        cut = int(rng.integers(0, N + 1))
        if cut < N:
            y_star[cut] = (y_star[cut] + 1) % k
        f = sample_until_mistake(W, x, y_star, features, t2, h2, s2, y_lazy, paused)
        wrong = np.flatnonzero(y_full != y_star)
        assert f == (wrong[0] if wrong.size else N) == cut
        seen.add(f)
        np.testing.assert_array_equal(s2, s1)
        np.testing.assert_array_equal(y_lazy[:f + 1], y_full[:f + 1])
        assert np.all(y_lazy[f + 1:] == -1)
        if f < N:
            complete_response(W, x, features, t2, h2, paused, y_lazy, f, N)
            np.testing.assert_array_equal(y_lazy, y_full)
    assert len(seen) > min(N, 3)


@pytest.mark.parametrize("N,k,d", [(1, 2, 3), (5, 4, 7), (16, 8, 64), (3, 5, 9), (19, 5, 24), (8, 4, 32)])
def test_sweep_order_changes_no_bits(rng, N, k, d):
    """Filling a table or applying an update from the last block to the first gives the same bits
    as from the first to the last; the logits pass leaves each row's maximum, and the softmax from
    it is the softmax that finds the maxima itself."""
    from fastpg.kernels.tables import PROB, STATS, fill_table, softmax_table

    W = random_W(rng, 0, N, k, d, scale=3.0)
    x = random_x(rng, d)
    t1, h1 = table(W)
    t2, h2 = table(W)
    fill_table(W, x, t1, h1)
    fill_table(W, x, t2, h2, True)
    np.testing.assert_array_equal(t1[:2], t2[:2])
    t3, h3 = table(W)
    scores_planes(W, x, t3)
    np.testing.assert_array_equal(t3[STATS, 0], t3[DIFF].max(axis=0))
    t3[STATS, 0] = np.nan  # softmax_table (maxima=False) must find the maxima itself
    softmax_table(t3, h3)
    np.testing.assert_array_equal(t3[:PROB + 1], t1[:PROB + 1])
    coef = rng.standard_normal((N, k))
    touched = rng.random(N) < 0.7
    W1, W2 = W.copy(), W.copy()
    apply_update(W1, x, coef.copy(), touched.copy())
    apply_update(W2, x, coef.copy(), touched.copy(), False)
    np.testing.assert_array_equal(W1, W2)


# The child of test_lane_kernels_on_machines_without_avx512: the exact tests of the SIMD kernels,
# then the instructions lane_scores was compiled to (inspect_asm works on code compiled in this
# process, which a fresh cache guarantees).
_TARGET_CHILD = """
import re, sys
import pytest
code = pytest.main(["-q", "-p", "no:cacheprovider", "-o", "addopts=",
                    "tests/test_model.py::test_lane_scores_are_fused_chains_of_each_context",
                    "tests/test_properties.py::test_tile_logits_in_lanes_over_shapes"])
from fastpg.kernels.lanes import lane_scores
asm = "".join(lane_scores.inspect_asm(s) for s in lane_scores.signatures)
print("TARGET", len(re.findall("zmm", asm)), len(re.findall("ymm", asm)), len(re.findall("vfmadd", asm)))
sys.exit(int(code))
"""


@pytest.mark.slow
def test_lane_kernels_on_machines_without_avx512(tmp_path):
    """``fastpg/kernels/simd.py``'s eight-lane type lowers to what the target machine has, and its kernels
    stay exact there: compiled for an AVX2 machine with FMA (``haswell``) and for baseline x86-64
    (``generic``: SSE2, no FMA instructions, so ``llvm.fma`` becomes a call of the C library's
    ``fma``), the exact-chain test and the property test of the tile product pass, and the code
    really is for that target (no 512-bit registers; no 256-bit ones or FMA instructions on
    ``generic``). Each target compiles in its own process and cache (``NUMBA_CPU_NAME``, with
    ``NUMBA_CPU_FEATURES`` empty so that the CPU name alone sets the features)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    children = {}
    for cpu in ("haswell", "generic"):
        env = dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES="", NUMBA_CACHE_DIR=str(tmp_path / cpu))
        children[cpu] = subprocess.Popen([sys.executable, "-c", _TARGET_CHILD], cwd=root, env=env, text=True,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for cpu, child in children.items():
        out, _ = child.communicate(timeout=900)
        assert child.returncode == 0, f"{cpu}:\n{out[-3000:]}"
        zmm, ymm, fma = map(int, out.split("TARGET")[1].split())
        assert zmm == 0, cpu
        if cpu == "haswell":
            assert ymm > 0 and fma > 0
        else:
            assert ymm == 0 and fma == 0
