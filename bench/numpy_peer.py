"""Vectorised NumPy implementation of the reference computations (position features).

What a researcher would write without fastpg: per step, NumPy vector operations over positions
and tokens; the same sampling rule (inverse CDF with one uniform per token), the same updates.

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


def labelled_context(Ws2, N, k, d, rng):
    """A fresh context on the sphere and the teacher's greedy label (position features)."""
    x = rng.standard_normal(d)
    x /= np.linalg.norm(x)
    return x, (Ws2 @ x).reshape(N, k).argmax(axis=1)


def pg_steps(W2, Ws2, N, k, d, eta, reward, n_steps, rng):
    """On-policy PG (G = 1, no baseline, constant rate), fresh context and teacher label per step.

    Returns (correct samples, reward queries).
    """
    correct = 0
    queries = 0
    for _ in range(n_steps):
        x, y_star = labelled_context(Ws2, N, k, d, rng)
        p = probabilities(W2, x, N, k)
        y = sample(p, rng.random(N))
        wrong = np.nonzero(y != y_star)[0]
        f = wrong[0] if len(wrong) else N
        if reward == "orm":
            queries += 1
            if f == N:
                correct += 1
                score_update(W2, x, p, y, np.ones(N), eta)
        else:
            queries += min(f + 1, N)
            correct += f == N
            if f > 0:
                score_update(W2, x, p, y, (np.arange(N) < f).astype(float), eta)
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
    """``rs`` + ORM with geometric skip-ahead and no learning: simulated reward queries."""
    queries = 0.0
    for _ in range(n_steps):
        x, y_star = labelled_context(Ws2, N, k, d, rng)
        s = (W2 @ x).reshape(N, k)
        m = s.max(axis=1)
        logp = s[np.arange(N), y_star] - (m + np.log(np.exp(s - m[:, None]).sum(axis=1)))
        lp = logp.sum()
        f = np.floor(np.log(1.0 - rng.random()) / np.log1p(-np.exp(lp)))
        queries += min(f + 1.0, M)
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
