"""Parallel entry points: advance and evaluate a batch of runs of the same shape (SPEC §9, §12).

A batch stacks ``R`` runs that share ``(blocks, k, d, N)``: weights ``W[R, B, k, d]``,
teachers, context distributions, training pools, generator states ``states[R, 4]``,
counters ``counters[R, 8]`` and packed parameters ``ip[R, :]``, ``fp[R, :]``. The loops
are ``prange`` over runs (or over run x test context); every iteration writes only its
own slots and draws only from its own run's stream, so results do not depend on the
number of threads. These are the only ``parallel=True`` functions, kept at the top of
the call graph (a cached function calling a parallel one can crash Numba's cache).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .model import POSITION, exp_nonpositive, greedy_matches, new_table, reset_table, sample_response, token_logliks
from .steps import IP_FEATURES, advance_run


@njit(cache=True, parallel=True)
def advance_runs(W, W_star, centres, cdf, pool_x, pool_y, states, counters, ip, fp, n_steps, status):
    """Advance run ``r`` by ``n_steps[r]`` steps for every ``r`` in parallel; ``status[r]`` as in ``advance_run``."""
    for r in prange(W.shape[0]):
        status[r] = advance_run(
            W[r], W_star[r], centres[r], cdf[r], pool_x[r], pool_y[r], states[r], counters[r], ip[r], fp[r], n_steps[r]
        )


EVAL_TILE = 4  # test contexts per pass over W in the position-feature evaluation


@njit(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def _tile_scores(W, X, j0, T, S):
    """``S[t, b, v] = W[b, v, :] . X[j0 + t]`` for ``t < T``: each weight row is loaded once per tile."""
    B, k, d = W.shape
    for b in range(B):
        for v in range(k):
            if T == EVAL_TILE:
                s0 = 0.0
                s1 = 0.0
                s2 = 0.0
                s3 = 0.0
                for j in range(d):
                    w = W[b, v, j]
                    s0 += w * X[j0, j]
                    s1 += w * X[j0 + 1, j]
                    s2 += w * X[j0 + 2, j]
                    s3 += w * X[j0 + 3, j]
                S[0, b, v] = s0
                S[1, b, v] = s1
                S[2, b, v] = s2
                S[3, b, v] = s3
            else:
                for t in range(T):
                    s = 0.0
                    for j in range(d):
                        s += W[b, v, j] * X[j0 + t, j]
                    S[t, b, v] = s


@njit(cache=True, error_model="numpy")
def evaluate_tile(W, X, Y, j0, T, loglik_out, token_out, greedy_out, S, E, scratch):
    """Exact evaluation of test contexts ``j0 .. j0+T-1`` with ``position`` features.

    ``log pi(y*_i | x) = s_i(y*_i) - max_v s_i(v) - log sum_v exp(s_i(v) - max_v s_i(v))``; the
    ``T N k`` exponentials run as one SIMD loop (:func:`fastpg.model.exp_nonpositive`).
    """
    B, k = W.shape[0], W.shape[1]
    _tile_scores(W, X, j0, T, S)
    n = T * B * k
    for t in range(T):
        for b in range(B):
            m = -np.inf
            for v in range(k):
                if S[t, b, v] > m:
                    m = S[t, b, v]
            for v in range(k):
                E[t, b, v] = S[t, b, v] - m
    flat = E.reshape(-1)[:n]
    exp_nonpositive(flat, flat, scratch[:n])
    for t in range(T):
        total = 0.0
        ok = True
        for b in range(B):
            z = 0.0
            best = 0
            for v in range(k):
                z += E[t, b, v]
                if S[t, b, v] > S[t, b, best]:
                    best = v
            y = Y[j0 + t, b]
            m = S[t, b, best]
            lp = (S[t, b, y] - m) - math.log(z)
            token_out[j0 + t, b] = lp
            total += lp
            if best != y:
                ok = False
        loglik_out[j0 + t] = total
        greedy_out[j0 + t] = ok


@njit(cache=True, parallel=True)
def evaluate_runs(W, X, Y, features, loglik_out, token_loglik_out, greedy_ok_out):
    """Exact evaluation (SPEC §7) of every run on its test set, parallel over (run, context).

    ``token_loglik_out[r, j, i] = log pi_W(y*_ji | x_j, y*_j<i)``,
    ``loglik_out[r, j] = sum_i token_loglik_out[r, j, i]`` and ``greedy_ok_out[r, j]`` is
    whether greedy decoding of ``W[r]`` reproduces ``y*_j``. Position features go through
    :func:`evaluate_tile` (tiles of test contexts), markov features context by context.
    """
    R = W.shape[0]
    n = X.shape[1]
    B, k = W.shape[1], W.shape[2]
    if features == POSITION:
        tiles = (n + EVAL_TILE - 1) // EVAL_TILE
        for rt in prange(R * tiles):
            r = rt // tiles
            j0 = (rt - r * tiles) * EVAL_TILE
            T = min(EVAL_TILE, n - j0)
            S = np.empty((EVAL_TILE, B, k))
            E = np.empty((EVAL_TILE, B, k))
            scratch = np.empty(EVAL_TILE * B * k)
            evaluate_tile(W[r], X[r], Y[r], j0, T, loglik_out[r], token_loglik_out[r], greedy_ok_out[r], S, E, scratch)
        return
    for rj in prange(R * n):
        r = rj // n
        j = rj - r * n
        table, have = new_table(B, k)
        loglik_out[r, j] = token_logliks(W[r], X[r, j], Y[r, j], features, table, have, token_loglik_out[r, j])
        greedy_ok_out[r, j] = greedy_matches(W[r], X[r, j], Y[r, j], features, table, have)


class Batch:
    """Runs of one shape, stacked for :func:`advance_runs` and :func:`evaluate_runs`.

    Each entry of ``runs`` is a dict with one run's arrays: ``W[B, k, d]``, ``W_star``,
    ``centres[C, d]``, ``cdf[C]``, ``pool_x``, ``pool_y``, ``state[4]``, ``ip``, ``fp``,
    ``test_x[n, d]``, ``test_y[n, N]``. The batch owns stacked copies; read results from
    its attributes (``W[r]``, ``counters[r]``).
    """

    def __init__(self, runs: list[dict]):
        def stack(key, dtype=None):
            return np.ascontiguousarray(np.stack([run[key] for run in runs]), dtype=dtype)

        self.W = stack("W", np.float64)
        self.W_star = stack("W_star", np.float64)
        self.centres = stack("centres", np.float64)
        self.cdf = stack("cdf", np.float64)
        self.pool_x = stack("pool_x", np.float64)
        self.pool_y = stack("pool_y", np.int64)
        self.states = stack("state", np.uint64)
        self.ip = stack("ip", np.int64)
        self.fp = stack("fp", np.float64)
        self.test_x = stack("test_x", np.float64)
        self.test_y = stack("test_y", np.int64)
        self.features = int(self.ip[0, IP_FEATURES])
        if np.any(self.ip[:, IP_FEATURES] != self.features):
            raise ValueError("a batch holds runs of one feature map")
        R = len(runs)
        self.counters = np.zeros((R, 8))
        self.status = np.zeros(R, dtype=np.int64)

    def __len__(self) -> int:
        return self.W.shape[0]

    def advance(self, n_steps) -> np.ndarray:
        """Advance run ``r`` by ``n_steps[r]`` steps; returns the status of each run."""
        n_steps = np.broadcast_to(np.asarray(n_steps, dtype=np.int64), (len(self),)).copy()
        advance_runs(self.W, self.W_star, self.centres, self.cdf, self.pool_x, self.pool_y, self.states,
                     self.counters, self.ip, self.fp, n_steps, self.status)
        return self.status.copy()

    def evaluate(self, W=None):
        """Exact test log-likelihoods ``[R, n]``, token log-likelihoods ``[R, n, N]``, greedy-correct flags."""
        W = self.W if W is None else np.ascontiguousarray(W, dtype=np.float64)
        R, n, N = self.test_y.shape
        loglik = np.empty((R, n))
        token = np.empty((R, n, N))
        greedy_ok = np.empty((R, n), dtype=np.bool_)
        evaluate_runs(W, self.test_x, self.test_y, self.features, loglik, token, greedy_ok)
        return loglik, token, greedy_ok


@njit(cache=True)
def sample_batch(W, X, features, state, Y_out):
    """Sample one response per context: ``Y_out[b] ~ pi_W(. | X[b])`` from one stream (serial).

    The building block of on-policy sampling, exposed for benchmarks and users; ``O(N k d)``
    per response (SPEC §12).
    """
    table, have = new_table(W.shape[0], W.shape[1])
    for b in range(X.shape[0]):
        reset_table(have)
        sample_response(W, X[b], features, table, have, state, Y_out[b])
