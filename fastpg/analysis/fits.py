"""Every fitted slope and rate of fastpg's analyses, plain NumPy on arrays (no plotting, no files):
least-squares slopes, with bootstrap intervals over seeds; censored regression and Kaplan-Meier
quantiles for passages not reached within a budget; the rate of test error in samples seen.
"""

from __future__ import annotations

import math

import numpy as np

HIGH_ERROR = 0.3  # above this the error is still in its initial phase, not the asymptotic rate


MIN_ERRORS = 10  # an error below MIN_ERRORS / n_test cannot be told from 0 by the test set


def resolvable(n, err, n_test, high=HIGH_ERROR, min_errors=MIN_ERRORS):
    """Mask of evaluation points whose error the test set resolves: ``min_errors/n_test <= err <= high``."""
    n, err = np.asarray(n, float), np.asarray(err, float)
    return (n > 0) & (err >= min_errors / n_test) & (err <= high)


def fit_loglog_slope(n, err, n_test, high=HIGH_ERROR, min_errors=MIN_ERRORS):
    """Least-squares slope of ``log err`` against ``log n`` over the resolvable points (``nan`` if < 3)."""
    m = resolvable(n, err, n_test, high, min_errors)
    if m.sum() < 3:
        return float("nan")
    return float(np.polyfit(np.log(np.asarray(n, float)[m]), np.log(np.asarray(err, float)[m]), 1)[0])


def pooled_rate_slope(runs, metric="greedy_error"):
    """Slope of ``log err`` against ``log(gamma^2 n)`` pooled over runs with different margins.

    If the error behaves like ``c / (gamma^2 n)`` the runs collapse onto one line of slope -1.
    ``runs`` are :class:`fastpg.result.RunData` with ``task["gamma"] > 0``.
    """
    xs, ys = [], []
    for run in runs:
        g = float(run.task["gamma"])
        n, err = run.trace["steps"], run.trace[metric]
        m = resolvable(n, err, run.config["n_test"])
        xs.append(np.log(g * g * n[m]))
        ys.append(np.log(err[m]))
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(x) < 3:
        return float("nan")
    return float(np.polyfit(x, y, 1)[0])


def fit_growth(x, y) -> dict:
    """Growth of positive ``y`` in ``x``: slope of ``log y`` in ``x`` (exponential) and in ``log x`` (polynomial).

    ``exp_slope`` = b in ``log y ~ a + b x`` (so ``y`` grows by ``e^b`` per unit of ``x``);
    ``poly_slope`` = c in ``log y ~ a + c log x``. ``nan`` with fewer than 2 points (NaN ``y``
    are left out).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    m = (y > 0) & np.isfinite(y)
    if m.sum() < 2:
        return {"exp_slope": float("nan"), "poly_slope": float("nan"), "points": int(m.sum())}
    out = {"exp_slope": float(np.polyfit(x[m], np.log(y[m]), 1)[0]), "points": int(m.sum())}
    mx = m & (x > 0)
    out["poly_slope"] = float(np.polyfit(np.log(x[mx]), np.log(y[mx]), 1)[0]) if mx.sum() >= 2 else float("nan")
    return out


def censored_quantile(values, q: float = 0.5) -> float:
    """The ``q``-quantile of values where ``None`` marks a run that never got there within its
    budget (right-censored: larger than any reached value). ``inf`` when the quantile falls among
    the censored ones (say "more than the budget")."""
    v = np.sort(np.array([math.inf if x is None else float(x) for x in values], dtype=float))
    if len(v) == 0:
        return math.nan
    return float(np.quantile(v, q, method="inverted_cdf"))


def fit_slope(x, y) -> float:
    """Least-squares slope of ``y`` against ``x`` over finite pairs (NaN with fewer than 2 distinct x)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    m = np.isfinite(x) & np.isfinite(y)
    if m.sum() < 2 or np.ptp(x[m]) == 0:
        return float("nan")
    return float(np.polyfit(x[m], y[m], 1)[0])


def bootstrap_slope(x, y, groups, n_boot: int = 1000, seed: int = 0, level: float = 0.9) -> tuple[float, float, float]:
    """Slope of ``y`` in ``x`` and a bootstrap interval that resamples ``groups`` (seeds) with replacement.

    Points of one group (one seed's runs) stay together, so the interval reflects the variation
    between seeds. Returns ``(slope, low, high)``; NaN where fewer than 2 distinct ``x`` remain.
    """
    x, y, groups = np.asarray(x, float), np.asarray(y, float), np.asarray(groups)
    return group_bootstrap(lambda pick: fit_slope(x[pick], y[pick]), fit_slope(x, y), groups, n_boot, seed, level)


def group_bootstrap(estimate, value: float, groups, n_boot: int, seed: int, level: float) -> tuple[float, float, float]:
    """``(value, low, high)``: a ``level`` interval of ``estimate(pick)`` over bootstrap draws that
    resample the ``groups`` with replacement (``pick`` indexes the points of the drawn groups, a
    group's points together). NaN bounds with fewer than 2 groups or a non-finite ``value``."""
    groups = np.asarray(groups)
    labels = np.unique(groups)
    if len(labels) < 2 or not math.isfinite(value):
        return value, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    members = [np.nonzero(groups == g)[0] for g in labels]
    draws = []
    for _ in range(n_boot):
        pick = np.concatenate([members[i] for i in rng.integers(0, len(labels), len(labels))])
        s = estimate(pick)
        if math.isfinite(s):
            draws.append(s)
    if not draws:
        return value, float("nan"), float("nan")
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return value, float(lo), float(hi)


