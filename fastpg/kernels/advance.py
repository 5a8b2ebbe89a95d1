"""Advance one run by a number of steps (docs/design.md, "Algorithms", "Event-driven pg"): the
loop over steps that :func:`fastpg.kernels.engine.advance_runs` calls for every run of a batch."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..codes import (
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
    EV_HELD,
    EV_PENDING,
    EV_STEP_THROUGH,
    count_deferred,
    count_skipped,
    moving_step,
    pool_classes,
    pool_move_probabilities,
)
from .filtering import filtered_pg_step, new_filter_work
from .kl import new_kl_work, pg_kl_update
from .lanes import TILE, lane_scores
from .rng import uniform, uniform_pos
from .simd import LANES
from .steps import _learn_prefix, _pg_step, _rs_step, new_workspace, pg_learn
from .tables import DIFF, aligned_zeros, new_table, reset_table, softmax_table
from .variates import failures_before_success
from .vecmath import FAST

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
    return _pg_step(W, pool_x[idx], pool_y[idx], p, state, counters[C_STEPS], counters, ws, True)


@njit(cache=True, error_model="numpy")
def advance_pool_events(W, pool_x, pool_y, state, counters, p, n_steps, events, settle, ws):
    """``pg`` on a pool, event by event where moves are rare (docs/design.md, "Event-driven pg").

    ``events`` (see :mod:`fastpg.kernels.events`) carries, from call to call, the steps left before the
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
            # q is the probability that a step's responses give a non-zero update direction; the
            # skipped steps are counted as the classes that give none. With eta = 0 such a step
            # still leaves W where it was, but it must be drawn and counted as what it is (a
            # success), so q is not set to 0 there: the event machinery stays exact for any eta.
            qbar = pool_move_probabilities(logf, p.reward, p.G, p.baseline, q)
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
            if pg_learn(W, pool_x[i], pool_y[i], p, counters[C_STEPS], ws, target, True):
                counters[C_UPDATES] += 1.0
            events[EV_PENDING] = -1.0
            done += 1
            fresh = False
    if settle and events[EV_DEFERRED] > 0.0:
        if not fresh:
            pool_classes(W, pool_x, pool_y, p.features, ws.table, ws.have, lp, logf)
        count_deferred(state, counters, events[EV_DEFERRED], logf, p.reward, p.G, p.baseline, weights, counts)
        events[EV_DEFERRED] = 0.0


HELD = 32  # updates of a run held back before they are applied to W (advance_held) ...
HOLD_FROM = 256 * 1024  # ... when W is larger than this many bytes (docs/kernels.md, "Where a PG step's time goes")


def new_held(B: int, k: int, d: int, hold: bool | None = None):
    """Empty storage for a run's held-back updates: coefficients ``[HELD, k B]`` (token-major and
    flattened, as a table's planes: ``c[v B + b]``) and contexts ``[HELD, d]``; how many are held
    is ``events[EV_HELD]``. With ``hold`` False (by default: when ``W`` has at most ``HOLD_FROM``
    bytes) both have no rows and :func:`advance_run` applies each update at its step."""
    if hold is None:
        hold = B * k * d * 8 > HOLD_FROM
    n = HELD if hold else 0
    return np.zeros((n, k * B)), np.zeros((n, d))


@njit(cache=True, fastmath=FAST, error_model="numpy", _nrt=False)
def hold_update(coef, touched, x, held_c, held_x, m):
    """Move a step's update (``coef[b, v]`` on touched blocks, for context ``x``) into slot ``m`` of
    the held updates (``held_c[m, v B + b]``, zeros on untouched blocks); clears ``coef`` and ``touched``."""
    B, k = coef.shape
    for b in range(B):
        if touched[b]:
            for v in range(k):
                held_c[m, v * B + b] = coef[b, v]
                coef[b, v] = 0.0
            touched[b] = False
        else:
            for v in range(k):
                held_c[m, v * B + b] = 0.0
    for j in range(x.shape[0]):
        held_x[m, j] = x[j]


@njit(cache=True, fastmath=FAST, error_model="numpy", _nrt=False)
def held_gram(held_x, m, x, g):
    """``g[i] = held_x[i] . x`` for ``i < m``."""
    for i in range(m):
        s = 0.0
        for j in range(x.shape[0]):
            s += held_x[i, j] * x[j]
        g[i] = s


