"""Sweeps (docs/design.md, "Sweeps and backends"): a grid of parameters times seeds, one HDF5 file per run, resumable.

A sweep folder holds ``sweep.json`` (the fixed parameters and the grid: a folder is one sweep),
one file per run at ``OUTDIR/<run id>.h5`` with run ids such as ``reward=orm/N=8/seed=3``, and
``index.csv`` (one row per run). Re-running the same sweep keeps complete runs and redoes the
others from scratch. Runs of one shape are advanced together by :func:`fastpg.api.run_batch`.
The index is rewritten atomically after every batch and only reports a run ``complete`` once its
file says so, so killing a sweep at any moment loses no completed run.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import os
import time
import tomllib
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .analysis import censored_quantile, duration
from .api import RunFailed, _batch_key, continue_run, run_batch
from .backends import open_backend
from .complexity import check_alpha, check_eps, query_complexity
from .config import PARAM, ConfigError, RunConfig, parse_value
from .outputs import COUNTERS, METRICS
from .result import param_column, require_pandas
from .store import (
    BATCH_LAYOUT,
    COMPLETE,
    FAILED,
    atomic_file,
    batch_statuses,
    load,
    load_batch,
    read_budget,
    read_status,
    write_problem,
)
from .version import __version__

MANIFEST = "sweep.json"
INDEX = "index.csv"
DEFAULT_EPS = 0.1
MAX_BATCH = 64  # runs advanced together (open files and memory grow with it)
RUN_LAYOUT = "run"
LAYOUTS = (RUN_LAYOUT, BATCH_LAYOUT)  # a file per run, or a file per batch (docs/design.md, "Batch files")
BATCH_FOLDER = "batches"


def parse_seeds(text, option: str = "seeds") -> list[int]:
    """``"0-4"`` -> ``[0, 1, 2, 3, 4]``; ``"0,3,7-8"`` -> ``[0, 3, 7, 8]``; also a list of ints."""
    if isinstance(text, (list, tuple)):
        parts = [str(p) for p in text]
    else:
        parts = str(text).split(",")
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in parts):
            if not part:
                continue
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                lo, hi = int(lo), int(hi)
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(option, f"got {text!r}; allowed: seeds like 0-9 or 0,3,5 (non-negative integers)") from None
    if not seeds or min(seeds) < 0:
        raise ConfigError(option, f"got {text!r}; allowed: seeds like 0-9 or 0,3,5 (non-negative integers)")
    return sorted(dict.fromkeys(seeds))


def parse_grid(specs, option: str = "grid") -> dict:
    """``["N=2,4,8", "reward=orm,prm"]`` -> ``{"N": [2, 4, 8], "reward": ["orm", "prm"]}``."""
    grid: dict = {}
    for spec in specs:
        name, sep, values = str(spec).partition("=")
        name = name.strip().replace("-", "_")
        parts = [v.strip() for v in values.split(",")]
        if not sep or not values.strip() or not all(parts):
            raise ConfigError(option, f"got {spec!r}; allowed: name=v1,v2,... with a run parameter name and no "
                                      "empty value")
        if name in grid:
            raise ConfigError(option, f"{name} is given twice ({name}={','.join(grid[name])} and {spec}); allowed: "
                                      f"one {option} per parameter, with every value: {name}="
                                      f"{','.join(dict.fromkeys(grid[name] + parts))}")
        grid[name] = parts
    return _typed_grid(grid, option)


def _typed_grid(grid: dict, option: str) -> dict:
    out = {}
    for name, values in grid.items():
        if name == "seed":
            raise ConfigError(option, "seed cannot be a grid parameter; allowed: --seeds 0-9")
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(option, f"{name}: allowed: a non-empty list of values")
        typed = [parse_value(name, v, option) for v in values]
        out[name] = list(dict.fromkeys(typed))
    return out


def _typed_cases(cases, grid_names: list, option: str = "config") -> list[dict]:
    """Cases: explicit parameter sets, each crossed with the whole grid (``[[cases]]`` in a TOML file)."""
    out = []
    for case in cases or []:
        if not isinstance(case, dict) or not case:
            raise ConfigError(option, f"a case must be a table of parameters; got {case!r}")
        clash = sorted(set(case) & ({"seed"} | set(grid_names)))
        if clash:
            raise ConfigError(option, f"case parameter {clash[0]} is also a grid parameter or the seed; allowed: one place")
        out.append({name: parse_value(name, value, option) for name, value in case.items()})
    if len({json.dumps(c, sort_keys=True) for c in out}) < len(out):
        raise ConfigError(option, "two cases are the same; allowed: cases that differ")
    return out


def load_toml(path) -> dict:
    """A sweep file: top-level ``seeds``, ``eps`` and ``alpha`` (a number or a list), tables ``[fixed]`` and
    ``[grid]``, and an array of tables ``[[cases]]`` (each case is crossed with the whole grid).

    Returns ``{"fixed": {...}, "grid": {...}, "cases": [...], "seeds": [...] or None, "eps": [...] or None,
    "alpha": [...] or None}``.
    """
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("config", f"cannot read {path}: {exc}") from None
    unknown = set(data) - {"fixed", "grid", "cases", "seeds", "eps", "alpha", "description"}
    if unknown:
        raise ConfigError("config", f"unknown keys {sorted(unknown)}; allowed: fixed, grid, cases, seeds, eps, alpha, "
                                      "description")
    fixed = {name: parse_value(name, value, "--config") for name, value in data.get("fixed", {}).items()}
    grid = _typed_grid(data.get("grid", {}), "--config")
    seeds = parse_seeds(data["seeds"], "--config") if "seeds" in data else None
    eps = parse_numbers(data["eps"], "--config", check_eps) if "eps" in data else None
    alpha = parse_numbers(data["alpha"], "--config", check_alpha) if "alpha" in data else None
    cases = _typed_cases(data.get("cases", []), list(grid))
    return {"fixed": fixed, "grid": grid, "cases": cases, "seeds": seeds, "eps": eps, "alpha": alpha}


def parse_numbers(value, option: str, check=None) -> list[float]:
    """``"0.1,0.01"``, ``0.1`` or ``[0.1, 0.01]`` -> ``[0.1, 0.01]``, each passed through ``check``."""
    parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        numbers = [float(p) for p in parts if str(p).strip()]
    except (TypeError, ValueError):
        raise ConfigError(option, f"got {value!r}; allowed: comma-separated numbers") from None
    if not numbers:
        raise ConfigError(option, f"got {value!r}; allowed: one or more comma-separated numbers")
    return [check(v, option) if check else v for v in dict.fromkeys(numbers)]


SAFE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.+-_")


def id_value(value) -> str:
    """A grid value as it appears in a run id, losslessly: two different values never share it.

    Floats are written in the shortest form that reads back as the same float (``0.1234567``,
    ``1e-06``; ``repr`` when ``%g`` would round), integers in full, booleans as ``true``/``false``.
    Text made only of letters, digits and ``.+-_`` is kept; any other text (a path, a space) is
    written as its safe characters plus ``~`` and a hash of the exact value.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    text = str(value)
    if text and set(text) <= SAFE_ID_CHARS and len(text) <= 64:
        return text
    safe = "".join(c if c in SAFE_ID_CHARS else "_" for c in text)[:48]
    return f"{safe}~{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def run_id(point: dict, seed: int) -> str:
    """Stable, readable id of a run: ``name=value/.../seed=S`` in grid order (values by :func:`id_value`)."""
    return "/".join([*(f"{name}={id_value(value)}" for name, value in point.items()), f"seed={seed}"])


