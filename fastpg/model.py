"""Compiled kernels of the linear autoregressive model (SPEC §1).

The model's logits at position ``i`` are ``s_i(v) = W[b_i, v, :] . x`` where the
block ``b_i`` is chosen by the feature map:

* ``position`` (code 0): ``b_i = i``; ``W`` has ``N`` blocks.
* ``markov`` (code 1): ``b_i = i*(k+1) + y_{i-1}`` with ``y_{-1} = BOS = k``;
  ``W`` has ``N*(k+1)`` blocks.

All kernels work on one context and a *lazy log-probability table*
``logp[b, v] = log softmax(W[b] . x)(v)`` with a flag ``have[b]`` per block: a
row is computed (``O(k d)``) the first time a position needs it and reused by
every later response sampled from the same weights and context. Call
:func:`reset_table` when ``W`` or ``x`` changes. Everything is in log space
(log-sum-exp), so likelihoods far below ``1e-300`` stay finite.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .rng import uniform

POSITION = 0
MARKOV = 1
FEATURES = ("position", "markov")


def n_blocks(features: int, N: int, k: int) -> int:
    """Number of weight blocks of a feature map (SPEC §1)."""
    return N if features == POSITION else N * (k + 1)


@njit(cache=True, inline="always")
def block_index(features, i, prev, k):
    """Block of position ``i`` (0-based) after token ``prev`` (``k`` = BOS)."""
    if features == POSITION:
        return i
    return i * (k + 1) + prev


@njit(cache=True)
def reset_table(have):
    for b in range(have.shape[0]):
        have[b] = False


@njit(cache=True)
def ensure_row(W, x, b, logp, have):
    """Fill ``logp[b, :] = log softmax_v(W[b, v, :] . x)`` unless already there."""
    if have[b]:
        return
    k = W.shape[1]
    d = W.shape[2]
    m = -np.inf
    for v in range(k):
        s = 0.0
        for j in range(d):
            s += W[b, v, j] * x[j]
        logp[b, v] = s
        if s > m:
            m = s
    z = 0.0
    for v in range(k):
        z += math.exp(logp[b, v] - m)
    lz = m + math.log(z)
    for v in range(k):
        logp[b, v] -= lz
    have[b] = True


@njit(cache=True)
def token_logliks(W, x, y, features, logp, have, out):
    """``out[i] = log pi_W(y_i | x, y_<i)``; returns the sum ``log pi_W(y | x)``."""
    k = W.shape[1]
    prev = k
    total = 0.0
    for i in range(y.shape[0]):
        b = block_index(features, i, prev, k)
        ensure_row(W, x, b, logp, have)
        out[i] = logp[b, y[i]]
        total += out[i]
        prev = y[i]
    return total


@njit(cache=True)
def prefix_loglik(W, x, y, n, features, logp, have):
    """``log pi_W(y_<n | x) = sum_{i<n} log pi_W(y_i | x, y_<i)``."""
    k = W.shape[1]
    prev = k
    total = 0.0
    for i in range(n):
        b = block_index(features, i, prev, k)
        ensure_row(W, x, b, logp, have)
        total += logp[b, y[i]]
        prev = y[i]
    return total


@njit(cache=True)
def sample_token(logp_row, state):
    """Draw ``v ~ softmax`` by inverting the CDF at one uniform number."""
    u = uniform(state)
    k = logp_row.shape[0]
    c = 0.0
    last = 0
    for v in range(k):
        p = math.exp(logp_row[v])
        if p > 0.0:
            last = v
        c += p
        if u < c:
            return v
    return last  # rounding: the CDF summed to slightly less than u


@njit(cache=True)
def sample_response(W, x, features, logp, have, state, y_out):
    """Sample ``y ~ pi_W(. | x)`` token by token into ``y_out`` (length ``N``)."""
    k = W.shape[1]
    prev = k
    for i in range(y_out.shape[0]):
        b = block_index(features, i, prev, k)
        ensure_row(W, x, b, logp, have)
        prev = sample_token(logp[b], state)
        y_out[i] = prev


@njit(cache=True)
def first_mistake(y, y_star):
    """0-based index of the first token where ``y`` differs from ``y_star`` (``N`` if none)."""
    for i in range(y.shape[0]):
        if y[i] != y_star[i]:
            return i
    return y.shape[0]


@njit(cache=True, inline="always")
def argmax_row(logp_row):
    """Most likely token of a row (ties to the smallest token)."""
    best = 0
    for v in range(1, logp_row.shape[0]):
        if logp_row[v] > logp_row[best]:
            best = v
    return best


@njit(cache=True)
def greedy_decode(W, x, features, logp, have, y_out):
    """Greedy decoding ``y_i = argmax_v s_i(v)`` along its own path; returns its margin.

    The margin is ``min_i (s_i(y_i) - max_{v != y_i} s_i(v))`` (SPEC §2); log-probabilities
    share the normaliser of each position, so their differences are the logit differences.
    Ties go to the smallest token (margin 0).
    """
    k = W.shape[1]
    prev = k
    margin = np.inf
    for i in range(y_out.shape[0]):
        b = block_index(features, i, prev, k)
        ensure_row(W, x, b, logp, have)
        best = argmax_row(logp[b])
        second = -np.inf
        for v in range(k):
            if v != best and logp[b, v] > second:
                second = logp[b, v]
        gap = logp[b, best] - second
        if gap < margin:
            margin = gap
        y_out[i] = best
        prev = best
    return margin


@njit(cache=True)
def greedy_matches(W, x, y_star, features, logp, have):
    """True when greedy decoding of ``W`` reproduces ``y_star`` (first-index tie rule)."""
    k = W.shape[1]
    prev = k
    for i in range(y_star.shape[0]):
        b = block_index(features, i, prev, k)
        ensure_row(W, x, b, logp, have)
        if argmax_row(logp[b]) != y_star[i]:
            return False
        prev = y_star[i]
    return True


@njit(cache=True)
def accumulate_score(W, x, y, weights, features, logp, have, coef, touched):
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
        ensure_row(W, x, b, logp, have)
        for v in range(k):
            coef[b, v] -= c * math.exp(logp[b, v])
        coef[b, y[i]] += c
        touched[b] = True


@njit(cache=True)
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
