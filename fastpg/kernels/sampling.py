"""Responses from the model's tables (docs/design.md, "The model"): sampling
``y ~ pi_W(. | x)`` token by token by inverse CDF (one uniform per token), up to the first
mistake against ``y*`` or whole, and greedy decoding ``y_i = argmax_v s_i(v)`` with its margin.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..codes import POSITION
from .rng import discard, uniform, uniform_next
from .tables import (
    BITS,
    DIFF,
    LOGP,
    PROB,
    STATS,
    block_index,
    center_planes,
    ensure_row,
    fill_rows,
    first_max_planes,
    need_row,
    open_table,
    scores,
    scores_planes,
)
from .vecmath import FAST


@njit(cache=True, error_model="numpy", inline="always", _nrt=False)
def inverse_cdf(table, plane, r, scale, u):
    """The first token ``v`` of row ``r`` with ``u < sum_{w <= v} p_w``, ``p_w = table[plane, w, r] * scale``.

    With ``plane = PROB`` and ``scale = 1`` these are the table's probabilities; with
    ``plane = EXPS`` and ``scale = 1 / z_r`` the same products the table would hold. The CDF is
    non-decreasing, so the first such token is the number of tokens whose cumulative probability
    is ``<= u``, counted without a data-dependent branch; if the CDF sums to slightly less than
    ``u`` (rounding), the last token of positive probability. The table is indexed in place.
    """
    c = 0.0
    below = 0
    last = 0
    for v in range(table.shape[1]):
        p = table[plane, v, r] * scale
        last = v if p > 0.0 else last
        c += p
        below += u >= c
    return below if below < table.shape[1] else last


@njit(cache=True, error_model="numpy", _nrt=False)
def sample_token(table, plane, r, scale, state):
    """Draw a token of row ``r`` by :func:`inverse_cdf` at one uniform number from ``state``."""
    return inverse_cdf(table, plane, r, scale, uniform(state))


@njit(cache=True, error_model="numpy", _nrt=False)
def sample_response(W, x, features, table, have, state, y_out):
    """Sample ``y ~ pi_W(. | x)`` token by token into ``y_out`` (length ``N``), one uniform per token.

    The generator state stays in registers for the whole response (the same stream as
    :func:`sample_token` per token).
    """
    k = W.shape[1]
    open_table(W, x, features, table, have)
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    if features == POSITION:  # rows known in advance: a loop without fills (about 0.2 us faster)
        for i in range(y_out.shape[0]):
            u, s0, s1, s2, s3 = uniform_next(s0, s1, s2, s3)
            y_out[i] = inverse_cdf(table, PROB, i, 1.0, u)
    else:
        prev = k
        for i in range(y_out.shape[0]):
            b = block_index(features, i, prev, k)
            ensure_row(W, x, b, table, have)
            u, s0, s1, s2, s3 = uniform_next(s0, s1, s2, s3)
            prev = inverse_cdf(table, PROB, b, 1.0, u)
            y_out[i] = prev
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3


ROWS_AT_ONCE = 8  # rows of a position table that sample_until_mistake fills together: one AVX-512 vector


@njit(cache=True, error_model="numpy", _nrt=False)
def sample_until_mistake(W, x, y_star, features, table, have, state, y_out, paused):
    """Sample ``y ~ pi_W(. | x)`` token by token into ``y_out`` until its first mistake against
    ``y_star``; returns that mistake's index ``f`` (``N`` if none).

    The generator advances past all ``N`` uniforms of the response, as :func:`sample_response`
    does, and the tokens ``y_0 .. y_f`` are the same as there. The later tokens are not drawn: no
    reward, query count or mistake count depends on them, and only an update that gives a wrong
    response a nonzero advantage (a baseline) reads them; :func:`complete_response` draws them
    from the state left in ``paused`` (the state after token ``f``). ``markov`` rows after the
    mistake are not filled.
    """
    N = y_out.shape[0]
    k = W.shape[1]
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    f = N
    if features == POSITION:  # rows known in advance: fills only between chunks of tokens
        i0 = 0
        while i0 < N and f == N:
            i1 = min(i0 + ROWS_AT_ONCE, N)
            if not have[i0]:
                fill_rows(W, x, table, have, i0, i1)
            for i in range(i0, i1):
                u, s0, s1, s2, s3 = uniform_next(s0, s1, s2, s3)
                y_out[i] = inverse_cdf(table, PROB, i, 1.0, u)
                if y_out[i] != y_star[i]:
                    f = i
                    break
            i0 = i1
    else:
        prev = k
        for i in range(N):
            b = block_index(features, i, prev, k)
            ensure_row(W, x, b, table, have)
            u, s0, s1, s2, s3 = uniform_next(s0, s1, s2, s3)
            prev = inverse_cdf(table, PROB, b, 1.0, u)
            y_out[i] = prev
            if prev != y_star[i]:
                f = i
                break
    paused[0], paused[1], paused[2], paused[3] = s0, s1, s2, s3
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3
    discard(state, N - 1 - f)
    return f


@njit(cache=True, error_model="numpy", _nrt=False)
def complete_response(W, x, features, table, have, paused, y_out, f, n):
    """Draw the tokens ``y_{f+1} .. y_{n-1}`` that :func:`sample_until_mistake` left out (first
    mistake ``f``) from the state it left in ``paused``: the tokens :func:`sample_response` draws.
    Rows not yet in the table are filled (``position``: by chunks, as there)."""
    k = W.shape[1]
    N = y_out.shape[0]
    s0, s1, s2, s3 = paused[0], paused[1], paused[2], paused[3]
    prev = y_out[f]
    for i in range(f + 1, n):
        b = i
        if features != POSITION:
            b = block_index(features, i, prev, k)
            ensure_row(W, x, b, table, have)
        elif not have[i]:
            i0 = i // ROWS_AT_ONCE * ROWS_AT_ONCE
            fill_rows(W, x, table, have, i0, min(i0 + ROWS_AT_ONCE, N))
        u, s0, s1, s2, s3 = uniform_next(s0, s1, s2, s3)
        prev = inverse_cdf(table, PROB, b, 1.0, u)
        y_out[i] = prev


@njit(cache=True, inline="always", _nrt=False)
def argmax_row(row):
    """Most likely token of a row (ties to the smallest token)."""
    best = 0
    for v in range(1, row.shape[0]):
        if row[v] > row[best]:
            best = v
    return best


@njit(cache=True, fastmath=FAST, error_model="numpy", _nrt=False)
def greedy_planes(table, y_out, with_margin):
    """Greedy tokens and margin of centred logits (after :func:`center_planes`), row ``r`` = position ``r``.

    ``y_r`` is the first token with ``D[v, r] = 0`` and the margin is
    ``min_r -max_{v != y_r} D[v, r]``, both from branch-free passes over rows (masked stores).
    Without ``with_margin`` only the tokens are formed and ``inf`` is returned.
    """
    k, R = table.shape[1], table.shape[2]
    best = table[BITS, 0]
    first_max_planes(table, best)
    if not with_margin:
        for r in range(R):
            y_out[r] = int(best[r])
        return np.inf
    for r in range(R):
        table[STATS, 1, r] = -np.inf
    for v in range(k):
        fv = float(v)
        for r in range(R):
            if table[DIFF, v, r] > table[STATS, 1, r] and best[r] != fv:
                table[STATS, 1, r] = table[DIFF, v, r]
    margin = np.inf
    for r in range(R):
        margin = min(margin, -table[STATS, 1, r])
        y_out[r] = int(best[r])
    return margin


@njit(cache=True, error_model="numpy", _nrt=False)
def greedy_decode(W, x, features, work, y_out, with_margin):
    """Greedy decoding ``y_i = argmax_v s_i(v)`` along its own path; returns its margin.

    The margin is ``min_i (s_i(y_i) - max_{v != y_i} s_i(v))`` (docs/design.md, "Tasks"), from raw logits
    (no softmax needed); ``work`` is a table for ``W`` (:func:`new_table`) used as scratch. Ties
    go to the smallest token (margin 0). Without ``with_margin`` only the tokens are formed and
    ``inf`` is returned. This is how the teacher labels contexts. With
    ``position`` features all positions are decoded at once, without data-dependent branches
    (:func:`greedy_planes`).
    """
    k = W.shape[1]
    if features == POSITION:
        scores_planes(W, x, work)
        center_planes(work)
        return greedy_planes(work, y_out, with_margin)
    buf = work[DIFF, :, 0]
    prev = k
    margin = np.inf
    for i in range(y_out.shape[0]):
        b = block_index(features, i, prev, k)
        scores(W, x, b, buf)
        best = argmax_row(buf)
        if with_margin:
            second = -np.inf
            for v in range(k):
                if v != best and buf[v] > second:
                    second = buf[v]
            margin = min(margin, buf[best] - second)
        y_out[i] = best
        prev = best
    return margin


@njit(cache=True, error_model="numpy", _nrt=False)
def greedy_matches(W, x, y_star, features, table, have):
    """True when greedy decoding of ``W`` reproduces ``y_star`` (first-index tie rule)."""
    k = W.shape[1]
    open_table(W, x, features, table, have)
    prev = k
    for i in range(y_star.shape[0]):
        b = block_index(features, i, prev, k)
        need_row(W, x, features, b, table, have)
        if argmax_row(table[LOGP, :, b]) != y_star[i]:
            return False
        prev = y_star[i]
    return True
