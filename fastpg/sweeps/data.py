"""Reading a sweep folder for analysis (docs/design.md, "Reading a sweep"): :func:`load_sweep` and
:class:`SweepData` (the index, the traces in long form, Q in long form, an ``xarray.Dataset``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ConfigError
from ..result import param_column, require_pandas
from ..store import (
    BATCH_LAYOUT,
    COMPLETE,
    load,
    load_batch,
)
from .index import q_column, read_index
from .spec import MANIFEST, RUN_LAYOUT, manifest_keys


@dataclass
class SweepData:
    """A sweep folder in tables: ``index`` (one row per run, as ``index.csv``), ``traces`` (long
    form: one row per run and evaluation point, with the run's grid and case parameters, ``seed``,
    ``run`` (its id), ``file`` and ``queries``) and, when loaded with ``loglik=True``, ``loglik``: run id ->
    ``log pi(y*|x)`` as ``float64[eval point, test context]``.

    In ``index`` and ``traces`` a parameter that is also a result column is named ``config_<name>``
    (``config_steps``, ``config_contexts``: :func:`fastpg.result.param_column`); ``columns`` lists the
    varying parameters as they are named there (``keys`` as the manifest names them)."""

    outdir: Path
    manifest: dict
    index: object
    traces: object
    loglik: dict | None = None
    base_loglik: dict | None = None

    @property
    def keys(self) -> list[str]:
        return manifest_keys(self.manifest)

    @property
    def columns(self) -> list[str]:
        return [param_column(k) for k in self.keys]

    def q_table(self):
        """Q(alpha, eps) in long form: one row per complete run, ``alpha`` and ``eps``, with the
        run's varying parameters, ``seed``, ``run``, ``level`` (``sequence``: the base likelihood
        level the index uses), ``alpha``, ``eps``, ``Q`` (NaN where not reached), ``queries_lo``,
        ``reached`` and ``n_contexts`` (integer and boolean columns as such)."""
        pd = require_pandas("SweepData.q_table")
        alphas, eps_list = self.manifest.get("alpha") or [], self.manifest.get("eps") or []
        eps_list = eps_list if isinstance(eps_list, list) else [eps_list]
        rows = []
        for row in self.index.to_dict("records"):
            if row.get("status") != COMPLETE:
                continue
            for a in alphas:
                for e in eps_list:
                    q = row.get(q_column(a, e))
                    rows.append({**{c: row[c] for c in self.columns}, "seed": row["seed"], "run": row["run"],
                                 "level": "sequence", "alpha": float(a), "eps": float(e),
                                 "Q": math.nan if q is None or q != q else float(q),
                                 "queries_lo": float(row.get(q_column(a, e, "queries_lo")) or 0.0),
                                 "reached": bool(row.get(q_column(a, e, "reached"))),
                                 "n_contexts": int(row.get(q_column(a, e, "n_contexts")) or 0)})
        columns = [*self.columns, "seed", "run", "level", "alpha", "eps", "Q", "queries_lo", "reached", "n_contexts"]
        table = pd.DataFrame(rows, columns=columns)
        return table.astype({"seed": "int64", "reached": "bool", "n_contexts": "int64"})

    def to_xarray(self):
        """The sweep as an ``xarray.Dataset`` with dimensions ``run``, ``eval`` (evaluation point)
        and ``context`` (test context): ``loglik[run, eval, context]`` (log pi_W(y*_j|x_j)) and
        every trace column as ``[run, eval]``; coordinates ``steps`` and ``queries`` ``[run, eval]``,
        ``base_loglik[run, context]`` (log pi_0(y*_j|x_j)), and the varying parameters and ``seed``
        along ``run``. Runs with fewer evaluation points (stopped early by ``stop_eps``) or test
        contexts are padded with NaN. Needs ``load_sweep(..., loglik=True)`` and xarray."""
        try:
            import xarray as xr
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError("SweepData.to_xarray needs xarray: pip install 'fastpg[analysis]'") from None
        if self.loglik is None or self.base_loglik is None:
            raise ValueError("load the sweep with loglik=True first")
        runs = [r for r in self.index["run"] if r in self.loglik]
        E = max((self.loglik[r].shape[0] for r in runs), default=0)
        n = max((self.loglik[r].shape[1] for r in runs), default=0)

        def padded(arrays, shape):
            out = np.full((len(arrays), *shape), np.nan)
            for i, a in enumerate(arrays):
                out[(i, *(slice(0, m) for m in a.shape))] = a
            return out

        traces = self.traces
        ranges = _row_ranges(traces, runs) if len(traces) else [(r, 0, 0) for r in runs]
        starts = np.array([i for _, i, _ in ranges], dtype=np.int64)
        lengths = np.array([j - i for _, i, j in ranges], dtype=np.int64)
        # each run's rows, in run order, and where they go in [run, eval]: one fancy index per column
        take = np.concatenate([np.arange(i, j) for _, i, j in ranges]) if ranges else np.zeros(0, np.int64)
        at_run = np.repeat(np.arange(len(runs)), lengths)
        at_eval = np.arange(len(take)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        trace_names = [c for c in traces.columns if c not in (*self.columns, "seed", "run", "file")]
        series = {}
        for name in trace_names:
            out = np.full((len(runs), E), np.nan)
            out[at_run, at_eval] = traces[name].to_numpy(dtype=float)[take]
            series[name] = out
        coords = {"run": runs, "context": np.arange(n),
                  "steps": (("run", "eval"), series.pop("steps")), "queries": (("run", "eval"), series.pop("queries")),
                  "base_loglik": (("run", "context"), padded([self.base_loglik[r] for r in runs], (n,)))}
        for column in [*self.columns, "seed"]:
            coords[column] = ("run", traces[column].to_numpy()[starts])
        data = {"loglik": (("run", "eval", "context"), padded([self.loglik[r] for r in runs], (E, n)))}
        data.update({name: (("run", "eval"), values) for name, values in series.items()})
        return xr.Dataset(data, coords=coords, attrs={"outdir": str(self.outdir)})

    def cube(self):
        """The log-likelihoods as one array ``[run, eval point, test context]`` (runs in index order);
        needs ``loglik=True`` and runs of one shape."""
        if self.loglik is None:
            raise ValueError("load the sweep with loglik=True first")
        arrays = [self.loglik[r] for r in self.index["run"] if r in self.loglik]
        if len({a.shape for a in arrays}) != 1:
            raise ValueError("runs differ in evaluation points or test set size; use .loglik per run")
        return np.stack(arrays)


def _row_ranges(traces, runs):
    """``(run, first row, end row)`` of each run's rows in the long table (rows of a run are contiguous)."""
    ids = traces["run"].to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    where = {ids[i]: (i, j) for i, j in zip(starts, ends)}
    return [(r, *where[r]) for r in runs]


