"""Parallel entry points: advance and evaluate a batch of runs of the same shape (docs/design.md,
"Sweeps and backends"; docs/kernels.md).

A batch stacks ``R`` runs that share ``(blocks, k, d, N)``: weights ``W[R, B, k, d]``,
teachers, context distributions, training pools, generator states ``states[R, 4]``,
counters ``counters[R, 8]`` and parameter records ``params[R]`` (:data:`fastpg.codes.RUN_PARAMS`). The loops
are ``prange`` over runs (or over run x test context); every iteration writes only its
own slots and draws only from its own run's stream, so results do not depend on the
number of threads. These are the only ``parallel=True`` functions, kept at the top of
the call graph (a cached function calling a parallel one can crash Numba's cache).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..codes import COUNTERS, POSITION, RUN_PARAMS
from .advance import advance_held, advance_run, holds_updates, new_held
from .events import new_event_state
from .kl import sequence_kl_entropy
from .lanes import TILE, tile_logits
from .rng import uniform_next
from .sampling import greedy_matches, inverse_cdf, sample_response
from .tables import (
    ALIGN,
    BITS,
    DIFF,
    EXPS,
    STATS,
    aligned_zeros,
    log_partition_planes,
    new_table,
    reset_table,
    softmax_planes,
    token_logliks,
)
from .vecmath import FAST


@njit(cache=True, parallel=True)
def advance_runs(W, W_ref, W_star, centres, cdf, pool_x, pool_y, states, counters, params, n_steps, events, settle,
                 status):
    """Advance run ``r`` by ``n_steps[r]`` steps for every ``r`` in parallel; ``status[r]`` as in
    ``advance_run`` (``W_ref[r]``: its reference model for a KL term; ``events[r]``: its event state;
    ``settle``: the call ends at an evaluation point)."""
    for r in prange(W.shape[0]):
        status[r] = advance_run(
            W[r], W_ref[r], W_star[r], centres[r], cdf[r], pool_x[r], pool_y[r], states[r], counters[r], params[r],
            n_steps[r], events[r], settle,
        )


@njit(cache=True, parallel=True)
def advance_runs_held(W, W_ref, W_star, centres, cdf, pool_x, pool_y, states, counters, params, n_steps, events, held_c,
                      held_x, settle, status):
    """:func:`advance_runs` for a batch with room for held-back updates (``held_c``, ``held_x``:
    ``fastpg.kernels.advance.new_held``, for large ``W``): runs that draw contexts ahead go to
    ``advance_held``, the others to ``advance_run``. A separate entry point, so that batches of
    small runs never compile the held loop (it adds about 10 s to a cold start)."""
    for r in prange(W.shape[0]):
        if holds_updates(params[r], pool_x.shape[1]):
            status[r] = advance_held(W[r], W_ref[r], W_star[r], centres[r], cdf[r], states[r], counters[r], params[r],
                                     n_steps[r], events[r], held_c[r], held_x[r], settle)
        else:
            status[r] = advance_run(W[r], W_ref[r], W_star[r], centres[r], cdf[r], pool_x[r], pool_y[r], states[r],
                                    counters[r], params[r], n_steps[r], events[r], settle)


CHUNK = 512  # test contexts per parallel work item of the evaluation
if CHUNK % TILE != 0:  # evaluate_runs walks a chunk in whole tiles without bounds checks
    raise ImportError(f"fastpg.kernels.engine.CHUNK = {CHUNK} must be a multiple of TILE = {TILE}")


@njit(cache=True, error_model="numpy", _nrt=False)
def softmax_tile(W, X, j0, XT, work, logs):
    """Logits of contexts ``j0 .. j0+T-1`` (:func:`fastpg.kernels.lanes.tile_logits`, row ``b TILE + t`` for position ``b``
    of context ``j0 + t``), centred and normalised in ``work`` (planes, with ``log z`` if ``logs``);
    returns ``T``."""
    T = tile_logits(W, X, j0, XT, work[DIFF])
    softmax_planes(work, logs)
    return T


@njit(cache=True, error_model="numpy", _nrt=False)
def evaluate_tile(W, X, Y, j0, loglik_out, token_out, greedy_out, XT, work):
    """Exact evaluation of the test contexts ``j0 ..`` of one tile with ``position`` features.

    ``log pi(y*_i | x) = (s_i(y*_i) - max_v s_i(v)) - log sum_v exp(s_i(v) - max_v s_i(v))``, with
    the tile's ``TILE N k`` logits handled as token-major planes (vectorised over rows,
    :func:`log_partition_planes`); greedy decoding reproduces ``y*`` when, at every position,
    ``y*_i`` is the first maximising token. The logits come from :func:`fastpg.kernels.lanes.tile_logits`,
    with the tile's contexts copied into the columns of ``XT``.
    """
    T = tile_logits(W, X, j0, XT, work[DIFF])
    log_partition_planes(work)
    tile_logliks(work, Y, j0, T, loglik_out, token_out, greedy_out)


@njit(cache=True, error_model="numpy", _nrt=False)
def tile_logliks(work, Y, j0, T, loglik_out, token_out, greedy_out):
    """The log-likelihoods and greedy checks of a tile's contexts ``j0 .. j0+T-1`` from its softmax
    statistics (:func:`log_partition_planes`; row ``b TILE + t`` is position ``b`` of context ``t``,
    as :func:`fastpg.kernels.lanes.lane_scores` lays them out).

    ``log pi(y*_b | x_t) = (s(y*_b) - m) - log z`` per position; ``loglik_out`` is their sum (in
    position order) and ``greedy_out`` whether ``y*_b`` is the first maximising token at every
    position.
    """
    B = Y.shape[1]
    D = work[DIFF]
    m = work[STATS, 0]
    lz = work[STATS, 1]
    best = work[BITS, 0]
    for t in range(T):
        j = j0 + t
        total = 0.0
        wrong = 0
        for b in range(B):
            r = b * TILE + t
            y = Y[j, b]
            lp = (D[y, r] - m[r]) - lz[r]
            token_out[j, b] = lp
            total += lp
            wrong += best[r] != y
        loglik_out[j] = total
        greedy_out[j] = wrong == 0


@njit(cache=True, parallel=True)
def evaluate_runs(W, X, Y, features, loglik_out, token_loglik_out, greedy_ok_out):
    """Exact evaluation (docs/design.md, "Evaluation") of every run on its test set, parallel over (run, context).

    ``token_loglik_out[r, j, i] = log pi_W(y*_ji | x_j, y*_j<i)``,
    ``loglik_out[r, j] = sum_i token_loglik_out[r, j, i]`` and ``greedy_ok_out[r, j]`` is
    whether greedy decoding of ``W[r]`` reproduces ``y*_j``. Position features go through
    :func:`evaluate_tile` (tiles of test contexts), markov features context by context.
    """
    R = W.shape[0]
    n = X.shape[1]
    B, k = W.shape[1], W.shape[2]
    if features == POSITION:
        chunks = (n + CHUNK - 1) // CHUNK
        for rc in prange(R * chunks):
            r = rc // chunks
            c0 = (rc - r * chunks) * CHUNK
            XT = aligned_zeros(X.shape[2], TILE)
            work = new_table(TILE * B, k)[0]
            for j0 in range(c0, min(c0 + CHUNK, n), TILE):
                evaluate_tile(W[r], X[r], Y[r], j0, loglik_out[r], token_loglik_out[r], greedy_ok_out[r], XT, work)
        return
    for rj in prange(R * n):
        r = rj // n
        j = rj - r * n
        table, have = new_table(B, k)
        loglik_out[r, j] = token_logliks(W[r], X[r, j], Y[r, j], features, table, have, token_loglik_out[r, j])
        greedy_ok_out[r, j] = greedy_matches(W[r], X[r, j], Y[r, j], features, table, have)


@njit(cache=True, fastmath=FAST, error_model="numpy", _nrt=False)
def divergence_tile(W, W_ref, X, j0, XT, work, rwork, kl_out, entropy_out):
    """Sequence KL to ``W_ref`` and entropy of the test contexts ``j0 ..`` of one tile (``position``
    features): both models' logits for the tile (:func:`softmax_tile`, row ``b TILE + t`` for
    position ``b`` of context ``j0 + t``), then per row ``KL_r = sum_v pi(v) (log pi(v) - log pi_0(v))``
    and ``H_r = -sum_v pi(v) log pi(v)``, vectorised over rows, summed over positions in order."""
    T = softmax_tile(W, X, j0, XT, work, True)
    softmax_tile(W_ref, X, j0, XT, rwork, True)
    k, R = work.shape[1], work.shape[2]
    D, E, lz, iz = work[DIFF], work[EXPS], work[STATS, 0], work[STATS, 1]
    D0, lz0 = rwork[DIFF], rwork[STATS, 0]
    kl, h = work[BITS, 0], work[BITS, 1]
    for r in range(R):
        kl[r] = 0.0
        h[r] = 0.0
    for v in range(k):
        for r in range(R):
            p = E[v, r] * iz[r]
            lp = D[v, r] - lz[r]
            kl[r] += p * (lp - (D0[v, r] - lz0[r]))
            h[r] -= p * lp
    B = R // TILE
    for t in range(T):
        total_kl = 0.0
        total_h = 0.0
        for b in range(B):
            total_kl += kl[b * TILE + t]
            total_h += h[b * TILE + t]
        kl_out[j0 + t] = total_kl
        entropy_out[j0 + t] = total_h


@njit(cache=True, parallel=True)
def divergence_runs(W, W_ref, X, N, kl_out, entropy_out, features):
    """``kl_out[r, j] = KL(pi_W[r](.|x_j) || pi_W_ref[r](.|x_j))`` and ``entropy_out[r, j] = H(pi_W[r](.|x_j))``
    over whole responses, exactly, parallel over (run, context): with ``position`` features a tile of
    contexts at a time (:func:`divergence_tile`), with ``markov`` features context by context
    (:func:`fastpg.kernels.kl.sequence_kl_entropy`)."""
    R = W.shape[0]
    n = X.shape[1]
    B, k = W.shape[1], W.shape[2]
    if features == POSITION:
        chunks = (n + CHUNK - 1) // CHUNK
        for rc in prange(R * chunks):
            r = rc // chunks
            c0 = (rc - r * chunks) * CHUNK
            XT = aligned_zeros(X.shape[2], TILE)
            work = new_table(TILE * B, k)[0]
            rwork = new_table(TILE * B, k)[0]
            for j0 in range(c0, min(c0 + CHUNK, n), TILE):
                divergence_tile(W[r], W_ref[r], X[r], j0, XT, work, rwork, kl_out[r], entropy_out[r])
        return
    for rj in prange(R * n):
        r = rj // n
        j = rj - r * n
        table, have = new_table(B, k)
        rtable, rhave = new_table(B, k)
        marg = np.empty((N, k + 1))
        kl_out[r, j], entropy_out[r, j] = sequence_kl_entropy(W[r], W_ref[r], X[r, j], features, N, table, have, rtable,
                                                              rhave, marg)


def aligned_copy(a, dtype) -> np.ndarray:
    """A C-contiguous copy of ``a`` whose data starts on an ``ALIGN``-byte boundary.

    NumPy only guarantees 16 bytes; a weight row that straddles cache lines makes every vector
    load of it a split load (the PG step loop measured 5-10% slower with ``W`` 32 bytes off).
    """
    a = np.asarray(a, dtype=dtype)
    buf = np.empty(a.nbytes + ALIGN, dtype=np.uint8)
    start = -buf.ctypes.data % ALIGN
    out = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


class Batch:
    """Runs of one shape, stacked for :func:`advance_runs` and :func:`evaluate_runs`.

    Each entry of ``runs`` is a dict with one run's arrays: ``W[B, k, d]``, ``W_star``,
    ``centres[C, d]``, ``cdf[C]``, ``pool_x``, ``pool_y``, ``state[4]``, ``params`` (a record),
    ``test_x[n, d]``, ``test_y[n, N]``, optionally ``W_ref`` (the reference of a KL term and of
    :meth:`divergences`; by default the starting ``W``) and ``temperature`` (default 1). The batch owns
    stacked copies; read results from its attributes (``counters[r]``) and :meth:`model_W`.

    **Temperature** (docs/design.md, "Temperature"). A run at temperature ``tau`` samples from
    ``pi_{W/tau}`` and steps along ``eta grad_W log pi_{W/tau} = (eta/tau) grad_V log pi_V`` at
    ``V = W/tau``; in ``V`` that is ``V += (eta/tau^2) grad_V log pi_V``, an ordinary step at
    temperature 1 (its KL term too, with the reference ``W_ref/tau``: every update is linear in
    ``eta``, every learning-rate rule too). So the kernels advance ``W = V`` (the attribute) from
    ``W0/tau`` with ``eta/tau^2`` and know nothing of temperatures: skip-ahead and event-driven
    ``pg`` stay exact, their probabilities those of the sampling policy. :meth:`model_W` is
    ``tau V`` (rounded), what evaluation, divergences and result files see. At ``tau = 1`` nothing
    is scaled: the arrays are those given, bit for bit.
    """

    def __init__(self, runs: list[dict]):
        def stack(key, dtype):
            return aligned_copy(np.stack([run[key] for run in runs]), dtype)

        self.temperature = np.array([float(run.get("temperature", 1.0)) for run in runs])
        self.W = stack("W", np.float64)
        self.W_base = stack("W_ref", np.float64) if all("W_ref" in run for run in runs) else aligned_copy(self.W, np.float64)
        self.W_ref = self.W_base  # the KL term's reference, as the kernels see it
        self.W_star = stack("W_star", np.float64)
        self.centres = stack("centres", np.float64)
        self.cdf = stack("cdf", np.float64)
        self.pool_x = stack("pool_x", np.float64)
        self.pool_y = stack("pool_y", np.int64)
        self.states = stack("state", np.uint64)
        self.params = stack("params", RUN_PARAMS)
        self.test_x = stack("test_x", np.float64)
        self.test_y = stack("test_y", np.int64)
        if self.tempered:
            tau = self.temperature[:, None, None, None]
            self.W = aligned_copy(self.W / tau, np.float64)
            self.W_ref = aligned_copy(self.W_base / tau, np.float64)
            self.params["eta"] /= self.temperature**2
        self.features = int(self.params["features"][0])
        if np.any(self.params["features"] != self.features):
            raise ValueError("a batch holds runs of one feature map")
        R = len(runs)
        self.counters = np.zeros((R, len(COUNTERS)))
        self.events = np.stack([new_event_state() for _ in range(R)])
        held = new_held(self.W.shape[1], self.W.shape[2], self.W.shape[3])
        self.held_c = np.zeros((R,) + held[0].shape)
        self.held_x = aligned_copy(np.zeros((R,) + held[1].shape), np.float64)
        self.status = np.zeros(R, dtype=np.int64)

    def __len__(self) -> int:
        return self.W.shape[0]

    @property
    def tempered(self) -> bool:
        """Whether a run of the batch samples at a temperature other than 1."""
        return bool(np.any(self.temperature != 1.0))

    def model_W(self, r: int | None = None) -> np.ndarray:
        """The model's weights ``tau V`` of run ``r`` (of every run: ``[R, B, k, d]``); at ``tau = 1`` the
        kernels' weights themselves (not a copy)."""
        if not self.tempered:
            return self.W if r is None else self.W[r]
        if r is None:
            return aligned_copy(self.W * self.temperature[:, None, None, None], np.float64)
        return self.W[r] * self.temperature[r]

    def advance(self, n_steps, settle: bool = True) -> np.ndarray:
        """Advance run ``r`` by ``n_steps[r]`` steps; returns the status of each run. ``settle=False``
        says more steps follow before the next evaluation (event-driven runs may then leave the
        classes of skipped steps uncounted until later; docs/design.md, "Event-driven pg")."""
        n_steps = np.broadcast_to(np.asarray(n_steps, dtype=np.int64), (len(self),)).copy()
        args = (self.W, self.W_ref, self.W_star, self.centres, self.cdf, self.pool_x, self.pool_y, self.states, self.counters,
                self.params, n_steps, self.events)
        if self.held_x.shape[1] > 0:
            advance_runs_held(*args, self.held_c, self.held_x, bool(settle), self.status)
        else:
            advance_runs(*args, bool(settle), self.status)
        return self.status.copy()

    def evaluate(self, W=None):
        """Exact test log-likelihoods ``[R, n]``, token log-likelihoods ``[R, n, N]`` and greedy-correct
        flags of the models (:meth:`model_W`), or of weights ``W`` (the sampling policies: ``batch.W``)."""
        W = self.model_W() if W is None else aligned_copy(W, np.float64)
        R, n, N = self.test_y.shape
        loglik = np.empty((R, n))
        token = np.empty((R, n, N))
        greedy_ok = np.empty((R, n), dtype=np.bool_)
        evaluate_runs(W, self.test_x, self.test_y, self.features, loglik, token, greedy_ok)
        return loglik, token, greedy_ok

    def divergences(self, W=None):
        """Exact ``KL(pi_W || pi_ref)`` and entropy ``H(pi_W)`` of whole responses per run and test
        context ``[R, n]``, at temperature 1 (``W``: the models, :meth:`model_W`, unless given; ``pi_ref``:
        the weights each run started from, its base model)."""
        W = self.model_W() if W is None else aligned_copy(W, np.float64)
        R, n, N = self.test_y.shape
        kl = np.empty((R, n))
        entropy = np.empty((R, n))
        divergence_runs(W, self.W_base, self.test_x, N, kl, entropy, self.features)
        return kl, entropy


