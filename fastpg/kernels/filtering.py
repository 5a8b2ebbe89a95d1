"""DAPO's dynamic sampling: ``pg`` steps that discard uninformative groups (docs/design.md,
"Filtering uninformative groups"; SPEC 14.5).

With a group baseline (``mean``, ``rloo``, ``grpo``) a group of ``G`` responses whose rewards are all
equal has every advantage 0 and cannot move ``W``. A filtered step samples groups for its context
until one has mixed rewards, or until ``p.M`` groups are spent; every group is sampled and queried,
so every group is counted, and the discarded ones also in ``groups_discarded``.

"All rewards equal" is "all first mistakes in one class" (ORM: correct or not; PRM: the first
mistake ``f`` itself), the event that :mod:`fastpg.kernels.events` calls "the step does not move"
(:func:`fastpg.kernels.events.move_probability` gives its complement ``q``). So the number of
discarded groups is geometric, ``P(D >= n) = (1 - q)^n`` (for ORM ``q = 1 - (1 - p)^G - p^G``), and
with ``p.skip`` it is drawn at once (:func:`fastpg.kernels.variates.failures_before_success`, as ``rs``
does), the discarded groups' classes as one multinomial over ``pi_c^G`` (what they cost), and the
kept group's responses conditioned on being mixed (:func:`fastpg.kernels.events.moving_classes`,
:func:`fastpg.kernels.events.response_of_class`). Without ``p.skip`` every group is sampled.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..codes import C_DISCARDED, C_ORM, C_SEQUENCES, C_TOKENS, ORM
from .events import class_logprob, count_class_costs, move_probability, moving_classes, n_classes, response_of_class
from .rng import uniform_pos
from .sampling import complete_response, sample_until_mistake
from .steps import count_samples, pg_learn
from .tables import token_logliks
from .variates import categorical_counts, failures_before_success, log1mexp


@njit(cache=True)
def new_filter_work(N, G):
    """Scratch of a filtered step: ``lp[N]`` (the context's token log-likelihoods along ``y*``),
    ``logf[N + 1]`` (``log P(f = m)``), ``weights``/``counts[N + 2]`` (classes of discarded groups),
    ``classes[G]`` and ``work[max(N + 2, G + 1)]``."""
    return (np.empty(N), np.empty(N + 1), np.empty(N + 2), np.empty(N + 2), np.empty(G, dtype=np.int64),
            np.empty(max(N + 2, G + 1)))


@njit(cache=True, error_model="numpy", _nrt=False)
def count_discarded(state, counters, n, logf, reward, G, weights, counts):
    """Count ``n`` discarded groups of one context: each is all of one class ``c``, drawn with weight
    ``pi_c^G``; every response is sampled whole (``N`` tokens) and queried (ORM: once; PRM:
    ``min(c + 1, N)`` prefixes), a wrong one is a mistake."""
    if n <= 0.0:
        return
    N = logf.shape[0] - 1
    K = n_classes(reward, N)
    for c in range(K):
        weights[c] = math.exp(G * class_logprob(logf, reward, c))
    categorical_counts(state, n, weights[:K], counts[:K])
    counters[C_DISCARDED] += n
    counters[C_SEQUENCES] += n * G
    counters[C_TOKENS] += n * G * N
    if reward == ORM:
        counters[C_ORM] += n * G
    count_class_costs(counters, counts, reward, G, N)


@njit(cache=True, error_model="numpy", _nrt=False)
def mixed(f, G, N, reward):
    """Whether the first mistakes ``f[:G]`` of a group fall in more than one class (rewards not all equal)."""
    for j in range(1, G):
        if reward == ORM:
            if (f[j] == N) != (f[0] == N):
                return True
        elif f[j] != f[0]:
            return True
    return False


@njit(cache=True, error_model="numpy", _nrt=False)
def filtered_pg_step(W, x, y_star, p, state, t, counters, ws, fw, apply):
    """One ``pg`` step with dynamic sampling on context ``x``; True if ``W`` moved (``apply``: as in
    :func:`fastpg.kernels.steps.pg_learn`; ``fw``: :func:`new_filter_work`).

    With ``p.skip``: ``D ~ min(Geometric(q), M)`` discarded groups at once (``q``: the probability
    that a group is mixed, from the exact log-likelihoods of ``y*``'s prefixes), counted by class;
    if ``D < M`` the kept group is drawn conditioned on being mixed and learned from. Without it,
    groups are sampled one by one as an ordinary step samples them.
    """
    N = y_star.shape[0]
    G = p.G
    lp, logf, weights, counts, classes, work = fw
    if p.skip != 0:
        token_logliks(W, x, y_star, p.features, ws.table, ws.have, lp)
        prefix = 0.0
        for m in range(N):
            logf[m] = prefix + log1mexp(lp[m])
            prefix += lp[m]
        logf[N] = prefix
        q = move_probability(logf, p.reward, G, p.baseline)
        if q > 0.0:
            discarded = failures_before_success(math.log(q), p.M, uniform_pos(state))
        else:
            discarded = p.M
        count_discarded(state, counters, discarded, logf, p.reward, G, weights, counts)
        if discarded >= p.M:
            return False
        moving_classes(state, logf, p.reward, G, p.baseline, classes, work)
        for j in range(G):
            ws.f[j] = response_of_class(W, x, y_star, p.features, ws.table, ws.have, state, classes[j], p.reward, logf,
                                        ws.Ys[j])
        return pg_learn(W, x, y_star, p, t, ws, count_samples(p, ws, N, counters), apply)
    discarded = 0.0
    while discarded < p.M:
        for j in range(G):
            ws.f[j] = sample_until_mistake(W, x, y_star, p.features, ws.table, ws.have, state, ws.Ys[j], ws.paused[j])
        target_len = count_samples(p, ws, N, counters)
        if mixed(ws.f, G, N, p.reward):
            counters[C_DISCARDED] += discarded
            for j in range(G):
                if ws.f[j] < target_len:
                    complete_response(W, x, p.features, ws.table, ws.have, ws.paused[j], ws.Ys[j], ws.f[j], target_len)
            return pg_learn(W, x, y_star, p, t, ws, target_len, apply)
        discarded += 1.0
    counters[C_DISCARDED] += discarded
    return False
