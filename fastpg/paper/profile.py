"""The query-complexity profiler: design, run and analyse Q(alpha, eps) over a grid (``fastpg profile``).

The experiment (docs/design.md, "The profiler"):

* A task where skills do not transfer: orthogonal clusters, a base model pre-trained by SGD
  with a Zipf skew, so that test contexts' base likelihoods spread over many decades.
  Every context satisfies a real margin: a fixed absolute ``gamma`` with the ``block`` teacher
  scale, so that ``1/gamma^2`` does not move when ``N`` does.
* ``pg`` runs over the whole grid (``reward x N x gamma x seeds``); Q(alpha, eps) of every
  ``alpha`` and ``eps`` is read off each run's stored log-likelihoods.
* ``rs`` runs at the reference ``N`` and ``gamma`` only, one per ``alpha``. Each has its budget
  tied to the ``alpha`` it profiles, ``M = ceil(ln(100) / alpha)``: a context with likelihood at
  least ``alpha`` fails a search with probability at most 1%, and one far below it wastes at most
  ``M`` queries instead of the default ``10^12``.

Outputs: the run files (two sweep folders, ``pg/`` and ``rs/``, resumable), ``profile.csv``
(one row per run, ``alpha`` and ``eps``), ``exponents.csv`` (fitted slopes with bootstrap
intervals over seeds, next to the bound's own slopes) and two figures.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..analysis.complexity import check_alpha, check_eps, context_passages, lq_fit, query_complexity, theory_bound
from ..analysis.fits import bootstrap_censored_slope, bootstrap_slope, fit_slope, kaplan_meier_quantile
from ..config import ConfigError, RunConfig
from ..store import COMPLETE, atomic_file, load
from ..sweeps.execute import execute
from ..sweeps.spec import Sweep
from .claims import Claim, Experiment, Outcome, Rule, Section, fmt

PROFILE = dict(d=32, k=4, contexts="clusters", C=32, sigma=0.05, zipf=1.5, n_pre=4000, pre_lr="adaptive",
               pre_eta=0.5, teacher_scale="block", G=1, baseline="none", lr="adaptive", eta=0.5, steps=200000,
               n_test=1024, eval_log=120)
PROFILE_GRID = {"reward": ["orm", "prm"], "algorithm": ["pg", "rs"], "N": [8, 10, 12], "gamma": [0.003, 0.006, 0.012]}
PROFILE_ALPHAS = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
PROFILE_EPS = [0.3, 0.1, 0.03]
PROFILE_SEEDS = [0, 1, 2, 3, 4]
RS_BUDGET_FACTOR = math.log(100.0)  # M = ceil(factor / alpha): P(a search fails | p >= alpha) <= 1%
GRID_NAMES = ("reward", "algorithm", "N", "gamma")
CSV_COLUMNS = ("reward", "algorithm", "N", "gamma_setting", "seed", "file", "level", "alpha", "eps", "queries", "queries_lo",
               "reached", "contexts", "gamma", "teacher_norm", "bound", "ratio", "budget_ratio")


def rs_budget(alpha: float) -> int:
    """The per-step (per-token with PRM) budget of an ``rs`` run that profiles ``alpha``."""
    return int(math.ceil(RS_BUDGET_FACTOR / alpha))


def teacher_norm(cfg: dict) -> float:
    """``||W*||_F`` of a run's teacher: 1, or ``sqrt(blocks)`` with the ``block`` scale."""
    if cfg.get("teacher_scale", "frobenius") != "block":
        return 1.0
    blocks = cfg["N"] if cfg["features"] == "position" else cfg["N"] * (cfg["k"] + 1)
    return math.sqrt(blocks)


