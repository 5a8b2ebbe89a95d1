"""Logits of a tile of contexts held in SIMD lanes (docs/kernels.md, "What the kernels do"):
``D[v, b T + t] = W[b, v, :] . x_t`` for every block, token and context of the tile, with the
contexts as the columns of ``XT[d, T]``. Used by the evaluation, by contexts drawn a tile ahead
and by the batch sampler; the sums run in another order than the one-context logits of
:mod:`fastpg.kernels.tables`, so the two differ by rounding.
"""

from __future__ import annotations

from numba import njit

from .simd import LANES, vfma, vload, vstore, vzero

TILE = 32  # contexts per tile: evaluation, batch sampling and contexts drawn ahead
LANE_TILE = 4 * LANES  # contexts a register tile of lane_scores covers (4 vectors)
if TILE % LANE_TILE != 0:  # whole tiles are walked LANE_TILE contexts at a time
    raise ImportError(f"fastpg.kernels.lanes.TILE = {TILE} must be a multiple of {LANE_TILE}")


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

    The contexts sit in SIMD lanes (:mod:`fastpg.kernels.simd`): 4 weight rows x 32 contexts are 16
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
