"""Compiled kernels for one run's steps: pre-training (SFT), ``pg`` and ``rs`` (SPEC §3–§6).

A run is advanced by :func:`advance_run`, which owns its workspaces and touches
only its own arrays and generator state, so runs can be advanced in parallel.
Integer and float parameters arrive packed in ``ip`` / ``fp`` (indices below) so
that every run of a batch may have its own algorithm, reward and learning rate.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .contexts import draw_labelled_context, draw_labelled_tile
from .model import (
    LOGP,
    POSITION,
    PROB,
    TILE,
    accumulate_score,
    apply_update,
    block_index,
    need_row,
    open_table,
    new_table,
    first_mistake,
    prefix_loglik,
    reset_table,
    sample_response,
    sample_token,
)
from .rng import uniform, uniform_pos

# integer codes = positions in the choice tuples of fastpg.config (SFT is pre-training only)
PG, RS, SFT = 0, 1, 2
ORM, PRM = 0, 1
NONE, MEAN, RLOO, GRPO = 0, 1, 2, 3
CONSTANT, ADAPTIVE, INVSQRT = 0, 1, 2

# integer parameters ip[...]
IP_ALGORITHM, IP_REWARD, IP_G, IP_BASELINE, IP_SKIP, IP_LR, IP_FEATURES, IP_MAX_TRIES = range(8)
N_IP = 8
# float parameters fp[...]
FP_ETA, FP_FLOOR, FP_M, FP_SIGMA, FP_GAMMA = range(5)
N_FP = 5

# counters (SPEC §4), float64 so that skip-ahead can count beyond 2^63
COUNTERS = ("steps", "contexts", "sequences", "tokens", "orm_queries", "prm_queries", "updates", "mistakes")
(C_STEPS, C_CONTEXTS, C_SEQUENCES, C_TOKENS, C_ORM, C_PRM, C_UPDATES, C_MISTAKES) = range(8)

# advance_run status codes
OK, NON_FINITE, REJECTION_FAILED = 0, 1, 2

GRPO_EPS = 1e-8


@njit(cache=True, error_model="numpy")
def log1mexp(logp):
    """``log(1 - exp(logp))`` for ``logp <= 0``, accurate for ``p`` near 0 and near 1."""
    if logp > -0.6931471805599453:
        return math.log(-math.expm1(logp))
    return math.log1p(-math.exp(logp))


@njit(cache=True, error_model="numpy")
def failures_before_success(logp, M, u):
    """Failures before the first success of Bernoulli(``p = exp(logp)``) trials, truncated at ``M``.

    Exact skip-ahead (SPEC §6): ``F = floor(log u / log(1 - p))`` with ``u`` uniform on ``(0, 1]``
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


@njit(cache=True, error_model="numpy")
def learning_rate(rule, eta, floor, t, loss):
    """``eta_t`` of SPEC §5 at step ``t`` (1-based) with target log-loss ``loss``."""
    if rule == ADAPTIVE:
        return eta / max(loss, floor)
    if rule == INVSQRT:
        return eta / math.sqrt(t)
    return eta


@njit(cache=True, error_model="numpy")
def advantages(r, baseline, out):
    """Advantages ``A_j`` from rewards ``r_j`` of a group (SPEC §6)."""
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


@njit(cache=True, error_model="numpy")
def _learn_prefix(W, x, y_star, reached, ip, fp, t, table, have, coef, touched, weights):
    """``W += eta_t * grad log pi_W(y*_<reached | x)``, the update of ``rs`` and of pre-training.

    ``eta_t`` follows the rule ``ip[IP_LR]`` with the target's log-loss (SPEC §5). Returns True
    if ``W`` moved.
    """
    if reached == 0:
        return False
    features = ip[IP_FEATURES]
    loss = 0.0
    if ip[IP_LR] == ADAPTIVE:
        loss = -prefix_loglik(W, x, y_star, reached, features, table, have)
    eta_t = learning_rate(ip[IP_LR], fp[FP_ETA], fp[FP_FLOOR], t, loss)
    if eta_t == 0.0:
        return False
    for i in range(y_star.shape[0]):
        weights[i] = eta_t if i < reached else 0.0
    accumulate_score(W, x, y_star, weights, features, table, have, coef, touched)
    apply_update(W, x, coef, touched)
    return True