def reference(values: list):
    """The middle value of a grid list (sorted): where the other exponents are measured."""
    return sorted(values)[(len(values) - 1) // 2]


@dataclass
class Profile:
    """A profiling experiment: fixed parameters, the grid, ``alphas``, ``eps`` and ``seeds``."""

    outdir: Path
    fixed: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    alphas: list = field(default_factory=lambda: list(PROFILE_ALPHAS))
    eps: list = field(default_factory=lambda: list(PROFILE_EPS))
    seeds: list = field(default_factory=lambda: list(PROFILE_SEEDS))

    def __post_init__(self):
        self.outdir = Path(os.path.abspath(self.outdir))  # as the sweeps' own folders
        if not self.alphas:
            raise ConfigError("alpha", "got an empty list; allowed: numbers in (0, 1]")
        if not self.eps:
            raise ConfigError("eps", "got an empty list; allowed: numbers in (0, 1)")
        self.alphas = sorted({check_alpha(a) for a in self.alphas}, reverse=True)
        self.eps = sorted({check_eps(e) for e in self.eps}, reverse=True)
        if not self.seeds:
            raise ConfigError("seeds", "got an empty list; allowed: seeds like 0-2")
        grid = {name: list(values) for name, values in PROFILE_GRID.items()}
        for name, values in self.grid.items():
            if not values:
                raise ConfigError("grid", f"{name}: got an empty list; allowed: one or more values")
            grid[name] = list(values)
        unknown = [name for name in grid if name not in GRID_NAMES]
        if unknown:
            raise ConfigError("grid", f"{unknown[0]} cannot be profiled over; allowed: {', '.join(GRID_NAMES)} "
                                        "(set other parameters with run options)")
        bad = [a for a in grid["algorithm"] if a not in ("pg", "rs")]
        if bad:
            raise ConfigError("grid", f"algorithm={bad[0]}; allowed: pg, rs")
        self.grid = grid
        self.fixed = {**PROFILE, **{k: v for k, v in self.fixed.items() if k not in GRID_NAMES}}
        self.N_ref, self.gamma_ref = reference(grid["N"]), reference(grid["gamma"])
        # exponents in eps, gamma and N are measured at the second-largest alpha: the largest often
        # holds only contexts the base model already meets (Q = 0), the smallest ones ORM never reaches
        self.alpha_ref = self.alphas[1] if len(self.alphas) > 1 else self.alphas[0]
        self.eps_ref = reference(self.eps)
        self.sweeps = {}
        if "pg" in grid["algorithm"]:
            self.sweeps["pg"] = Sweep(self.outdir / "pg", {**self.fixed, "algorithm": "pg"},
                                      {"reward": grid["reward"], "N": grid["N"], "gamma": grid["gamma"]}, self.seeds,
                                      eps=self.eps, alphas=self.alphas)
        if "rs" in grid["algorithm"]:
            budgets = [rs_budget(a) for a in self.alphas]
            self.alpha_of_budget = dict(zip(budgets, self.alphas))
            self.sweeps["rs"] = Sweep(self.outdir / "rs", {**self.fixed, "algorithm": "rs", "N": self.N_ref,
                                                           "gamma": self.gamma_ref},
                                      {"reward": grid["reward"], "M": budgets}, self.seeds, eps=self.eps)
        RunConfig.from_dict({**self.fixed, "N": self.N_ref, "gamma": self.gamma_ref})  # fail early, one line

    @property
    def runs(self) -> int:
        return sum(len(s.runs) for s in self.sweeps.values())

    def execute(self, *, backend="local", scheduler=None, dask_workers=None, progress=None) -> None:
        """Run every pending run (complete ones are kept: re-running resumes)."""
        done_before = 0
        for sweep in self.sweeps.values():
            def report(done, total, work=None, offset=done_before):
                if progress is not None:
                    progress(offset + done, self.runs)
            execute(sweep, backend=backend, scheduler=scheduler, dask_workers=dask_workers, progress=report)
            done_before += len(sweep.runs)

    # -- analysis ------------------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        """One row per (complete run, alpha, eps) with Q, its bracket and the bound's shape."""
        out = []
        for algorithm, sweep in self.sweeps.items():
            for run in sweep.runs:
                if not run.path.exists():
                    continue
                data = load(run.path)
                if data.status != COMPLETE:
                    continue
                cfg = data.config
                gamma = float(data.task["realised_min_margin"])
                norm = teacher_norm(cfg)
                alphas = [self.alpha_of_budget[cfg["M"]]] if algorithm == "rs" else self.alphas
                # ORM: alpha is a sequence likelihood; PRM also at token level (min_i pi_0(y*_i | ...))
                levels = {"sequence": data.base["loglik"]}
                if cfg["reward"] == "prm":
                    levels["token"] = data.base["token_loglik"].min(axis=1)
                for level, base in levels.items():
                    for alpha in alphas:
                        for eps in self.eps:
                            q = query_complexity(data.loglik, base, data.queries, alpha, eps)
                            bound = float(theory_bound(alpha, eps, gamma, norm))
                            out.append({
                                "reward": cfg["reward"], "algorithm": algorithm, "N": cfg["N"],
                                "gamma_setting": cfg["gamma"], "seed": cfg["seed"],
                                "file": str(run.path.relative_to(self.outdir)), "level": level, "alpha": alpha,
                                "eps": eps, "queries": q.queries, "queries_lo": q.queries_lo, "reached": q.reached,
                                "contexts": q.contexts, "gamma": gamma, "teacher_norm": norm, "bound": bound,
                                "ratio": None if q.queries is None else q.queries / bound,
                                # the largest ratio this run could have shown: all its queries over the bound
                                "budget_ratio": float(data.queries[-1]) / bound,
                            })
        return out

    def exponents(self, rows: list[dict]) -> list[dict]:
        """Fitted slopes of log Q per (algorithm, reward), with bootstrap intervals over seeds.

        Each is measured with the other quantities at their reference values (the middle of their
        lists); only reached points with ``Q > 0`` enter a fit (``Q = 0``: the base model already
        meets the target; not reached: Q is censored), and the row says how many were left out.
        ``theory`` is the slope of the bound's shape ``(1/alpha + 1/eps) ||W*||^2 / gamma^2`` fitted
        on the same points.
        """
        out = []
        pairs = sorted({(r["algorithm"], r["reward"], r["level"]) for r in rows}, key=lambda p: (p[0], p[1], p[2] != "sequence"))
        at_ref = {"alpha": lambda r: r["alpha"] == self.alpha_ref, "eps": lambda r: r["eps"] == self.eps_ref,
                  "N": lambda r: r["N"] == self.N_ref, "gamma": lambda r: r["gamma_setting"] == self.gamma_ref}
        specs = [  # (label, x, the grid setting that varies, the others held at their reference)
            ("log(1/alpha)", lambda r: math.log(1.0 / r["alpha"]), "alpha"),
            ("log(1/eps)", lambda r: math.log(1.0 / r["eps"]), "eps"),
            ("log(||W*||^2/gamma^2)", lambda r: math.log(r["teacher_norm"] ** 2 / r["gamma"] ** 2), "gamma"),
            ("N", lambda r: float(r["N"]), "N"),
        ]
        setting = {"alpha": "alpha", "eps": "eps", "gamma": "gamma_setting", "N": "N"}
        for algorithm, reward, level in pairs:
            mine = [r for r in rows if r["algorithm"] == algorithm and r["reward"] == reward and r["level"] == level]
            name = reward if level == "sequence" else f"{reward} (token-level alpha)"
            for against, x_of, varies in specs:
                chosen = [r for r in mine if all(at_ref[k](r) for k in at_ref if k != varies)]
                used = [r for r in chosen if r["reached"] and r["queries"] > 0]
                if len({r[setting[varies]] for r in used}) < 2:
                    slope = lo = hi = theory = float("nan")
                else:
                    xs = [x_of(r) for r in used]
                    y = np.log([r["queries"] for r in used])
                    slope, lo, hi = bootstrap_slope(xs, y, [r["seed"] for r in used])
                    theory = fit_slope(xs, np.log([r["bound"] for r in used]))
                out.append({"algorithm": algorithm, "reward": name, "against": against, "slope": slope,
                            "low": lo, "high": hi, "theory": theory, "points": len(used),
                            "not_reached": sum(not r["reached"] for r in chosen),
                            "at_start": sum(r["reached"] and r["queries"] == 0 for r in chosen)})
            ratios = [r["ratio"] for r in mine if r["reached"] and r["queries"] > 0]
            out.append({"algorithm": algorithm, "reward": name, "against": "Q / bound (whole grid)",
                        "slope": float(np.median(ratios)) if ratios else float("nan"),
                        "low": float(np.min(ratios)) if ratios else float("nan"),
                        "high": float(np.max(ratios)) if ratios else float("nan"), "theory": float("nan"),
                        "largest_possible": max((r["budget_ratio"] for r in mine), default=float("nan")),
                        "points": len(ratios), "not_reached": sum(not r["reached"] for r in mine),
                        "at_start": sum(r["reached"] and r["queries"] == 0 for r in mine)})
        return out

    def passages(self, eps: float | None = None) -> dict:
        """Per-context first passages to ``1 - eps`` (``eps_ref`` by default) as survival data
        (docs/design.md, "Query complexity per context"), keyed by ``(algorithm, reward, level)``:
        ``pg`` runs at the reference N and gamma; each ``rs`` run contributes the contexts whose
        base likelihood lies in ``[alpha, 10 alpha)`` of the ``alpha`` its budget profiles (below
        it the budget cuts searches short). Arrays ``x``, ``queries``, ``reached``,
        ``level_loglik`` and ``seed``, and the count of contexts already there at the start."""
        eps = self.eps_ref if eps is None else eps
        out: dict = {}
        for algorithm, sweep in self.sweeps.items():
            for run in sweep.runs:
                if algorithm == "pg" and (run.point["N"] != self.N_ref or run.point["gamma"] != self.gamma_ref):
                    continue
                if not run.path.exists():
                    continue
                data = load(run.path)
                if data.status != COMPLETE:
                    continue
                levels = {"sequence": data.base["loglik"]}
                if data.config["reward"] == "prm":
                    levels["token"] = data.base["token_loglik"].min(axis=1)
                for level, base in levels.items():
                    keep = np.ones(len(base), dtype=bool)
                    if algorithm == "rs":
                        alpha = self.alpha_of_budget[data.config["M"]]
                        keep = (base >= math.log(alpha)) & (base < math.log(10.0 * alpha))
                    p = context_passages(data.loglik[:, keep], data.queries, base[keep], eps)
                    entry = out.setdefault((algorithm, data.config["reward"], level),
                                           {"x": [], "queries": [], "reached": [], "level_loglik": [], "seed": [],
                                            "at_start": 0})
                    for name in ("x", "queries", "reached", "level_loglik"):
                        entry[name].append(p[name])
                    entry["seed"].append(np.full(len(p["x"]), data.config["seed"]))
                    entry["at_start"] += p["at_start"]
        return {key: {name: (np.concatenate(v) if isinstance(v, list) else v) for name, v in entry.items()}
                for key, entry in out.items()}

    def eps_passages(self) -> dict:
        """The passages of :meth:`passages` at every ``eps`` of the profile, pooled, for the contexts
        where the bound's ``1/eps`` term is at least its ``1/alpha_j`` term at every ``eps``
        (``alpha_j >= max(eps)``): across them ``log(1/alpha_j + 1/eps)`` varies mostly through
        ``eps``. Empty with a single ``eps``."""
        if len(self.eps) < 2:
            return {}
        out: dict = {}
        for eps in self.eps:
            for key, d in self.passages(eps).items():
                keep = d["level_loglik"] >= math.log(max(self.eps))
                entry = out.setdefault(key, {"x": [], "queries": [], "reached": [], "level_loglik": [], "seed": [],
                                             "at_start": 0})
                for name in ("x", "queries", "reached", "level_loglik", "seed"):
                    entry[name].append(d[name][keep])
                entry["at_start"] += d["at_start"]
        return {key: {name: (np.concatenate(v) if isinstance(v, list) else v) for name, v in entry.items()}
                for key, entry in out.items()}

    def context_exponents(self, passages: dict | None = None, eps_passages: dict | None = None) -> list[dict]:
        """Per ``(algorithm, reward, level)``: the slope of log first-passage queries in
        ``log(1/alpha_j + 1/eps)``, censored passages included (a log-logistic censored regression,
        :func:`fastpg.analysis.fits.censored_slope`), with a 90% bootstrap interval over seeds. Two
        designs (column ``against``): ``alpha`` fits every test context at ``eps_ref`` (the spread
        is in ``alpha_j``); ``eps`` fits the contexts of :meth:`eps_passages` at every ``eps`` (the
        spread is in ``eps``). The theory's shape gives slope 1 in both (with ORM, at the sequence
        level)."""
        out = []
        designs = (("alpha", passages if passages is not None else self.passages()),
                   ("eps", eps_passages if eps_passages is not None else self.eps_passages()))
        for against, data in designs:
            for (algorithm, reward, level), d in sorted(data.items()):
                positive = d["queries"] > 0
                slope, lo, hi = bootstrap_censored_slope(d["x"][positive], np.log(d["queries"][positive]),
                                                         d["reached"][positive], d["seed"][positive])
                out.append({"algorithm": algorithm, "reward": reward, "level": level, "against": against,
                            "slope": slope, "low": lo, "high": hi, "contexts": int(positive.sum()),
                            "censored": int((~d["reached"][positive]).sum()), "at_start": d["at_start"]})
        return out

    def context_quantiles(self, passages: dict | None = None) -> list[dict]:
        """Per ``(algorithm, reward, level)`` and decade of the base likelihood: the Kaplan-Meier
        median of the first-passage queries (``inf``: more than half still censored), with counts."""
        out = []
        for (algorithm, reward, level), d in sorted((passages or self.passages()).items()):
            decade = np.floor(-d["level_loglik"] / math.log(10.0))
            for k in np.unique(decade):
                m = decade == k
                out.append({"algorithm": algorithm, "reward": reward, "level": level, "alpha_low": float(10.0 ** -(k + 1)),
                            "alpha_high": float(10.0 ** -k), "contexts": int(m.sum()), "reached": int(d["reached"][m].sum()),
                            "median_queries": kaplan_meier_quantile(d["queries"][m], d["reached"][m])})
        return out

    def write(self, rows: list[dict], exponents: list[dict]) -> dict:
        """``profile.csv`` and ``exponents.csv`` in ``outdir``; returns their paths."""
        paths = {"profile": self.outdir / "profile.csv", "exponents": self.outdir / "exponents.csv"}
        _write_csv(paths["profile"], CSV_COLUMNS, rows)
        _write_csv(paths["exponents"], ("algorithm", "reward", "against", "slope", "low", "high", "theory", "points",
                                        "not_reached", "at_start", "largest_possible"), exponents)
        return paths

    def analyse(self) -> dict:
        """Rows, exponents and LQ fits of the runs done so far, written as ``profile.csv``,
        ``exponents.csv``, ``q_alpha.png`` and ``lq.png``; returns them and the paths."""
        from ..analysis import plots

        rows = self.rows()
        exponents = self.exponents(rows)
        paths = self.write(rows, exponents)
        passages = self.passages()
        context_exponents, context_quantiles = self.context_exponents(passages), self.context_quantiles(passages)
        paths["context_exponents"] = self.outdir / "context_exponents.csv"
        paths["context_quantiles"] = self.outdir / "context_quantiles.csv"
        _write_csv(paths["context_exponents"], ("algorithm", "reward", "level", "against", "slope", "low", "high",
                                                "contexts", "censored", "at_start"), context_exponents)
        _write_csv(paths["context_quantiles"], ("algorithm", "reward", "level", "alpha_low", "alpha_high", "contexts",
                                                "reached", "median_queries"), context_quantiles)
        paths["q_alpha"] = self.outdir / "q_alpha.png"
        plots.save(plots.profile_figure(rows, self.N_ref, self.gamma_ref), paths["q_alpha"])
        fits = lq_fits(self.lq_runs())
        if fits:
            paths["lq"] = self.outdir / "lq.png"
            plots.save(plots.lq_fit_figure(fits), paths["lq"])
        return {"rows": rows, "exponents": exponents, "fits": fits, "paths": paths,
                "context_exponents": context_exponents, "context_quantiles": context_quantiles}

    def lq_runs(self):
        """The pg runs at the reference N and gamma (for the LQ figure), by reward."""
        sweep = self.sweeps.get("pg")
        out: dict = {}
        if sweep is None:
            return out
        for run in sweep.runs:
            if run.point["N"] == self.N_ref and run.point["gamma"] == self.gamma_ref and run.path.exists():
                data = load(run.path)
                if data.complete:
                    out.setdefault(run.point["reward"], []).append(data)
        return out


def lq_fits(lq_runs: dict) -> dict:
    """Per reward: the fit of expected error against the base model's LQ at ``c/T`` for each run
    (:func:`fastpg.analysis.complexity.lq_fit`; ORM at sequence level, PRM at token level)."""
    out = {}
    for reward, runs in lq_runs.items():
        fits = []
        for run in runs:
            level = None if reward == "orm" else run.base["token_loglik"].min(axis=1)
            fits.append({"run": run, **lq_fit(run.queries, run.trace["expected_error"], run.base["loglik"], level)})
        out[reward] = fits
    return out


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def _write_csv(path: Path, columns, rows) -> None:
    with atomic_file(path, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])


