"""Compiled kernels of the linear autoregressive model (docs/design.md, "The model").

The model's logits at position ``i`` are ``s_i(v) = W[b_i, v, :] . x`` where the
block ``b_i`` is chosen by the feature map:

* ``position`` (code 0): ``b_i = i``; ``W`` has ``N`` blocks.
* ``markov`` (code 1): ``b_i = i*(k+1) + y_{i-1}`` with ``y_{-1} = BOS = k``;
  ``W`` has ``N*(k+1)`` blocks.

Kernels work on one context and a *lazy table* (:func:`new_table`) with a flag ``have[b]``
per block: ``table[LOGP, b] = log softmax(W[b] . x)``, ``table[PROB, b]`` its exponential
(and workspace planes). Rows are computed the first time a position needs them and reused by
every response sampled from the same weights and context, by the gradient and by the
log-likelihoods; call :func:`reset_table` when ``W`` or ``x`` changes. With ``position``
features every row is filled at once (:func:`fill_table`): logits are laid out token-major
(``[v, b]``), so maxima, exponentials, sums and logarithms all run as SIMD loops over rows;
``markov`` rows depend on the path and are filled one by one
(:func:`ensure_row`). Log-likelihoods are formed in log space (log-sum-exp), so values far
below ``1e-300`` stay finite.

Dot products and updates are compiled with ``fastmath={"reassoc", "contract"}`` (SIMD
reductions and fused multiply-adds): results change only by rounding, and every run uses the
same code whatever the threads, so reproducibility is kept. No flag that assumes finite values
(``nnan``, ``ninf``) or approximates functions (``afn``) is used. ``error_model="numpy"``: a
division by zero gives inf/NaN as in IEEE arithmetic instead of raising, so diverged weights are
caught by the engine's weight check rather than by an exception inside a kernel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .codes import MARKOV, POSITION  # noqa: F401 - re-exported: the feature codes of the block layout
from .rng import discard, uniform, uniform_next
from .simd import LANES, vfma, vload, vstore, vzero
from .vecmath import FAST, exp_le0, log_pos

# planes of a table (see new_table), each token-major [k, rows]
LOGP, PROB, DIFF, EXPS, BITS, STATS = range(6)


def n_blocks(features: int, N: int, k: int) -> int:
    """Number of weight blocks of a feature map (docs/design.md, "The model")."""
    return N if features == POSITION else N * (k + 1)


ALIGN = 64  # bytes: a cache line, and one AVX-512 vector


@njit(cache=True)
def aligned_zeros(n, d):
    """A zeroed ``float64[n, d]`` whose data starts on an ``ALIGN``-byte boundary.

    Numba's own arrays start on 32 bytes; a 64-byte vector load of a row that straddles two cache
    lines is a split load (the update ``W += c x`` measured about 25% slower with ``x`` unaligned).
    """
    buf = np.zeros(n * d + ALIGN // 8)
    off = (ALIGN - buf.ctypes.data % ALIGN) % ALIGN // 8
    return buf[off:off + n * d].reshape((n, d))


@njit(cache=True)
def new_table(blocks, k):
    """An empty lazy table ``[6, k, blocks]`` and its row flags ``have[blocks]``.

    Every plane is token-major: ``table[LOGP, v, b] = log pi_b(v)`` and
    ``table[PROB, v, b] = pi_b(v)`` for the row (block) ``b``; ``DIFF``, ``EXPS``, ``BITS`` and
    ``STATS`` are workspace of the whole-table softmax (see :func:`center_planes`). Loops over
    rows are contiguous in memory, so the softmax of a whole table vectorises over rows. A table
    over ``T B`` rows is the workspace of a tile of ``T`` contexts.
    """
    return aligned_zeros(6 * k, blocks).reshape((6, k, blocks)), np.zeros(blocks, dtype=np.bool_)


@njit(cache=True, inline="always", _nrt=False)
def block_index(features, i, prev, k):
    """Block of position ``i`` (0-based) after token ``prev`` (``k`` = BOS)."""
    if features == POSITION:
        return i
    return i * (k + 1) + prev


@njit(cache=True, error_model="numpy", _nrt=False)
def reset_table(have):
    for b in range(have.shape[0]):
        have[b] = False


@njit(cache=True, fastmath=FAST, error_model="numpy", inline="always", _nrt=False)
def dot4(W, b0, v0, b1, v1, b2, v2, b3, v3, x):
    """The four logits ``W[b_i, v_i, :] . x`` in one pass over ``x``.

    Four independent accumulators keep the FMA units busy (about 25% faster than one row at a
    time at d = 64).
    """
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    for j in range(x.shape[0]):
        xj = x[j]
        s0 += W[b0, v0, j] * xj
        s1 += W[b1, v1, j] * xj
        s2 += W[b2, v2, j] * xj
        s3 += W[b3, v3, j] * xj
    return s0, s1, s2, s3


@njit(cache=True, fastmath=FAST, error_model="numpy", inline="always", _nrt=False)
def dot1(W, b, v, x):
    """One logit ``W[b, v, :] . x``."""
    s = 0.0
    for j in range(x.shape[0]):
        s += W[b, v, j] * x[j]
    return s


@njit(cache=True, fastmath=FAST, error_model="numpy", _nrt=False)
def scores(W, x, b, out):
    """Logits of one block: ``out[v] = W[b, v, :] . x``, four rows per pass (:func:`dot4`)."""
    k = W.shape[1]
    v = 0
    while v + 4 <= k:
        out[v], out[v + 1], out[v + 2], out[v + 3] = dot4(W, b, v, b, v + 1, b, v + 2, b, v + 3, x)
        v += 4
    while v < k:
        out[v] = dot1(W, b, v, x)
        v += 1


@njit(cache=True, error_model="numpy", _nrt=False)
def ensure_row(W, x, b, table, have):
    """Fill row ``b`` with ``log softmax_v(W[b, v, :] . x)`` and its exponential unless there."""
    if have[b]:
        return
    k = W.shape[1]
    row = table[LOGP, :, b]
    scores(W, x, b, row)
    m = -np.inf
    for v in range(k):
        if row[v] > m:
            m = row[v]
    z = 0.0
    p = table[PROB, :, b]
    for v in range(k):
        p[v] = math.exp(row[v] - m)
        z += p[v]
    lz = m + math.log(z)
    inv_z = 1.0 / z
    for v in range(k):
        row[v] -= lz
        p[v] *= inv_z
    have[b] = True


@njit(cache=True, fastmath=FAST, error_model="numpy", inline="always", _nrt=False)
def block_scores(W, x, table, b):
    """``table[DIFF, v, b] = W[b, v, :] . x`` for every token ``v``, and the row's maximum in
    ``table[STATS, 0, b]`` (as :func:`row_maxima` leaves it)."""
    k = W.shape[1]
    m = -np.inf
    v = 0
    while v + 4 <= k:
        s0, s1, s2, s3 = dot4(W, b, v, b, v + 1, b, v + 2, b, v + 3, x)
        table[DIFF, v, b] = s0
        table[DIFF, v + 1, b] = s1
        table[DIFF, v + 2, b] = s2
        table[DIFF, v + 3, b] = s3
        m = max(m, max(max(s0, s1), max(s2, s3)))
        v += 4
    while v < k:
        s0 = dot1(W, b, v, x)
        table[DIFF, v, b] = s0
        m = max(m, s0)
        v += 1
    table[STATS, 0, b] = m


@njit(cache=True, fastmath=FAST, error_model="numpy", _nrt=False)
def scores_planes(W, x, table, backwards=False):
    """All logits of one context, token-major: ``table[DIFF, v, b] = W[b, v, :] . x`` (``position`` features),
    and each row's maximum in ``table[STATS, 0, b]`` (:func:`block_scores`).

    Block by block, from the last block to the first if ``backwards``: each logit is the same
    either way, and a pass that starts where the previous pass over ``W`` ended finds those blocks
    still in L1 (docs/design.md, "What the kernels do").
    """
    B = W.shape[0]
    for i in range(B):
        block_scores(W, x, table, B - 1 - i if backwards else i)


TILE = 32  # contexts per tile: evaluation, batch sampling and contexts drawn ahead
LANE_TILE = 4 * LANES  # contexts a register tile of lane_scores covers (4 vectors)
if TILE % LANE_TILE != 0:  # whole tiles are walked LANE_TILE contexts at a time
    raise ImportError(f"fastpg.model.TILE = {TILE} must be a multiple of {LANE_TILE}")


@njit(cache=True, error_model="numpy", inline="always", _nrt=False)
def _lanes_4x4(W, b, v, XT, t, D, T):
    """``lane_scores`` for rows ``v .. v+3`` of block ``b`` and contexts ``t .. t+31``: 16 vector accumulators."""
    a00 = a01 = a02 = a03 = vzero()
    a10 = a11 = a12 = a13 = vzero()
    a20 = a21 = a22 = a23 = vzero()
    a30 = a31 = a32 = a33 = vzero()
    for j in range(XT.shape[0]):
        xr = XT[j]
        x0, x1, x2, x3 = vload(xr, t), vload(xr, t + 8), vload(xr, t + 16), vload(xr, t + 24)
        w = W[b, v, j]
        a00, a01, a02, a03 = vfma(x0, w, a00), vfma(x1, w, a01), vfma(x2, w, a02), vfma(x3, w, a03)
        w = W[b, v + 1, j]
        a10, a11, a12, a13 = vfma(x0, w, a10), vfma(x1, w, a11), vfma(x2, w, a12), vfma(x3, w, a13)
        w = W[b, v + 2, j]
        a20, a21, a22, a23 = vfma(x0, w, a20), vfma(x1, w, a21), vfma(x2, w, a22), vfma(x3, w, a23)
        w = W[b, v + 3, j]
        a30, a31, a32, a33 = vfma(x0, w, a30), vfma(x1, w, a31), vfma(x2, w, a32), vfma(x3, w, a33)
    r = b * T + t
    o = D[v]
    vstore(o, r, a00), vstore(o, r + 8, a01), vstore(o, r + 16, a02), vstore(o, r + 24, a03)
    o = D[v + 1]
    vstore(o, r, a10), vstore(o, r + 8, a11), vstore(o, r + 16, a12), vstore(o, r + 24, a13)
    o = D[v + 2]
    vstore(o, r, a20), vstore(o, r + 8, a21), vstore(o, r + 16, a22), vstore(o, r + 24, a23)
    o = D[v + 3]
    vstore(o, r, a30), vstore(o, r + 8, a31), vstore(o, r + 16, a32), vstore(o, r + 24, a33)


@njit(cache=True, error_model="numpy", inline="always", _nrt=False)
def _lanes_4x1(W, b, v, XT, t, D, T):
    """``lane_scores`` for rows ``v .. v+3`` of block ``b`` and contexts ``t .. t+7``."""
    a0 = a1 = a2 = a3 = vzero()
    for j in range(XT.shape[0]):
        x0 = vload(XT[j], t)
        a0, a1 = vfma(x0, W[b, v, j], a0), vfma(x0, W[b, v + 1, j], a1)
        a2, a3 = vfma(x0, W[b, v + 2, j], a2), vfma(x0, W[b, v + 3, j], a3)
    r = b * T + t
    vstore(D[v], r, a0), vstore(D[v + 1], r, a1), vstore(D[v + 2], r, a2), vstore(D[v + 3], r, a3)


@njit(cache=True, error_model="numpy", inline="always", _nrt=False)
def _lanes_1x1(W, b, v, XT, t, D, T):
    """``lane_scores`` for row ``v`` of block ``b`` and contexts ``t .. t+7``."""
    a = vzero()
    for j in range(XT.shape[0]):
        a = vfma(vload(XT[j], t), W[b, v, j], a)
    vstore(D[v], b * T + t, a)


@njit(cache=True, error_model="numpy", _nrt=False)
def lane_scores(W, XT, t0, D):
    """Logits of the contexts ``t0 <= t < T`` of a tile held as the columns of ``XT[d, T]`` (``t0``
    and ``T`` multiples of ``LANES``), block-major: ``D[v, b T + t] = sum_j W[b, v, j] XT[j, t]``.

    The contexts sit in SIMD lanes (:mod:`fastpg.simd`): 4 weight rows x 32 contexts are 16
    vector accumulators in registers, and each step over ``j`` takes 4 vector loads of ``XT``, 4
    scalar weights and 16 fused multiply-adds, with no horizontal reduction at the end (the
    contexts past the last 32 go 8 at a time, rows past the last 4 one at a time). Each logit is
    the fused multiply-add chain over ``j = 0, 1, ..., d-1`` of its own row and context, so it does
    not depend on the other contexts of the tile, on its lane or on ``t0``. The vector loads and
    stores do not check bounds, so the shapes are checked once per call. The sum runs in
    another order than the one-context logits of :func:`scores_planes` (interleaved partial sums
    and a tree), so the two differ by rounding.
    """
    B, k = W.shape[0], W.shape[1]
    T = XT.shape[1]
    if T % LANES or t0 % LANES or t0 < 0 or XT.shape[0] != W.shape[2] or D.shape[0] < k or D.shape[1] < B * T:
        raise ValueError("lane_scores: XT must be d x T, T and t0 multiples of LANES, D at least k x B T")
    for b in range(B):
        v = 0
        while v + 4 <= k:
            t = t0
            while t + LANE_TILE <= T:
                _lanes_4x4(W, b, v, XT, t, D, T)
                t += LANE_TILE
            while t < T:
                _lanes_4x1(W, b, v, XT, t, D, T)
                t += LANES
            v += 4
        while v < k:
            for t in range(t0, T, LANES):
                _lanes_1x1(W, b, v, XT, t, D, T)
            v += 1


@njit(cache=True, error_model="numpy", _nrt=False)
def load_lanes(X, j0, XT):
    """Contexts ``X[j0 : j0 + T]`` as the columns of ``XT[d, T]`` (zeros past the end of ``X``); returns
    how many there were."""
    T = min(XT.shape[1], X.shape[0] - j0)
    for t in range(XT.shape[1]):
        if t < T:
            for j in range(XT.shape[0]):
                XT[j, t] = X[j0 + t, j]
        else:
            for j in range(XT.shape[0]):
                XT[j, t] = 0.0
    return T


@njit(cache=True, error_model="numpy", _nrt=False)
def tile_logits(W, X, j0, XT, D):
    """The logits of the contexts ``X[j0 : j0 + T]`` of a tile: copied into the columns of ``XT[d, T]``
    (:func:`load_lanes`, zero contexts past the end of ``X``), then ``D[v, b T + t]`` by
    :func:`lane_scores`; returns how many contexts there were."""
    n = load_lanes(X, j0, XT)
    lane_scores(W, XT, 0, D)
    return n


@njit(cache=True, fastmath=FAST, error_model="numpy", inline="always", _nrt=False)
def row_maxima(table, r0, r1):
    """``table[STATS, 0, r] = max_v table[DIFF, v, r]`` for the rows ``r0 <= r < r1``, one pass per
    token over the rows (contiguous in memory, so it vectorises)."""
    k = table.shape[1]
    for r in range(r0, r1):
        table[STATS, 0, r] = table[DIFF, 0, r]
    for v in range(1, k):
        for r in range(r0, r1):
            table[STATS, 0, r] = max(table[STATS, 0, r], table[DIFF, v, r])


@njit(cache=True, fastmath=FAST, error_model="numpy", _nrt=False)
def center_planes(table):
    """Subtract each row's maximum from its logits ``table[DIFF, v, r] = s_r(v)``.

    On return ``table[DIFF, v, r] = s_r(v) - max_u s_r(u)``: exactly 0 at the maximising
    tokens and negative elsewhere. Every loop runs over rows ``r``, contiguous in memory, so it
    vectorises. The maxima are left in ``table[STATS, 0]``.
    """
    k, R = table.shape[1], table.shape[2]
    row_maxima(table, 0, R)
    for v in range(k):
        for r in range(R):
            table[DIFF, v, r] -= table[STATS, 0, r]


@njit(cache=True, fastmath=FAST, error_model="numpy", _nrt=False)
def softmax_planes(table, logs, maxima=False):
    """Softmax of the logits of every row: :func:`softmax_rows` over all of them."""
    softmax_rows(table, 0, table.shape[2], logs, maxima)


# Not inlined (nor softmax_table_rows): Numba inlines at the level of its own IR, so an inlined
# kernel is compiled with its caller's fastmath flags, and the bits of exp_le0 change with "contract".
@njit(cache=True, fastmath=FAST, error_model="numpy", _nrt=False)
def softmax_rows(table, r0, r1, logs, maxima):
    """Softmax of the logits ``D[v, r] = table[DIFF, v, r] = s_r(v)`` of the rows ``r0 <= r < r1``,
    vectorised over rows.

    Centres them in place (``D[v, r] = s_r(v) - max_u s_r(u)``, as :func:`center_planes`), with
    ``table[EXPS, v, r] = exp(D[v, r])`` and ``z_r = sum_v E[v, r]`` (in ``[1, k]``) formed in the
    same pass; leaves ``1 / z_r`` in ``table[STATS, 1, r]`` and, if ``logs``, ``log z_r`` in
    ``table[STATS, 0, r]``, so that ``log pi_r(v) = D[v, r] - log z_r`` and
    ``pi_r(v) = E[v, r] * (1 / z_r)``. Two passes over the logits (maxima; centring, ``exp`` and
    sums) and one over the rows (``log z`` and ``1 / z``); one pass over the logits with
    ``maxima``, when the row maxima are already in ``table[STATS, 0]`` (:func:`block_scores`).
    Every operation is elementwise in ``r``, so a row's numbers do not depend on the range.
    """
    k = table.shape[1]
    r0, r1 = np.uint64(r0), np.uint64(r1)  # unsigned: no negative-index wraparound, so the loops vectorise
    if not maxima:
        row_maxima(table, r0, r1)
    D = table[DIFF]
    E = table[EXPS]
    m = table[STATS, 0]
    z = table[STATS, 1]
    for r in range(r0, r1):
        D[0, r] -= m[r]
        E[0, r] = exp_le0(D[0, r])
        z[r] = E[0, r]
    for v in range(1, k):
        for r in range(r0, r1):
            D[v, r] -= m[r]
            E[v, r] = exp_le0(D[v, r])
            z[r] += E[v, r]
    if logs:
        for r in range(r0, r1):
            m[r] = log_pos(z[r])
    for r in range(r0, r1):
        z[r] = 1.0 / z[r]


@njit(cache=True, fastmath=FAST, error_model="numpy", inline="always", _nrt=False)
def greedy_rows(table):
    """Each row's maximum ``m_r = max_v D[v, r]`` in ``table[STATS, 0, r]`` and its first maximising
    token (the greedy token, ties to the smallest) in ``table[BITS, 0, r]``, in one pass per token
    over the rows (masked stores); the logits ``D = table[DIFF]`` are left as they are."""
    k, R = table.shape[1], table.shape[2]
    D = table[DIFF]
    m = table[STATS, 0]
    best = table[BITS, 0]
    for r in range(R):
        m[r] = D[0, r]
        best[r] = 0.0
    for v in range(1, k):
        fv = float(v)
        for r in range(R):
            if D[v, r] > m[r]:  # strictly: ties keep the first maximiser
                m[r] = D[v, r]
                best[r] = fv


@njit(cache=True, fastmath=FAST, error_model="numpy", _nrt=False)
def log_partition_planes(table):
    """Each row's maximum, greedy token and log partition function from the logits
    ``D[v, r] = table[DIFF, v, r] = s_r(v)``, which are left as they are:

    ``m_r = max_v s_r(v)`` in ``table[STATS, 0, r]``, ``log z_r = log sum_v exp(s_r(v) - m_r)`` in
    ``table[STATS, 1, r]`` and the first maximising token in ``table[BITS, 0, r]``, so that
    ``log pi_r(v) = (s_r(v) - m_r) - log z_r``.

    The same numbers as :func:`softmax_planes` and :func:`first_max_planes` (the same operations
    in the same order; the greedy token is tracked in the maxima's pass, :func:`greedy_rows`), in two passes over the
    logits and one over the rows that write neither the centred logits nor the exponentials: for the evaluation, which needs only
    ``log pi_r(y*_r)`` and the greedy token. Needs ``k >= 2`` (the statistics are planes of the
    table), as every task has.
    """
    k, R = table.shape[1], table.shape[2]
    D = table[DIFF]
    m = table[STATS, 0]
    lz = table[STATS, 1]
    greedy_rows(table)
    for r in range(R):
        lz[r] = exp_le0(D[0, r] - m[r])
    for v in range(1, k):
        for r in range(R):
            lz[r] += exp_le0(D[v, r] - m[r])
    for r in range(R):
        lz[r] = log_pos(lz[r])


@njit(cache=True, fastmath=FAST, error_model="numpy", _nrt=False)
def first_max_planes(table, best):
    """``best[r]`` = the first token with ``D[v, r] = 0`` (the greedy token of row ``r``, ties to the
    smallest), after :func:`center_planes`; vectorised over rows (as masked stores)."""
    k, R = table.shape[1], table.shape[2]
    for r in range(R):
        best[r] = float(k)
    for v in range(k - 1, -1, -1):
        fv = float(v)
        for r in range(R):
            if table[DIFF, v, r] == 0.0:
                best[r] = fv


@njit(cache=True, fastmath=FAST, error_model="numpy", _nrt=False)
def fill_table(W, x, table, have, backwards=False):
    """Fill every row at once (``position`` features), vectorised over rows (docs/design.md, "The model"):
    the logits (:func:`scores_planes`, blocks in the order ``backwards`` says), then :func:`softmax_table`."""
    scores_planes(W, x, table, backwards)
    softmax_table(table, have, True)


@njit(cache=True, fastmath=FAST, error_model="numpy", _nrt=False)
def fill_rows(W, x, table, have, b0, b1):
    """Fill the rows ``b0 <= b < b1`` (``position`` features): the same numbers as :func:`fill_table`."""
    for b in range(b0, b1):
        block_scores(W, x, table, b)
    softmax_table_rows(table, have, b0, b1, True)


@njit(cache=True, fastmath=FAST, error_model="numpy", inline="always", _nrt=False)
def softmax_table(table, have, maxima=False):
    """Fill every row from the logits already in ``table[DIFF]``: :func:`softmax_table_rows` over all rows."""
    softmax_table_rows(table, have, 0, table.shape[2], maxima)


@njit(cache=True, fastmath=FAST, error_model="numpy", _nrt=False)
def softmax_table_rows(table, have, r0, r1, maxima):
    """Fill the rows ``r0 <= r < r1`` from the logits already in ``table[DIFF]`` (:func:`softmax_rows`;
    ``maxima`` as there): ``log pi_b(v) = (s_b(v) - max s_b) - log sum_u exp(s_b(u) - max s_b)``
    and ``pi_b(v) = exp(s_b(v) - max s_b) / sum_u exp(s_b(u) - max s_b)``.
    """
    k = table.shape[1]
    softmax_rows(table, r0, r1, True, maxima)
    for b in range(r0, r1):
        have[b] = True
    r0, r1 = np.uint64(r0), np.uint64(r1)  # as in softmax_rows
    for v in range(k):
        for r in range(r0, r1):
            table[LOGP, v, r] = table[DIFF, v, r] - table[STATS, 0, r]
            table[PROB, v, r] = table[EXPS, v, r] * table[STATS, 1, r]


@njit(cache=True, _nrt=False)
def open_table(W, x, features, table, have):
    """Call before reading rows: with ``position`` features, fill every row unless already there.

    Keeping the whole-table fill out of the per-position loops (where :func:`need_row` only
    fills ``markov`` rows) lets those loops compile tight: a fill call inside them made
    ``accumulate_score`` about 5x slower.
    """
    if features == POSITION and not have[0]:
        fill_table(W, x, table, have)


@njit(cache=True, inline="always", _nrt=False)
def need_row(W, x, features, b, table, have):
    """Make row ``b`` available, after :func:`open_table`: ``markov`` rows are filled one by one."""
    if features != POSITION and not have[b]:
        ensure_row(W, x, b, table, have)


@njit(cache=True, error_model="numpy", _nrt=False)
def token_logliks(W, x, y, features, table, have, out):
    """``out[i] = log pi_W(y_i | x, y_<i)``; returns the sum ``log pi_W(y | x)``."""
    k = W.shape[1]
    open_table(W, x, features, table, have)
    prev = k
    total = 0.0
    for i in range(y.shape[0]):
        b = block_index(features, i, prev, k)
        need_row(W, x, features, b, table, have)
        out[i] = table[LOGP, y[i], b]
        total += out[i]
        prev = y[i]
    return total


@njit(cache=True, error_model="numpy", _nrt=False)
def prefix_loglik(W, x, y, n, features, table, have):
    """``log pi_W(y_<n | x) = sum_{i<n} log pi_W(y_i | x, y_<i)``."""
    k = W.shape[1]
    open_table(W, x, features, table, have)
    prev = k
    total = 0.0
    for i in range(n):
        b = block_index(features, i, prev, k)
        need_row(W, x, features, b, table, have)
        total += table[LOGP, y[i], b]
        prev = y[i]
    return total


@njit(cache=True, error_model="numpy", inline="always", _nrt=False)
def inverse_cdf(table, plane, r, scale, u):
    """The first token ``v`` of row ``r`` with ``u < sum_{w <= v} p_w``, ``p_w = table[plane, w, r] * scale``.

    With ``plane = PROB`` and ``scale = 1`` these are the table's probabilities; with
    ``plane = EXPS`` and ``scale = 1 / z_r`` the same products the table would hold. The CDF is
    non-decreasing, so the first such token is the number of tokens whose cumulative probability
    is ``<= u``, counted without a data-dependent branch; if the CDF sums to slightly less than
    ``u`` (rounding), the last token of positive probability. The table is indexed in place.
    """
    c = 0.0
    below = 0
    last = 0
    for v in range(table.shape[1]):
        p = table[plane, v, r] * scale
        last = v if p > 0.0 else last
        c += p
        below += u >= c
    return below if below < table.shape[1] else last


@njit(cache=True, error_model="numpy", _nrt=False)
def sample_token(table, plane, r, scale, state):
    """Draw a token of row ``r`` by :func:`inverse_cdf` at one uniform number from ``state``."""
    return inverse_cdf(table, plane, r, scale, uniform(state))


@njit(cache=True, error_model="numpy", _nrt=False)
def sample_response(W, x, features, table, have, state, y_out):
    """Sample ``y ~ pi_W(. | x)`` token by token into ``y_out`` (length ``N``), one uniform per token.

    The generator state stays in registers for the whole response (the same stream as
    :func:`sample_token` per token).
    """
    k = W.shape[1]
    open_table(W, x, features, table, have)
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    if features == POSITION:  # rows known in advance: a loop without fills (about 0.2 us faster)
        for i in range(y_out.shape[0]):
            u, s0, s1, s2, s3 = uniform_next(s0, s1, s2, s3)
            y_out[i] = inverse_cdf(table, PROB, i, 1.0, u)
    else:
        prev = k
        for i in range(y_out.shape[0]):
            b = block_index(features, i, prev, k)
            ensure_row(W, x, b, table, have)
            u, s0, s1, s2, s3 = uniform_next(s0, s1, s2, s3)
            prev = inverse_cdf(table, PROB, b, 1.0, u)
            y_out[i] = prev
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3


ROWS_AT_ONCE = 8  # rows of a position table that sample_until_mistake fills together: one AVX-512 vector


@njit(cache=True, error_model="numpy", _nrt=False)
def sample_until_mistake(W, x, y_star, features, table, have, state, y_out, paused):
    """Sample ``y ~ pi_W(. | x)`` token by token into ``y_out`` until its first mistake against
    ``y_star``; returns that mistake's index ``f`` (``N`` if none).

    The generator advances past all ``N`` uniforms of the response, as :func:`sample_response`
    does, and the tokens ``y_0 .. y_f`` are the same as there. The later tokens are not drawn: no
    reward, query count or mistake count depends on them, and only an update that gives a wrong
    response a nonzero advantage (a baseline) reads them; :func:`complete_response` draws them
    from the state left in ``paused`` (the state after token ``f``). ``markov`` rows after the
    mistake are not filled.
    """
    N = y_out.shape[0]
    k = W.shape[1]
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    f = N
    if features == POSITION:  # rows known in advance: fills only between chunks of tokens
        i0 = 0
        while i0 < N and f == N:
            i1 = min(i0 + ROWS_AT_ONCE, N)
            if not have[i0]:
                fill_rows(W, x, table, have, i0, i1)
            for i in range(i0, i1):
                u, s0, s1, s2, s3 = uniform_next(s0, s1, s2, s3)
                y_out[i] = inverse_cdf(table, PROB, i, 1.0, u)
                if y_out[i] != y_star[i]:
                    f = i
                    break
            i0 = i1
    else:
        prev = k
        for i in range(N):
            b = block_index(features, i, prev, k)
            ensure_row(W, x, b, table, have)
            u, s0, s1, s2, s3 = uniform_next(s0, s1, s2, s3)
            prev = inverse_cdf(table, PROB, b, 1.0, u)
            y_out[i] = prev
            if prev != y_star[i]:
                f = i
                break
    paused[0], paused[1], paused[2], paused[3] = s0, s1, s2, s3
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3
    discard(state, N - 1 - f)
    return f


@njit(cache=True, error_model="numpy", _nrt=False)
def complete_response(W, x, features, table, have, paused, y_out, f, n):
    """Draw the tokens ``y_{f+1} .. y_{n-1}`` that :func:`sample_until_mistake` left out (first
    mistake ``f``) from the state it left in ``paused``: the tokens :func:`sample_response` draws.
    Rows not yet in the table are filled (``position``: by chunks, as there)."""
    k = W.shape[1]
    N = y_out.shape[0]
    s0, s1, s2, s3 = paused[0], paused[1], paused[2], paused[3]
    prev = y_out[f]
    for i in range(f + 1, n):
        b = i
        if features != POSITION:
            b = block_index(features, i, prev, k)
            ensure_row(W, x, b, table, have)
        elif not have[i]:
            i0 = i // ROWS_AT_ONCE * ROWS_AT_ONCE
            fill_rows(W, x, table, have, i0, min(i0 + ROWS_AT_ONCE, N))
        u, s0, s1, s2, s3 = uniform_next(s0, s1, s2, s3)
        prev = inverse_cdf(table, PROB, b, 1.0, u)
        y_out[i] = prev


@njit(cache=True, inline="always", _nrt=False)
def argmax_row(row):
    """Most likely token of a row (ties to the smallest token)."""
    best = 0
    for v in range(1, row.shape[0]):
        if row[v] > row[best]:
            best = v
    return best


@njit(cache=True, fastmath=FAST, error_model="numpy", _nrt=False)
def greedy_planes(table, y_out, with_margin):
    """Greedy tokens and margin of centred logits (after :func:`center_planes`), row ``r`` = position ``r``.

    ``y_r`` is the first token with ``D[v, r] = 0`` and the margin is
    ``min_r -max_{v != y_r} D[v, r]``, both from branch-free passes over rows (masked stores).
    Without ``with_margin`` only the tokens are formed and ``inf`` is returned.
    """
    k, R = table.shape[1], table.shape[2]
    best = table[BITS, 0]
    first_max_planes(table, best)
    if not with_margin:
        for r in range(R):
            y_out[r] = int(best[r])
        return np.inf
    for r in range(R):
        table[STATS, 1, r] = -np.inf
    for v in range(k):
        fv = float(v)
        for r in range(R):
            if table[DIFF, v, r] > table[STATS, 1, r] and best[r] != fv:
                table[STATS, 1, r] = table[DIFF, v, r]
    margin = np.inf
    for r in range(R):
        margin = min(margin, -table[STATS, 1, r])
        y_out[r] = int(best[r])
    return margin


@njit(cache=True, error_model="numpy", _nrt=False)
def greedy_decode(W, x, features, work, y_out, with_margin):
    """Greedy decoding ``y_i = argmax_v s_i(v)`` along its own path; returns its margin.

    The margin is ``min_i (s_i(y_i) - max_{v != y_i} s_i(v))`` (docs/design.md, "Tasks"), from raw logits
    (no softmax needed); ``work`` is a table for ``W`` (:func:`new_table`) used as scratch. Ties
    go to the smallest token (margin 0). Without ``with_margin`` only the tokens are formed and
    ``inf`` is returned. This is how the teacher labels contexts. With
    ``position`` features all positions are decoded at once, without data-dependent branches
    (:func:`greedy_planes`).
    """
    k = W.shape[1]
    if features == POSITION:
        scores_planes(W, x, work)
        center_planes(work)
        return greedy_planes(work, y_out, with_margin)
    buf = work[DIFF, :, 0]
    prev = k
    margin = np.inf
    for i in range(y_out.shape[0]):
        b = block_index(features, i, prev, k)
        scores(W, x, b, buf)
        best = argmax_row(buf)
        if with_margin:
            second = -np.inf
            for v in range(k):
                if v != best and buf[v] > second:
                    second = buf[v]
            margin = min(margin, buf[best] - second)
        y_out[i] = best
        prev = best
    return margin


@njit(cache=True, error_model="numpy", _nrt=False)
def greedy_matches(W, x, y_star, features, table, have):
    """True when greedy decoding of ``W`` reproduces ``y_star`` (first-index tie rule)."""
    k = W.shape[1]
    open_table(W, x, features, table, have)
    prev = k
    for i in range(y_star.shape[0]):
        b = block_index(features, i, prev, k)
        need_row(W, x, features, b, table, have)
        if argmax_row(table[LOGP, :, b]) != y_star[i]:
            return False
        prev = y_star[i]
    return True


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
