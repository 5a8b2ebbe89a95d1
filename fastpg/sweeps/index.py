"""A sweep's ``index.csv`` (docs/design.md, "Sweeps and backends"): a row per run with its status, final
counters and metrics, queries to each eps and Q(alpha, eps), rewritten atomically from the files'
own status; and the per-grid-point summary.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..analysis.complexity import query_complexity
from ..analysis.fits import censored_quantile
from ..config import PARAM, ConfigError, parse_value
from ..outputs import METRICS, RUN_COUNTERS
from ..result import param_column
from ..store import (
    BATCH_LAYOUT,
    COMPLETE,
    atomic_file,
    load,
    load_batch,
)
from .spec import BATCH_FOLDER, INDEX, Sweep, id_value


def queries_to_eps(trace: dict, eps: float) -> float | None:
    """Total reward queries (ORM + PRM) at the first evaluation point with ``expected_error <= eps``."""
    hit = np.nonzero(np.asarray(trace["expected_error"]) <= eps)[0]
    if len(hit) == 0:
        return None
    i = hit[0]
    return float(trace["orm_queries"][i] + trace["prm_queries"][i])


def eps_column(eps: float, first: bool) -> str:
    return "queries_to_eps" if first else f"queries_to_eps_{id_value(eps)}"


def q_column(alpha: float, eps: float, part: str = "") -> str:
    """The index column of Q(alpha, eps), or of its ``part``: ``reached`` (true/false: some
    evaluation point met eps; false also where no test context is above alpha), ``queries_lo``
    (the queries at the point before, or at the last point when not reached: a lower bound) and
    ``n_contexts`` (test contexts with base likelihood >= alpha)."""
    return f"Q_alpha={id_value(alpha)}_eps={id_value(eps)}" + (f"_{part}" if part else "")


Q_PARTS = ("reached", "queries_lo", "n_contexts")


def index_values(run, eps_list, alphas) -> dict:
    """The index columns of a complete run (a :class:`fastpg.result.RunData`, just run or loaded):
    final counters and metrics, its margins, queries_to_eps for each ``eps`` and Q(alpha, eps) for
    each ``alpha`` and ``eps``."""
    trace, loglik, base_loglik, task = run.trace, run.loglik, run.base["loglik"], run.task
    values = {name: float(trace[name][-1]) for name in (*RUN_COUNTERS, *METRICS)}
    values.update(task_gamma=task.get("gamma", ""), realised_min_margin=task.get("realised_min_margin", ""))
    queries = np.asarray(trace["orm_queries"]) + np.asarray(trace["prm_queries"])
    for i, e in enumerate(eps_list):
        q = queries_to_eps(trace, e)
        values[eps_column(e, i == 0)] = "" if q is None else q
    for a in alphas:
        for e in eps_list:
            qc = query_complexity(loglik, base_loglik, queries, a, e)
            values[q_column(a, e)] = "" if qc.queries is None else qc.queries
            values[q_column(a, e, "reached")] = "true" if qc.reached else "false"
            values[q_column(a, e, "queries_lo")] = qc.queries_lo
            values[q_column(a, e, "n_contexts")] = qc.contexts
    return values


class Index:
    """Rows of ``index.csv``, read from each run's file once it is complete."""

    def __init__(self, sweep: Sweep):
        self.sweep = sweep
        self.rows: dict[str, dict] = {}
        # a parameter that is also a result column (steps, contexts) is config_<name>: result.param_column
        self.columns = [*map(param_column, sweep.point_names), "seed", "run", "file", "status", "message",
                        *RUN_COUNTERS, *METRICS, "task_gamma", "realised_min_margin",
                        *(eps_column(e, i == 0) for i, e in enumerate(sweep.eps_list)),
                        *(q_column(a, e, part) for a in sweep.alphas for e in sweep.eps_list
                          for part in ("", *Q_PARTS))]

    def refresh(self, runs, messages: dict | None = None, values: dict | None = None, where: dict | None = None) -> None:
        """Rows of ``runs``: from ``values`` (run id -> :func:`index_values`, computed where the run
        ran) when its file is complete, else read from the file. ``where`` (run id -> ``(status,
        file)``, as :meth:`Sweep.locate`) says where each run is; by default the sweep looks. A run
        in ``values`` comes from a batch that finished: without a complete file it gets a message
        saying so."""
        messages, values = messages or {}, values or {}
        where = self.sweep.locate(runs) if where is None else where
        batch_layout = self.sweep.layout == BATCH_LAYOUT
        loaded: dict = {}  # batch file -> its runs, each file read once

        def read(run, path):
            if not batch_layout:
                return load(path)
            if path not in loaded:
                loaded[path] = load_batch(path, [r.id for r in runs])
            return loaded[path][run.id]

        for run in runs:
            status, path = where.get(run.id, ("missing", None))
            row = {param_column(name): value for name, value in run.point.items()}
            row.update(seed=run.seed, run=run.id, file="" if path is None else str(Path(path).relative_to(self.sweep.outdir)))
            message = messages.get(run.id, "")
            if path is not None:
                try:
                    if values.get(run.id) is not None and status == COMPLETE:
                        row.update(values[run.id])
                    else:
                        data = read(run, path)
                        status, message = data.status, message or data.message
                        if data.complete and data.rows:
                            row.update(index_values(data, self.sweep.eps_list, self.sweep.alphas))
                except (OSError, KeyError, ValueError):
                    status = "unreadable"
            elif run.id in messages:
                status = "failed"
            if run.id in values and status != COMPLETE and not message:
                # its batch finished, yet no complete file is where the sweep looks
                place = f"in {self.sweep.outdir / BATCH_FOLDER}" if batch_layout else f"at {run.path}"
                message = f"no complete file {place} after its batch finished (can the workers see OUTDIR?)"
            row.update(status=status, message=message)
            self.rows[run.id] = row

    def write(self) -> Path:
        path = self.sweep.outdir / INDEX
        lines = []
        for run in self.sweep.runs:
            if run.id in self.rows:
                lines.append(self.rows[run.id])
        with atomic_file(path, newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, restval="")
            writer.writeheader()
            writer.writerows(lines)
        return path


