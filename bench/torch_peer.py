"""PyTorch eager implementation of the reference computations (float64, one thread).

The same work and sampling rule as the other peers; eager tensor code under
``torch.inference_mode``, with everything that does not depend on the weights (contexts, labels,
uniforms) drawn ahead in bulk. ``torch.compile`` does not help this loop: compiled, the per-step
function (probabilities, sample, first mistake; d=64, k=8, N=16, one thread) ran 37k calls/s
against 54k eager, because a step is a few small tensors and call overhead dominates.
"""

from __future__ import annotations

import numpy as np
import torch

torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)
NAME = "torch"
STEPS_SCALE = 0.05


def _t(a):
    return torch.as_tensor(np.ascontiguousarray(a))


def _probs(W2, x, N, k):
    return torch.softmax((W2 @ x).reshape(N, k), dim=1)


def _sample(p, u, k):
    return torch.clamp((torch.cumsum(p, dim=1) <= u[:, None]).sum(dim=1), max=k - 1)


def _update(W2, x, p, y, a, eta):
    g = -p * a[:, None]
    g[torch.arange(y.shape[0]), y] += a
    W2 += eta * torch.outer(g.reshape(-1), x)
    return W2


@torch.inference_mode()
def sample_one(W2, x, N, k, gen):
    return _sample(_probs(W2, x, N, k), torch.rand(N, generator=gen), k)


@torch.inference_mode()
def sample_batch(W2, X, N, k, gen):
    p = torch.softmax((X @ W2.T).reshape(X.shape[0], N, k), dim=2)
    u = torch.rand(X.shape[0], N, generator=gen)
    return torch.clamp((torch.cumsum(p, dim=2) <= u[:, :, None]).sum(dim=2), max=k - 1)


CHUNK = 4096  # steps whose contexts, labels and uniforms are drawn ahead in one vectorised call


def labelled_contexts(Ws2, N, k, d, n, gen):
    """``n`` fresh contexts on the sphere and their teacher labels in bulk (one GEMM): nothing here
    depends on the weights being trained, so it is drawn ahead."""
    X = torch.randn(n, d, generator=gen)
    X /= torch.linalg.vector_norm(X, dim=1, keepdim=True)
    return X, (X @ Ws2.T).reshape(n, N, k).argmax(dim=2)


@torch.inference_mode()
def pg_steps(W2, Ws2, N, k, d, eta, reward, n_steps, gen):
    """On-policy PG (G = 1, no baseline): each chunk's contexts, labels and uniforms drawn ahead,
    then per step only the work that depends on ``W``."""
    correct = 0
    ar = torch.arange(N)
    ones = torch.ones(N)
    for start in range(0, n_steps, CHUNK):
        n = min(CHUNK, n_steps - start)
        X, Y_star = labelled_contexts(Ws2, N, k, d, n, gen)
        U = torch.rand(n, N, generator=gen)
        for t in range(n):
            x = X[t]
            p = _probs(W2, x, N, k)
            y = _sample(p, U[t], k)
            wrong = (y != Y_star[t]).nonzero()
            f = int(wrong[0, 0]) if len(wrong) else N
            if reward == "orm":
                if f == N:
                    correct += 1
                    _update(W2, x, p, y, ones, eta)
            else:
                correct += f == N
                if f > 0:
                    _update(W2, x, p, y, (ar < f).to(torch.float64), eta)
    return correct, None


@torch.inference_mode()
def evaluate(W2, X, Y, N, k):
    s = (X @ W2.T).reshape(X.shape[0], N, k)
    logp = torch.log_softmax(s, dim=2)
    loglik = torch.gather(logp, 2, Y[:, :, None])[:, :, 0].sum(dim=1)
    return loglik, (s.argmax(dim=2) == Y).all(dim=1)


@torch.inference_mode()
def rs_skip_steps(W2, Ws2, N, k, d, n_steps, gen):
    """``rs`` + ORM, skip-ahead, no learning: nothing depends on a changing ``W``, so each chunk of
    steps is one vectorised computation."""
    queries = 0.0
    for start in range(0, n_steps, CHUNK):
        n = min(CHUNK, n_steps - start)
        X, Y_star = labelled_contexts(Ws2, N, k, d, n, gen)
        logp = torch.log_softmax((X @ W2.T).reshape(n, N, k), dim=2)
        lp = torch.gather(logp, 2, Y_star[:, :, None])[:, :, 0].sum(dim=1)
        u = torch.rand(n, generator=gen)
        queries += float((torch.floor(torch.log1p(-u) / torch.log1p(-torch.exp(lp))) + 1.0).sum())
    return queries


# -- the peer interface (NumPy in, NumPy out; see bench/numpy_peer.py) ----------------------------
@torch.inference_mode()
def check(W2, x, y, a, eta, X, Y, N, k) -> dict:
    p = _probs(_t(W2), _t(x), N, k)
    W_new = _update(_t(W2).clone(), _t(x), p, _t(y), _t(a), eta)
    loglik, greedy_ok = evaluate(_t(W2), _t(X), _t(Y), N, k)
    return {"probabilities": p.numpy(), "W": W_new.numpy(), "loglik": loglik.numpy(), "greedy_ok": greedy_ok.numpy()}


def sampler(W2, X, N, k, calls, seed):
    gen = torch.Generator().manual_seed(seed)
    W2t, Xt = _t(W2), _t(X)
    if len(X) == 1:
        xt = Xt[0]
        return lambda: [sample_one(W2t, xt, N, k, gen) for _ in range(calls)]
    return lambda: [sample_batch(W2t, Xt, N, k, gen) for _ in range(calls)]


def pg_runner(W2, Ws2, N, k, d, eta, reward, n_steps, seed):
    gen = torch.Generator().manual_seed(seed)
    W2t, Ws2t = _t(W2).clone(), _t(Ws2)
    return lambda: pg_steps(W2t, Ws2t, N, k, d, eta, reward, n_steps, gen)


def evaluator(W2, X, Y, N, k):
    W2t, Xt, Yt = _t(W2), _t(X), _t(Y)
    return lambda: evaluate(W2t, Xt, Yt, N, k)


def rs_skip_runner(W2, Ws2, N, k, d, n_steps, seed):
    gen = torch.Generator().manual_seed(seed)
    W2t, Ws2t = _t(W2), _t(Ws2)
    return lambda: rs_skip_steps(W2t, Ws2t, N, k, d, n_steps, gen)