@njit(cache=True, error_model="numpy")
def _pg_step(W, x, y_star, ip, fp, state, t, counters, table, have, coef, touched, Ys, f, r, A, Aij, weights):
    """On-policy REINFORCE with ``G`` samples, ORM or PRM (SPEC §6); returns True if ``W`` moved."""
    N = y_star.shape[0]
    G = ip[IP_G]
    features = ip[IP_FEATURES]
    reward = ip[IP_REWARD]
    baseline = ip[IP_BASELINE]
    n_wrong = 0
    best = 0
    prm_q = 0
    for j in range(G):
        sample_response(W, x, features, table, have, state, Ys[j])
        f[j] = first_mistake(Ys[j], y_star)
        if f[j] < N:
            n_wrong += 1
        if f[j] > best:
            best = f[j]
        prm_q += min(f[j] + 1, N)
    counters[C_SEQUENCES] += G
    counters[C_TOKENS] += G * N
    counters[C_MISTAKES] += n_wrong
    if reward == ORM:
        counters[C_ORM] += G
        target_len = N if best == N else 0
    else:
        counters[C_PRM] += prm_q
        target_len = best
    if target_len == 0:
        return False  # nothing rewarded: every advantage is zero under every baseline
    loss = 0.0
    if ip[IP_LR] == ADAPTIVE:
        loss = -prefix_loglik(W, x, y_star, target_len, features, table, have)
    eta_t = learning_rate(ip[IP_LR], fp[FP_ETA], fp[FP_FLOOR], t, loss) / G
    moved = False
    if reward == ORM:
        for j in range(G):
            r[j] = 1.0 if f[j] == N else 0.0
        advantages(r, baseline, A)
        for j in range(G):
            c = eta_t * A[j]
            if c != 0.0:
                for i in range(N):
                    weights[i] = c
                accumulate_score(W, x, Ys[j], weights, features, table, have, coef, touched)
                moved = True
    else:
        # per-position advantages: A_ij (in Aij[N, G]) from r_ij = 1[i < f_j] over the group
        for i in range(N):
            for j in range(G):
                r[j] = 1.0 if i < f[j] else 0.0
            advantages(r, baseline, A)
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
    if moved:
        apply_update(W, x, coef, touched)
    return moved


@njit(cache=True, error_model="numpy")
def _rs_step(W, x, y_star, ip, fp, state, t, counters, table, have, coef, touched, y_tmp, weights):
    """Reject until success (SPEC §6), with exact skip-ahead or brute force; True if ``W`` moved."""
    N = y_star.shape[0]
    k = W.shape[1]
    features = ip[IP_FEATURES]
    M = fp[FP_M]
    skip = ip[IP_SKIP] != 0
    if ip[IP_REWARD] == ORM:
        if skip:
            logp_star = prefix_loglik(W, x, y_star, N, features, table, have)
            fails = failures_before_success(logp_star, M, uniform_pos(state))
        else:
            fails = 0.0
            while fails < M:
                sample_response(W, x, features, table, have, state, y_tmp)
                if first_mistake(y_tmp, y_star) == N:
                    break
                fails += 1.0
        success = fails < M
        queries = fails + 1.0 if success else M
        counters[C_ORM] += queries
        counters[C_SEQUENCES] += queries
        counters[C_TOKENS] += queries * N
        counters[C_MISTAKES] += fails
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
            success = fails < M
            queries = fails + 1.0 if success else M
            counters[C_PRM] += queries
            counters[C_TOKENS] += queries
            counters[C_MISTAKES] += fails
            if not success:
                break
            reached = i + 1
            prev = y_star[i]
    return _learn_prefix(W, x, y_star, reached, ip, fp, t, table, have, coef, touched, weights)


@njit(cache=True, error_model="numpy")
def _sft_step(W, x, y_star, ip, fp, t, table, have, coef, touched, weights):
    """One SGD step on the log-loss ``-log pi_W(y*|x)`` of a labelled context (SPEC §3)."""
    return _learn_prefix(W, x, y_star, y_star.shape[0], ip, fp, t, table, have, coef, touched, weights)


# Weights beyond this magnitude count as diverged: logits W . x and their exponentials could
# overflow long before a weight itself is inf (SPEC §8 "weights stop being finite").
MAX_ABS_WEIGHT = 1e100


