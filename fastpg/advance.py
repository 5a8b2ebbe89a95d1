"""Advance one run by a number of steps (docs/design.md, "Algorithms", "Event-driven pg"): the
loop over steps that :func:`fastpg.engine.advance_runs` calls for every run of a batch."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .codes import (
    C_CONTEXTS,
    C_STEPS,
    C_UPDATES,
    MAX_ABS_WEIGHT,
    NON_FINITE,
    NONE,
    OK,
    PG,
    POSITION,
    REJECTION_FAILED,
    RS,
)
from .contexts import draw_labelled_context, draw_labelled_tile
from .events import (
    EV_DEFERRED,
    EV_PENDING,
    EV_STEP_THROUGH,
    count_deferred,
    count_skipped,
    moving_step,
    pool_classes,
    pool_move_probabilities,
)
from .model import TILE, new_table, reset_table
from .rng import uniform, uniform_pos
from .steps import _learn_prefix, _pg_step, _rs_step, new_workspace, pg_learn
from .variates import failures_before_success

NEVER = 2.0**62  # steps to a move that cannot happen (q = 0)
EVENTS_BELOW = 0.5  # look for the next move event by event while n_pool * q is below this ...
STEP_THROUGH = 1024  # ... else take max(STEP_THROUGH, 4 n_pool) steps one by one before looking again


@njit(cache=True, error_model="numpy")
def weights_ok(W):
    """True when every weight is finite and at most ``MAX_ABS_WEIGHT`` in magnitude."""
    for v in W.ravel():
        if not abs(v) <= MAX_ABS_WEIGHT:  # also catches NaN
            return False
    return True


@njit(cache=True, error_model="numpy")
def _pool_step(W, pool_x, pool_y, p, state, counters, ws):
    """One ordinary step on a pool context drawn uniformly; True if ``W`` moved."""
    n_pool = pool_x.shape[0]
    idx = min(int(uniform(state) * n_pool), n_pool - 1)
    counters[C_STEPS] += 1.0
    counters[C_CONTEXTS] += 1.0
    reset_table(ws.have)
    return _pg_step(W, pool_x[idx], pool_y[idx], p, state, counters[C_STEPS], counters, ws)


@njit(cache=True, error_model="numpy")
def advance_pool_events(W, pool_x, pool_y, state, counters, p, n_steps, events, settle, ws):
    """``pg`` on a pool, event by event where moves are rare (docs/design.md, "Event-driven pg").

    ``events`` (see :mod:`fastpg.events`) carries, from call to call, the steps left before the
    next move (drawn once, geometric with the pool's mean move probability ``q``), the skipped
    steps whose classes are not yet counted (with a baseline; counted at the move, or when
    ``settle`` says this call ends at an evaluation point), and the steps still to take one by
    one (when ``n_pool q >= EVENTS_BELOW``, looking at the pool after every move would cost more
    than stepping). Random numbers are drawn only at those points, so how a run is cut into calls
    changes nothing.
    """
    n_pool = pool_x.shape[0]
    N = pool_y.shape[1]
    lp = np.empty((n_pool, N))
    logf = np.empty((n_pool, N + 1))
    q = np.empty(n_pool)
    work = np.empty(max(n_pool, N + 2, p.G + 1))
    weights = np.empty(N + 2)
    counts = np.empty(N + 2)
    classes = np.empty(p.G, dtype=np.int64)
    fresh = False  # pool probabilities computed for the current W
    qbar = 0.0
    done = 0
    while done < n_steps:
        if events[EV_STEP_THROUGH] > 0.0:
            n = int(min(events[EV_STEP_THROUGH], n_steps - done))
            for _ in range(n):
                if _pool_step(W, pool_x, pool_y, p, state, counters, ws):
                    counters[C_UPDATES] += 1.0
            events[EV_STEP_THROUGH] -= n
            done += n
            fresh = False
            continue
        if not fresh:
            pool_classes(W, pool_x, pool_y, p.features, ws.table, ws.have, lp, logf)
            qbar = pool_move_probabilities(logf, p.reward, p.G, p.baseline, q)
            if p.eta == 0.0:  # no step can move W
                q[:] = 0.0
                qbar = 0.0
            fresh = True
        if events[EV_PENDING] < 0.0:
            if n_pool * qbar >= EVENTS_BELOW:
                events[EV_STEP_THROUGH] = max(STEP_THROUGH, 4 * n_pool)
                continue
            events[EV_PENDING] = NEVER if qbar <= 0.0 else failures_before_success(math.log(qbar), NEVER, uniform_pos(state))
        skipped = min(events[EV_PENDING], float(n_steps - done))
        count_skipped(counters, skipped, p.reward, p.G, N, p.baseline)
        if p.baseline != NONE:
            events[EV_DEFERRED] += skipped
        events[EV_PENDING] -= skipped
        done += int(skipped)
        if events[EV_PENDING] == 0.0 and done < n_steps:
            if events[EV_DEFERRED] > 0.0:
                count_deferred(state, counters, events[EV_DEFERRED], logf, p.reward, p.G, p.baseline, weights, counts)
                events[EV_DEFERRED] = 0.0
            i, target = moving_step(W, pool_x, pool_y, logf, q, p, state, counters, ws, classes, work)
            if pg_learn(W, pool_x[i], pool_y[i], p, counters[C_STEPS], ws, target):
                counters[C_UPDATES] += 1.0
            events[EV_PENDING] = -1.0
            done += 1
            fresh = False
    if settle and events[EV_DEFERRED] > 0.0:
        if not fresh:
            pool_classes(W, pool_x, pool_y, p.features, ws.table, ws.have, lp, logf)
        count_deferred(state, counters, events[EV_DEFERRED], logf, p.reward, p.G, p.baseline, weights, counts)
        events[EV_DEFERRED] = 0.0


@njit(cache=True, error_model="numpy")
def advance_run(W, W_star, centres, cdf, pool_x, pool_y, state, counters, p, n_steps, events, settle):
    """Advance one run by ``n_steps`` steps in place; returns a status code of :mod:`fastpg.codes`.

    Each step draws a context: uniformly from the pool ``pool_x, pool_y`` when it is not
    empty, else fresh from the distribution ``(centres, cdf, p.sigma)`` conditioned on the
    teacher margin ``>= p.gamma`` and labelled by the teacher ``W_star``. It then runs the
    algorithm ``p.algorithm`` and updates ``counters`` (docs/design.md, "Counters").

    ``pg`` on a pool with ``p.skip`` goes event by event (:func:`advance_pool_events`, with the
    run's persistent ``events`` state; ``settle``: this call ends at an evaluation point).

    Fresh contexts are drawn a tile ahead (:func:`fastpg.contexts.draw_labelled_tile`) when
    nothing about them depends on the weights being trained: ``position`` features, no margin
    condition (``gamma <= 0``) and an algorithm whose own draws per step are a fixed number
    (``pg``: ``G N`` tokens; ``sft``: none). The stream, and so every result, is the same as
    drawing them one step at a time; only the teacher's logits are computed tile by tile.
    """
    B, k, d = W.shape
    N = pool_y.shape[1]
    ws = new_workspace(B, k, N, max(p.G, 1))
    teacher_work = new_table(B, k)[0]
    x = np.empty(d)
    y_star = np.empty(N, dtype=np.int64)
    n_pool = pool_x.shape[0]
    algorithm = p.algorithm
    if algorithm == PG and n_pool > 0 and p.skip != 0:
        advance_pool_events(W, pool_x, pool_y, state, counters, p, n_steps, events, settle, ws)
        return OK if weights_ok(W) else NON_FINITE
    ahead = n_pool == 0 and p.features == POSITION and p.gamma <= 0.0 and algorithm != RS
    gap = p.G * N if algorithm == PG else 0
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
                draw_labelled_tile(state, W_star, centres, cdf, p.sigma, m_tile, gap, Xt, Yt, St, tile_work)
                i_tile = 0
            # element by element: in this reference-counted loop a row view costs two atomic
            # operations (about 4% of a step at d=32, k=4, N=8)
            for j in range(d):
                x[j] = Xt[i_tile, j]
            for i in range(N):
                y_star[i] = Yt[i_tile, i]
            for i in range(4):
                state[i] = St[i_tile, i]
            i_tile += 1
        elif n_pool > 0:
            idx = min(int(uniform(state) * n_pool), n_pool - 1)
            x[:] = pool_x[idx]
            y_star[:] = pool_y[idx]
        else:
            m = draw_labelled_context(
                state, W_star, p.features, centres, cdf, p.sigma, p.gamma, p.max_tries, teacher_work, x, y_star, False,
            )
            if m < 0.0:
                return REJECTION_FAILED
        counters[C_STEPS] += 1.0
        counters[C_CONTEXTS] += 1.0
        t = counters[C_STEPS]
        reset_table(ws.have)
        if algorithm == PG:
            moved = _pg_step(W, x, y_star, p, state, t, counters, ws)
        elif algorithm == RS:
            moved = _rs_step(W, x, y_star, p, state, t, counters, ws)
        else:  # SFT: one SGD step on the log-loss -log pi_W(y*|x) of a labelled context
            moved = _learn_prefix(W, x, y_star, N, p, t, ws)
        if moved:
            counters[C_UPDATES] += 1.0
    if not weights_ok(W):
        return NON_FINITE
    return OK
