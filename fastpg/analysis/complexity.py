"""Query complexity read off stored traces: Q(alpha, eps), first passage, fitted exponents.

Plain NumPy on arrays a result file holds (docs/design.md, "Query complexity"); nothing here runs
a simulation. The paper's first result is per test context: on contexts whose base likelihood is
at least ``alpha``, a PG variant reaches likelihood ``1 - eps`` after about
``(1/alpha + 1/eps) / gamma^2`` reward queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..config import ConfigError


def check_alpha(alpha: float, option: str = "alpha") -> float:
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and 0.0 < alpha <= 1.0):
        raise ConfigError(option, f"got {alpha!r}; allowed: numbers in (0, 1]")
    return float(alpha)


def check_eps(eps: float, option: str = "eps") -> float:
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and 0.0 < eps < 1.0):
        raise ConfigError(option, f"got {eps!r}; allowed: numbers in (0, 1)")
    return float(eps)


def conditional_error(loglik: np.ndarray, base_loglik: np.ndarray, alpha: float) -> np.ndarray:
    """``E[1 - pi(y*|x) | pi_0(y*|x) >= alpha]`` over test contexts, at each evaluation point.

    ``loglik[e, j] = log pi(y*_j|x_j)`` at evaluation point ``e``; ``base_loglik[j]`` is the base
    model's. ``1 - pi`` is formed as ``-expm1(loglik)``, so an error of ``1e-12`` is resolved.
    Returns NaN at every point when no test context has base likelihood ``>= alpha``.
    """
    loglik = np.atleast_2d(np.asarray(loglik, dtype=np.float64))
    mask = np.asarray(base_loglik, dtype=np.float64) >= math.log(alpha)
    if not mask.any():
        return np.full(loglik.shape[0], np.nan)
    return np.mean(-np.expm1(loglik[:, mask]), axis=1)


@dataclass(frozen=True)
class QueryComplexity:
    """Q(alpha, eps) of one run.

    ``queries``: total reward queries at the first evaluation point where the conditional expected
    error is at most ``eps`` (None if never reached); ``queries_lo``: the queries at the evaluation
    point before it (Q lies in ``(queries_lo, queries]``), or, when not reached, at the last point
    (Q is above it); ``contexts``: the test contexts with base likelihood ``>= alpha``.
    """

    alpha: float
    eps: float
    reached: bool
    queries: float | None
    queries_lo: float
    contexts: int


def query_complexity(loglik, base_loglik, queries, alpha: float, eps: float) -> QueryComplexity:
    """Q(alpha, eps): total reward queries until ``E[1 - pi | pi_0 >= alpha] <= eps`` (see :class:`QueryComplexity`).

    ``queries[e]`` are the total reward queries (ORM + PRM) at evaluation point ``e``.
    """
    queries = np.asarray(queries, dtype=np.float64)
    err = conditional_error(loglik, base_loglik, alpha)
    contexts = int(np.sum(np.asarray(base_loglik) >= math.log(alpha)))
    hit = np.nonzero(err <= eps)[0]
    if contexts == 0 or len(hit) == 0:
        last = float(queries[-1]) if len(queries) else 0.0
        return QueryComplexity(alpha, eps, False, None, last, contexts)
    i = int(hit[0])
    return QueryComplexity(alpha, eps, True, float(queries[i]), float(queries[i - 1]) if i > 0 else 0.0, contexts)


def first_passage_queries(loglik, queries, eps: float) -> np.ndarray:
    """Per test context: total reward queries at the first evaluation point where
    ``pi(y*_j|x_j) >= 1 - eps`` (NaN where it never happens)."""
    loglik = np.atleast_2d(np.asarray(loglik, dtype=np.float64))
    queries = np.asarray(queries, dtype=np.float64)
    above = loglik >= math.log1p(-eps)
    first = np.argmax(above, axis=0)
    out = queries[first].astype(np.float64)
    out[~above.any(axis=0)] = np.nan
    return out


def theory_bound(alpha, eps, gamma, teacher_norm=1.0):
    """The shape of the paper's bound, ``(1/alpha + 1/eps) ||W*||^2 / gamma^2`` (up to constants and
    logs); ``teacher_norm`` is ``||W*||`` (1 for the spec's teacher)."""
    return ((1.0 / np.asarray(alpha, float) + 1.0 / np.asarray(eps, float)) * np.asarray(teacher_norm, float) ** 2
            / np.asarray(gamma, float) ** 2)


def lq_curve(base_loglik, log_threshold, level_loglik=None) -> np.ndarray:
    """The error the Likelihood Quantile predicts when every context above a threshold is learned.

    ``E_j[(1 - pi_0j) 1{l_j <= log a}]`` at each ``log a`` in ``log_threshold``, where
    ``pi_0j = exp(base_loglik_j)`` and ``l_j`` is ``level_loglik`` (default: ``base_loglik``, the
    sequence level; for PRM the token level ``min_i log pi_0(y*_ji|...)``). Once ``a`` is small the
    weights are all about 1 and this is the LQ ``F0(a) = P_j[l_j <= log a]``; for ``a >= 1`` it is
    the base model's own expected error.
    """
    base = np.asarray(base_loglik, dtype=np.float64)
    level = base if level_loglik is None else np.asarray(level_loglik, dtype=np.float64)
    order = np.argsort(level, kind="stable")
    cumulative = np.concatenate([[0.0], np.cumsum(-np.expm1(base[order]))]) / len(base)
    return cumulative[np.searchsorted(level[order], np.asarray(log_threshold, dtype=np.float64), side="right")]


LQ_FIT_LOG10_C = np.linspace(-4.0, 10.0, 1401)  # the grid of log10 c that lq_fit searches


def lq_fit(queries, error, base_loglik, level_loglik=None, log10_c=LQ_FIT_LOG10_C) -> dict:
    """Fit ``error(T) ~ LQ(c / T)`` (:func:`lq_curve`): after ``T`` reward queries, the contexts whose
    base likelihood (``level_loglik``: at the token level for PRM) is above ``c / T`` are learned.

    Points with ``T > 0`` count; ``c`` minimises the squared gap over a log grid. Returns ``c``,
    the largest gap ``max_gap``, and the fitted curve at the evaluation points.
    """
    T = np.asarray(queries, dtype=np.float64)
    err = np.asarray(error, dtype=np.float64)
    keep = T > 0
    T, err = T[keep], err[keep]
    if len(T) == 0:
        return {"c": float("nan"), "max_gap": float("nan"), "queries": T, "curve": T}
    logs = np.log(10.0) * np.asarray(log10_c)[:, None] - np.log(T)[None, :]
    curves = lq_curve(base_loglik, logs.ravel(), level_loglik).reshape(logs.shape)
    sq = np.mean((curves - err[None, :]) ** 2, axis=1)
    best = int(np.argmin(sq))
    return {"c": float(10.0 ** log10_c[best]), "max_gap": float(np.max(np.abs(curves[best] - err))),
            "queries": T, "curve": curves[best]}


# -- per-context first passage with censoring (docs/design.md, "Query complexity per context") --------


def context_passages(loglik, queries, level_loglik, eps: float) -> dict:
    """Every test context's first passage to ``pi(y*_j|x_j) >= 1 - eps``, as survival data.

    ``level_loglik[j]`` is the context's base log-likelihood at the level the claim is about
    (sequence, or token level ``min_i``). Returns ``x = log(1/alpha_j + 1/eps)`` (the bound's shape),
    ``queries`` (at the first passage, or at the last evaluation point where it never happened),
    ``reached`` (False: right-censored), ``level_loglik`` (``log alpha_j``) and ``at_start``
    (already there at the first evaluation point: no passage to measure, left out of the others).
    """
    T = first_passage_queries(loglik, queries, eps)
    reached = np.isfinite(T)
    at_start = reached & (T <= 0)
    keep = ~at_start
    last = float(np.asarray(queries, dtype=np.float64)[-1])
    alpha_inv = np.exp(-np.asarray(level_loglik, dtype=np.float64))
    return {"x": np.log(alpha_inv + 1.0 / eps)[keep], "queries": np.where(reached, T, last)[keep],
            "reached": reached[keep], "level_loglik": np.asarray(level_loglik, dtype=np.float64)[keep],
            "at_start": int(at_start.sum())}