@njit(cache=True, error_model="numpy")
def weights_ok(W):
    """True when every weight is finite and at most ``MAX_ABS_WEIGHT`` in magnitude."""
    for v in W.ravel():
        if not abs(v) <= MAX_ABS_WEIGHT:  # also catches NaN
            return False
    return True


@njit(cache=True, error_model="numpy")
def advance_run(W, W_star, centres, cdf, pool_x, pool_y, state, counters, ip, fp, n_steps):
    """Advance one run by ``n_steps`` steps in place; returns a status code.

    Each step draws a context: uniformly from the pool ``pool_x, pool_y`` when it is not
    empty, else fresh from the distribution ``(centres, cdf, sigma)`` conditioned on the
    teacher margin ``>= gamma`` and labelled by the teacher ``W_star``. It then runs the
    algorithm ``ip[IP_ALGORITHM]`` and updates ``counters`` (SPEC §4).

    Fresh contexts are drawn a tile ahead (:func:`fastpg.contexts.draw_labelled_tile`) when
    nothing about them depends on the weights being trained: ``position`` features, no margin
    condition (``gamma <= 0``) and an algorithm whose own draws per step are a fixed number
    (``pg``: ``G N`` tokens; ``sft``: none). The stream, and so every result, is the same as
    drawing them one step at a time; only the teacher's logits are computed tile by tile.
    """
    B, k, d = W.shape
    N = pool_y.shape[1]
    G = max(ip[IP_G], 1)
    table, have = new_table(B, k)
    teacher_work = new_table(B, k)[0]
    coef = np.zeros((B, k))
    touched = np.zeros(B, dtype=np.bool_)
    x = np.empty(d)
    y_star = np.empty(N, dtype=np.int64)
    Ys = np.empty((G, N), dtype=np.int64)
    f = np.empty(G, dtype=np.int64)
    r = np.empty(G)
    A = np.empty(G)
    Aij = np.empty((N, G))
    weights = np.empty(N)
    n_pool = pool_x.shape[0]
    algorithm = ip[IP_ALGORITHM]
    ahead = n_pool == 0 and ip[IP_FEATURES] == POSITION and fp[FP_GAMMA] <= 0.0 and algorithm != RS
    gap = ip[IP_G] * N if algorithm == PG else 0
    n_tile = min(TILE, (n_steps + 3) // 4 * 4) if ahead else 0  # short calls draw short tiles
    Xt = np.empty((n_tile, d))
    Yt = np.empty((n_tile, N), dtype=np.int64)
    St = np.empty((n_tile, 4), dtype=np.uint64)
    tile_work = new_table(n_tile * B, k)[0]
    i_tile = 0
    m_tile = 0
    for step in range(n_steps):
        if ahead:
            if i_tile == m_tile:
                m_tile = min(n_tile, n_steps - step)
                draw_labelled_tile(state, W_star, centres, cdf, fp[FP_SIGMA], m_tile, gap, Xt, Yt, St, tile_work)
                i_tile = 0
            x[:] = Xt[i_tile]
            y_star[:] = Yt[i_tile]
            state[:] = St[i_tile]
            i_tile += 1
        elif n_pool > 0:
            idx = min(int(uniform(state) * n_pool), n_pool - 1)
            x[:] = pool_x[idx]
            y_star[:] = pool_y[idx]
        else:
            m = draw_labelled_context(
                state, W_star, ip[IP_FEATURES], centres, cdf, fp[FP_SIGMA], fp[FP_GAMMA],
                ip[IP_MAX_TRIES], teacher_work, x, y_star, False,
            )
            if m < 0.0:
                return REJECTION_FAILED
        counters[C_STEPS] += 1.0
        counters[C_CONTEXTS] += 1.0
        t = counters[C_STEPS]
        reset_table(have)
        if algorithm == PG:
            moved = _pg_step(
                W, x, y_star, ip, fp, state, t, counters, table, have, coef, touched, Ys, f, r, A, Aij, weights
            )
        elif algorithm == RS:
            moved = _rs_step(W, x, y_star, ip, fp, state, t, counters, table, have, coef, touched, Ys[0], weights)
        else:
            moved = _sft_step(W, x, y_star, ip, fp, t, table, have, coef, touched, weights)
        if moved:
            counters[C_UPDATES] += 1.0
    if not weights_ok(W):
        return NON_FINITE
    return OK
