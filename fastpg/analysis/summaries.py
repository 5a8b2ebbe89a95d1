"""Sweeps and runs summarised for people: scaling tables with censored medians, fitted growth in
words, durations and labels, and the cluster exceptions behind PG + PRM's stalls."""

from __future__ import annotations

import math

import numpy as np

from .fits import censored_quantile, fit_growth


def duration(seconds: float) -> str:
    """A time for a person: ``42 s``, ``17 min``, ``3.2 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def growth_text(fit: dict, x: str) -> str:
    """A fit of :func:`scaling_table` in words: in ``log(1/x)`` for ``alpha`` and ``eps``, else
    in ``x`` (with the factor per unit) and in ``log x``."""
    if x in LEVEL_AXES:
        return f"slope of log queries in log(1/{x}): {fit['exp_slope']:.3f}"
    b = fit["exp_slope"]
    factor = f" (x{math.exp(b):.3g} per unit)" if math.isfinite(b) and abs(b) < 700 else ""
    return f"slope of log queries in {x}: {b:.4f}{factor}; in log {x}: {fit['poly_slope']:.3f}"


def median_text(value: float) -> str:
    """A censored median: ``> budget`` where over half never got there."""
    return "> budget" if math.isinf(value) else f"{value:.4g}"


def group_label(group: dict) -> str:
    """``algorithm=pg, steps=1e+10, N=8`` for a group of grid values: parameters a run does not set
    (a case without them) left out, numbers in short form."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in group.items() if v is not None)


LEVEL_AXES = ("alpha", "eps")  # read on log(1/x): the bound grows like 1/alpha and 1/eps


def scaling_table(rows: list[dict], grid: list[str], x: str, y: str = "queries_to_eps") -> list[dict]:
    """Median and quartiles of ``y`` over seeds for each value of ``x``, per combination of the other grid parameters.

    ``rows`` are the rows of a sweep's ``index.csv`` (complete runs only count). A run that never
    reached eps has no ``y``: it is right-censored, larger than every reached value, and counts in
    the quantiles as such (:func:`censored_quantile`); where over half of the seeds never got
    there the median is ``inf`` ("more than the budget") and left out of the fit. ``reached`` and
    ``missing`` count the seeds of each point. The fit (:func:`fit_growth`) is of ``log y`` in
    ``x`` and ``log x``, or for ``alpha`` and ``eps`` in ``log(1/x)`` (key ``inv_slope``).
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
        cells = [by_x[v_x] for v_x in xs]
        med = np.array([censored_quantile(c, 0.5) for c in cells])
        fit_y = np.where(np.isfinite(med), med, np.nan)
        table.append({
            "group": dict(zip(others, key)),
            "x": np.array(xs, float),
            "median": med,
            "q25": np.array([censored_quantile(c, 0.25) for c in cells]),
            "q75": np.array([censored_quantile(c, 0.75) for c in cells]),
            "n": [len(c) for c in cells],
            "reached": [sum(v is not None for v in c) for c in cells],
            "missing": [sum(v is None for v in c) for c in cells],
            "fit": (fit_growth(np.log(1.0 / np.array(xs, float)), fit_y) if x in LEVEL_AXES else fit_growth(xs, fit_y)),
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
    others) and counts. A task without clusters has none (``cluster`` is -1). Plain NumPy on a run
    (:class:`fastpg.result.RunData`) and its task's arrays
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