# Held updates are added in the order they were made, several at a time as one chain of fused
# multiply-adds per element: compiled with "contract" only (no reassociation), so how they are
# grouped changes nothing.
@njit(cache=True, fastmath={"contract"}, error_model="numpy", _nrt=False)
def add_held_scores(held_c, g, m, diff):
    """``diff[r] += sum_{i < m} held_c[i, r] g[i]`` in the order ``i = 0, 1, ..``: with ``diff`` a
    table's logits plane ``DIFF`` flattened (``r = v B + b``), ``held_c`` the held coefficients
    flattened the same way and ``g[i] = x_i . x`` (:func:`held_gram`), the logits of ``x`` under
    ``W + sum_i c_i x_i^T`` from those under ``W``."""
    R = diff.shape[0]
    i = 0
    while i + 4 <= m:
        g0, g1, g2, g3 = g[i], g[i + 1], g[i + 2], g[i + 3]
        for r in range(R):
            s = diff[r] + held_c[i, r] * g0
            s = s + held_c[i + 1, r] * g1
            s = s + held_c[i + 2, r] * g2
            diff[r] = s + held_c[i + 3, r] * g3
        i += 4
    while i < m:
        gi = g[i]
        for r in range(R):
            diff[r] += held_c[i, r] * gi
        i += 1


@njit(cache=True, fastmath={"contract"}, error_model="numpy", _nrt=False)
def apply_held(W, held_c, held_x, m):
    """``W[b, v, :] += held_c[i, v B + b] * held_x[i]`` for ``i = 0 .. m - 1`` in that order: each
    weight takes the same fused multiply-adds, in the same order, as when every update is applied
    at its own step (:func:`fastpg.kernels.updates.apply_update`), so the weights are the same bit for bit
    (up to the sign of a zero: a zero coefficient adds ``0 x`` here and is skipped there).

    Block by block (a block stays in L1), eight updates at a time per row (a chain of eight
    multiply-adds per weight between a load and a store); consecutive rows are independent.
    """
    B, k, d = W.shape
    for b in range(B):
        i = 0
        while i + 8 <= m:
            for v in range(k):
                r = v * B + b
                c0, c1, c2, c3 = held_c[i, r], held_c[i + 1, r], held_c[i + 2, r], held_c[i + 3, r]
                c4, c5, c6, c7 = held_c[i + 4, r], held_c[i + 5, r], held_c[i + 6, r], held_c[i + 7, r]
                if c0 == 0.0 and c1 == 0.0 and c2 == 0.0 and c3 == 0.0 and c4 == 0.0 and c5 == 0.0 and c6 == 0.0 \
                        and c7 == 0.0:
                    continue
                for j in range(d):
                    w = W[b, v, j] + c0 * held_x[i, j]
                    w = w + c1 * held_x[i + 1, j]
                    w = w + c2 * held_x[i + 2, j]
                    w = w + c3 * held_x[i + 3, j]
                    w = w + c4 * held_x[i + 4, j]
                    w = w + c5 * held_x[i + 5, j]
                    w = w + c6 * held_x[i + 6, j]
                    W[b, v, j] = w + c7 * held_x[i + 7, j]
            i += 8
        while i < m:
            for v in range(k):
                c = held_c[i, v * B + b]
                if c != 0.0:
                    for j in range(d):
                        W[b, v, j] += c * held_x[i, j]
            i += 1


@njit(cache=True, fastmath=FAST, error_model="numpy", _nrt=False)
def reference_rows(kw, D_ref, t, n_tile):
    """Fill the reference's table of a KL term (``kw.table``, all rows) for context ``t`` of a tile
    from the tile's logits ``D_ref[v, b n_tile + t]`` (:func:`fastpg.kernels.lanes.lane_scores`)."""
    B, k = kw.table.shape[2], kw.table.shape[1]
    for v in range(k):
        for b in range(B):
            kw.table[DIFF, v, b] = D_ref[v, b * n_tile + t]
    softmax_table(kw.table, kw.have)


@njit(cache=True, _nrt=False)
def holds_updates(p, n_pool):
    """Whether a run may hold its updates back (:func:`advance_held`): whether it draws ahead."""
    return draws_ahead(p, n_pool)


@njit(cache=True, _nrt=False)
def draws_ahead(p, n_pool):
    """Whether a run's fresh contexts are drawn a tile ahead: nothing about them depends on the
    weights being trained (no pool, ``position`` features, no margin condition, ``pg`` or ``sft``)."""
    return n_pool == 0 and p.features == POSITION and p.gamma <= 0.0 and p.algorithm != RS and p.filter_groups == 0


