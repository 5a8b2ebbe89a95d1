"""Vectorised NumPy implementation of the reference computations (position features).

What an expert would write without fastpg: whatever does not depend on the weights being trained
(contexts, teacher labels, uniforms) drawn ahead in bulk, and per step only the NumPy vector
operations over positions and tokens that depend on ``W``; the same sampling rule (inverse CDF
with one uniform per token), the same updates.

Every peer module has the same interface (NumPy arrays in, NumPy arrays or numbers out; see
``bench/__main__.py``): ``NAME``, ``STEPS_SCALE`` (its share of fastpg's step counts, so that a
slow peer is timed on fewer steps), ``check`` for the agreement test, and factories
``sampler``, ``pg_runner``, ``evaluator``, ``rs_skip_runner`` returning the timed callables.
"""

from __future__ import annotations

import numpy as np

NAME = "numpy"
STEPS_SCALE = 0.1


def probabilities(W2, x, N, k):
    """Per-position softmax of ``W2 @ x`` (``W2 = W.reshape(N*k, d)``): ``[N, k]``."""
    s = (W2 @ x).reshape(N, k)
    s = s - s.max(axis=1, keepdims=True)
    p = np.exp(s)
    return p / p.sum(axis=1, keepdims=True)


def sample(p, u):
    """Inverse CDF per position: the first token whose cumulative probability exceeds ``u``."""
    y = (np.cumsum(p, axis=1) <= u[:, None]).sum(axis=1)
    return np.minimum(y, p.shape[1] - 1)


def sample_one(W2, x, N, k, rng):
    return sample(probabilities(W2, x, N, k), rng.random(N))


def sample_batch(W2, X, N, k, rng):
    s = (X @ W2.T).reshape(len(X), N, k)
    s -= s.max(axis=2, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=2, keepdims=True)
    u = rng.random((len(X), N))
    y = (np.cumsum(p, axis=2) <= u[:, :, None]).sum(axis=2)
    return np.minimum(y, k - 1)


def score_update(W2, x, p, y, a, eta):
    """``W += eta * sum_i a_i grad log pi(y_i | x)`` for position features."""
    g = -p * a[:, None]
    g[np.arange(len(y)), y] += a
    W2 += eta * np.outer(g.ravel(), x)


CHUNK = 4096  # steps whose contexts, labels and uniforms are drawn ahead in one vectorised call


def labelled_contexts(Ws2, N, k, d, n, rng):
    """``n`` fresh contexts on the sphere and the teacher's greedy labels, in bulk: nothing here
    depends on the weights being trained, so it is drawn ahead (one GEMM for the labels)."""
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, (X @ Ws2.T).reshape(n, N, k).argmax(axis=2)


def pg_steps(W2, Ws2, N, k, d, eta, reward, n_steps, rng):
    """On-policy PG (G = 1, no baseline, constant rate), fresh context and teacher label per step.

    Contexts, labels and the per-token uniforms of a chunk of steps are drawn ahead in bulk; only
    what depends on ``W`` (probabilities, first mistake, update) is done step by step.
    Returns (correct samples, reward queries).
    """
    correct = 0
    queries = 0
    positions = np.arange(N)
    ones = np.ones(N)
    for start in range(0, n_steps, CHUNK):
        n = min(CHUNK, n_steps - start)
        X, Y_star = labelled_contexts(Ws2, N, k, d, n, rng)
        U = rng.random((n, N))
        for t in range(n):
            x = X[t]
            p = probabilities(W2, x, N, k)
            y = sample(p, U[t])
            wrong = np.flatnonzero(y != Y_star[t])
            f = wrong[0] if len(wrong) else N
            if reward == "orm":
                queries += 1
                if f == N:
                    correct += 1
                    score_update(W2, x, p, y, ones, eta)
            else:
                queries += min(f + 1, N)
                correct += f == N
                if f > 0:
                    score_update(W2, x, p, y, (positions < f).astype(float), eta)
    return correct, queries


def evaluate(W2, X, Y, N, k):
    """Exact test log-likelihoods and greedy correctness for all contexts at once (BLAS)."""
    s = (X @ W2.T).reshape(len(X), N, k)
    m = s.max(axis=2, keepdims=True)
    logp = s - (m + np.log(np.exp(s - m).sum(axis=2, keepdims=True)))
    loglik = np.take_along_axis(logp, Y[:, :, None], axis=2)[:, :, 0].sum(axis=1)
    greedy_ok = (s.argmax(axis=2) == Y).all(axis=1)
    return loglik, greedy_ok


def rs_skip_steps(W2, Ws2, N, k, d, n_steps, rng, M=1e18):
    """``rs`` + ORM with geometric skip-ahead and no learning: simulated reward queries. Nothing
    depends on a changing ``W``, so whole chunks of steps are one vectorised computation."""
    queries = 0.0
    for start in range(0, n_steps, CHUNK):
        n = min(CHUNK, n_steps - start)
        X, Y_star = labelled_contexts(Ws2, N, k, d, n, rng)
        s = (X @ W2.T).reshape(n, N, k)
        m = s.max(axis=2, keepdims=True)
        logp = s - (m + np.log(np.exp(s - m).sum(axis=2, keepdims=True)))
        lp = np.take_along_axis(logp, Y_star[:, :, None], axis=2)[:, :, 0].sum(axis=1)
        f = np.floor(np.log(1.0 - rng.random(n)) / np.log1p(-np.exp(lp)))
        queries += np.minimum(f + 1.0, M).sum()
    return queries


# -- the peer interface --------------------------------------------------------------------------
def check(W2, x, y, a, eta, X, Y, N, k) -> dict:
    """Probabilities at ``x``, ``W2`` after one update, and the exact evaluation of ``X, Y``."""
    p = probabilities(W2, x, N, k)
    W_new = W2.copy()
    score_update(W_new, x, p, y, a, eta)
    loglik, greedy_ok = evaluate(W2, X, Y, N, k)
    return {"probabilities": p, "W": W_new, "loglik": loglik, "greedy_ok": greedy_ok}


def sampler(W2, X, N, k, calls, seed):
    """``calls`` calls, each sampling one response per row of ``X`` (one context: ``sample_one``)."""
    rng = np.random.default_rng(seed)
    if len(X) == 1:
        x = X[0]
        return lambda: [sample_one(W2, x, N, k, rng) for _ in range(calls)]
    return lambda: [sample_batch(W2, X, N, k, rng) for _ in range(calls)]


def pg_runner(W2, Ws2, N, k, d, eta, reward, n_steps, seed):
    """``n_steps`` PG steps per call on a copy of ``W2``; the call returns (correct samples, queries)."""
    rng = np.random.default_rng(seed)
    W = W2.copy()
    return lambda: pg_steps(W, Ws2, N, k, d, eta, reward, n_steps, rng)


def evaluator(W2, X, Y, N, k):
    return lambda: evaluate(W2, X, Y, N, k)


def rs_skip_runner(W2, Ws2, N, k, d, n_steps, seed):
    rng = np.random.default_rng(seed)
    return lambda: rs_skip_steps(W2, Ws2, N, k, d, n_steps, rng)
