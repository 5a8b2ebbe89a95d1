"""KL to a reference model and the entropy, exactly, and the ``pg`` step with a KL term
(docs/design.md, "KL to the base model").

With ``pi = pi_W``, ``pi_0 = pi_ref`` and the per-token log-ratio
``l_b(v) = log pi_b(v) - log pi_0,b(v)`` of block ``b``, the sequence KL and entropy are

    ``KL(pi || pi_0)(x) = sum_i E_{y_<i ~ pi}[ KL_b(i, y_<i) ]``,  ``KL_b = sum_v pi_b(v) l_b(v)``,
    ``H(pi)(x) = sum_i E_{y_<i ~ pi}[ H_b ]``,                     ``H_b = -sum_v pi_b(v) log pi_b(v)``.

With ``position`` features the blocks do not depend on the path, so both are plain sums over
positions; with ``markov`` features the expectation is over the previous token, whose marginal
``m_i(u) = P_pi(y_{i-1} = u)`` follows the forward recursion ``m_{i+1}(v) = sum_u m_i(u)
pi_{i,u}(v)`` from ``m_0 = 1[u = BOS]`` (``O(N k^2 d)`` per context). The gradient with respect to
the logits of block ``(i, u)`` is

    ``d KL / d s_{i,u}(v) = m_i(u) pi_{i,u}(v) (Q_i(v) - V_i(u))``,
    ``Q_i(v) = l_{i,u}(v) + V_{i+1}(v)``, ``V_i(u) = sum_v pi_{i,u}(v) Q_i(v)``, ``V_N = 0``:

``V_i(u)`` is the KL still to come from position ``i`` after token ``u`` (a backward recursion);
with ``position`` features ``Q - V = l_b(v) - KL_b``. Tables are the lazy tables of
:mod:`fastpg.kernels.tables`, one for ``W`` and one for the reference.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit

from ..codes import COUNTERS, KL_EXACT, KL_IN_REWARD, KL_K1, KL_K2, ORM, POSITION
from .sampling import complete_response, sample_until_mistake
from .steps import advantages, count_samples, learning_rate, new_workspace
from .tables import LOGP, PROB, block_index, ensure_row, need_row, new_table, open_table
from .updates import accumulate_score, apply_update

# Scratch of the KL step, allocated once per call of advance_run (with room for one block when the
# run has no KL term): the reference model's table and row flags, the log-ratios l[G, N] of the
# sampled tokens, the marginals of the previous token marg[N, k + 1] and the values value[2, k + 1]
# of the recursions above.
COUNTER_SLOTS = len(COUNTERS)
KLWork = namedtuple("KLWork", ["table", "have", "lratio", "marg", "value"])


@njit(cache=True)
def new_kl_work(B, k, N, G):
    """The scratch of :func:`pg_kl_update` for ``B`` blocks, ``k`` tokens, ``N`` positions, ``G`` samples."""
    table, have = new_table(B, k)
    return KLWork(table, have, np.zeros((G, N)), np.zeros((N, k + 1)), np.zeros((2, k + 1)))


@njit(cache=True, error_model="numpy", inline="always", _nrt=False)
def row_kl_entropy(table, rtable, b):
    """``KL_b = sum_v pi_b(v) (log pi_b(v) - log pi_0,b(v))`` and ``H_b = -sum_v pi_b(v) log pi_b(v)``
    of row ``b`` (a token of probability 0 adds nothing: its log-probabilities are finite)."""
    kl = 0.0
    h = 0.0
    for v in range(table.shape[1]):
        p = table[PROB, v, b]
        lp = table[LOGP, v, b]
        kl += p * (lp - rtable[LOGP, v, b])
        h -= p * lp
    return kl, h


@njit(cache=True, error_model="numpy", _nrt=False)
def sequence_kl_entropy(W, W_ref, x, features, N, table, have, rtable, rhave, marg):
    """``KL(pi_W(.|x) || pi_ref(.|x))`` and ``H(pi_W(.|x))`` of whole responses, exactly (module
    docstring). Fills every row they need, in both tables, and with ``markov`` features the
    marginals ``marg[i, u] = P_pi(y_{i-1} = u)`` (``u = k``: BOS)."""
    k = W.shape[1]
    open_table(W, x, features, table, have)
    open_table(W_ref, x, features, rtable, rhave)
    kl = 0.0
    h = 0.0
    if features == POSITION:
        for b in range(N):
            kl_b, h_b = row_kl_entropy(table, rtable, b)
            kl += kl_b
            h += h_b
        return kl, h
    for u in range(k + 1):
        marg[0, u] = 0.0
    marg[0, k] = 1.0
    for i in range(N):
        last = i + 1 < N
        if last:
            for v in range(k + 1):
                marg[i + 1, v] = 0.0
        for u in range(k + 1):
            if (i == 0) != (u == k):  # position 0 follows BOS, later positions a token
                continue
            b = block_index(features, i, u, k)
            ensure_row(W, x, b, table, have)
            ensure_row(W_ref, x, b, rtable, rhave)
            kl_b, h_b = row_kl_entropy(table, rtable, b)
            m = marg[i, u]
            kl += m * kl_b
            h += m * h_b
            if last:
                for v in range(k):
                    marg[i + 1, v] += m * table[PROB, v, b]
    return kl, h


@njit(cache=True, error_model="numpy", _nrt=False)
def add_kl_gradient(W, W_ref, x, features, N, table, have, rtable, rhave, marg, value, scale, coef, touched):
    """``coef[b, v] += scale * d KL(pi_W(.|x) || pi_ref(.|x)) / d s_b(v)`` on every block (module
    docstring), so that :func:`fastpg.kernels.updates.apply_update` adds ``scale`` times the KL's
    gradient with respect to ``W`` (``d s_b(v) / d W[b, v] = x``). Returns the sequence KL."""
    k = W.shape[1]
    kl, _ = sequence_kl_entropy(W, W_ref, x, features, N, table, have, rtable, rhave, marg)
    if features == POSITION:
        for b in range(N):
            kl_b, _ = row_kl_entropy(table, rtable, b)
            for v in range(k):
                p = table[PROB, v, b]
                coef[b, v] += scale * p * ((table[LOGP, v, b] - rtable[LOGP, v, b]) - kl_b)
            touched[b] = True
        return kl
    nxt, cur = 0, 1  # value[nxt] = V_{i+1}, value[cur] = V_i
    for v in range(k + 1):
        value[nxt, v] = 0.0
    for i in range(N - 1, -1, -1):
        for u in range(k + 1):
            if (i == 0) != (u == k):
                continue
            b = block_index(features, i, u, k)
            V = 0.0
            for v in range(k):
                V += table[PROB, v, b] * ((table[LOGP, v, b] - rtable[LOGP, v, b]) + value[nxt, v])
            value[cur, u] = V
            c = scale * marg[i, u]
            if c != 0.0:
                for v in range(k):
                    q = (table[LOGP, v, b] - rtable[LOGP, v, b]) + value[nxt, v]
                    coef[b, v] += c * table[PROB, v, b] * (q - V)
                touched[b] = True
        nxt, cur = cur, nxt
    return kl


@njit(cache=True, error_model="numpy", inline="always", _nrt=False)
def kl_estimate(estimator, logr):
    """The per-token estimator of the KL at log-ratio ``l = logr``: ``k1 = l``, ``k2 = l^2 / 2``,
    ``k3 = exp(-l) - 1 + l`` (``exp(-l) - 1`` formed as ``expm1(-l)``, accurate near ``l = 0``)."""
    if estimator == KL_K1:
        return logr
    if estimator == KL_K2:
        return 0.5 * logr * logr
    return math.expm1(-logr) + logr


@njit(cache=True, error_model="numpy", inline="always", _nrt=False)
def kl_estimate_slope(estimator, logr):
    """``d k(l) / d l`` at ``l = logr``: ``1``, ``l`` and ``1 - exp(-l)`` for ``k1``, ``k2``, ``k3``; the loss
    ``beta k(l_i)`` has gradient ``beta k'(l_i) grad log pi_W(y_i | x, y_<i)``."""
    if estimator == KL_K1:
        return 1.0
    if estimator == KL_K2:
        return logr
    return -math.expm1(-logr)


