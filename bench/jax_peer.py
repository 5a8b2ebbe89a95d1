"""JAX implementation of the reference computations, as a JAX expert writes them: ``jit``, bulk
draws of everything that does not depend on the weights (contexts, labels, uniforms) outside the
step loop, and ``lax.scan`` over a chunk carrying only ``W``.

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
    """One response per row of ``X``: the logits of all rows as one GEMM, all uniforms in one call."""
    p = jax.nn.softmax((X @ W2.T).reshape(X.shape[0], N, k), axis=2)
    u = jax.random.uniform(key, (X.shape[0], N))
    return jnp.minimum((jnp.cumsum(p, axis=2) <= u[:, :, None]).sum(axis=2), k - 1)


CHUNK = 4096  # steps whose contexts, labels and uniforms are drawn ahead, outside the scan


@partial(jax.jit, static_argnums=(1, 2, 3, 4))
def labelled_contexts(Ws2, N, k, d, n, key):
    """``n`` fresh contexts on the sphere, their teacher labels (one GEMM) and ``n x N`` uniforms:
    nothing here depends on the weights being trained, so it is drawn ahead in bulk."""
    kx, ku = jax.random.split(key)
    X = jax.random.normal(kx, (n, d))
    X = X / jnp.linalg.norm(X, axis=1, keepdims=True)
    return X, (X @ Ws2.T).reshape(n, N, k).argmax(axis=2), jax.random.uniform(ku, (n, N))


def _update(W2, x, p, y, a, eta):
    g = -p * a[:, None]
    g = g.at[jnp.arange(y.shape[0]), y].add(a)
    return W2 + eta * jnp.outer(g.ravel(), x)


@partial(jax.jit, static_argnums=(4, 5, 6), donate_argnums=(0,))
def pg_scan(W2, X, Y_star, U, N, k, reward, eta):
    """On-policy PG (G = 1, no baseline) over a drawn-ahead chunk: the scan carries only ``W``."""
    positions = jnp.arange(N)

    def step(carry, inputs):
        W2, correct, queries = carry
        x, y_star, u = inputs
        p = _probs(W2, x, N, k)
        y = _sample(p, u, k)
        wrong = y != y_star
        f = jnp.where(wrong.any(), jnp.argmax(wrong), N)
        if reward == "orm":
            a = jnp.ones(N)
            queries = queries + 1
            do = f == N
        else:
            a = (positions < f).astype(W2.dtype)
            queries = queries + jnp.minimum(f + 1, N)
            do = f > 0
        W2 = lax.cond(do, lambda W: _update(W, x, p, y, a, eta), lambda W: W, W2)
        return (W2, correct + (f == N), queries), None

    (W2, correct, queries), _ = lax.scan(step, (W2, 0, 0), (X, Y_star, U))
    return W2, correct, queries


def pg_steps(W2, Ws2, N, k, d, eta, reward, n_steps, key):
    """``n_steps`` PG steps in chunks: each chunk drawn ahead in bulk, then one scan over it."""
    correct = queries = 0
    W2 = jnp.array(W2)
    for start in range(0, n_steps, CHUNK):
        n = min(CHUNK, n_steps - start)
        key, sub = jax.random.split(key)
        X, Y_star, U = labelled_contexts(Ws2, N, k, d, n, sub)
        W2, c, q = pg_scan(W2, X, Y_star, U, N, k, reward, eta)
        correct, queries = correct + c, queries + q
    return W2, correct, queries


@partial(jax.jit, static_argnums=(3, 4))
def evaluate(W2, X, Y, N, k):
    s = (X @ W2.T).reshape(X.shape[0], N, k)
    logp = jax.nn.log_softmax(s, axis=2)
    loglik = jnp.take_along_axis(logp, Y[:, :, None], axis=2)[:, :, 0].sum(axis=1)
    return loglik, (s.argmax(axis=2) == Y).all(axis=1)


@partial(jax.jit, static_argnums=(2, 3, 4, 5))
def rs_skip_chunk(W2, Ws2, N, k, d, n, key):
    """``rs`` + ORM with geometric skip-ahead and no learning for ``n`` steps at once (nothing
    depends on a changing ``W``, so the chunk is one vectorised computation): simulated queries."""
    kx, ku = jax.random.split(key)
    X, Y_star, _ = labelled_contexts(Ws2, N, k, d, n, kx)
    logp = jax.nn.log_softmax((X @ W2.T).reshape(n, N, k), axis=2)
    lp = jnp.take_along_axis(logp, Y_star[:, :, None], axis=2)[:, :, 0].sum(axis=1)
    u = jax.random.uniform(ku, (n,))
    return (jnp.floor(jnp.log1p(-u) / jnp.log1p(-jnp.exp(lp))) + 1.0).sum()


def rs_skip_steps(W2, Ws2, N, k, d, n_steps, key):
    queries = 0.0
    for start in range(0, n_steps, CHUNK):
        key, sub = jax.random.split(key)
        queries += float(rs_skip_chunk(W2, Ws2, N, k, d, min(CHUNK, n_steps - start), sub))
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

    Ws2j = jnp.asarray(Ws2)

    def run():
        W, correct, queries = pg_steps(W2, Ws2j, N, k, d, eta, reward, n_steps, key)
        W.block_until_ready()
        return int(correct), int(queries)

    return run


def evaluator(W2, X, Y, N, k):
    W2j, Xj, Yj = jnp.asarray(W2), jnp.asarray(X), jnp.asarray(Y)
    return lambda: evaluate(W2j, Xj, Yj, N, k)[0].block_until_ready()


def rs_skip_runner(W2, Ws2, N, k, d, n_steps, seed):
    key = jax.random.PRNGKey(seed)
    W2j, Ws2j = jnp.asarray(W2), jnp.asarray(Ws2)
    return lambda: rs_skip_steps(W2j, Ws2j, N, k, d, n_steps, key)