def censored_slope(x, y, reached, iters: int = 200, start=None) -> tuple[float, float, float]:
    """Maximum-likelihood fit of ``y = a + b x + s e`` with ``e`` standard logistic, where ``y`` is
    only a lower bound where not ``reached`` (right-censored): the log-logistic accelerated
    failure-time model of survival analysis, with ``y`` a log first-passage time. Returns
    ``(a, b, s)``; NaN with fewer than 2 reached points.

    Left out, censored points would bias ``b`` down (the slowest contexts are the censored ones);
    here each contributes ``log P[e > z] = -log(1 + e^z)``, ``z = (y - a - b x)/s``, and a reached
    one the log density ``z - 2 log(1 + e^z) - log s``. The logistic keeps both in closed form (no
    special functions, so plain NumPy). Quasi-Newton (BFGS) from ``start`` (``(a, b, s)``) or the
    least-squares fit of the reached points, with the Hessian by differences to start.
    """
    x, y, obs = np.asarray(x, float), np.asarray(y, float), np.asarray(reached, bool)
    if obs.sum() < 2 or np.ptp(x[obs]) == 0:
        return float("nan"), float("nan"), float("nan")
    if start is None or not all(math.isfinite(v) for v in start):
        b, a = np.polyfit(x[obs], y[obs], 1)
        s = max(float(np.std(y[obs] - a - b * x[obs])) * math.sqrt(3.0) / math.pi, 1e-3)  # the logistic's scale
    else:
        a, b, s = start
    theta = np.array([a, b, math.log(s)])

    def objective(t):
        """Negative log-likelihood and its gradient in ``(a, b, log s)``."""
        if not -30.0 < t[2] < 30.0:
            return math.inf, np.zeros(3)
        s = math.exp(t[2])
        z = (y - t[0] - t[1] * x) / s
        soft = np.logaddexp(0.0, z)  # log(1 + e^z)
        sig = np.exp(z - soft)  # 1 / (1 + e^-z)
        ll = np.where(obs, z - 2.0 * soft - t[2], -soft)
        dz = np.where(obs, 1.0 - 2.0 * sig, -sig)  # d ll / d z
        d_mu = -dz / s
        d_ls = np.where(obs, -z * dz - 1.0, -z * dz)
        return -float(ll.sum()), -np.array([d_mu.sum(), (d_mu * x).sum(), d_ls.sum()])

    f, g = objective(theta)
    H = np.empty((3, 3))
    for i in range(3):
        e = np.zeros(3)
        e[i] = 1e-5
        H[:, i] = (objective(theta + e)[1] - objective(theta - e)[1]) / 2e-5
    H = 0.5 * (H + H.T)
    if not np.all(np.linalg.eigvalsh(H) > 0):
        H = np.diag(np.maximum(np.abs(np.diag(H)), 1.0))
    for _ in range(iters):
        step = -np.linalg.solve(H, g)
        t = 1.0
        while True:  # backtracking (Armijo)
            new = theta + t * step
            fn, gn = objective(new)
            if math.isfinite(fn) and fn <= f + 1e-4 * t * (g @ step):
                break
            t *= 0.5
            if t < 1e-12:
                return float(theta[0]), float(theta[1]), math.exp(theta[2])
        sv, yv = new - theta, gn - g
        theta, f, g = new, fn, gn
        if sv @ yv > 1e-300:
            Hs = H @ sv
            H = H + np.outer(yv, yv) / (yv @ sv) - np.outer(Hs, Hs) / (sv @ Hs)
        if np.max(np.abs(g)) < 1e-9 * max(1.0, abs(f)) or np.max(np.abs(sv)) < 1e-10:
            break
    return float(theta[0]), float(theta[1]), math.exp(theta[2])


def bootstrap_censored_slope(x, y, reached, groups, n_boot: int = 200, seed: int = 0,
                             level: float = 0.9) -> tuple[float, float, float]:
    """:func:`censored_slope`'s ``b`` and a bootstrap interval that resamples ``groups`` (seeds);
    each draw's fit starts from the whole fit (fewer steps)."""
    x, y, obs = np.asarray(x, float), np.asarray(y, float), np.asarray(reached, bool)
    fit = censored_slope(x, y, obs)
    return group_bootstrap(lambda pick: censored_slope(x[pick], y[pick], obs[pick], start=fit)[1], fit[1], groups,
                           n_boot, seed, level)


def kaplan_meier_quantile(times, reached, q: float = 0.5) -> float:
    """The ``q``-quantile of first-passage times from right-censored data: the smallest time where
    the product-limit (Kaplan-Meier) estimate of ``P[T > t]`` falls to ``1 - q``; ``inf`` where it
    never does within the data (more than ``1 - q`` of the contexts are still censored)."""
    t, obs = np.asarray(times, float), np.asarray(reached, bool)
    order = np.lexsort((~obs, t))  # at a tie, passages before censorings
    t, obs = t[order], obs[order]
    at_risk, surv, i = len(t), 1.0, 0
    while i < len(t):
        j = i
        while j < len(t) and t[j] == t[i]:
            j += 1
        d = int(obs[i:j].sum())
        if d:
            surv *= 1.0 - d / at_risk
            if surv <= 1.0 - q + 1e-12:
                return float(t[i])
        at_risk -= j - i
        i = j
    return math.inf
