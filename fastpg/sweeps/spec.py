"""What a sweep is (docs/design.md, "Sweeps and backends"): a grid of parameters times seeds, its runs and
their ids, its folder and ``sweep.json`` (a folder is one sweep), and the parsers of its command-line
and TOML forms.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..analysis.complexity import check_alpha, check_eps
from ..api import _batch_key
from ..config import ConfigError, RunConfig, parse_value
from ..store import (
    BATCH_LAYOUT,
    COMPLETE,
    atomic_file,
    batch_statuses,
    read_budget,
    read_status,
    write_problem,
)
from ..version import __version__

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
                                      f"each parameter once, with every value: {name}="
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
    fixed = {name: parse_value(name, value, "config") for name, value in data.get("fixed", {}).items()}
    grid = _typed_grid(data.get("grid", {}), "config")
    seeds = parse_seeds(data["seeds"], "config") if "seeds" in data else None
    eps = parse_numbers(data["eps"], "config", check_eps) if "eps" in data else None
    alpha = parse_numbers(data["alpha"], "config", check_alpha) if "alpha" in data else None
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
    each crossed with the ordered ``grid``, times ``seeds``.

    Parameters
    ----------
    outdir : path
        The sweep's folder (one folder is one sweep: ``sweep.json`` records it).
    fixed : dict
        Parameters shared by every run (:data:`fastpg.config.PARAMS`).
    grid : dict
        ``{name: [values]}``, crossed in order.
    seeds : list of int
    eps : float or list of float
        Targets of ``queries_to_eps`` in ``index.csv`` (the first is the summary's).
    batch_size : int
        Runs advanced together at most.
    alphas : list of float
        Base-likelihood levels of the Q(alpha, eps) columns.
    cases : list of dict
        Explicit parameter sets, each crossed with the grid.
    layout : {"run", "batch"}
        A file per run, or a file per batch.
    extend : bool
        Continue the complete runs to a larger ``steps`` (``--continue``).
    """

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
        self.eps_list = parse_numbers(self.eps, "eps", check_eps)
        self.eps = self.eps_list[0]  # queries_to_eps and the summary use the first
        self.alphas = parse_numbers(self.alphas, "alpha", check_alpha) if self.alphas else []
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
        defaults = RunConfig().to_dict()
        old_resolved = {**{k: defaults[k] for k in resolved if k not in old_resolved and k not in old["grid"]},
                        **old_resolved}
        resolved = json.loads(json.dumps(resolved))  # as the folder stores it (a tuple of integers is a list)
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


def _atomic_write(path: Path, text: str) -> None:
    with atomic_file(path) as fh:
        fh.write(text)


def manifest_keys(manifest: dict) -> list[str]:
    """The parameters that vary between the runs of a sweep folder: case parameters, then the grid's
    (as :attr:`Sweep.point_names`)."""
    return [*dict.fromkeys(k for case in manifest.get("cases", []) for k in case), *manifest["grid"]]


def folder_layout(outdir) -> str:
    """The layout a sweep folder was made with (``run`` for a new folder)."""
    path = Path(outdir) / MANIFEST
    try:
        return json.loads(path.read_text()).get("layout", RUN_LAYOUT) if path.exists() else RUN_LAYOUT
    except (OSError, ValueError):
        return RUN_LAYOUT