@njit(cache=True, error_model="numpy")
def advance_held(W, W_ref, W_star, centres, cdf, state, counters, p, n_steps, events, held_c, held_x, settle):
    """``pg`` or ``sft`` on fresh contexts drawn a tile ahead, holding updates back (docs/kernels.md,
    "Where a PG step's time goes"), for runs that draw ahead (:func:`draws_ahead`) when ``held_x``
    has rows (:func:`new_held`: ``W`` of more than ``HOLD_FROM`` bytes).

    Contexts, labels and the generator state at each step's own draws come from
    :func:`fastpg.kernels.contexts.draw_labelled_tile`, as in :func:`advance_run`, so the stream is that of
    drawing one context per step. Updates are held back (up to ``HELD``; their number in
    ``events[EV_HELD]``, coefficients and contexts in ``held_c``, ``held_x``) and applied together
    (:func:`apply_held`: the same weights, bit for bit, as applying each at its step) when
    ``HELD`` are held, and at the end of a call with ``settle`` (an evaluation point). With ``W``
    the weights at the last application, a step's logits are

        ``s_t = W x_t + sum_i c_i (x_i . x_t)``,

    ``W_t x_t`` up to rounding: ``W x_t`` with the contexts in SIMD lanes over the rest of the tile
    (:func:`fastpg.kernels.lanes.lane_scores`, formed once per tile or application), the sum from
    :func:`held_gram` and :func:`add_held_scores`. Each term is formed by the same code whatever
    range, tile or call it falls in, so results do not depend on how a run is cut into calls
    between evaluation points; where evaluation points fall changes them by rounding.

    With a KL term (:func:`fastpg.kernels.kl.pg_kl_update`) the reference's logits ``W_ref x_t``
    of a whole tile are formed at once, as the teacher's (``W_ref`` does not change), and every
    step's update is held.
    """
    B, k, d = W.shape
    N = W_star.shape[0]
    ws = new_workspace(B, k, N, max(p.G, 1))
    gap = p.G * N if p.algorithm == PG else 0
    n_tile = min(TILE, (n_steps + LANES - 1) // LANES * LANES)  # short calls draw short tiles
    Xt = aligned_zeros(n_tile, d)
    XT = aligned_zeros(d, n_tile)  # the tile's contexts as columns (draw_labelled_tile)
    Yt = np.empty((n_tile, N), dtype=np.int64)
    St = np.empty((n_tile, 4), dtype=np.uint64)
    teacher_work = new_table(n_tile * B, k)[0]
    D = aligned_zeros(k, n_tile * B)  # W x_t of the tile's contexts: D[v, b n_tile + t] (lane_scores)
    with_kl = p.kl_coef > 0.0
    kw = new_kl_work(B, k, N, max(p.G, 1)) if with_kl else new_kl_work(1, 1, 1, 1)
    D_ref = aligned_zeros(k, n_tile * B) if with_kl else aligned_zeros(1, 1)  # W_ref x_t, as D
    x = aligned_zeros(1, d)[0]
    y_star = np.empty(N, dtype=np.int64)
    g = np.empty(HELD)
    table = ws.table
    diff = table[DIFF].reshape(k * B)  # the logits plane, flattened (a view)
    i_tile = 0
    m_tile = 0
    valid = 0  # D holds W x_t for the contexts i_tile .. valid - 1 of the tile
    m = int(events[EV_HELD])
    for step in range(n_steps):
        if i_tile == m_tile:
            m_tile = min(n_tile, n_steps - step)
            draw_labelled_tile(state, W_star, centres, cdf, p.sigma, m_tile, gap, Xt, XT, Yt, St, teacher_work)
            i_tile = 0
            valid = 0
            if with_kl:
                lane_scores(W_ref, XT, 0, D_ref)
        # the same copies as advance_run's, inline: as a helper call (seven arrays) they measured
        # 1-3% slower steps at d=32, k=4, N=8 there
        for j in range(d):
            x[j] = Xt[i_tile, j]
        for i in range(N):
            y_star[i] = Yt[i_tile, i]
        for i in range(4):
            state[i] = St[i_tile, i]
        counters[C_STEPS] += 1.0
        counters[C_CONTEXTS] += 1.0
        t = counters[C_STEPS]
        if i_tile >= valid:  # W stays put until the next application of held updates
            valid = n_tile  # the rest of the tile, from the vector of lanes this context is in
            lane_scores(W, XT, i_tile // LANES * LANES, D)
        for v in range(k):
            for b in range(B):
                table[DIFF, v, b] = D[v, b * n_tile + i_tile]
        held_gram(held_x, m, x, g)
        add_held_scores(held_c, g, m, diff)
        softmax_table(table, ws.have)
        if with_kl:
            reference_rows(kw, D_ref, i_tile, n_tile)
        if p.algorithm == PG and with_kl:
            moved = pg_kl_update(W, W_ref, x, y_star, p, state, t, counters, ws, kw, True, False)
        elif p.algorithm == PG:
            moved = _pg_step(W, x, y_star, p, state, t, counters, ws, False)
        else:  # SFT: one SGD step on the log-loss -log pi_W(y*|x) of a labelled context
            moved = _learn_prefix(W, x, y_star, N, p, t, ws, False)
        i_tile += 1
        if moved:
            counters[C_UPDATES] += 1.0
            hold_update(ws.coef, ws.touched, x, held_c, held_x, m)
            m += 1
            if m == HELD:
                apply_held(W, held_c, held_x, m)
                m = 0
                valid = 0
    if settle and m > 0:
        apply_held(W, held_c, held_x, m)
        m = 0
    events[EV_HELD] = m
    return OK if weights_ok(W) else NON_FINITE


@njit(cache=True, error_model="numpy")
def advance_run(W, W_ref, W_star, centres, cdf, pool_x, pool_y, state, counters, p, n_steps, events, settle):
    """Advance one run by ``n_steps`` steps in place; returns a status code of :mod:`fastpg.codes`.

    Each step draws a context: uniformly from the pool ``pool_x, pool_y`` when it is not
    empty, else fresh from the distribution ``(centres, cdf, p.sigma)`` conditioned on the
    teacher margin ``>= p.gamma`` and labelled by the teacher ``W_star``. It then runs the
    algorithm ``p.algorithm`` and updates ``counters`` (docs/design.md, "Counters").

    ``pg`` on a pool with ``p.skip`` goes event by event (:func:`advance_pool_events`, with the
    run's persistent ``events`` state; ``settle``: this call ends at an evaluation point).
    ``pg`` with a KL term (``p.kl_coef > 0``, reference weights ``W_ref``) steps through
    (:func:`fastpg.kernels.kl.pg_kl_update`): every step moves ``W``; so does ``pg`` with
    ``p.filter_groups`` (:func:`fastpg.kernels.filtering.filtered_pg_step`) unless a step's budget of
    groups runs out, and there ``p.skip`` skips the discarded groups of a step instead.

    Fresh contexts are drawn a tile ahead (:func:`fastpg.kernels.contexts.draw_labelled_tile`) when
    nothing about them depends on the weights being trained: ``position`` features, no margin
    condition (``gamma <= 0``) and an algorithm whose own draws per step are a fixed number
    (``pg``: ``G N`` tokens; ``sft``: none). The stream, and so every result, is the same as
    drawing them one step at a time; only the teacher's logits are computed tile by tile. (With
    large ``W`` :func:`fastpg.kernels.engine.advance_runs` sends such runs to :func:`advance_held`.)
    """
    B, k, d = W.shape
    N = pool_y.shape[1]
    ws = new_workspace(B, k, N, max(p.G, 1))
    with_kl = p.kl_coef > 0.0
    kw = new_kl_work(B, k, N, max(p.G, 1)) if with_kl else new_kl_work(1, 1, 1, 1)
    filtering = p.filter_groups != 0
    fw = new_filter_work(N, max(p.G, 1)) if filtering else new_filter_work(1, 1)
    teacher_work = new_table(B, k)[0]
    x = aligned_zeros(1, d)[0]  # 64-byte aligned, as W: no split loads in the products with x
    y_star = np.empty(N, dtype=np.int64)
    n_pool = pool_x.shape[0]
    algorithm = p.algorithm
    if algorithm == PG and n_pool > 0 and p.skip != 0 and not with_kl and not filtering:
        advance_pool_events(W, pool_x, pool_y, state, counters, p, n_steps, events, settle, ws)
        return OK if weights_ok(W) else NON_FINITE
    ahead = draws_ahead(p, n_pool)
    gap = p.G * N if algorithm == PG else 0
    n_tile = min(TILE, (n_steps + LANES - 1) // LANES * LANES) if ahead else 0  # short calls draw short tiles
    Xt = aligned_zeros(n_tile, d)
    XT = aligned_zeros(d, n_tile)
    Yt = np.empty((n_tile, N), dtype=np.int64)
    St = np.empty((n_tile, 4), dtype=np.uint64)
    tile_work = new_table(n_tile * B, k)[0]
    i_tile = 0
    m_tile = 0
    for step in range(n_steps):
        if ahead:
            if i_tile == m_tile:
                m_tile = min(n_tile, n_steps - step)
                draw_labelled_tile(state, W_star, centres, cdf, p.sigma, m_tile, gap, Xt, XT, Yt, St, tile_work)
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
        if with_kl:
            reset_table(kw.have)
        if algorithm == PG and with_kl:
            moved = pg_kl_update(W, W_ref, x, y_star, p, state, t, counters, ws, kw, True, True)
        elif algorithm == PG and filtering:
            moved = filtered_pg_step(W, x, y_star, p, state, t, counters, ws, fw, True)
        elif algorithm == PG:
            moved = _pg_step(W, x, y_star, p, state, t, counters, ws, True)
        elif algorithm == RS:
            moved = _rs_step(W, x, y_star, p, state, t, counters, ws)
        else:  # SFT: one SGD step on the log-loss -log pi_W(y*|x) of a labelled context
            moved = _learn_prefix(W, x, y_star, N, p, t, ws, True)
        if moved:
            counters[C_UPDATES] += 1.0
    if not weights_ok(W):
        return NON_FINITE
    return OK