@dataclass
class SweepRun:
    id: str
    point: dict
    seed: int
    config: RunConfig
    path: Path


def _resolve_fixed(fixed: dict, grid: dict, cases: list) -> dict:
    varied = {*grid, *(k for case in cases for k in case), "seed"}
    defaults = RunConfig().to_dict()
    typed = {k: parse_value(k, v) for k, v in fixed.items() if k not in varied}
    return {k: typed.get(k, defaults[k]) for k in defaults if k not in varied}


def _show(value) -> str:
    return "not fixed" if value is None else id_value(value)


def check_unique_ids(runs) -> None:
    """Refuse, before any work, a sweep in which two runs would share an id (and so a file)."""
    seen: dict = {}
    for run in runs:
        other = seen.setdefault(run.id, run)
        if other is not run:
            raise ConfigError("grid", f"runs {other.point} and {run.point} (seed {run.seed}) would share the id "
                                        f"{run.id!r}; allowed: grid values that differ")


@dataclass
class Sweep:
    """A sweep rooted at ``outdir``: ``fixed`` parameters, ``cases`` (explicit parameter sets, optional),
    each crossed with the ordered ``grid``, times ``seeds``."""

    outdir: Path
    fixed: dict
    grid: dict
    seeds: list
    eps: float | list = DEFAULT_EPS
    batch_size: int = MAX_BATCH
    alphas: list = field(default_factory=list)
    cases: list = field(default_factory=list)
    layout: str = RUN_LAYOUT
    extend: bool = False  # --continue: a larger steps continues the complete runs (docs/design.md, "Budgets")
    runs: list = field(init=False)

    def __post_init__(self):
        self.outdir = Path(os.path.abspath(self.outdir))  # workers may run in other directories
        self.eps_list = parse_numbers(self.eps, "--eps", check_eps)
        self.eps = self.eps_list[0]  # queries_to_eps and the summary use the first
        self.alphas = parse_numbers(self.alphas, "--alpha", check_alpha) if self.alphas else []
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError("batch_size", f"got {self.batch_size!r}; allowed: an integer >= 1")
        if self.layout not in LAYOUTS:
            raise ConfigError("layout", f"got {self.layout!r}; allowed: {', '.join(LAYOUTS)}")
        # the grid and the cases win over a fixed value of the same parameter; the caller's dicts are not changed
        self.grid = {name: list(values) for name, values in self.grid.items()}
        self.cases = _typed_cases(self.cases, list(self.grid))
        self.case_names = list(dict.fromkeys(name for case in self.cases for name in case))
        varied = {*self.grid, *self.case_names}
        self.fixed = {name: value for name, value in self.fixed.items() if name not in varied and name != "seed"}
        self.seeds = list(self.seeds)
        self.runs = []
        for point in self.points():
            for seed in self.seeds:
                rid = run_id(point, seed)
                try:
                    cfg = RunConfig.from_dict({**self.fixed, **point, "seed": seed})
                except ConfigError as exc:
                    raise ConfigError(exc.parameter, f"run {rid}: {exc.message}") from None
                self.runs.append(SweepRun(rid, point, seed, cfg, self.outdir / f"{rid}.h5"))
        check_unique_ids(self.runs)

    @property
    def point_names(self) -> list[str]:
        """The parameters that vary between runs: case parameters, then grid parameters."""
        return [*self.case_names, *self.grid]

    def points(self) -> list[dict]:
        """Every (case, grid point) combination, in run order."""
        return [{**case, **dict(zip(self.grid, values))}
                for case in self.cases or [{}] for values in itertools.product(*self.grid.values())]

    # -- the folder ------------------------------------------------------------------------------
    def manifest(self) -> dict:
        return {"fixed": self.fixed, "grid": self.grid, "cases": self.cases, "seeds": self.seeds,
                "layout": self.layout, "fastpg_version": __version__}

    def check_writable(self) -> None:
        """Refuse, in one line, a folder where files cannot be created (read-only, no permission)."""
        problem = write_problem(self.outdir)
        if problem:
            raise ConfigError("outdir", problem)

    def claim_folder(self) -> None:
        """Create the folder or check that it holds this sweep (same fixed parameters and grid)."""
        if self.outdir.exists() and not self.outdir.is_dir():
            raise ConfigError("outdir", f"{self.outdir} is a file; allowed: a folder")
        try:
            self.outdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError("outdir", f"cannot create {self.outdir}: {exc.strerror}") from None
        if not os.access(self.outdir, os.W_OK | os.X_OK):
            raise ConfigError("outdir", f"{self.outdir} cannot be written (permission denied)")
        old = self.check_folder()
        resolved, grid, seeds = self.resolved_fixed(), self.grid, self.seeds
        if old is not None:
            seeds = sorted(set(old["seeds"]) | set(self.seeds))
            grid = {k: list(dict.fromkeys([*old["grid"][k], *self.grid[k]])) for k in self.grid}  # values may grow
        extended = {"extended": True} if self.extend else {}  # from then on, pending() also finds short runs
        _atomic_write(self.outdir / MANIFEST, json.dumps({**self.manifest(), "grid": grid, "resolved": resolved,
                                                          "seeds": seeds, "eps": self.eps_list, "alpha": self.alphas,
                                                          **extended}, indent=2))

    def check_folder(self) -> dict | None:
        """Refuse (one line, old and new values) a folder that holds another sweep; writes nothing.
        Returns the folder's manifest, or None for a new folder."""
        if self.outdir.exists() and not self.outdir.is_dir():
            raise ConfigError("outdir", f"{self.outdir} is a file; allowed: a folder")
        path = self.outdir / MANIFEST
        if not path.exists():
            return None
        old = json.loads(path.read_text())
        if old.get("extended"):  # a --continue began here: a run left short is pending until it is continued
            self.extend = True
        resolved = self.resolved_fixed()
        old_resolved = old.get("resolved") or _resolve_fixed(old["fixed"], old["grid"], old.get("cases", []))
        # a parameter added after the folder was made ran with its default there
        old_resolved = {**{k: PARAM[k].default for k in resolved if k not in old_resolved and k not in old["grid"]},
                        **old_resolved}
        diffs = [f"{k}: {_show(old_resolved.get(k))} (folder) -> {_show(resolved.get(k))} (now)"
                 for k in RunConfig.names() if k in old_resolved or k in resolved
                 if old_resolved.get(k) != resolved.get(k)]
        if list(old["grid"]) != list(self.grid):
            diffs.append(f"grid parameters: {', '.join(old['grid']) or 'none'} (folder) -> "
                         f"{', '.join(self.grid) or 'none'} (now)")
        if old.get("cases", []) != self.cases:
            diffs.append("cases differ")
        if old.get("layout", RUN_LAYOUT) != self.layout:
            diffs.append(f"layout: {old.get('layout', RUN_LAYOUT)} (folder) -> {self.layout} (now)")
        steps_only = [d for d in diffs if not d.startswith("steps: ")] == [] and bool(diffs)
        if self.extend and steps_only:
            self._check_extension(old_resolved["steps"], resolved["steps"])
            return old
        if diffs:
            raise ConfigError("outdir", f"{self.outdir} holds a different sweep: {'; '.join(diffs)}; allowed: the same "
                                        "resolved fixed parameters, grid parameters and cases (grid values and seeds "
                                        "may be added), --continue with a larger steps, or a new OUTDIR")
        return old

    def _check_extension(self, old_steps: int, steps: int) -> None:
        """``--continue``: a larger ``steps`` whose evaluation points include the old run's (see
        :func:`fastpg.api.continue_run`), in the run layout."""
        if self.layout != RUN_LAYOUT:
            raise ConfigError("continue", "needs the run layout (batch files do not store the runs' states); "
                                            "allowed: a folder of run files")
        if steps <= old_steps:
            raise ConfigError("steps", f"got {steps}; allowed with --continue: more than the folder's {old_steps}")
        cfg = self.runs[0].config if self.runs else RunConfig()
        if cfg.eval_log > 0 or old_steps % cfg.eval_every:
            raise ConfigError("continue", f"the folder's runs have evaluation points a run of {steps} steps would not "
                                            f"(eval_log={cfg.eval_log}, {old_steps} steps every {cfg.eval_every}); "
                                            "allowed: --eval-every schedules whose budget is a multiple of it")

    def resolved_fixed(self) -> dict:
        """Every parameter that is the same for all runs, resolved (defaults included): what a folder
        is compared by, so that spelling a default out (or not) does not make a different sweep."""
        return _resolve_fixed(self.fixed, self.grid, self.cases)

    # -- planning and running --------------------------------------------------------------------
    def locate(self, runs=None, files=None) -> dict:
        """Where each of ``runs`` (default: all) stands: run id -> ``(status, file)``, read from the
        files themselves (``("missing", None)`` for a run no file holds). In the batch layout the
        batch ``files`` (default: every one in the folder) are read, and a run that two of them
        hold (a failed run redone) is found in the one where it is complete."""
        runs = self.runs if runs is None else runs
        if self.layout == RUN_LAYOUT:
            return {run.id: (read_status(run.path), run.path) if run.path.exists() else ("missing", None)
                    for run in runs}
        if files is None:
            files = sorted((self.outdir / BATCH_FOLDER).glob("*.h5"))
        found: dict = {}
        for path in files:
            _, _, held = batch_statuses(path) if Path(path).exists() else ("missing", "", {})
            for rid, status in held.items():
                if found.get(rid, ("missing",))[0] != COMPLETE:
                    found[rid] = (status, Path(path))
        return {run.id: found.get(run.id, ("missing", None)) for run in runs}

    def pending(self) -> list[SweepRun]:
        """Runs without a complete file, and with ``extend`` those whose complete file has fewer steps
        than their configuration (and did not stop early)."""
        where = self.locate()
        return [run for run in self.runs if where[run.id][0] != COMPLETE or (self.extend and _shorter(run))]

    def batch_file(self, batch) -> Path:
        """A new file for a batch of runs (batch layout): named by a hash of its run ids, with a
        counter when a file of that name exists (a batch of failed runs redone): none is reused."""
        digest = hashlib.sha256("\n".join(r.id for r in batch).encode()).hexdigest()[:16]
        for attempt in itertools.count():
            path = self.outdir / BATCH_FOLDER / (f"b-{digest}.h5" if attempt == 0 else f"b-{digest}-{attempt}.h5")
            if not path.exists():
                return path

    def drop_incomplete_batch_files(self) -> None:
        """Remove batch files that did not close (a killed or failed batch): they hold no complete
        run, and their runs are about to be redone, as an incomplete run file is replaced."""
        for path in (self.outdir / BATCH_FOLDER).glob("*.h5"):
            if batch_statuses(path)[0] != COMPLETE:
                path.unlink(missing_ok=True)

    def batches(self, runs, n_parts: int = 1) -> list[list[SweepRun]]:
        """Group runs by shape and schedule; split so that there are at least ``n_parts`` batches."""
        groups: dict = {}
        for run in runs:
            groups.setdefault(_batch_key(run.config), []).append(run)
        out = []
        for members in groups.values():
            size = min(self.batch_size, max(1, math.ceil(len(members) / n_parts)))
            out.extend(members[i : i + size] for i in range(0, len(members), size))
        return out


