"""Exact event-driven ``pg`` on a training pool (docs/design.md, "Event-driven pg").

On a pool of ``n`` contexts a ``pg`` step picks context ``i`` uniformly and samples ``G``
responses. Whether ``W`` moves depends only on the responses' *classes*: with ORM whether each
is correct (2 classes), with PRM its first mistake ``f`` (``N + 1`` classes, ``f = N`` when
correct). Class ``c`` of context ``i`` has probability ``pi_ic`` (from ``log pi_W(y*_im | x_i,
y*_<m)`` along the correct response), and the step moves ``W`` with probability

* ``q_i = 1 - pi_i0^G`` without a baseline (some response is rewarded: class 0 is "wrong" for
  ORM and "first token wrong" for PRM);
* ``q_i = 1 - sum_c pi_ic^G`` with ``mean``, ``rloo`` or ``grpo`` (the classes are not all
  equal; equal rewards give zero advantages).

While ``W`` does not move these stay fixed, so the steps up to the next move are i.i.d.: their
number is geometric with parameter ``q = mean_i q_i``, the moving step's context is ``i`` with
probability ``q_i / (n q)``, and its classes and responses are drawn conditioned on moving. A
skipped step costs what a step costs (a context, ``G`` responses and ``G N`` tokens, ``G`` ORM
queries) and, all its responses being of one class ``c``, ``G`` mistakes unless ``c`` is correct
and, with PRM, ``G min(c + 1, N)`` queries. Without a baseline that class is 0; with one, the
classes of ``S`` skipped steps are ``Multinomial(S, sum_i pi_ic^G / sum_i (1 - q_i))``.

Everything here is exact in distribution; :func:`fastpg.kernels.advance.advance_run` decides when to
use it (when moves are rare) and when to step through.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..codes import C_CONTEXTS, C_MISTAKES, C_ORM, C_PRM, C_SEQUENCES, C_STEPS, C_TOKENS, NONE, ORM
from .rng import uniform
from .sampling import sample_token
from .steps import count_samples
from .tables import PROB, block_index, need_row, open_table, reset_table, token_logliks
from .variates import categorical, categorical_counts, log1mexp

# the persistent event state of a run (float64[EVENT_SLOTS], kept across calls so that results do
# not depend on how a run is cut into calls); EV_HELD belongs to the step loop that holds updates
# back (fastpg.kernels.advance.advance_held): how many it holds
EV_PENDING, EV_DEFERRED, EV_STEP_THROUGH, EV_HELD = 0, 1, 2, 3
EVENT_SLOTS = 4


def new_event_state() -> np.ndarray:
    """No pending move, nothing deferred, no steps to take one by one."""
    state = np.zeros(EVENT_SLOTS)
    state[EV_PENDING] = -1.0
    return state


@njit(cache=True, error_model="numpy", _nrt=False)
def pool_classes(W, pool_x, pool_y, features, table, have, lp, logf):
    """``lp[i, m] = log pi_W(y*_im | x_i, y*_i<m)`` and ``logf[i, m] = log P(f = m)`` for every pool
    context: ``P(f = m) = pi(y*_<m) (1 - pi(y*_m | y*_<m))`` for ``m < N``, ``P(f = N) = pi(y*)``."""
    N = pool_y.shape[1]
    for i in range(pool_x.shape[0]):
        reset_table(have)
        token_logliks(W, pool_x[i], pool_y[i], features, table, have, lp[i])
        prefix = 0.0
        for m in range(N):
            logf[i, m] = prefix + log1mexp(lp[i, m])
            prefix += lp[i, m]
        logf[i, N] = prefix


@njit(cache=True, error_model="numpy", inline="always", _nrt=False)
def class_logprob(logf_row, reward, c):
    """``log pi_c``: ORM classes are 0 (wrong) and 1 (correct), PRM classes are ``f``."""
    N = logf_row.shape[0] - 1
    if reward == ORM:
        return logf_row[N] if c == 1 else log1mexp(logf_row[N])
    return logf_row[c]


@njit(cache=True, error_model="numpy", inline="always", _nrt=False)
def n_classes(reward, N):
    return 2 if reward == ORM else N + 1


@njit(cache=True, error_model="numpy", _nrt=False)
def move_probability(logf_row, reward, G, baseline):
    """``q_i``: the probability that a step on this context moves ``W`` (see the module docstring),
    formed so that ``q`` near 0 and ``pi`` near 1 keep their precision."""
    if baseline == NONE:
        return -math.expm1(G * class_logprob(logf_row, reward, 0))
    K = n_classes(reward, logf_row.shape[0] - 1)
    top, best = -np.inf, 0
    for c in range(K):
        lc = class_logprob(logf_row, reward, c)
        if lc > top:
            top, best = lc, c
    others = 0.0
    others_g = 0.0
    for c in range(K):
        if c != best:
            lc = class_logprob(logf_row, reward, c)
            others += math.exp(lc)
            others_g += math.exp(G * lc)
    log_top = math.log1p(-min(others, 1.0)) if others < 0.5 else top
    return max(0.0, -math.expm1(G * log_top) - others_g)


@njit(cache=True, error_model="numpy", _nrt=False)
def pool_move_probabilities(logf, reward, G, baseline, q):
    """``q[i]`` for every pool context; returns their mean."""
    total = 0.0
    for i in range(logf.shape[0]):
        q[i] = move_probability(logf[i], reward, G, baseline)
        total += q[i]
    return total / logf.shape[0]


@njit(cache=True, error_model="numpy", _nrt=False)
def count_skipped(counters, n, reward, G, N, baseline):
    """Count ``n`` skipped steps: what every one costs, and (without a baseline) their one class 0."""
    counters[C_STEPS] += n
    counters[C_CONTEXTS] += n
    counters[C_SEQUENCES] += n * G
    counters[C_TOKENS] += n * G * N
    if reward == ORM:
        counters[C_ORM] += n * G
    if baseline == NONE:
        counters[C_MISTAKES] += n * G
        if reward != ORM:
            counters[C_PRM] += n * G  # every response stopped at its first token: one query each


@njit(cache=True, error_model="numpy", _nrt=False)
def count_deferred(state, counters, n, logf, reward, G, baseline, weights, counts):
    """With a baseline: draw the classes of ``n`` skipped steps and count their mistakes and PRM
    queries. Class ``c`` has weight ``sum_i pi_ic^G`` (all ``G`` responses of class ``c``)."""
    N = logf.shape[1] - 1
    K = n_classes(reward, N)
    for c in range(K):
        weights[c] = 0.0
        for i in range(logf.shape[0]):
            weights[c] += math.exp(G * class_logprob(logf[i], reward, c))
    categorical_counts(state, n, weights[:K], counts[:K])
    count_class_costs(counters, counts, reward, G, N)


@njit(cache=True, error_model="numpy", _nrt=False)
def count_class_costs(counters, counts, reward, G, N):
    """The mistakes and PRM queries of ``counts[c]`` groups whose ``G`` responses are all of class ``c``
    (a wrong class: ``G`` mistakes each; PRM: ``min(c + 1, N)`` prefix queries per response)."""
    for c in range(n_classes(reward, N)):
        wrong = c == 0 if reward == ORM else c < N
        if wrong:
            counters[C_MISTAKES] += counts[c] * G
        if reward != ORM:
            counters[C_PRM] += counts[c] * G * min(c + 1, N)


@njit(cache=True, error_model="numpy", _nrt=False)
def _log_choose(n, r):
    return math.lgamma(n + 1.0) - math.lgamma(r + 1.0) - math.lgamma(n - r + 1.0)


@njit(cache=True, error_model="numpy", _nrt=False)
def moving_classes(state, logf_row, reward, G, baseline, classes, work):
    """Classes of the ``G`` responses of a step on this context, conditioned on the step moving ``W``.

    Without a baseline: not all of class 0. With one: not all equal, drawn as the class ``a`` of
    the first response (probability ``pi_a (1 - pi_a^(G-1)) / q``), then the others conditioned on
    not all being ``a``. "``n`` responses not all of class ``a``": the number ``K >= 1`` that
    differ is a binomial conditioned on ``K >= 1``, they sit at ``K`` positions chosen uniformly
    (selection sampling), and each has class ``c != a`` with probability ``pi_c / (1 - pi_a)``.
    """
    N = logf_row.shape[0] - 1
    K = n_classes(reward, N)
    start = 0
    a = 0
    if baseline != NONE:
        for c in range(K):
            lc = class_logprob(logf_row, reward, c)
            rest = -math.expm1((G - 1) * lc)
            work[c] = lc + math.log(rest) if rest > 0.0 else -np.inf
        a = categorical(state, work, K)
        classes[0] = a
        start = 1
    n = G - start
    log_a = class_logprob(logf_row, reward, a)
    log_not_a = log1mexp(log_a)
    for j in range(n):
        differ = j + 1.0
        work[j] = _log_choose(float(n), differ) + differ * log_not_a + (n - differ) * log_a
    n_differ = 1 + categorical(state, work, n)
    for c in range(K):
        work[c] = class_logprob(logf_row, reward, c) if c != a else -np.inf
    need = n_differ
    for j in range(n):  # selection sampling: position j differs with probability need / (positions left)
        if need > 0 and uniform(state) * (n - j) < need:
            classes[start + j] = categorical(state, work, K)
            need -= 1
        else:
            classes[start + j] = a


@njit(cache=True, error_model="numpy", _nrt=False)
def response_of_class(W, x, y_star, features, table, have, state, c, reward, logf_row, y_out):
    """A response ``y ~ pi_W(. | x)`` conditioned on its class; returns its first mistake ``f``.

    ORM class 1 and PRM class ``N`` are ``y*``. ORM class 0 first draws ``f < N`` with probability
    ``P(f = m) / (1 - pi(y*))``. Given ``f = m < N``: ``y_<m = y*_<m``, ``y_m`` is drawn from
    ``pi(. | x, y*_<m)`` without ``y*_m``, and the tokens after it are sampled as usual.
    """
    N = y_star.shape[0]
    k = W.shape[1]
    if reward == ORM:
        if c == 1:
            f = N
        else:
            f = categorical(state, logf_row, N)  # logf_row[:N]: the wrong first-mistake positions
    else:
        f = c
    for i in range(min(f, N)):
        y_out[i] = y_star[i]
    if f == N:
        return N
    open_table(W, x, features, table, have)
    prev = y_star[f - 1] if f > 0 else k
    for i in range(f, N):
        b = block_index(features, i, prev, k)
        need_row(W, x, features, b, table, have)
        if i == f:  # a wrong token: inverse CDF over the tokens other than y*_f
            total = 0.0
            for v in range(k):
                if v != y_star[f]:
                    total += table[PROB, v, b]
            u = uniform(state) * total
            acc = 0.0
            tok = -1
            for v in range(k):
                if v != y_star[f] and table[PROB, v, b] > 0.0:
                    tok = v
                    acc += table[PROB, v, b]
                    if u < acc:
                        break
            if tok < 0:  # pi(y*_f) = 1 to double precision: any other token (the class had probability 0)
                tok = (y_star[f] + 1) % k
            y_out[i] = tok
        else:
            y_out[i] = sample_token(table, PROB, b, 1.0, state)
        prev = y_out[i]
    return f


@njit(cache=True, error_model="numpy", _nrt=False)
def moving_step(W, pool_x, pool_y, logf, q, p, state, counters, ws, classes, work):
    """Draw the context and the ``G`` responses of a step conditioned on moving ``W``, count it like
    any step (:func:`fastpg.kernels.steps.count_samples`); the caller then applies its update. Returns the
    context's index and the longest rewarded prefix."""
    n = pool_x.shape[0]
    for i in range(n):
        work[i] = math.log(q[i]) if q[i] > 0.0 else -np.inf
    i = categorical(state, work, n)
    x, y_star = pool_x[i], pool_y[i]
    reset_table(ws.have)
    moving_classes(state, logf[i], p.reward, p.G, p.baseline, classes, work)
    for j in range(p.G):
        ws.f[j] = response_of_class(W, x, y_star, p.features, ws.table, ws.have, state, classes[j], p.reward,
                                    logf[i], ws.Ys[j])
    counters[C_STEPS] += 1.0
    counters[C_CONTEXTS] += 1.0
    return i, count_samples(p, ws, y_star.shape[0], counters)
