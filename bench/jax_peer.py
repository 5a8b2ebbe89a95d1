"""JAX implementation of the reference computations: ``jit``, ``vmap``, ``lax.scan`` for the step loop.

Float64 (``jax_enable_x64``), one CPU thread (set by the runner before JAX is imported). The
same sampling rule as every implementation: inverse CDF with one uniform per token.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

jax.config.update("jax_enable_x64", True)
NAME = "jax"
STEPS_SCALE = 1.0


def _probs(W2, x, N, k):
    s = (W2 @ x).reshape(N, k)
    s = s - s.max(axis=1, keepdims=True)
    p = jnp.exp(s)
    return p / p.sum(axis=1, keepdims=True)


def _sample(p, u, k):
    return jnp.minimum((jnp.cumsum(p, axis=1) <= u[:, None]).sum(axis=1), k - 1)


@partial(jax.jit, static_argnums=(2, 3))
def sample_one(W2, x, N, k, key):
    return _sample(_probs(W2, x, N, k), jax.random.uniform(key, (N,)), k)


@partial(jax.jit, static_argnums=(2, 3))
def sample_batch(W2, X, N, k, key):
    keys = jax.random.split(key, X.shape[0])
    return jax.vmap(lambda x, kk: _sample(_probs(W2, x, N, k), jax.random.uniform(kk, (N,)), k))(X, keys)


def _labelled_context(Ws2, N, k, d, key):
    x = jax.random.normal(key, (d,))
    x = x / jnp.linalg.norm(x)
    return x, (Ws2 @ x).reshape(N, k).argmax(axis=1)


def _update(W2, x, p, y, a, eta):
    g = -p * a[:, None]
    g = g.at[jnp.arange(y.shape[0]), y].add(a)
    return W2 + eta * jnp.outer(g.ravel(), x)


@partial(jax.jit, static_argnums=(2, 3, 4, 6, 7))
def pg_steps(W2, Ws2, N, k, d, eta, reward, n_steps, key):
    """On-policy PG (G = 1, no baseline), fresh context and teacher label per step, in one scan."""

    def step(carry, _):
        W2, key, correct, queries = carry
        key, kx, ku = jax.random.split(key, 3)
        x, y_star = _labelled_context(Ws2, N, k, d, kx)
        p = _probs(W2, x, N, k)
        y = _sample(p, jax.random.uniform(ku, (N,)), k)
        wrong = y != y_star
        f = jnp.where(wrong.any(), jnp.argmax(wrong), N)
        if reward == "orm":
            a = jnp.ones(N)
            queries = queries + 1
            do = f == N
        else:
            a = (jnp.arange(N) < f).astype(W2.dtype)
            queries = queries + jnp.minimum(f + 1, N)
            do = f > 0
        W2 = lax.cond(do, lambda W: _update(W, x, p, y, a, eta), lambda W: W, W2)
        return (W2, key, correct + (f == N), queries), None

    (W2, _, correct, queries), _ = lax.scan(step, (W2, key, 0, 0), None, length=n_steps)
    return W2, correct, queries


@partial(jax.jit, static_argnums=(3, 4))
def evaluate(W2, X, Y, N, k):
    s = (X @ W2.T).reshape(X.shape[0], N, k)
    logp = jax.nn.log_softmax(s, axis=2)
    loglik = jnp.take_along_axis(logp, Y[:, :, None], axis=2)[:, :, 0].sum(axis=1)
    return loglik, (s.argmax(axis=2) == Y).all(axis=1)


@partial(jax.jit, static_argnums=(2, 3, 4, 5))
def rs_skip_steps(W2, Ws2, N, k, d, n_steps, key):
    """``rs`` + ORM with geometric skip-ahead and no learning, in one scan: simulated queries."""

    def step(carry, _):
        key, queries = carry
        key, kx, ku = jax.random.split(key, 3)
        x, y_star = _labelled_context(Ws2, N, k, d, kx)
        logp = jax.nn.log_softmax((W2 @ x).reshape(N, k), axis=1)
        lp = logp[jnp.arange(N), y_star].sum()
        u = jax.random.uniform(ku, ())
        f = jnp.floor(jnp.log1p(-u) / jnp.log1p(-jnp.exp(lp)))
        return (key, queries + f + 1.0), None

    (_, queries), _ = lax.scan(step, (key, 0.0), None, length=n_steps)
    return queries


# -- the peer interface (NumPy in, NumPy out; see bench/numpy_peer.py) ----------------------------
def check(W2, x, y, a, eta, X, Y, N, k) -> dict:
    p = _probs(W2, x, N, k)
    W_new = _update(W2, x, p, y, a, eta)
    loglik, greedy_ok = evaluate(W2, X, Y, N, k)
    return {"probabilities": np.asarray(p), "W": np.asarray(W_new), "loglik": np.asarray(loglik),
            "greedy_ok": np.asarray(greedy_ok)}


def sampler(W2, X, N, k, calls, seed):
    keys = jax.random.split(jax.random.PRNGKey(seed), calls)
    W2j, Xj = jnp.asarray(W2), jnp.asarray(X)
    if len(X) == 1:
        xj = Xj[0]
        return lambda: [sample_one(W2j, xj, N, k, keys[i]).block_until_ready() for i in range(calls)]
    return lambda: [sample_batch(W2j, Xj, N, k, keys[i]).block_until_ready() for i in range(calls)]


def pg_runner(W2, Ws2, N, k, d, eta, reward, n_steps, seed):
    key = jax.random.PRNGKey(seed)

    def run():
        W, correct, queries = pg_steps(W2, Ws2, N, k, d, eta, reward, n_steps, key)
        W.block_until_ready()
        return int(correct), int(queries)

    return run


def evaluator(W2, X, Y, N, k):
    W2j, Xj, Yj = jnp.asarray(W2), jnp.asarray(X), jnp.asarray(Y)
    return lambda: evaluate(W2j, Xj, Yj, N, k)[0].block_until_ready()


def rs_skip_runner(W2, Ws2, N, k, d, n_steps, seed):
    key = jax.random.PRNGKey(seed)
    return lambda: float(rs_skip_steps(W2, Ws2, N, k, d, n_steps, key))
