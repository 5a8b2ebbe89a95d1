"""Compiled kernels drawing contexts and their teacher labels (docs/design.md, "Tasks").

A context distribution is given by cluster centres ``mu[C, d]`` and a cumulative
distribution ``cdf[C]`` over clusters: ``x = normalise(mu_c + sigma g / sqrt(d))``
with ``g`` standard normal. ``C = 0`` stands for the uniform distribution on the
sphere (``x = normalise(g)``). Contexts are conditioned on the teacher margin
``m(x) >= gamma`` by rejection.
"""

from __future__ import annotations

import math

from numba import njit

from .lanes import tile_logits
from .rng import discard, fill_normal, uniform
from .sampling import greedy_decode
from .tables import BITS, DIFF, greedy_rows, new_table


@njit(cache=True, _nrt=False)
def draw_context(state, centres, cdf, sigma, x_out):
    """Draw one context into ``x_out`` (unit norm) from the run's stream."""
    d = x_out.shape[0]
    C = centres.shape[0]
    if C == 0:
        fill_normal(state, x_out)
    else:
        u = uniform(state)
        c = 0
        while c < C - 1 and u >= cdf[c]:
            c += 1
        if sigma > 0.0:
            fill_normal(state, x_out)
            scale = sigma / math.sqrt(d)
            for j in range(d):
                x_out[j] = centres[c, j] + scale * x_out[j]
        else:
            for j in range(d):
                x_out[j] = centres[c, j]
    norm = 0.0
    for j in range(d):
        norm += x_out[j] * x_out[j]
    norm = math.sqrt(norm)
    if norm == 0.0:  # measure zero: fall back to the first axis
        x_out[0] = 1.0
        norm = 1.0
    for j in range(d):
        x_out[j] /= norm


@njit(cache=True, _nrt=False)
def draw_labelled_context(state, W_star, features, centres, cdf, sigma, gamma, max_tries, work, x_out, y_out,
                          with_margin):
    """Draw ``x`` conditioned on ``m(x) >= gamma``, label it ``y*(x)``; return its margin.

    ``work`` is a table for ``W_star`` (:func:`fastpg.kernels.tables.new_table`) used as scratch. Without
    ``with_margin`` the margin is formed only when ``gamma > 0`` (to test it); otherwise every
    context is accepted and ``inf`` is returned. Returns ``-1.0`` when ``max_tries`` draws were
    all rejected (the caller reports it).
    """
    for _ in range(max_tries):
        draw_context(state, centres, cdf, sigma, x_out)
        m = greedy_decode(W_star, x_out, features, work, y_out, with_margin or gamma > 0.0)
        if m >= gamma:
            return m
    return -1.0


@njit(cache=True)
def draw_labelled_contexts(
    state, W_star, features, centres, cdf, sigma, gamma, max_tries, X_out, Y_out, margin_out
):
    """Fill ``X_out[n, d]``, ``Y_out[n, N]``, ``margin_out[n]``; returns False if rejection failed."""
    work = new_table(W_star.shape[0], W_star.shape[1])[0]
    for n in range(X_out.shape[0]):
        m = draw_labelled_context(
            state, W_star, features, centres, cdf, sigma, gamma, max_tries, work, X_out[n], Y_out[n], True
        )
        if m < 0.0:
            return False
        margin_out[n] = m
    return True


@njit(cache=True, _nrt=False)
def draw_labelled_tile(state, W_star, centres, cdf, sigma, m, gap, Xt, XT, Y_out, states_out, work):
    """Draw the contexts of the next ``m`` steps ahead of time and label them together (``position`` features).

    Step ``i`` of a step loop draws its context and then takes ``gap`` draws of its own (sampling).
    Here context ``i`` is drawn into ``Xt[i]``, the generator state at which step ``i``'s own draws
    begin is saved in ``states_out[i]``, and those ``gap`` draws are skipped before context ``i + 1``,
    so a step that restores ``states_out[i]`` and takes exactly ``gap`` draws consumes the same stream
    as without drawing ahead, and ``state`` ends where the ``m``-th step leaves it. No margin
    condition is applied (``gamma <= 0`` accepts every context).

    The labels ``Y_out[i, b] = argmax_v W*[b, v, :] . x_i`` (the first maximiser,
    :func:`fastpg.kernels.tables.greedy_rows`) come from the logits of the whole tile with the contexts in
    SIMD lanes (:func:`fastpg.kernels.lanes.tile_logits`, the tile copied into the columns of ``XT``, which
    the caller may reuse for the model's own logits). ``Xt``, ``Y_out`` and ``XT``'s columns number
    ``T >= m``, a multiple of ``LANES``
    (``Xt[m:]`` is zeroed, ``Y_out[m:]`` gets the labels of zero contexts), and ``work`` is a
    table over ``T B`` rows. A label differs from :func:`fastpg.kernels.sampling.greedy_decode`'s only where
    the top two logits are equal to rounding.
    """
    for i in range(m):
        draw_context(state, centres, cdf, sigma, Xt[i])
        for j in range(4):  # element by element: a slice assignment may allocate a temporary
            states_out[i, j] = state[j]
        discard(state, gap)
    Xt[m:, :] = 0.0
    tile_logits(W_star, Xt, 0, XT, work[DIFF])
    greedy_rows(work)
    best = work[BITS, 0]
    T = Xt.shape[0]
    for b in range(Y_out.shape[1]):  # row b T + i of the tile is position b of context i
        for i in range(T):
            Y_out[i, b] = int(best[b * T + i])