def _shorter(run) -> bool:
    """Whether ``run``'s complete file ran fewer steps than its configuration and can go on (it did
    not stop early)."""
    steps, message = read_budget(run.path)
    return steps < run.config.steps and not message


def run_sweep_batch(configs: list[dict], paths: list[str] | None, argv=None, num_threads: int | None = None,
                    eps_list=(DEFAULT_EPS,), alphas=(), batch_file: str | None = None, run_ids=None,
                    extend: bool = False) -> list[tuple]:
    """Run one batch (also on a Dask worker); returns ``(status, message, index values)`` per run.

    Results go to ``paths`` (a file per run) or to one ``batch_file`` (its runs named by
    ``run_ids``); paths are absolute (a worker may run in another directory). Runs whose file is
    already complete are skipped and reported complete (their index values are then read from the
    file). The index values of a run that completed here are computed from its results in memory,
    so the sweep does not read its file back (:func:`index_values`).
    """
    if num_threads:
        import numba

        numba.set_num_threads(max(1, min(num_threads, numba.config.NUMBA_NUM_THREADS)))
    for path in paths or [batch_file]:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # A task can run twice (a scheduler recomputes the tasks of a lost worker): a run whose file is
    # already complete is never redone, so a complete file is never rewritten.
    if batch_file is not None:  # a closed batch file is never rewritten, whatever its runs' statuses
        status, _, done = batch_statuses(batch_file) if Path(batch_file).exists() else ("missing", "", {})
        if status == COMPLETE:
            return [(done.get(rid, "missing"), "" if rid in done else "not in its batch file", None) for rid in run_ids]
        todo = list(range(len(configs)))
    else:
        todo = [i for i, path in enumerate(paths) if read_status(path) != COMPLETE]
    out = [(COMPLETE, "", None)] * len(configs)
    for i in [] if batch_file is not None or not extend else [i for i in range(len(configs)) if i not in todo]:
        steps, message = read_budget(paths[i])
        if steps < configs[i]["steps"] and not message:  # a complete run continued to the larger budget
            try:
                r = continue_run(paths[i], configs[i]["steps"], argv=argv)
                out[i] = (r.status, r.message, index_values(r, eps_list, alphas))
            except (ConfigError, RunFailed) as exc:
                out[i] = (FAILED, f"not continued: {exc}", None)
    if todo:
        if batch_file is not None:
            results = run_batch(configs, batch_file=batch_file, run_ids=run_ids, overwrite=True, argv=argv,
                                raise_errors=False)
        else:
            results = run_batch([configs[i] for i in todo], [paths[i] for i in todo], overwrite=True, argv=argv,
                                raise_errors=False)
        for i, r in zip(todo, results):
            values = None
            if r.status == COMPLETE and len(r.trace.get("steps", ())):  # the index row, computed here once
                values = index_values(r, eps_list, alphas)
            out[i] = (r.status, r.message, values)
    return out