def load_sweep(outdir, *, loglik: bool = False) -> SweepData:
    """Read a sweep folder: its index, every complete run's traces in long form and, on request,
    the per-context log-likelihoods (and the base model's, for :meth:`SweepData.to_xarray`).
    Incomplete runs are in the index only. Needs pandas.

    The long table is built column by column (one array per trace column for all runs, the run's
    parameters repeated over its rows), not as one small table per run: a folder of 20,000 runs
    is read in seconds (docs/design.md, "Reading a sweep").

    Parameters
    ----------
    outdir : path
        A sweep folder (it has ``sweep.json``).
    loglik : bool
        Also read every complete run's ``loglik[eval point, test context]`` and its base model's.

    Returns
    -------
    SweepData
        ``index`` (``index.csv`` as a DataFrame), ``traces`` (one row per run and evaluation
        point), ``loglik`` and ``base_loglik`` (by run id, with ``loglik=True``).
    """
    pd = require_pandas("fastpg.load_sweep")
    outdir = Path(outdir)
    if not (outdir / MANIFEST).exists():
        raise ConfigError("outdir", f"{outdir} has no {MANIFEST}; allowed: a fastpg sweep folder")
    manifest = json.loads((outdir / MANIFEST).read_text())
    index = pd.DataFrame(read_index(outdir))
    keys = [*manifest_keys(manifest), "seed"]
    complete = [row for row in index.to_dict("records") if row.get("status") == COMPLETE]
    batch_layout = manifest.get("layout", RUN_LAYOUT) == BATCH_LAYOUT
    runs_by_file: dict = {}
    for row in complete:
        runs_by_file.setdefault(row["file"], []).append(row["run"])
    loaded = {f: load_batch(outdir / f, ids) for f, ids in runs_by_file.items()} if batch_layout else {}
    per_run = {"run": [], "file": [], **{param_column(k): [] for k in keys}}
    columns: dict = {}
    lengths, logliks, base_logliks = [], {}, {}
    for row in complete:
        data = loaded[row["file"]][row["run"]] if batch_layout else load(outdir / row["file"])
        for key in keys:
            per_run[param_column(key)].append(data.config.get(key))
        per_run["run"].append(row["run"])
        per_run["file"].append(row["file"])
        n = len(data.queries)
        for name, values in {**data.trace, "queries": data.queries}.items():
            # a column only some runs record (expected_error_sampling, groups_discarded) is NaN for the others
            columns.setdefault(name, [np.full(m, np.nan) for m in lengths]).append(values)
        for values in columns.values():
            if len(values) == len(lengths):
                values.append(np.full(n, np.nan))
        lengths.append(n)
        if loglik:
            logliks[row["run"]] = data.loglik
            base_logliks[row["run"]] = data.base["loglik"]
    if complete:
        runs = pd.DataFrame(per_run)
        runs = runs[[*(param_column(k) for k in keys), "run", "file"]]
        long = runs.iloc[np.repeat(np.arange(len(runs)), lengths)].reset_index(drop=True)
        traces = pd.concat([long, pd.DataFrame({name: np.concatenate(v) for name, v in columns.items()})], axis=1)
    else:
        traces = pd.DataFrame()
    return SweepData(outdir=outdir, manifest=manifest, index=index, traces=traces, loglik=logliks if loglik else None,
                     base_loglik=base_logliks if loglik else None)