def read_index(outdir) -> list[dict]:
    """``index.csv`` of a sweep folder as a list of dicts (numbers converted, empty cells as None)."""
    path = Path(outdir) / INDEX
    if not path.exists():
        raise ConfigError("outdir", f"{outdir} has no {INDEX}; allowed: a fastpg sweep folder")
    params = {param_column(name): name for name in PARAM}
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            out = {}
            for key, value in row.items():
                if value == "":
                    out[key] = None
                elif key in params:  # a parameter as its type (N, seed: integers; reward: text)
                    out[key] = parse_value(params[key], value)
                elif key in ("run", "file", "status", "message"):
                    out[key] = value
                elif key.endswith("_reached"):
                    out[key] = value == "true"
                elif key.endswith("_n_contexts"):
                    out[key] = int(float(value))
                else:
                    try:
                        out[key] = float(value)
                    except ValueError:
                        out[key] = value
            rows.append(out)
    return rows


def grid_rows(rows: list[dict], grid: list[str]) -> list[dict]:
    """Index rows with each parameter of ``grid`` under its own name: ``index.csv`` names a parameter
    that is also a result column ``config_<name>`` (:func:`fastpg.result.param_column`), so ``steps``
    and ``contexts`` become the parameters' values here, not the counters'."""
    return [{**row, **{g: row.get(param_column(g)) for g in grid}} for row in rows]


def q_rows(rows: list[dict], grid: list[str], alphas, eps_list) -> list[dict]:
    """Rows in long form for fits against alpha or eps (``rows`` from :func:`grid_rows`): one row per
    (run, alpha, eps) with ``Q`` (None where not reached), the run's grid values, ``seed`` and
    ``status``. A run with no test context above alpha has nothing to measure there and no row
    (not a run that never got there)."""
    out = []
    for row in rows:
        for a in alphas:
            for e in eps_list:
                if row.get(q_column(a, e, "n_contexts")) == 0:
                    continue
                out.append({**{g: row.get(g) for g in grid}, "seed": row.get("seed"), "status": row.get("status"),
                            "alpha": a, "eps": e, "Q": row.get(q_column(a, e))})
    return out


def summary(sweep: Sweep, index: Index) -> list[dict]:
    """Per grid point: runs complete, median final expected error and the censored median of
    ``queries_to_eps`` (a run that never reached eps counts as more than its budget; ``inf``, said
    "> budget", where over half of them never did: :func:`fastpg.analysis.fits.censored_quantile`)."""
    out = []
    for point in sweep.points():
        rows = [index.rows[r.id] for r in sweep.runs if r.point == point and r.id in index.rows]
        complete = [r for r in rows if r["status"] == COMPLETE]
        errors = [r["expected_error"] for r in complete]
        q = [None if r.get("queries_to_eps") in ("", None) else r["queries_to_eps"] for r in complete]
        out.append({**point, "complete": f"{len(complete)}/{len(rows)}",
                    "expected_error": float(np.median(errors)) if errors else None,
                    "queries_to_eps": censored_quantile(q) if q else None,
                    "reached_eps": f"{sum(v is not None for v in q)}/{len(complete)}"})
    return out