def format_exponents(exponents: list[dict]) -> str:
    """The exponent table as text (what ``fastpg profile`` prints)."""
    lines = [f"{'algorithm':<9} {'reward':<26} {'log Q against':<24} {'slope':>7} {'90% interval (seeds)':>22} "
             f"{'bound':>7} {'points':>6} {'not reached':>11} {'Q=0':>4}"]
    for e in exponents:
        def f(v):
            return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"
        interval = "-" if math.isnan(e["low"]) else f"[{f(e['low'])}, {f(e['high'])}]"
        label = e["against"]
        if label.startswith("Q / bound"):
            interval = f"min {f(e['low'])} max {f(e['high'])}"
            label = "Q / bound, median"
        lines.append(f"{e['algorithm']:<9} {e['reward']:<26} {label:<24} {f(e['slope']):>7} {interval:>22} "
                     f"{f(e['theory']):>7} {e['points']:>6} {e['not_reached']:>11} {e['at_start']:>4}")
    return "\n".join(lines)


def format_context_exponents(context_exponents: list[dict], context_quantiles: list[dict], eps: float) -> str:
    """The per-context exponents and Kaplan-Meier medians as text (what ``fastpg profile`` prints)."""
    lines = ["per test context: log queries until pi(y*|x) >= 1 - eps against log(1/alpha_j + 1/eps), censored "
             "regression, 90% interval over seeds (theory: 1 with ORM);",
             f"spread in alpha: every context at eps = {eps:g}; spread in eps: contexts with alpha_j >= the largest "
             "eps, at every eps",
             f"{'algorithm':<9} {'reward':<7} {'alpha level':<11} {'spread':<6} {'slope':>7} {'interval':>18} "
             f"{'contexts':>9} {'censored':>9}"]
    for e in context_exponents:
        interval = "-" if math.isnan(e["low"]) else f"[{e['low']:.3g}, {e['high']:.3g}]"
        lines.append(f"{e['algorithm']:<9} {e['reward']:<7} {e['level']:<11} {e['against']:<6} {e['slope']:>7.3g} "
                     f"{interval:>18} {e['contexts']:>9} {e['censored']:>9}")
    lines.append("Kaplan-Meier median of those queries per decade of base likelihood (> last: over half censored)")
    for q in context_quantiles:
        med = "> last" if math.isinf(q["median_queries"]) else f"{q['median_queries']:.3g}"
        lines.append(f"{q['algorithm']:<9} {q['reward']:<7} {q['level']:<11} alpha in [{q['alpha_low']:.0e}, "
                     f"{q['alpha_high']:.0e}): {q['contexts']:>5} contexts, {q['reached']:>5} reached, median {med}")
    return "\n".join(lines)