@njit(cache=True)
def sample_batch(W, X, features, state, Y_out):
    """Sample one response per context: ``Y_out[b] ~ pi_W(. | X[b])`` from one stream (serial).

    The building block of on-policy sampling, exposed for benchmarks and users; ``O(N k d)``
    per response (docs/kernels.md). With ``position`` features and at least ``TILE`` contexts, the
    probabilities of a tile of contexts are computed together (:func:`softmax_tile`); tokens
    are drawn as by :func:`fastpg.kernels.sampling.sample_response`, one uniform per token, context after
    context.
    """
    B, k = W.shape[0], W.shape[1]
    if features == POSITION and X.shape[0] >= TILE:
        XT = aligned_zeros(W.shape[2], TILE)
        work = new_table(TILE * B, k)[0]
        for j0 in range(0, X.shape[0], TILE):
            T = softmax_tile(W, X, j0, XT, work, False)
            s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
            for t in range(T):
                for i in range(B):
                    r = i * TILE + t
                    u, s0, s1, s2, s3 = uniform_next(s0, s1, s2, s3)
                    Y_out[j0 + t, i] = inverse_cdf(work, EXPS, r, work[STATS, 1, r], u)
            state[0], state[1], state[2], state[3] = s0, s1, s2, s3
        return
    table, have = new_table(B, k)
    for b in range(X.shape[0]):
        reset_table(have)
        sample_response(W, X[b], features, table, have, state, Y_out[b])
