"""Small analyses of traces: fitted rates (plain NumPy, no plotting)."""

from __future__ import annotations

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
    ``runs`` are :class:`fastpg.store.RunData` with ``task["gamma"] > 0``.
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