# -- its part of fastpg reproduce ----------------------------------------------------------------
def reproduce_profile(out: Path, s: dict, progress=None) -> Outcome:
    """The profiler's claims: Q against alpha per context and in the mean, and Q within the bound's shape."""
    profile = Profile(out, s["fixed"], s["grid"], seeds=s["seeds"])
    profile.execute(progress=progress)
    result = profile.analyse()  # also writes its CSV files and figures
    exponents = result["exponents"]
    claims = []
    per_context = {(e["algorithm"], e["reward"]): e for e in result["context_exponents"]
                   if e["level"] == "sequence" and e["against"] == "alpha"}
    orm, prm = per_context.get(("pg", "orm")), per_context.get(("pg", "prm"))
    what = (f"slope of log queries until pi(y*_j|x_j) >= 1 - {profile.eps_ref:g} in log(1/alpha_j + 1/eps), every test "
            f"context at N={profile.N_ref}, gamma={profile.gamma_ref:g} (censored regression), 90% bootstrap over seeds")
    if orm is not None:
        claims.append(Claim("Profiler, per context", "pg + ORM: a test context with base likelihood alpha_j reaches "
                            "1 - eps after about (1/alpha_j + 1/eps)/gamma^2 queries", what, orm["slope"], orm["low"],
                            orm["high"], "1, up to the bound's log factors (a factor log(1/alpha) adds up to 0.4 "
                            "on alphas of 1e-1 to 1e-6)", checks=[(Rule("slope", 0.7, 1.5), orm["slope"])],
                            power="a Q flat in alpha, as PRM's"
                                  + (f" ({fmt(prm['slope'])})" if prm else "")
                                  + ", fails it (defects reward-swap, base-shuffled); so does one growing like "
                                    "1/alpha^2",
                            note=f"{orm['contexts']} contexts, {orm['censored']} censored"))
    if prm is not None:
        claims.append(Claim("Profiler, per context", "pg + PRM: the sequence-level alpha barely matters (the barrier "
                            "moves to the token level)", what, prm["slope"], prm["low"], prm["high"],
                            "well below ORM's 1", checks=[(Rule("slope", high=0.6), prm["slope"])],
                            powered=orm is None or orm["slope"] > 0.6,
                            power="an outcome-reward slope fails it"
                                  + (f" (ORM's here: {fmt(orm['slope'])})" if orm else "") + " (defect reward-swap)",
                            note=f"{prm['contexts']} contexts, {prm['censored']} censored"))
    in_eps = next((e for e in result["context_exponents"] if (e["algorithm"], e["reward"], e["level"], e["against"])
                   == ("pg", "orm", "sequence", "eps")), None)
    if in_eps is not None:
        claims.append(Claim("Profiler, per context", "pg + ORM: the same bound's 1/eps term",
                            f"the same slope, over the contexts with alpha_j >= {max(profile.eps):g} (where 1/eps is the "
                            f"larger term) at every eps of {', '.join(f'{e:g}' for e in profile.eps)}",
                            in_eps["slope"], in_eps["low"], in_eps["high"], "at most 1 (an upper bound)",
                            note=f"{in_eps['contexts']} passages, {in_eps['censored']} censored; reported: the bound "
                                 "is an upper bound in eps, and no defect of the test suite makes a run slower in "
                                 "1/eps alone"))
    for e in result["context_exponents"]:
        if e["algorithm"] == "rs" and e["level"] == "sequence" and e["against"] == "alpha":
            claims.append(Claim("Profiler, per context", f"rs + {e['reward'].upper()}: the same, per context", what,
                                e["slope"], e["low"], e["high"], "1 with ORM",
                                note=f"{e['contexts']} contexts, {e['censored']} censored; reported: an rs run's budget "
                                     "is tied to the alpha it profiles (M = ln(100)/alpha), so its queries grow like "
                                     "1/alpha whatever the reward"))

    def exponent(algorithm, reward, against):
        return next(e for e in exponents if e["algorithm"] == algorithm and e["reward"] == reward
                    and e["against"] == against)

    for algorithm in ("pg", "rs"):
        if algorithm not in profile.grid["algorithm"] or "orm" not in profile.grid["reward"]:
            continue
        e = exponent(algorithm, "orm", "log(1/alpha)")
        bound = e["theory"]
        claims.append(Claim("Profiler", f"{algorithm} + ORM reaches 1 - eps on contexts with base likelihood alpha "
                            "after about (1/alpha + 1/eps)/gamma^2 queries (mean form)",
                            f"slope of log Q(alpha, eps={profile.eps_ref:g}) in log(1/alpha), Q of the mean error over "
                            "the contexts above alpha, 90% bootstrap over seeds",
                            e["slope"], e["low"], e["high"], f"{fmt(bound)} (the bound's slope on these points)",
                            checks=[(Rule("interval's high end", low=0.5 * bound), e["high"]),
                                    (Rule("interval's low end", high=bound + 0.1), e["low"])],
                            powered=bound >= 0.3,
                            power="a Q that does not grow as alpha falls (slope 0"
                                  + (", as PRM's; defect reward-swap" if algorithm == "pg" else
                                     "; defect base-shuffled leaves nothing reached") + ") fails the lower limit, half "
                                  "the bound's slope; a Q steeper than the bound the upper",
                            note=f"{e['points']} points fitted, {e['not_reached']} more not reached (censored, left "
                                 "out: the slope is biased down)"))
    for algorithm in profile.grid["algorithm"]:
        for reward in profile.grid["reward"]:
            e = exponent(algorithm, reward, "Q / bound (whole grid)")
            most = e["largest_possible"]
            claims.append(Claim("Profiler", f"{algorithm} + {reward.upper()}: Q stays within the bound's shape",
                                "Q / ((1/alpha + 1/eps) ||W*||^2 / gamma^2) over the grid: median [min, max]",
                                e["slope"], e["low"], e["high"], "bounded by a constant",
                                note=f"{e['points']} reached points; reported: the bound holds up to a constant the "
                                     "theory does not give, and its shape is what the slope rows test"
                                     + (f". A rule 'max < 1' would be near vacuous: no run's whole budget reaches more "
                                        f"than {fmt(most)} of its bound" if most < 1 else
                                        f"; the largest ratio a run's whole budget allows is {fmt(most)}")))
    sections = [Section("Query complexity (the profiler)",
                        f"`fastpg profile` ({profile.runs} runs). The exponent table:\n\n```\n"
                        f"{format_exponents(exponents)}\n```", out / "q_alpha.png")]
    return Outcome(claims, sections, (profile, exponents))


EXPERIMENT = Experiment("profile", 20, reproduce_profile, full={"fixed": {}, "grid": {}, "seeds": PROFILE_SEEDS},
                        quick={"grid": {"N": [8, 10], "gamma": [0.003, 0.006], "reward": ["orm", "prm"],
                                        "algorithm": ["pg", "rs"]},
                               "fixed": {"steps": 30000, "n_test": 512, "eval_log": 100}, "seeds": [0, 1, 2]})
