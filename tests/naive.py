"""Slow, obviously-correct NumPy references for the compiled kernels (same names; the rule that every
kernel has one is in README.md, "Development").

Random numbers come from the same per-run xoshiro stream (``fastpg.kernels.rng.uniform`` / ``normal``,
themselves checked against a pure-Python xoshiro256**), consumed in the documented order, so
the reference and the kernels can be compared exactly, step by step.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from fastpg.kernels.rng import normal, uniform, uniform_pos


def xoshiro256ss(state: list[int]):
    """Pure-Python xoshiro256** (Blackman & Vigna); yields 64-bit outputs."""
    mask = (1 << 64) - 1
    s = [int(v) for v in state]

    def rotl(x, r):
        return ((x << r) | (x >> (64 - r))) & mask

    while True:
        result = (rotl((s[1] * 5) & mask, 7) * 9) & mask
        t = (s[1] << 17) & mask
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        yield result


def block_index(features, i, prev, k):
    return i if features == 0 else i * (k + 1) + prev


def log_softmax(s):
    m = s.max()
    return s - (m + np.log(np.exp(s - m).sum()))


def token_logprobs(W, x, features, prefix):
    """``log pi_W(. | x, prefix)`` over the vocabulary at position ``len(prefix)``."""
    k = W.shape[1]
    i = len(prefix)
    prev = k if i == 0 else prefix[-1]
    return log_softmax(W[block_index(features, i, prev, k)] @ x)


def token_logliks(W, x, y, features):
    return np.array([token_logprobs(W, x, features, y[:i])[y[i]] for i in range(len(y))])


def sequence_loglik(W, x, y, features):
    return float(token_logliks(W, x, y, features).sum())


def greedy_decode(W, x, features, N):
    y, margin = [], np.inf
    for _ in range(N):
        s = token_logprobs(W, x, features, y)
        best = int(np.argmax(s))
        others = np.delete(s, best)
        margin = min(margin, s[best] - others.max())
        y.append(best)
    return np.array(y), margin


def response_distribution(W, x, features, N):
    """Every response and its probability (exhaustive; small k, N only)."""
    k = W.shape[1]
    ys = list(itertools.product(range(k), repeat=N))
    p = np.array([math.exp(sequence_loglik(W, x, np.array(y), features)) for y in ys])
    return ys, p


def score_gradient(W, x, y, weights, features):
    """``sum_i weights[i] * grad_W log pi_W(y_i | x, y_<i)`` as a full array like ``W``."""
    k = W.shape[1]
    g = np.zeros_like(W)
    for i in range(len(y)):
        prev = k if i == 0 else y[i - 1]
        b = block_index(features, i, prev, k)
        p = np.exp(token_logprobs(W, x, features, y[:i]))
        e = np.zeros(k)
        e[y[i]] = 1.0
        g[b] += weights[i] * np.outer(e - p, x)
    return g


def sample_token(logp, state):
    u = uniform(state)
    c = np.cumsum(np.exp(logp))
    idx = int(np.searchsorted(c, u, side="right"))
    return min(idx, int(np.nonzero(np.exp(logp) > 0)[0].max()))


def sample_response(W, x, features, N, state):
    y = []
    for _ in range(N):
        y.append(sample_token(token_logprobs(W, x, features, y), state))
    return np.array(y)


def normals(state, n):
    """``n`` draws of the normal primitive (itself checked against the normal law in test_rng)."""
    return np.array([normal(state) for _ in range(n)])


def draw_context(state, centres, cdf, sigma, d):
    if len(centres) == 0:
        x = normals(state, d)
    else:
        u = uniform(state)
        c = min(int(np.searchsorted(cdf, u, side="right")), len(cdf) - 1)
        g = normals(state, d) if sigma > 0 else np.zeros(d)
        x = centres[c] + sigma / math.sqrt(d) * g
    return x / np.linalg.norm(x)


def failures_before_success(p, M, u):
    """Reference skip-ahead with the textbook formula (valid where p is not extreme)."""
    if p >= 1.0:
        return 0.0
    f = math.floor(math.log(u) / math.log1p(-p))
    return float(min(f, M))


def advantages(r, baseline):
    r = np.asarray(r, dtype=float)
    G = len(r)
    if baseline == "none":
        return r.copy()
    if baseline == "mean":
        return r - r.mean()
    if baseline == "rloo":
        return r - (r.sum() - r) / (G - 1)
    return (r - r.mean()) / (r.std() + 1e-8)


def learning_rate(rule, eta, floor, t, loss):
    if rule == "adaptive":
        return eta / max(loss, floor)
    if rule == "invsqrt":
        return eta / math.sqrt(t)
    return eta


def sample_group(W, x, y_star, cfg, state, counters):
    """The ``G`` responses of a ``pg`` step and their first mistakes, counted (responses, tokens,
    mistakes, ORM: ``G`` queries, PRM: ``min(f + 1, N)`` per response)."""
    G, N = cfg["G"], len(y_star)
    ys = [sample_response(W, x, cfg["features"], N, state) for _ in range(G)]
    f = [next((i for i in range(N) if y[i] != y_star[i]), N) for y in ys]
    counters["sequences"] += G
    counters["tokens"] += G * N
    counters["mistakes"] += sum(fj < N for fj in f)
    if cfg["reward"] == "orm":
        counters["orm_queries"] += G
    else:
        counters["prm_queries"] += sum(min(fj + 1, N) for fj in f)
    return ys, f


def advance_run(W, W_star, centres, cdf, pool_x, pool_y, state, counters, cfg, n_steps, W_ref=None):
    """Reference for ``fastpg.kernels.advance.advance_run`` (stepping through): same stream, same counters, NumPy updates.

    ``cfg`` is a dict with keys features, algorithm (pg|rs|sft), reward, G, baseline, skip, lr,
    eta, floor, M, sigma, gamma, and optionally kl_coef, kl_estimator, kl_in (with ``W_ref``) and
    temperature ``tau``: the step samples from ``pi_{W/tau}`` and takes ``eta`` times the gradient in ``W``
    of what it differentiates at ``V = W/tau`` (the chain rule: ``1/tau`` times the gradient in ``V``);
    the KL term's reference enters as ``W_ref/tau``.
    """
    tau = cfg.get("temperature", 1.0)
    features = cfg["features"]
    N = pool_y.shape[1]
    d = W.shape[2]
    for _ in range(n_steps):
        if len(pool_x):
            idx = min(int(uniform(state) * len(pool_x)), len(pool_x) - 1)
            x, y_star = pool_x[idx].copy(), pool_y[idx].copy()
        else:
            while True:
                x = draw_context(state, centres, cdf, cfg["sigma"], d)
                y_star, m = greedy_decode(W_star, x, features, N)
                if m >= cfg["gamma"]:
                    break
        counters["steps"] += 1
        V = W / tau if tau != 1.0 else W  # the sampling policy is pi_V
        V_ref = None if W_ref is None else (W_ref / tau if tau != 1.0 else W_ref)
        counters["contexts"] += 1
        t = counters["steps"]
        grad = None
        alg = cfg["algorithm"]
        if alg == "pg" and cfg.get("kl_coef", 0.0) > 0:
            grad = pg_kl_update(V, V_ref, x, y_star, cfg, t, counters, state)
        elif alg == "pg":
            G = cfg["G"]
            ys, f = sample_group(V, x, y_star, cfg, state, counters)
            if cfg.get("filter_groups"):  # groups of equal rewards are discarded: sample until mixed, or M groups
                discarded = 0
                while len({fj == N for fj in f} if cfg["reward"] == "orm" else set(f)) == 1:
                    discarded += 1
                    if discarded >= cfg["M"]:
                        break
                    ys, f = sample_group(V, x, y_star, cfg, state, counters)
                counters["groups_discarded"] += discarded
                if discarded >= cfg["M"]:
                    continue
            if cfg["reward"] == "orm":
                r = np.array([1.0 if fj == N else 0.0 for fj in f])
                target = N if r.any() else 0
                A = np.tile(advantages(r, cfg["baseline"])[:, None], (1, N))
            else:
                target = max(f)
                A = np.zeros((G, N))
                for i in range(N):
                    A[:, i] = advantages([1.0 if i < fj else 0.0 for fj in f], cfg["baseline"])
            if target > 0:
                loss = -token_logliks(V, x, y_star, features)[:target].sum()
                eta_t = learning_rate(cfg["lr"], cfg["eta"], cfg["floor"], t, loss) / G
                grad = sum(score_gradient(V, x, ys[j], eta_t * A[j], features) for j in range(G))
        elif alg == "rs":
            M = float(cfg["M"])
            tok = token_logliks(V, x, y_star, features)
            if cfg["reward"] == "orm":
                if cfg["skip"]:
                    fails = failures_before_success(math.exp(tok.sum()), M, uniform_pos(state))
                else:
                    fails = 0.0
                    while fails < M and not np.array_equal(sample_response(V, x, features, N, state), y_star):
                        fails += 1
                ok = fails < M
                q = fails + 1 if ok else M
                counters["orm_queries"] += q
                counters["sequences"] += q
                counters["tokens"] += q * N
                counters["mistakes"] += fails
                reached = N if ok else 0
            else:
                counters["sequences"] += 1
                reached = 0
                for i in range(N):
                    if cfg["skip"]:
                        fails = failures_before_success(math.exp(tok[i]), M, uniform_pos(state))
                    else:
                        lp = token_logprobs(V, x, features, list(y_star[:i]))
                        fails = 0.0
                        while fails < M and sample_token(lp, state) != y_star[i]:
                            fails += 1
                    ok = fails < M
                    q = fails + 1 if ok else M
                    counters["prm_queries"] += q
                    counters["tokens"] += q
                    counters["mistakes"] += fails
                    if not ok:
                        break
                    reached = i + 1
            if reached > 0:
                eta_t = learning_rate(cfg["lr"], cfg["eta"], cfg["floor"], t, -tok[:reached].sum())
                if eta_t != 0:
                    grad = score_gradient(V, x, y_star, np.where(np.arange(N) < reached, eta_t, 0.0), features)
        else:  # sft
            loss = -sequence_loglik(V, x, y_star, features)
            eta_t = learning_rate(cfg["lr"], cfg["eta"], cfg["floor"], t, loss)
            if eta_t != 0:
                grad = score_gradient(V, x, y_star, np.full(N, eta_t), features)
        if grad is not None and np.any(grad != 0):
            W += grad / tau  # d/dW of a function of V = W / tau: its gradient in V over tau
            counters["updates"] += 1
    return W


KL_ESTIMATES = {"k1": lambda r: r, "k2": lambda r: 0.5 * r * r, "k3": lambda r: np.expm1(-r) + r}
KL_SLOPES = {"k1": lambda r: np.ones_like(r), "k2": lambda r: r, "k3": lambda r: -np.expm1(-r)}


def sequence_kl_entropy(W, W_ref, x, features, N):
    """``KL(pi_W || pi_ref)`` and ``H(pi_W)`` over whole responses, by enumerating them (small k, N only)."""
    ys, _ = response_distribution(W, x, features, N)
    lp = np.array([sequence_loglik(W, x, np.array(y), features) for y in ys])
    lp0 = np.array([sequence_loglik(W_ref, x, np.array(y), features) for y in ys])
    p = np.exp(lp)
    return float(np.sum(p * (lp - lp0))), float(-np.sum(p * lp))


def kl_gradient(W, W_ref, x, features, N):
    """``grad_W KL(pi_W || pi_ref) = E_y[(log pi_W(y) - log pi_ref(y)) grad log pi_W(y)]`` by enumeration."""
    ys, p = response_distribution(W, x, features, N)
    g = np.zeros_like(W)
    for y, py in zip(ys, p):
        y = np.array(y)
        ratio = sequence_loglik(W, x, y, features) - sequence_loglik(W_ref, x, y, features)
        g += score_gradient(W, x, y, np.full(N, py * ratio), features)
    return g


def kl_term_weights(log_ratio, estimator, kl_in, reward, beta):
    """Per-token weights of the score in the KL term of one response with log-ratios ``l``
    (no outcome reward, no baseline): ``-beta k'(l_i)`` in the loss; in the reward, ORM
    ``-beta sum_i k(l_i)`` at every position, PRM ``-beta sum_{i' >= i} k(l_i')``."""
    if kl_in == "loss":
        return -beta * KL_SLOPES[estimator](log_ratio)
    k = KL_ESTIMATES[estimator](log_ratio)
    if reward == "orm":
        return np.full(len(log_ratio), -beta * k.sum())
    return -beta * np.cumsum(k[::-1])[::-1]


def expected_kl_update(W, W_ref, x, features, N, estimator, kl_in, reward, eta, beta):
    """The expected update of the KL term alone with ``G = 1`` and no baseline, by enumerating
    responses: ``E_y[sum_i w_i(y) grad log pi_W(y_i | x, y_<i)]`` times ``eta`` (``exact``:
    ``-eta beta grad KL``)."""
    if estimator == "exact":
        return -eta * beta * kl_gradient(W, W_ref, x, features, N)
    ys, p = response_distribution(W, x, features, N)
    g = np.zeros_like(W)
    for y, py in zip(ys, p):
        y = np.array(y)
        log_ratio = token_logliks(W, x, y, features) - token_logliks(W_ref, x, y, features)
        g += score_gradient(W, x, y, py * eta * kl_term_weights(log_ratio, estimator, kl_in, reward, beta), features)
    return g


def pg_kl_update(W, W_ref, x, y_star, cfg, t, counters, state):
    """Reference for ``fastpg.kernels.kl.pg_kl_update``: the update of a ``pg`` step with a KL term."""
    features, G, N = cfg["features"], cfg["G"], len(y_star)
    beta, estimator, kl_in = cfg["kl_coef"], cfg["kl_estimator"], cfg["kl_in"]
    ys, f = sample_group(W, x, y_star, cfg, state, counters)
    ls = [token_logliks(W, x, y, features) - token_logliks(W_ref, x, y, features) for y in ys]
    in_reward = estimator != "exact" and kl_in == "reward"
    if cfg["reward"] == "orm":
        r = np.array([1.0 if fj == N else 0.0 for fj in f])
        if in_reward:
            r = r - beta * np.array([KL_ESTIMATES[estimator](lj).sum() for lj in ls])
        A = np.tile(advantages(r, cfg["baseline"])[:, None], (1, N))
    else:
        R = np.array([[1.0 if i < fj else 0.0 for i in range(N)] for fj in f])
        if in_reward:
            R = R - beta * np.array([np.cumsum(KL_ESTIMATES[estimator](lj)[::-1])[::-1] for lj in ls])
        A = np.zeros((G, N))
        for i in range(N):
            A[:, i] = advantages(R[:, i], cfg["baseline"])
    eta = learning_rate(cfg["lr"], cfg["eta"], cfg["floor"], t, 0.0)
    grad = np.zeros_like(W)
    for j in range(G):
        w = eta / G * A[j]
        if estimator != "exact" and not in_reward:
            w = w - eta / G * beta * KL_SLOPES[estimator](ls[j])
        grad += score_gradient(W, x, ys[j], w, features)
    if estimator == "exact":
        grad -= eta * beta * kl_gradient(W, W_ref, x, features, N)
    return grad


def query_complexity(loglik, base_loglik, queries, alpha, eps):
    """Reference Q(alpha, eps): walk the evaluation points one by one, in plain Python floats.

    Returns (reached, queries, queries_lo, contexts)."""
    chosen = [j for j in range(len(base_loglik)) if base_loglik[j] >= math.log(alpha)]
    if not chosen:
        return False, None, float(queries[-1]), 0
    for e in range(len(queries)):
        err = sum(-math.expm1(loglik[e][j]) for j in chosen) / len(chosen)
        if err <= eps:
            return True, float(queries[e]), float(queries[e - 1]) if e > 0 else 0.0, len(chosen)
    return False, None, float(queries[-1]), len(chosen)


def first_passage_queries(loglik, queries, eps):
    """Reference: per context, the queries at the first point with likelihood >= 1 - eps (NaN if never)."""
    out = []
    for j in range(len(loglik[0])):
        hit = [e for e in range(len(queries)) if loglik[e][j] >= math.log1p(-eps)]
        out.append(float(queries[hit[0]]) if hit else float("nan"))
    return np.array(out)
