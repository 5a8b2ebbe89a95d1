"""Policy-gradient updates of the model (docs/design.md, "The model"): score coefficients
``coef[b, v] += c (1[v = y_i] - pi_b(v))`` accumulated from a table, then ``W[b, v, :] += coef[b, v] x``.
"""

from __future__ import annotations

from numba import njit

from ..codes import POSITION
from .tables import PROB, block_index, ensure_row, open_table
from .vecmath import FAST


@njit(cache=True, error_model="numpy", inline="always", _nrt=False)
def add_score_row(table, b, y, c, coef, touched):
    """``coef[b, v] += c (1[v = y] - pi_b(v))``: ``c`` times the score of token ``y`` in row ``b``."""
    for v in range(table.shape[1]):
        coef[b, v] -= c * table[PROB, v, b]
    coef[b, y] += c
    touched[b] = True


@njit(cache=True, error_model="numpy", _nrt=False)
def accumulate_score(W, x, y, weights, features, table, have, coef, touched):
    """Add ``sum_i weights[i] * grad log pi_W(y_i | x, y_<i)`` to a coefficient table.

    ``grad_{W[b_i, v]} log pi_W(y_i | x, y_<i) = (1[v = y_i] - pi_W(v | x, y_<i)) x``, so the
    gradient is stored as ``coef[b, v]`` (times ``x``); :func:`apply_update` adds it to ``W``.
    Probabilities are those of the current table, i.e. of the weights before the update.
    """
    k = W.shape[1]
    open_table(W, x, features, table, have)
    if features == POSITION:  # rows known in advance: a loop without fills
        for i in range(y.shape[0]):
            if weights[i] != 0.0:
                add_score_row(table, i, y[i], weights[i], coef, touched)
        return
    prev = k
    for i in range(y.shape[0]):
        c = weights[i]
        b = block_index(features, i, prev, k)
        prev = y[i]
        if c == 0.0:
            continue
        ensure_row(W, x, b, table, have)
        add_score_row(table, b, y[i], c, coef, touched)


@njit(cache=True, fastmath=FAST, error_model="numpy", _nrt=False)
def apply_update(W, x, coef, touched, backwards=True):
    """``W[b, v, :] += coef[b, v] * x`` on touched blocks; clears ``coef`` and ``touched``.

    Block by block, from the last block to the first if ``backwards`` (by default: a fill that
    went forwards ended there, and the next fill, forwards, then finds its first blocks in L1).
    """
    B, k, d = W.shape
    for i in range(B):
        b = B - 1 - i if backwards else i
        if not touched[b]:
            continue
        for v in range(k):
            c = coef[b, v]
            if c != 0.0:
                for j in range(d):
                    W[b, v, j] += c * x[j]
            coef[b, v] = 0.0
        touched[b] = False