@njit(cache=True, error_model="numpy", _nrt=False)
def pg_kl_update(W, W_ref, x, y_star, p, state, t, counters, ws, kw, outcome, apply):
    """One ``pg`` step with the KL term ``beta = p.kl_coef`` (docs/design.md, "KL to the base
    model"); True if ``W`` moves (``apply``: as in :func:`fastpg.kernels.steps.pg_learn`).

    Every response is sampled whole (the KL reads every token). With ``r_j`` the outcome rewards
    (``outcome`` False sets them to 0: the KL term alone, for measuring its expected gradient),
    ``l_ji`` the log-ratios of the sampled tokens and ``k`` the estimator ``p.kl_estimator``:

    * ``kl_in = reward``: ORM advantages from ``r_j - beta sum_i k(l_ji)``; PRM per-position
      advantages from ``1[i < f_j] - beta sum_{i' >= i} k(l_ji')``;
      ``W += (eta_t / G) sum_j sum_i A_ji grad log pi_W(y_ji | x, y_j<i)``;
    * ``kl_in = loss``: the advantages of ``pg``, and
      ``W -= (eta_t / G) beta sum_j sum_i k'(l_ji) grad log pi_W(y_ji | x, y_j<i)``;
    * ``exact``: the advantages of ``pg``, and ``W -= eta_t beta grad KL(pi_W(.|x) || pi_ref(.|x))``.

    ``eta_t`` follows ``p.lr`` (constant or invsqrt: the configuration refuses adaptive). Rows
    already in the tables (``ws.table`` for ``W``, ``kw.table`` for ``W_ref``) are used as they are:
    the caller resets them when the context or ``W`` changes, or fills them (``advance_held``).
    """
    N = y_star.shape[0]
    G = p.G
    k = W.shape[1]
    features = p.features
    table, have, Ys, f, r, A, Aij, weights = ws.table, ws.have, ws.Ys, ws.f, ws.r, ws.A, ws.Aij, ws.weights
    rtable, rhave, lratio = kw.table, kw.have, kw.lratio
    beta = p.kl_coef
    estimator = p.kl_estimator
    open_table(W, x, features, table, have)
    for j in range(G):
        f[j] = sample_until_mistake(W, x, y_star, features, table, have, state, Ys[j], ws.paused[j])
        if f[j] < N - 1:
            complete_response(W, x, features, table, have, ws.paused[j], Ys[j], f[j], N)
    count_samples(p, ws, N, counters)
    eta = learning_rate(p.lr, p.eta, p.floor, t, 0.0)
    open_table(W_ref, x, features, rtable, rhave)
    for j in range(G):
        prev = k
        for i in range(N):
            b = block_index(features, i, prev, k)
            need_row(W_ref, x, features, b, rtable, rhave)
            lratio[j, i] = table[LOGP, Ys[j, i], b] - rtable[LOGP, Ys[j, i], b]
            prev = Ys[j, i]
    in_reward = estimator != KL_EXACT and p.kl_in == KL_IN_REWARD
    in_loss = estimator != KL_EXACT and not in_reward
    if p.reward == ORM:
        for j in range(G):
            r[j] = (1.0 if f[j] == N and outcome else 0.0)
            if in_reward:
                total = 0.0
                for i in range(N):
                    total += kl_estimate(estimator, lratio[j, i])
                r[j] -= beta * total
        advantages(r, p.baseline, A)
        for j in range(G):
            for i in range(N):
                Aij[i, j] = A[j]
    else:
        for j in range(G):  # the returns, per position: Aij[i, j] = 1[i < f_j] - beta sum_{i' >= i} k(l_ji')
            to_come = 0.0
            for i in range(N - 1, -1, -1):
                if in_reward:
                    to_come += kl_estimate(estimator, lratio[j, i])
                Aij[i, j] = (1.0 if i < f[j] and outcome else 0.0) - beta * to_come
        for i in range(N):
            for j in range(G):
                r[j] = Aij[i, j]
            advantages(r, p.baseline, A)
            for j in range(G):
                Aij[i, j] = A[j]
    c = eta / G
    moved = False
    for j in range(G):
        any_c = False
        for i in range(N):
            w = c * Aij[i, j]
            if in_loss:
                w -= c * beta * kl_estimate_slope(estimator, lratio[j, i])
            weights[i] = w
            any_c = any_c or w != 0.0
        if any_c:
            accumulate_score(W, x, Ys[j], weights, features, table, have, ws.coef, ws.touched)
            moved = True
    if estimator == KL_EXACT and eta * beta != 0.0:
        kl = add_kl_gradient(W, W_ref, x, features, N, table, have, rtable, rhave, kw.marg, kw.value, -eta * beta,
                             ws.coef, ws.touched)
        moved = moved or kl != 0.0  # KL = 0: pi_W = pi_ref on this context, and the gradient is 0
    if moved and apply:
        apply_update(W, x, ws.coef, ws.touched)
    return moved


