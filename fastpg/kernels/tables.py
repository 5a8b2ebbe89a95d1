"""The linear autoregressive model's lazy tables of log-probabilities (docs/design.md, "The model").

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

from ..codes import POSITION
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
    still in L1 (docs/kernels.md, "What the kernels do").
    """
    B = W.shape[0]
    for i in range(B):
        block_scores(W, x, table, B - 1 - i if backwards else i)



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
