"""The paper's experiments end to end: Figure 1 and the statistical-learning experiment.

Experiments are data (presets in :mod:`fastpg.config`); this module runs them through
:func:`fastpg.api.run` / :func:`fastpg.api.pretrain`, writes one HDF5 file per run and draws the
figure from the files it wrote (through :func:`fastpg.store.load`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import config as C
from ..analysis.complexity import lq_fit
from ..analysis.fits import cluster_exceptions, fit_loglog_slope, pooled_rate_slope
from ..analysis.plots import exceptions_figure, fig1_figure, pretrain_figure, require_matplotlib, save
from ..api import pretrain, run
from ..config import ConfigError, RunConfig
from ..store import COMPLETE, check_output, load, read_status, read_task_arrays


def _outdir(outdir) -> Path:
    path = Path(outdir)
    if path.exists() and not path.is_dir():
        raise ConfigError("outdir", f"{path} is a file; allowed: a folder (created if missing)")
    path.mkdir(parents=True, exist_ok=True)
    return path


FIG1_SEEDS = (0, 1, 2)


@dataclass
class Fig1Result:
    """The runs of Figure 1: ``orm[i]`` and ``prm[i]`` share seed ``seeds[i]`` (task and base model)."""

    seeds: list
    orm: list
    prm: list
    files: dict
    png: str
    exceptions_png: str = ""

    def exceptions(self) -> list[dict]:
        """Per seed, the PRM run's stuck test contexts against its clusters' exceptions
        (:func:`fastpg.analysis.fits.cluster_exceptions`)."""
        return [cluster_exceptions(prm, read_task_arrays(prm.path)) for prm in self.prm]

    def per_seed(self) -> list[dict]:
        """The numbers Figure 1 is about, per seed, with the LQ fits of both runs."""
        out = []
        for seed, orm, prm, ex in zip(self.seeds, self.orm, self.prm, self.exceptions()):
            lq_orm = lq_fit(orm.queries, orm.trace["expected_error"], orm.base["loglik"])
            lq_prm = lq_fit(prm.queries, prm.trace["expected_error"], prm.base["loglik"],
                            prm.base["token_loglik"].min(axis=1))
            # each run against the other reward's LQ: how far a run is from an LQ it should not follow
            lq_orm_token = lq_fit(orm.queries, orm.trace["expected_error"], orm.base["loglik"],
                                  orm.base["token_loglik"].min(axis=1))
            lq_prm_sequence = lq_fit(prm.queries, prm.trace["expected_error"], prm.base["loglik"])
            out.append({
                "seed": seed,
                "gamma": float(orm.task["gamma"]),
                "offsupport_fraction": float(orm.base["offsupport_fraction"]),
                "alpha_off": float(orm.config["alpha_off"]),
                "orm_offsupport_likelihood": float(orm.trace["offsupport_likelihood"][-1]),
                "prm_offsupport_likelihood": float(prm.trace["offsupport_likelihood"][-1]),
                "orm_expected_error": float(orm.trace["expected_error"][-1]),
                "prm_expected_error": float(prm.trace["expected_error"][-1]),
                "orm_queries": float(orm.queries[-1]),
                "prm_queries": float(prm.queries[-1]),
                "orm_lq_c": lq_orm["c"], "orm_lq_max_gap": lq_orm["max_gap"],
                "prm_lq_c": lq_prm["c"], "prm_lq_max_gap": lq_prm["max_gap"],
                "orm_token_lq_max_gap": lq_orm_token["max_gap"], "prm_sequence_lq_max_gap": lq_prm_sequence["max_gap"],
                # does the error keep falling? its value at the last evaluation point over that at half the steps
                "orm_late_error_ratio": late_error_ratio(orm), "prm_late_error_ratio": late_error_ratio(prm),
                "prm_stuck": ex["n_stuck"], "prm_stuck_exceptions": ex["stuck_exceptions"],
                "exceptions": ex["n_exceptions"],
            })
        return out

    def summary(self) -> dict:
        """The mean over seeds of :meth:`per_seed` (and ``seeds``)."""
        rows = self.per_seed()
        out = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key != "seed"}
        out["seeds"] = list(self.seeds)
        return out


def late_error_ratio(run) -> float:
    """Expected error at the last evaluation point over the error at the last point at or before
    half the steps: near 1 where the error has stopped falling, near 0 where it keeps falling."""
    steps, err = np.asarray(run.trace["steps"], float), np.asarray(run.trace["expected_error"], float)
    half = int(np.searchsorted(steps, steps[-1] / 2, side="right")) - 1
    return float(err[-1] / err[half]) if err[half] > 0 else float("nan")


def _plan(configs: dict, png, overwrite: bool, resume: bool) -> list:
    """The files to (re)compute, of ``configs`` (``{path: the run's parameters}``): with ``resume``
    complete files are kept and the others redone; otherwise every existing output is refused unless
    ``overwrite``. A complete file kept on ``resume`` must have been made with the same parameters:
    a folder from an earlier version with other defaults (Figure 1's clusters, say) is refused, not
    silently reused. Returns the paths to run."""
    if not resume:
        for path in (*configs, png):
            check_output(path, overwrite)
        return list(configs)
    todo = [p for p in configs if not Path(p).exists() or read_status(p) != COMPLETE]
    for path, params in configs.items():
        if path in todo or overwrite:
            continue
        want = RunConfig.from_dict(params).to_dict()
        have = load(path).config
        differs = [k for k in want if k in have and have[k] != want[k]]
        if differs:
            k = differs[0]
            raise ConfigError("outdir", f"{Path(path).name} was made with {k}={have[k]!r}, not {want[k]!r}; allowed: "
                                        "another folder, or --overwrite to redo it")
    for path in todo:
        check_output(path, overwrite=True)
    check_output(png, overwrite=True)
    return todo


def fig1(outdir, overrides: dict | None = None, *, seeds=FIG1_SEEDS, unconditioned: bool = False, wide: bool = False,
         overwrite: bool = False, resume: bool = False, progress=None) -> Fig1Result:
    """Figure 1: PG with ORM and with PRM from the same task and base model, for each seed.

    The ``fig1-orm`` preset conditions every context on the margin of the 25% pilot quantile
    (docs/design.md, "Figure 1"); ``unconditioned=True`` drops that condition (the paper's figure
    has none, but its theory assumes one); ``wide=True`` takes the wide clusters of
    :data:`fastpg.config.FIG1_WIDE`, where on-policy PG + PRM stalls. Writes ``fig1-orm-seed<s>.h5``,
    ``fig1-prm-seed<s>.h5``, ``fig1.png`` (against steps and against reward queries) and
    ``exceptions.png`` (PRM's stuck contexts against their clusters' exceptions) into ``outdir``. ``overrides``
    change the preset (``reward`` and ``seed`` are set per run). An ORM and a PRM run share the
    task and base model because their random streams are keyed by the task and base parameters only.
    With ``resume``, complete files are kept and only the missing or incomplete runs are computed.
    """
    require_matplotlib()  # fail before computing, not after
    out = _outdir(outdir)
    params = {**C.PRESETS["fig1-orm"], **(C.FIG1_WIDE if wide else {}), **(overrides or {})}
    if unconditioned:
        params.pop("gamma_quantile", None)
        params["gamma"] = 0.0
    params.pop("reward", None)
    params.pop("seed", None)
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("seeds", "got an empty list; allowed: seeds like 0-2")
    files = {(reward, seed): out / f"fig1-{reward}-seed{seed}.h5" for seed in seeds for reward in ("orm", "prm")}
    png, exceptions_png = out / "fig1.png", out / "exceptions.png"
    todo = _plan({path: {**params, "reward": reward, "seed": seed} for (reward, seed), path in files.items()}, png,
                 overwrite, resume)
    check_output(exceptions_png, overwrite=overwrite or resume)
    for (reward, seed), path in files.items():
        if path not in todo:
            continue
        run({**params, "reward": reward, "seed": seed}, path, overwrite=True,
            progress=None if progress is None else (lambda done, tag=f"{reward} seed {seed}": progress(tag, done)))
    orm = [load(files[("orm", s)]) for s in seeds]
    prm = [load(files[("prm", s)]) for s in seeds]
    save(fig1_figure(orm, prm), png)
    result = Fig1Result(seeds=seeds, orm=orm, prm=prm, files={f"{r}-seed{s}": str(p) for (r, s), p in files.items()},
                        png=str(png), exceptions_png=str(exceptions_png))
    save(exceptions_figure(prm, result.exceptions()), exceptions_png)
    return result


@dataclass
class PretrainResult:
    runs: list
    png: str

    def slopes(self, metric: str = "greedy_error") -> list[dict]:
        """Fitted log-log slope of test error against samples seen, for each run."""
        return [
            {"lr": r.config["pre_lr"], "gamma_quantile": r.config["gamma_quantile"], "gamma": float(r.task["gamma"]),
             "slope": fit_loglog_slope(r.trace["steps"], r.trace[metric], r.config["n_test"]),
             "final_error": float(r.trace[metric][-1]), "file": r.path}
            for r in self.runs
        ]

    def pooled_slopes(self, metric: str = "greedy_error") -> dict:
        """Per learning-rate rule: slope of log error against log(gamma^2 n), pooled over margins."""
        rules = sorted({r.config["pre_lr"] for r in self.runs})
        return {lr: pooled_rate_slope([r for r in self.runs if r.config["pre_lr"] == lr and r.task["gamma"] > 0], metric)
                for lr in rules}


def pretrain_experiment(outdir, overrides: dict | None = None, *, gamma_quantiles=C.PRETRAIN_GAMMA_QUANTILES,
                        lr_rules=C.PRETRAIN_LR_RULES, overwrite: bool = False, resume: bool = False,
                        progress=None) -> PretrainResult:
    """Statistical learning (docs/design.md, "Base models"): SGD test error against samples seen, per LR rule and margin.

    One run per (``pre_lr``, ``gamma_quantile``), written to ``pretrain-lr=<rule>-gq=<q>.h5``, and
    ``pretrain.png`` with the ``1/(gamma^2 n)`` rate overlaid.
    """
    require_matplotlib()
    out = _outdir(outdir)
    params = {**C.PRETRAIN, **(overrides or {})}
    jobs = [(lr, q, out / f"pretrain-lr={lr}-gq={q:g}.h5") for lr in lr_rules for q in gamma_quantiles]
    png = out / "pretrain.png"
    todo = _plan({path: {**params, "pre_lr": lr, "gamma_quantile": q} for lr, q, path in jobs}, png, overwrite, resume)
    for lr, q, path in jobs:
        if path not in todo:
            continue
        pretrain({**params, "pre_lr": lr, "gamma_quantile": q}, path, overwrite=True,
                 progress=None if progress is None else (lambda done, tag=f"{lr} q={q:g}": progress(tag, done)))
    runs = [load(path) for *_, path in jobs]
    save(pretrain_figure(runs), png)
    return PretrainResult(runs=runs, png=str(png))
