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

import numpy as np
from numba import njit, prange

from .model import greedy_matches, reset_table, sample_response, token_logliks
from .steps import advance_run


@njit(cache=True, parallel=True)
def advance_runs(W, W_star, centres, cdf, pool_x, pool_y, states, counters, ip, fp, n_steps, status):
    """Advance run ``r`` by ``n_steps[r]`` steps for every ``r`` in parallel; ``status[r]`` as in ``advance_run``."""
    for r in prange(W.shape[0]):
        status[r] = advance_run(
            W[r], W_star[r], centres[r], cdf[r], pool_x[r], pool_y[r], states[r], counters[r], ip[r], fp[r], n_steps[r]
        )


@njit(cache=True, parallel=True)
def evaluate_runs(W, X, Y, features, loglik_out, token_loglik_out, greedy_ok_out):
    """Exact evaluation (SPEC §7) of every run on its test set, parallel over (run, context).

    ``token_loglik_out[r, j, i] = log pi_W(y*_ji | x_j, y*_j<i)``,
    ``loglik_out[r, j] = sum_i token_loglik_out[r, j, i]`` and ``greedy_ok_out[r, j]`` is
    whether greedy decoding of ``W[r]`` reproduces ``y*_j``.
    """
    R = W.shape[0]
    n = X.shape[1]
    B, k = W.shape[1], W.shape[2]
    for rj in prange(R * n):
        r = rj // n
        j = rj - r * n
        table = np.empty((3, B, k))
        have = np.zeros(B, dtype=np.bool_)
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
        self.features = int(self.ip[0, 6])
        if np.any(self.ip[:, 6] != self.features):
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
    B, k = W.shape[0], W.shape[1]
    table = np.empty((3, B, k))
    have = np.zeros(B, dtype=np.bool_)
    for b in range(X.shape[0]):
        reset_table(have)
        sample_response(W, X[b], features, table, have, state, Y_out[b])