# -- the index ---------------------------------------------------------------------------------------
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
    values = {name: float(trace[name][-1]) for name in (*COUNTERS, *METRICS)}
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
                        *COUNTERS, *METRICS, "task_gamma", "realised_min_margin",
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


def _atomic_write(path: Path, text: str) -> None:
    with atomic_file(path) as fh:
        fh.write(text)


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


def manifest_keys(manifest: dict) -> list[str]:
    """The parameters that vary between the runs of a sweep folder: case parameters, then the grid's
    (as :attr:`Sweep.point_names`)."""
    return [*dict.fromkeys(k for case in manifest.get("cases", []) for k in case), *manifest["grid"]]


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
    is read in seconds (docs/design.md, "Reading a sweep")."""
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
        for name, values in {**data.trace, "queries": data.queries}.items():
            columns.setdefault(name, []).append(values)
        lengths.append(len(data.queries))
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


def folder_layout(outdir) -> str:
    """The layout a sweep folder was made with (``run`` for a new folder)."""
    path = Path(outdir) / MANIFEST
    try:
        return json.loads(path.read_text()).get("layout", RUN_LAYOUT) if path.exists() else RUN_LAYOUT
    except (OSError, ValueError):
        return RUN_LAYOUT


START_SECONDS = 3.0  # a sweep's start: imports, kernels loaded from Numba's cache, workers started


def estimate(runs, layout: str = RUN_LAYOUT, *, per_run: bool = False) -> dict:
    """A rough size of ``runs`` before starting them: bytes on disk and seconds of one core
    (with ``per_run``, also ``run_seconds``: each run's share, in order).

    Disk: about 75 KB of HDF5 structure per file (per run, or per batch of up to 64 runs), the
    test set, the base model's Likelihood Quantile tables (17 KB), three copies of ``W`` and a row
    of ``n_test`` log-likelihoods per evaluation point. Time: about 0.4 us plus 2.4 us per 8192
    weights per step (the bench's step cost), the same per pre-training sample (``base=sgd``), the
    exact evaluations, 40 ms (run layout) or 3 ms (batch layout) per run of file and task
    overhead, and 1.8 ms (run layout) or 0.15 ms (batch layout) per run and evaluation point
    (the row written, in Python). An event-driven ``pg`` run (a pool with ``skip``) pays per update, not per step: it
    is counted as at most 1e6 steps. The constants were measured on this project's 2-core machine
    (docs/design.md, "Estimates"); the sweep corrects them by timing its first batch.
    """
    from .metrics import eval_points

    disk = seconds = 0.0
    run_seconds = []
    for run in runs:
        cfg = run.config
        E = len(eval_points(cfg.steps, cfg.eval_every, cfg.eval_log))
        weights = (cfg.N if cfg.features == "position" else cfg.N * (cfg.k + 1)) * cfg.k * cfg.d
        n, N = cfg.n_test, cfg.N
        per_file = 75_000 if layout == RUN_LAYOUT else 75_000 / MAX_BATCH
        disk += (per_file + n * (cfg.d * 8 + N * 12 + 16) + 17_000 + 3 * weights * 8
                 + E * (n * 8 + 120 + (n * N * 8 if cfg.token_trace else 0)))
        steps = min(cfg.steps, 10**6) if (cfg.algorithm == "pg" and cfg.n_train > 0 and cfg.skip) else cfg.steps
        steps += cfg.n_pre if cfg.base == "sgd" else 0
        one = (steps * (0.4e-6 + 2.4e-6 * weights / 8192) + E * n * 2 * weights / 25e9
               + (0.040 + E * 1.8e-3 if layout == RUN_LAYOUT else 0.003 + E * 0.15e-3))
        seconds += one
        run_seconds.append(one)
    out = {"runs": len(runs), "bytes": disk, "core_seconds": seconds}
    if per_run:
        out["run_seconds"] = run_seconds
    return out


# -- executing ---------------------------------------------------------------------------------------
def warm_up(config: RunConfig) -> None:
    """Compile (or load from cache) every kernel a sweep uses, with a tiny run of its shape."""
    small = dict(config.to_dict(), steps=2, n_test=min(config.n_test, 4), n_pre=min(config.n_pre, 2),
                 eval_every=1, eval_log=0, n_train=0)
    try:
        run_batch([small], [None], raise_errors=False)
    except Exception:  # noqa: BLE001 - warming up is best effort; the real run reports errors
        pass


def execute(sweep: Sweep, *, backend: str = "local", scheduler: str | None = None, dask_workers: int | None = None,
            argv=None, progress=None, notify=None, report=None, pending: list | None = None) -> Index:
    """Run every pending run of ``sweep`` on a backend; returns the index (also written to ``index.csv``).

    Batches go to the backend's executor (:func:`fastpg.backends.open_backend`), at most twice as
    many at once as it has slots; as each finishes, its runs' rows are read from their files, the
    index is rewritten atomically and ``progress(done_runs, total_runs, work=...)`` is called
    (``work``: the fraction of the modelled cost done, :func:`estimate`). A batch that
    raised (a lost worker) leaves its runs incomplete, with the error as their message; so does a
    batch that finished without leaving a complete file where the sweep looks. A re-run redoes
    them. ``notify(message)`` receives the backend's waiting messages (no workers yet), ``report(message)`` the lines
    for the log as the sweep goes: each batch that failed, as it fails, and after the first batch
    the time left from its timing (the pilot). ``pending``
    saves reading every file's status again when the caller has just done it.
    """
    pending = sweep.pending() if pending is None else pending
    if not pending:
        sweep.claim_folder()
        index = Index(sweep)
        index.refresh(sweep.runs)  # every run complete: the sweep has nothing to run
        index.write()
        if progress is not None:
            progress(len(sweep.runs), len(sweep.runs))
        return index
    # connect to the backend first: if no cluster answers, nothing is created
    with open_backend(backend, scheduler=scheduler, n_workers=dask_workers, warm_up=lambda: warm_up(pending[0].config),
                      notify=notify) as (executor, slots, threads):
        sweep.claim_folder()
        if sweep.layout == BATCH_LAYOUT:
            sweep.drop_incomplete_batch_files()
        index = Index(sweep)
        pending_ids = {run.id for run in pending}
        index.refresh([run for run in sweep.runs if run.id not in pending_ids])
        index.write()
        total, done = len(sweep.runs), len(sweep.runs) - len(pending)
        # each run's modelled cost: the time left is measured in it, not in runs (runs of a grid
        # over N can differ by orders of magnitude), and the first batch's time calibrates it
        cost = dict(zip((r.id for r in pending), estimate(pending, sweep.layout, per_run=True)["run_seconds"]))
        work_total, work_done = sum(cost.values()), 0.0
        first = None  # (time, work done) at the first finished batch: before it, workers start and load kernels
        finished_batches = 0
        if progress is not None:
            progress(done, total)
        batches = iter(sweep.batches(pending, n_parts=slots))
        running: dict = {}

        def submit_next() -> None:
            batch = next(batches, None)
            if batch is not None:
                if sweep.layout == BATCH_LAYOUT:
                    target = {"paths": None, "batch_file": str(sweep.batch_file(batch)), "run_ids": [r.id for r in batch]}
                else:
                    target = {"paths": [str(r.path) for r in batch]}
                future = executor.submit(run_sweep_batch, [r.config.to_dict() for r in batch], argv=argv,
                                         num_threads=threads, eps_list=sweep.eps_list, alphas=sweep.alphas,
                                         extend=sweep.extend, **target)
                running[future] = (batch, target.get("batch_file"))

        # index.csv is rewritten whole (every run's row), so on a large sweep writing it after each
        # batch costs more than the batches (20,000 runs: 0.3 s a write, 313 batches). It is written
        # once the time since the last write is ten times what that write took (after every batch
        # on small sweeps, so at most a tenth of the time on large ones) and always at the end, on
        # Ctrl-C too; a resume reads the files' own status, not the index.
        written = {"at": 0.0, "took": 0.0}

        def write_index(force: bool = False) -> None:
            now = time.perf_counter()
            if force or now - written["at"] >= 10 * written["took"]:
                index.write()
                written["at"], written["took"] = time.perf_counter(), time.perf_counter() - now

        try:
            for _ in range(2 * slots):
                submit_next()
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    batch, batch_file = running.pop(future)
                    values = {}
                    try:
                        results = future.result()
                        messages = {run.id: msg for run, (_, msg, _) in zip(batch, results) if msg}
                        values = {run.id: v for run, (_, _, v) in zip(batch, results)}
                    except Exception as exc:  # noqa: BLE001 - a lost worker or a crash: those runs are redone next time
                        messages = {run.id: f"worker error: {exc.__class__.__name__}: {exc}" for run in batch}
                        if report is not None:  # in the log as it happens, not only in index.csv at the end
                            report(f"a batch of {len(batch)} runs ({batch[0].id}, ...) failed on the backend "
                                   f"({exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}); a re-run redoes them")
                    index.refresh(batch, messages, values,
                                  where=sweep.locate(batch, files=[batch_file] if batch_file else None))
                    write_index()
                    done += len(batch)
                    batch_work = sum(cost[run.id] for run in batch)
                    work_done += batch_work
                    finished_batches += 1
                    now = time.perf_counter()
                    if first is None:
                        first = (now, work_done)
                    elif finished_batches == slots + 1 and report is not None and running and work_done > first[1]:
                        # the pilot: every slot has finished a batch since the first did, so the time
                        # per modelled second is this machine's, start-up left out
                        left = (now - first[0]) / (work_done - first[1]) * (work_total - work_done)
                        batches_text = f"{finished_batches - 1} batch{'es' if finished_batches > 2 else ''}"
                        report(f"timed {batches_text} after the first: about {duration(left)} left "
                               f"({done}/{total} runs done; the estimate before starting was "
                               f"{duration(START_SECONDS + work_total / (os.cpu_count() or 1))})")
                    if progress is not None:
                        progress(done, total, work=work_done / work_total if work_total > 0 else None)
                    submit_next()
        finally:
            write_index(force=True)
    return index


def summary(sweep: Sweep, index: Index) -> list[dict]:
    """Per grid point: runs complete, median final expected error and the censored median of
    ``queries_to_eps`` (a run that never reached eps counts as more than its budget; ``inf``, said
    "> budget", where over half of them never did: :func:`fastpg.analysis.censored_quantile`)."""
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
