"""Compiled kernels for one run's steps: pre-training (SFT), ``pg`` and ``rs`` (docs/design.md,
"Algorithms").

A run is advanced by :func:`fastpg.kernels.advance.advance_run`, which owns its workspaces and touches
only its own arrays and generator state, so runs can be advanced in parallel; the step kernels
here take one step. A run's parameters arrive as one
record ``p`` of dtype :data:`fastpg.codes.RUN_PARAMS` (``p.eta``, ``p.reward``, ...), so every run
of a batch may have its own algorithm, reward and learning rate; the integer codes are those of
:mod:`fastpg.codes`.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit

from ..codes import ADAPTIVE, C_MISTAKES, C_ORM, C_PRM, C_SEQUENCES, C_TOKENS, INVSQRT, MEAN, NONE, ORM, POSITION, RLOO
from .rng import uniform_pos
from .sampling import ROWS_AT_ONCE, complete_response, sample_token, sample_until_mistake
from .tables import LOGP, PROB, block_index, fill_table, need_row, new_table, open_table, prefix_loglik
from .updates import accumulate_score, apply_update
from .variates import failures_before_success

GRPO_EPS = 1e-8
# A pg step fills its position table in chunks of ROWS_AT_ONCE rows as sampling reaches them while,
# over recent steps of the run, fewer than this fraction of steps sampled past the first chunk;
# else the whole table at once (docs/design.md, "Algorithms"). Either way gives the same numbers.
LAZY_BELOW = 0.5
LATE_RATE = 1.0 / 64.0  # weight of the latest step in that fraction (an exponential moving average)

# Per-run scratch of the step kernels, allocated once per call of advance_run:
# table/have (the lazy probability table), coef/touched (the accumulated update), Ys[G, N]
# (sampled responses), f[G] (their first mistakes), paused[G, 4] (generator states after them,
# sampling.sample_until_mistake), r/A[G] (rewards, advantages), Aij[N, G] (per-position advantages),
# weights[N] (per-position step sizes), sweep[1] (1 if the next pass of a pg step over W goes
# from the last block to the first: docs/kernels.md, "What the kernels do") and late[1] (the
# recent fraction of pg steps that sampled past the first ROWS_AT_ONCE tokens, see LAZY_BELOW).
Workspace = namedtuple("Workspace", ["table", "have", "coef", "touched", "Ys", "f", "paused", "r", "A", "Aij",
                                     "weights", "sweep", "late"])


@njit(cache=True, error_model="numpy", _nrt=False)
def learning_rate(rule, eta, floor, t, loss):
    """``eta_t`` of docs/design.md, "Learning-rate rules", at step ``t`` (1-based) with target log-loss ``loss``."""
    if rule == ADAPTIVE:
        return eta / max(loss, floor)
    if rule == INVSQRT:
        return eta / math.sqrt(t)
    return eta


@njit(cache=True, error_model="numpy", _nrt=False)
def advantages(r, baseline, out):
    """Advantages ``A_j`` from rewards ``r_j`` of a group (docs/design.md, "Algorithms")."""
    G = r.shape[0]
    if baseline == NONE:
        for j in range(G):
            out[j] = r[j]
        return
    total = 0.0
    for j in range(G):
        total += r[j]
    mean = total / G
    if baseline == MEAN:
        for j in range(G):
            out[j] = r[j] - mean
    elif baseline == RLOO:
        for j in range(G):
            out[j] = r[j] - (total - r[j]) / (G - 1)
    else:
        var = 0.0
        for j in range(G):
            var += (r[j] - mean) ** 2
        std = math.sqrt(var / G)
        for j in range(G):
            out[j] = (r[j] - mean) / (std + GRPO_EPS)


@njit(cache=True, error_model="numpy", _nrt=False)
def _learn_prefix(W, x, y_star, reached, p, t, ws, apply):
    """``W += eta_t * grad log pi_W(y*_<reached | x)``, the update of ``rs`` and of pre-training.

    ``eta_t`` follows the rule ``p.lr`` with the target's log-loss (docs/design.md, "Learning-rate
    rules"). Returns True if ``W`` moves. Without ``apply`` the update is left in ``ws.coef`` and
    ``ws.touched`` for the caller to apply (:func:`fastpg.kernels.updates.apply_update`, or held back by
    :func:`fastpg.kernels.advance.advance_held`).
    """
    if reached == 0:
        return False
    loss = 0.0
    if p.lr == ADAPTIVE:
        loss = -prefix_loglik(W, x, y_star, reached, p.features, ws.table, ws.have)
    eta_t = learning_rate(p.lr, p.eta, p.floor, t, loss)
    if eta_t == 0.0:
        return False
    weights = ws.weights
    for i in range(y_star.shape[0]):
        weights[i] = eta_t if i < reached else 0.0
    accumulate_score(W, x, y_star, weights, p.features, ws.table, ws.have, ws.coef, ws.touched)
    if apply:
        apply_update(W, x, ws.coef, ws.touched)
    return True


@njit(cache=True, error_model="numpy", _nrt=False)
def count_samples(p, ws, N, counters):
    """Count the ``G`` responses of a ``pg`` step (first mistakes in ``ws.f``): responses, tokens,
    mistakes and reward queries (ORM: one per response; PRM: ``min(f + 1, N)`` per response).
    Returns the length of the longest rewarded prefix (ORM: ``N`` if some response is correct,
    else 0; PRM: the largest ``f``): 0 means no response earned anything."""
    G = p.G
    n_wrong = 0
    best = 0
    prm_q = 0
    for j in range(G):
        if ws.f[j] < N:
            n_wrong += 1
        if ws.f[j] > best:
            best = ws.f[j]
        prm_q += min(ws.f[j] + 1, N)
    counters[C_SEQUENCES] += G
    counters[C_TOKENS] += G * N
    counters[C_MISTAKES] += n_wrong
    if p.reward == ORM:
        counters[C_ORM] += G
        return N if best == N else 0
    counters[C_PRM] += prm_q
    return best


@njit(cache=True, error_model="numpy", _nrt=False)
def _pg_step(W, x, y_star, p, state, t, counters, ws, apply):
    """On-policy REINFORCE with ``G`` samples, ORM or PRM (docs/design.md, "pg"); True if ``W`` moves
    (``apply``: as in :func:`pg_learn`).

    Each response is drawn up to its first mistake (:func:`fastpg.kernels.sampling.sample_until_mistake`).
    Its later tokens are drawn only when an update reads them: with a baseline, a wrong response
    earns a nonzero advantage on the positions a better response of the group was rewarded for
    (ORM: all ``N``; PRM: those before the longest rewarded prefix).
    """
    N = y_star.shape[0]
    if p.features == POSITION and not ws.have[0]:
        if N > ROWS_AT_ONCE and ws.late[0] < LAZY_BELOW:
            ws.sweep[0] = 1  # chunks are filled forwards: the next pass (an update) goes backwards
        else:
            fill_table(W, x, ws.table, ws.have, ws.sweep[0] != 0)
            ws.sweep[0] ^= 1
    late = False
    for j in range(p.G):
        ws.f[j] = sample_until_mistake(W, x, y_star, p.features, ws.table, ws.have, state, ws.Ys[j], ws.paused[j])
        late = late or ws.f[j] >= ROWS_AT_ONCE
    ws.late[0] += LATE_RATE * ((1.0 if late else 0.0) - ws.late[0])
    target_len = count_samples(p, ws, N, counters)
    if target_len == 0:
        return False  # nothing rewarded: every advantage is zero under every baseline
    if p.baseline != NONE:
        for j in range(p.G):
            if ws.f[j] < target_len:
                complete_response(W, x, p.features, ws.table, ws.have, ws.paused[j], ws.Ys[j], ws.f[j], target_len)
    return pg_learn(W, x, y_star, p, t, ws, target_len, apply)


@njit(cache=True, error_model="numpy", _nrt=False)
def pg_learn(W, x, y_star, p, t, ws, target_len, apply):
    """The REINFORCE update of a ``pg`` step from its responses ``ws.Ys`` and first mistakes ``ws.f``;
    True if ``W`` moves. Without ``apply`` the update is left in ``ws.coef`` and ``ws.touched`` (as
    in :func:`_learn_prefix`).

    ORM: ``W += (eta_t / G) sum_j A_j grad log pi_W(y^j | x)``; PRM:
    ``W += (eta_t / G) sum_j sum_i A_ij grad log pi_W(y^j_i | x, y^j_<i)`` with per-position
    advantages from ``r_ij = 1[i < f_j]``. ``eta_t`` follows ``p.lr`` with the log-loss of the
    longest rewarded prefix (``target_len`` tokens of ``y*``).
    """
    N = y_star.shape[0]
    G = p.G
    features = p.features
    table, have, coef, touched = ws.table, ws.have, ws.coef, ws.touched
    Ys, f, r, A, Aij, weights = ws.Ys, ws.f, ws.r, ws.A, ws.Aij, ws.weights
    loss = 0.0
    if p.lr == ADAPTIVE:
        loss = -prefix_loglik(W, x, y_star, target_len, features, table, have)
    eta_t = learning_rate(p.lr, p.eta, p.floor, t, loss) / G
    moved = False
    if p.reward == ORM:
        for j in range(G):
            r[j] = 1.0 if f[j] == N else 0.0
        advantages(r, p.baseline, A)
        for j in range(G):
            c = eta_t * A[j]
            if c != 0.0:
                for i in range(N):
                    weights[i] = c
                accumulate_score(W, x, Ys[j], weights, features, table, have, coef, touched)
                moved = True
    elif p.baseline == NONE:  # A_ij = r_ij = 1[i < f_j]: the rewarded prefix of each response
        for j in range(G):
            if f[j] > 0 and eta_t != 0.0:
                for i in range(N):
                    weights[i] = eta_t if i < f[j] else 0.0
                accumulate_score(W, x, Ys[j], weights, features, table, have, coef, touched)
                moved = True
    else:
        # per-position advantages: A_ij (in Aij[N, G]) from r_ij = 1[i < f_j] over the group
        for i in range(N):
            for j in range(G):
                r[j] = 1.0 if i < f[j] else 0.0
            advantages(r, p.baseline, A)
            for j in range(G):
                Aij[i, j] = A[j]
        for j in range(G):
            any_c = False
            for i in range(N):
                weights[i] = eta_t * Aij[i, j]
                if weights[i] != 0.0:
                    any_c = True
            if any_c:
                accumulate_score(W, x, Ys[j], weights, features, table, have, coef, touched)
                moved = True
    if moved and apply:
        apply_update(W, x, coef, touched, ws.sweep[0] != 0)
        ws.sweep[0] ^= 1
    return moved


@njit(cache=True, error_model="numpy", inline="always", _nrt=False)
def _charge_search(counters, fails, M, query_counter, sequences_per_query, tokens_per_query):
    """Count one reject-until-success search of ``rs`` that saw ``fails`` failures with budget ``M``.

    A success costs ``fails + 1`` queries, a search that ran out ``M``; every query is also
    ``sequences_per_query`` responses and ``tokens_per_query`` tokens, every failure a mistake.
    Returns whether it succeeded.
    """
    success = fails < M
    queries = fails + 1.0 if success else M
    counters[query_counter] += queries
    counters[C_SEQUENCES] += queries * sequences_per_query
    counters[C_TOKENS] += queries * tokens_per_query
    counters[C_MISTAKES] += fails
    return success


@njit(cache=True, error_model="numpy", _nrt=False)
def _rs_step(W, x, y_star, p, state, t, counters, ws):
    """Reject until success (docs/design.md, "rs"), with exact skip-ahead or brute force; True if ``W`` moved."""
    N = y_star.shape[0]
    k = W.shape[1]
    features = p.features
    table, have = ws.table, ws.have
    y_tmp = ws.Ys[0]
    M = p.M
    skip = p.skip != 0
    if p.reward == ORM:
        if skip:
            logp_star = prefix_loglik(W, x, y_star, N, features, table, have)
            fails = failures_before_success(logp_star, M, uniform_pos(state))
        else:
            fails = 0.0
            while fails < M:  # a response is drawn up to its first mistake: only "all correct" matters
                if sample_until_mistake(W, x, y_star, features, table, have, state, y_tmp, ws.paused[0]) == N:
                    break
                fails += 1.0
        success = _charge_search(counters, fails, M, C_ORM, 1.0, N)
        reached = N if success else 0
    else:
        counters[C_SEQUENCES] += 1.0
        reached = 0
        open_table(W, x, features, table, have)
        prev = k
        for i in range(N):
            b = block_index(features, i, prev, k)
            need_row(W, x, features, b, table, have)
            if skip:
                fails = failures_before_success(table[LOGP, y_star[i], b], M, uniform_pos(state))
            else:
                fails = 0.0
                while fails < M:
                    if sample_token(table, PROB, b, 1.0, state) == y_star[i]:
                        break
                    fails += 1.0
            if not _charge_search(counters, fails, M, C_PRM, 0.0, 1):
                break
            reached = i + 1
            prev = y_star[i]
    return _learn_prefix(W, x, y_star, reached, p, t, ws, True)


@njit(cache=True, error_model="numpy")
def new_workspace(B, k, N, G):
    """The scratch arrays of the step kernels for ``B`` blocks, ``k`` tokens, ``N`` positions, ``G`` samples."""
    table, have = new_table(B, k)
    return Workspace(table, have, np.zeros((B, k)), np.zeros(B, dtype=np.bool_), np.empty((G, N), dtype=np.int64),
                     np.empty(G, dtype=np.int64), np.empty((G, 4), dtype=np.uint64), np.empty(G), np.empty(G),
                     np.empty((N, G)), np.empty(N), np.zeros(1, dtype=np.int64),
                     np.zeros(1))
