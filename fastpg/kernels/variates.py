"""Compiled random variates beyond uniforms and normals, drawn from a run's own xoshiro stream
(docs/design.md, "Event-driven pg"): the truncated geometric of every skip-ahead, and the
gamma, beta and binomial variates that count what many skipped steps did.

All are exact methods (exact up to floating-point rounding): inversion for the geometric,
Marsaglia and Tsang's rejection for the gamma, a ratio of gammas for the beta, and for the
binomial the order-statistic recursion (Devroye, *Non-Uniform Random Variate Generation*,
1986, X.4): the ``a``-th smallest of ``n`` uniforms is ``Beta(a, n + 1 - a)``, which splits
``n`` trials into two halves in one step; below ``SMALL_N`` trials, waiting times between
successes are summed.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .rng import normal, uniform, uniform_pos

SMALL_N = 64.0  # below this many trials (or expected successes) the binomial sums waiting times


@njit(cache=True, error_model="numpy", _nrt=False)
def log1mexp(logp):
    """``log(1 - exp(logp))`` for ``logp <= 0``, accurate for ``p`` near 0 and near 1."""
    if logp > -0.6931471805599453:
        return math.log(-math.expm1(logp))
    return math.log1p(-math.exp(logp))


@njit(cache=True, error_model="numpy", _nrt=False)
def failures_before_success(logp, M, u):
    """Failures before the first success of Bernoulli(``p = exp(logp)``) trials, truncated at ``M``.

    Exact skip-ahead (docs/design.md, "Algorithms"): ``F = floor(log u / log(1 - p))`` with ``u`` uniform on ``(0, 1]``
    has ``P(F >= n) = (1 - p)^n``. Returns ``M`` when ``F >= M`` (the budget ran out, no success).
    When ``p`` is so small that ``log(1 - p)`` rounds to 0, ``-log(1 - p) = p`` to double precision and
    ``F = -log(u) / p`` is formed in log space so that nothing overflows.
    """
    if logp >= 0.0:
        return 0.0
    e = -math.log(u)
    if e == 0.0:
        return 0.0
    l1m = log1mexp(logp)
    if l1m == 0.0 or logp < -700.0:
        t = math.log(e) - logp
        if t >= math.log(M):
            return M
        f = np.floor(math.exp(t))  # float floor: math.floor would overflow int64
    else:
        f = np.floor(e / -l1m)
    if f >= M:
        return M
    return f


@njit(cache=True, error_model="numpy", _nrt=False)
def _log1p_minus(w):
    """``log(1 + w) - w`` without cancellation for small ``w``."""
    if abs(w) < 1e-4:
        return w * w * (-0.5 + w * (1.0 / 3.0 - 0.25 * w))
    return math.log1p(w) - w


@njit(cache=True, error_model="numpy", _nrt=False)
def gamma_variate(state, a):
    """``Gamma(a, 1)`` for ``a >= 1`` by Marsaglia and Tsang's rejection (2000).

    With ``d = a - 1/3``, ``c = 1/sqrt(9 d)``, ``x`` standard normal and ``v = (1 + c x)^3``,
    ``d v`` is accepted when ``log u < x^2/2 + d (1 - v + log v)``. The exponent is formed as
    ``d (log(1 + w) - w)`` with ``w = v - 1``, which keeps it accurate for ``a`` as large as 1e15.
    """
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = normal(state)
        cx = c * x
        if cx <= -1.0:
            continue
        w = cx * (3.0 + cx * (3.0 + cx))  # (1 + cx)^3 - 1
        u = uniform_pos(state)
        x2 = x * x
        if u < 1.0 - 0.0331 * x2 * x2:
            return d * (1.0 + w)
        if math.log(u) < 0.5 * x2 + d * _log1p_minus(w):
            return d * (1.0 + w)


@njit(cache=True, error_model="numpy", _nrt=False)
def beta_variate(state, a, b):
    """``Beta(a, b) = G_a / (G_a + G_b)`` for ``a, b >= 1``."""
    ga = gamma_variate(state, a)
    gb = gamma_variate(state, b)
    return ga / (ga + gb)


@njit(cache=True, error_model="numpy", _nrt=False)
def _binomial_small(state, n, p):
    """``Binomial(n, p)`` for ``p <= 1/2`` by summing geometric waiting times: O(successes)."""
    if p <= 0.0 or n <= 0.0:
        return 0.0
    logp = math.log(p)
    count = 0.0
    used = 0.0
    while True:
        gap = failures_before_success(logp, n - used, uniform_pos(state))
        used += gap + 1.0
        if used > n:
            return count
        count += 1.0


@njit(cache=True, error_model="numpy", _nrt=False)
def binomial_variate(state, n, p):
    """``Binomial(n, p)`` (``n`` a whole number held in a float, up to 2^53).

    While ``n`` and ``n p`` are large, the ``a``-th smallest of the ``n`` uniforms,
    ``X ~ Beta(a, n + 1 - a)`` with ``a = 1 + floor(n/2)``, decides one half: if ``X >= p`` the
    successes are among the ``a - 1`` uniforms below ``X``, each below ``p`` with probability
    ``p / X``; otherwise the ``a`` smallest are all successes and the other ``n - a`` succeed with
    probability ``(p - X) / (1 - X)``. The rest is summed by waiting times (with ``p`` or
    ``1 - p``, whichever is smaller).
    """
    count = 0.0
    flip = False
    if p > 0.5:
        p = 1.0 - p
        flip = True
    total = n
    while n > SMALL_N and n * p > SMALL_N:
        a = 1.0 + np.floor(n / 2.0)
        x = beta_variate(state, a, n + 1.0 - a)
        if x >= p:
            n = a - 1.0
            p = p / x
        else:
            count += a
            n = n - a
            p = (p - x) / (1.0 - x)
    if p > 0.5:
        count += n - _binomial_small(state, n, 1.0 - p)
    else:
        count += _binomial_small(state, n, p)
    return total - count if flip else count


@njit(cache=True, error_model="numpy", _nrt=False)
def categorical_counts(state, n, weights, out):
    """``out ~ Multinomial(n, weights / sum(weights))``, one binomial per category."""
    rest = 0.0
    for c in range(weights.shape[0]):
        rest += weights[c]
    left = n
    for c in range(weights.shape[0]):
        out[c] = 0.0
        if left <= 0.0 or rest <= 0.0 or weights[c] <= 0.0:
            rest -= weights[c]
            continue
        share = min(1.0, weights[c] / rest)
        out[c] = left if share >= 1.0 else binomial_variate(state, left, share)
        left -= out[c]
        rest -= weights[c]
    if left > 0.0:  # rounding left a few trials unassigned: they go to the last category with weight
        for c in range(weights.shape[0] - 1, -1, -1):
            if weights[c] > 0.0:
                out[c] += left
                break


@njit(cache=True, error_model="numpy", _nrt=False)
def categorical(state, logw, n):
    """An index ``c < n`` drawn with probability proportional to ``exp(logw[c])`` (inversion)."""
    top = -np.inf
    for c in range(n):
        top = max(top, logw[c])
    total = 0.0
    for c in range(n):
        total += math.exp(logw[c] - top)
    u = uniform(state) * total
    acc = 0.0
    last = 0
    for c in range(n):
        w = math.exp(logw[c] - top)
        if w > 0.0:
            last = c
        acc += w
        if u < acc:
            return c
    return last