@njit(cache=True, error_model="numpy")
def kl_term_updates(W, W_ref, x, y_star, p, state, n, mean_out, var_out):
    """The KL term's update at fixed ``W`` over ``n`` independent draws of a ``pg`` step's responses
    (:func:`pg_kl_update` with no outcome reward and nothing applied): ``mean_out[b, v]`` the mean
    of its coefficients ``coef[b, v]`` (the update is ``coef[b, v] x``) and ``var_out[b, v]`` their
    variance over draws, for Monte Carlo estimates of the expected update of an estimator and
    placement (docs/design.md, "KL to the base model")."""
    B, k, _ = W.shape
    N = y_star.shape[0]
    G = max(p.G, 1)
    ws = new_workspace(B, k, N, G)
    kw = new_kl_work(B, k, N, G)
    counters = np.zeros(COUNTER_SLOTS)
    for b in range(B):
        for v in range(k):
            mean_out[b, v] = 0.0
            var_out[b, v] = 0.0
    for t in range(n):  # W and x stay put: the tables' rows stay valid from draw to draw
        pg_kl_update(W, W_ref, x, y_star, p, state, 1.0, counters, ws, kw, False, False)
        for b in range(B):  # Welford's running mean and variance
            for v in range(k):
                c = ws.coef[b, v]
                delta = c - mean_out[b, v]
                mean_out[b, v] += delta / (t + 1)
                var_out[b, v] += delta * (c - mean_out[b, v])
                ws.coef[b, v] = 0.0
            ws.touched[b] = False
    for b in range(B):
        for v in range(k):
            var_out[b, v] /= max(n - 1, 1)
