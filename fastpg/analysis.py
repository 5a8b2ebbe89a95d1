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


def fit_growth(x, y) -> dict:
    """Growth of positive ``y`` in ``x``: slope of ``log y`` in ``x`` (exponential) and in ``log x`` (polynomial).

    ``exp_slope`` = b in ``log y ~ a + b x`` (so ``y`` grows by ``e^b`` per unit of ``x``);
    ``poly_slope`` = c in ``log y ~ a + c log x``. ``nan`` with fewer than 2 points.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    m = (y > 0) & np.isfinite(y)
    if m.sum() < 2:
        return {"exp_slope": float("nan"), "poly_slope": float("nan"), "points": int(m.sum())}
    out = {"exp_slope": float(np.polyfit(x[m], np.log(y[m]), 1)[0]), "points": int(m.sum())}
    mx = m & (x > 0)
    out["poly_slope"] = float(np.polyfit(np.log(x[mx]), np.log(y[mx]), 1)[0]) if mx.sum() >= 2 else float("nan")
    return out


def group_label(group: dict) -> str:
    """``algorithm=pg, steps=1e+10, N=8`` for a group of grid values: parameters a run does not set
    (a case without them) left out, numbers in short form."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in group.items() if v is not None)


def scaling_table(rows: list[dict], grid: list[str], x: str, y: str = "queries_to_eps") -> list[dict]:
    """Median and quartiles of ``y`` over seeds for each value of ``x``, per combination of the other grid parameters.

    ``rows`` are the rows of a sweep's ``index.csv`` (complete runs only count; runs that never
    reached eps have no ``y`` and are left out of the median, and counted in ``missing``).
    """
    others = [g for g in grid if g != x]
    groups: dict = {}
    for row in rows:
        if row.get("status") != "complete":
            continue
        key = tuple(row.get(g) for g in others)
        groups.setdefault(key, {}).setdefault(row[x], []).append(row.get(y))
    table = []
    for key, by_x in groups.items():
        xs = sorted(by_x)
        vals = [[v for v in by_x[v_x] if v is not None] for v_x in xs]
        med = [float(np.median(v)) if v else float("nan") for v in vals]
        table.append({
            "group": dict(zip(others, key)),
            "x": np.array(xs, float),
            "median": np.array(med),
            "q25": np.array([float(np.percentile(v, 25)) if v else float("nan") for v in vals]),
            "q75": np.array([float(np.percentile(v, 75)) if v else float("nan") for v in vals]),
            "n": [len(v) for v in vals],
            "missing": [len(by_x[v_x]) - len(v) for v_x, v in zip(xs, vals)],
            "fit": fit_growth(xs, med),
        })
    return table


def cluster_exceptions(run, task: dict) -> dict:
    """The test contexts a run leaves stuck, against the exceptions of their clusters.

    On a ``clusters`` task a context is an *exception* when its correct response differs from the
    most common correct response of the test contexts of its cluster (the nearest centre). A
    context is *stuck* when its final likelihood is below 1/2. With wide clusters, on-policy PG
    with a process reward drives the exceptions' correct token where they leave the majority
    towards 0 and stalls on them (docs/design.md, "Figure 1"). Returns the masks ``stuck``,
    ``exception``, ``cluster``, the position where each exception first leaves the majority
    (``leave``), the base likelihood of its correct token there (``base_token``, NaN for the
    others) and counts. A task without clusters has none (``cluster`` is -1). Plain NumPy on a run (:class:`fastpg.store.RunData`) and its task's arrays
    (:func:`fastpg.store.read_task_arrays`).
    """
    X, Y = np.asarray(task["test_x"]), np.asarray(task["test_y"])
    centres = np.asarray(task["centres"])
    # without clusters (``sphere``) there is no majority to differ from: cluster -1, no exceptions
    cluster = np.argmax(X @ centres.T, axis=1) if len(centres) else np.full(len(Y), -1)
    majority = Y.copy()
    for c in np.unique(cluster[cluster >= 0]):
        members = Y[cluster == c]
        responses, counts = np.unique(members, axis=0, return_counts=True)
        majority[cluster == c] = responses[np.argmax(counts)]
    differs = Y != majority
    exception = differs.any(axis=1)
    leave = np.where(exception, np.argmax(differs, axis=1), -1)
    stuck = np.asarray(run.loglik[-1]) < np.log(0.5)
    token = np.asarray(run.base["token_loglik"])
    base_token = np.full(len(Y), np.nan)
    base_token[exception] = np.exp(token[exception, leave[exception]])
    return {"stuck": stuck, "exception": exception, "cluster": cluster, "leave": leave, "base_token": base_token,
            "n_stuck": int(stuck.sum()), "n_exceptions": int(exception.sum()),
            "stuck_exceptions": int((stuck & exception).sum())}
