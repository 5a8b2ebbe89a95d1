"""Compiled kernels of the linear autoregressive model (SPEC §1).

The model's logits at position ``i`` are ``s_i(v) = W[b_i, v, :] . x`` where the
block ``b_i`` is chosen by the feature map:

* ``position`` (code 0): ``b_i = i``; ``W`` has ``N`` blocks.
* ``markov`` (code 1): ``b_i = i*(k+1) + y_{i-1}`` with ``y_{-1} = BOS = k``;
  ``W`` has ``N*(k+1)`` blocks.

Kernels work on one context and a *lazy table* ``table[3, B, k]`` with a flag ``have[b]``
per block: ``table[LOGP, b] = log softmax(W[b] . x)``, ``table[PROB, b]`` its exponential
(and a scratch plane). Rows are computed the first time a position needs them and reused by
every response sampled from the same weights and context, by the gradient and by the
log-likelihoods; call :func:`reset_table` when ``W`` or ``x`` changes. With ``position``
features every row is filled at once (:func:`fill_table`), so the ``N k`` exponentials run as
one SIMD loop; ``markov`` rows depend on the path and are filled one by one
(:func:`ensure_row`). Log-likelihoods are formed in log space (log-sum-exp), so values far
below ``1e-300`` stay finite.

Dot products and updates are compiled with ``fastmath={"reassoc", "contract"}`` (SIMD
reductions and fused multiply-adds): results change only by rounding, and every run uses the
same code whatever the threads, so reproducibility is kept. No flag that assumes finite values
(``nnan``, ``ninf``) or approximates functions (``afn``) is used. ``error_model="numpy"``: a
division by zero gives inf/NaN as in IEEE arithmetic instead of raising, so diverged weights are
caught by the engine's weight check rather than by an exception inside a kernel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .rng import uniform

POSITION = 0
MARKOV = 1
LOGP = 0
PROB = 1
SCRATCH = 2
FAST = {"reassoc", "contract"}
_LOG2E = 1.4426950408889634
_LN2_HI = 0.6931471803691238  # ln 2 split so that n * _LN2_HI is exact for |n| < 2^11
_LN2_LO = 1.9082149292705877e-10
EXP_FLUSH = -708.0  # exp(x) below this (about 3e-308, near the subnormal range) is flushed to 0


def n_blocks(features: int, N: int, k: int) -> int:
    """Number of weight blocks of a feature map (SPEC §1)."""
    return N if features == POSITION else N * (k + 1)


@njit(cache=True)
def new_table(blocks, k):
    """An empty lazy table ``[3, blocks, k]`` (log-probabilities, probabilities, scratch) and its flags."""
    return np.empty((3, blocks, k)), np.zeros(blocks, dtype=np.bool_)


@njit(cache=True, inline="always")
def block_index(features, i, prev, k):
    """Block of position ``i`` (0-based) after token ``prev`` (``k`` = BOS)."""
    if features == POSITION:
        return i
    return i * (k + 1) + prev


@njit(cache=True, error_model="numpy")
def reset_table(have):
    for b in range(have.shape[0]):
        have[b] = False


@njit(cache=True, fastmath=FAST, error_model="numpy")
def scores(W, x, b, out):
    """Logits ``out[v] = W[b, v, :] . x``.

    Four rows per pass over ``x``: four independent accumulators keep the FMA units busy
    (about 25% faster than one row at a time at d = 64).
    """
    k = W.shape[1]
    d = W.shape[2]
    v = 0
    while v + 4 <= k:
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        for j in range(d):
            xj = x[j]
            s0 += W[b, v, j] * xj
            s1 += W[b, v + 1, j] * xj
            s2 += W[b, v + 2, j] * xj
            s3 += W[b, v + 3, j] * xj
        out[v] = s0
        out[v + 1] = s1
        out[v + 2] = s2
        out[v + 3] = s3
        v += 4
    while v < k:
        s = 0.0
        for j in range(d):
            s += W[b, v, j] * x[j]
        out[v] = s
        v += 1


@njit(cache=True, error_model="numpy")
def ensure_row(W, x, b, table, have):
    """Fill ``table[:, b]`` with ``log softmax_v(W[b, v, :] . x)`` and its exponential unless there."""
    if have[b]:
        return
    k = W.shape[1]
    row = table[LOGP, b]
    scores(W, x, b, row)
    m = -np.inf
    for v in range(k):
        if row[v] > m:
            m = row[v]
    z = 0.0
    p = table[PROB, b]
    for v in range(k):
        p[v] = math.exp(row[v] - m)
        z += p[v]
    lz = m + math.log(z)
    inv_z = 1.0 / z
    for v in range(k):
        row[v] -= lz
        p[v] *= inv_z
    have[b] = True


@njit(cache=True, fastmath=FAST, error_model="numpy")
def exp_nonpositive(vals, out, scratch):
    """``out[i] = exp(vals[i])`` for ``vals <= 0``, as straight-line arithmetic that vectorises.

    Cody–Waite reduction ``x = n ln2 + r`` (``|r| <= ln2 / 2``), a degree-12 Taylor polynomial
    for ``e^r`` (truncation below 3e-16 relative) and ``2^n`` written as IEEE bits through an
    integer view of ``scratch``. Agrees with ``math.exp`` to a few ulp (tested); arguments below
    ``EXP_FLUSH`` give 0.
    """
    bits = scratch.view(np.int64)
    for i in range(vals.shape[0]):
        x = max(vals[i], EXP_FLUSH)
        n = np.floor(x * _LOG2E + 0.5)
        r = (x - n * _LN2_HI) - n * _LN2_LO
        p = 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        p = p * r + 1.0
        out[i] = p
        bits[i] = (np.int64(n) + 1023) << 52
    for i in range(vals.shape[0]):
        out[i] = out[i] * scratch[i] if vals[i] >= EXP_FLUSH else 0.0


@njit(cache=True, error_model="numpy")
def fill_table(W, x, table, have):
    """Fill every row at once (``position`` features): the ``B k`` exponentials in one SIMD loop.

    ``logp[b] = (s_b - max s_b) - log sum exp(s_b - max s_b)``, ``prob[b] = exp(logp[b])``.
    """
    B, k = W.shape[0], W.shape[1]
    logp, prob = table[LOGP], table[PROB]
    for b in range(B):
        scores(W, x, b, logp[b])
        m = -np.inf
        for v in range(k):
            if logp[b, v] > m:
                m = logp[b, v]
        for v in range(k):
            logp[b, v] -= m
            prob[b, v] = logp[b, v]
    flat = prob.reshape(-1)
    exp_nonpositive(flat, flat, table[SCRATCH].reshape(-1))
    for b in range(B):
        z = 0.0
        for v in range(k):
            z += prob[b, v]
        lz = math.log(z)
        inv_z = 1.0 / z
        for v in range(k):
            logp[b, v] -= lz
            prob[b, v] *= inv_z
        have[b] = True


@njit(cache=True, inline="always")
def need_row(W, x, features, b, table, have):
    """Make row ``b`` available: the whole table for ``position`` features, else this row."""
    if have[b]:
        return
    if features == POSITION:
        fill_table(W, x, table, have)
    else:
        ensure_row(W, x, b, table, have)


@njit(cache=True, error_model="numpy")
def token_logliks(W, x, y, features, table, have, out):
    """``out[i] = log pi_W(y_i | x, y_<i)``; returns the sum ``log pi_W(y | x)``."""
    k = W.shape[1]
    prev = k
    total = 0.0
    for i in range(y.shape[0]):
        b = block_index(features, i, prev, k)
        need_row(W, x, features, b, table, have)
        out[i] = table[LOGP, b, y[i]]
        total += out[i]
        prev = y[i]
    return total


@njit(cache=True, error_model="numpy")
def prefix_loglik(W, x, y, n, features, table, have):
    """``log pi_W(y_<n | x) = sum_{i<n} log pi_W(y_i | x, y_<i)``."""
    k = W.shape[1]
    prev = k
    total = 0.0
    for i in range(n):
        b = block_index(features, i, prev, k)
        need_row(W, x, features, b, table, have)
        total += table[LOGP, b, y[i]]
        prev = y[i]
    return total


@njit(cache=True, error_model="numpy")
def sample_token(prob_row, state):
    """Draw ``v ~ prob_row`` by inverting the CDF at one uniform number."""
    u = uniform(state)
    c = 0.0
    last = 0
    for v in range(prob_row.shape[0]):
        p = prob_row[v]
        if p > 0.0:
            last = v
        c += p
        if u < c:
            return v
    return last  # rounding: the CDF summed to slightly less than u


@njit(cache=True, error_model="numpy")
def sample_response(W, x, features, table, have, state, y_out):
    """Sample ``y ~ pi_W(. | x)`` token by token into ``y_out`` (length ``N``)."""
    k = W.shape[1]
    prev = k
    for i in range(y_out.shape[0]):
        b = block_index(features, i, prev, k)
        need_row(W, x, features, b, table, have)
        prev = sample_token(table[PROB, b], state)
        y_out[i] = prev


@njit(cache=True, error_model="numpy")
def first_mistake(y, y_star):
    """0-based index of the first token where ``y`` differs from ``y_star`` (``N`` if none)."""
    for i in range(y.shape[0]):
        if y[i] != y_star[i]:
            return i
    return y.shape[0]


@njit(cache=True, inline="always")
def argmax_row(row):
    """Most likely token of a row (ties to the smallest token)."""
    best = 0
    for v in range(1, row.shape[0]):
        if row[v] > row[best]:
            best = v
    return best


@njit(cache=True, error_model="numpy")
def greedy_decode(W, x, features, buf, y_out):
    """Greedy decoding ``y_i = argmax_v s_i(v)`` along its own path; returns its margin.

    The margin is ``min_i (s_i(y_i) - max_{v != y_i} s_i(v))`` (SPEC §2), from raw logits
    (no softmax needed); ``buf`` is scratch of length ``k``. Ties go to the smallest token
    (margin 0). This is how the teacher labels contexts.
    """
    k = W.shape[1]
    prev = k
    margin = np.inf
    for i in range(y_out.shape[0]):
        b = block_index(features, i, prev, k)
        scores(W, x, b, buf)
        best = argmax_row(buf)
        second = -np.inf
        for v in range(k):
            if v != best and buf[v] > second:
                second = buf[v]
        gap = buf[best] - second
        if gap < margin:
            margin = gap
        y_out[i] = best
        prev = best
    return margin


@njit(cache=True, error_model="numpy")
def greedy_matches(W, x, y_star, features, table, have):
    """True when greedy decoding of ``W`` reproduces ``y_star`` (first-index tie rule)."""
    k = W.shape[1]
    prev = k
    for i in range(y_star.shape[0]):
        b = block_index(features, i, prev, k)
        need_row(W, x, features, b, table, have)
        if argmax_row(table[LOGP, b]) != y_star[i]:
            return False
        prev = y_star[i]
    return True


@njit(cache=True, error_model="numpy")
def accumulate_score(W, x, y, weights, features, table, have, coef, touched):
    """Add ``sum_i weights[i] * grad log pi_W(y_i | x, y_<i)`` to a coefficient table.

    ``grad_{W[b_i, v]} log pi_W(y_i | x, y_<i) = (1[v = y_i] - pi_W(v | x, y_<i)) x``, so the
    gradient is stored as ``coef[b, v]`` (times ``x``); :func:`apply_update` adds it to ``W``.
    Probabilities are those of the current table, i.e. of the weights before the update.
    """
    k = W.shape[1]
    prev = k
    for i in range(y.shape[0]):
        c = weights[i]
        b = block_index(features, i, prev, k)
        prev = y[i]
        if c == 0.0:
            continue
        need_row(W, x, features, b, table, have)
        for v in range(k):
            coef[b, v] -= c * table[PROB, b, v]
        coef[b, y[i]] += c
        touched[b] = True


@njit(cache=True, fastmath=FAST, error_model="numpy")
def apply_update(W, x, coef, touched):
    """``W[b, v, :] += coef[b, v] * x`` on touched blocks; clears ``coef`` and ``touched``."""
    k = W.shape[1]
    d = W.shape[2]
    for b in range(W.shape[0]):
        if not touched[b]:
            continue
        for v in range(k):
            c = coef[b, v]
            if c != 0.0:
                for j in range(d):
                    W[b, v, j] += c * x[j]
            coef[b, v] = 0.0
        touched[b] = False
