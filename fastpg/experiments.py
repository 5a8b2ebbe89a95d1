"""The paper's experiments end to end: Figure 1 and the statistical-learning experiment.

Experiments are data (presets in :mod:`fastpg.config`); this module runs them through
:func:`fastpg.api.run` / :func:`fastpg.api.pretrain`, writes one HDF5 file per run and draws the
figure from the files it wrote (through :func:`fastpg.store.load`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import config as C
from .api import pretrain, run
from .config import ConfigError
from .analysis import fit_loglog_slope, pooled_rate_slope
from .plots import fig1_figure, pretrain_figure, require_matplotlib, save
from .store import check_output, load


def _outdir(outdir) -> Path:
    path = Path(outdir)
    if path.exists() and not path.is_dir():
        raise ConfigError("OUTDIR", f"{path} is a file; allowed: a folder (created if missing)")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Fig1Result:
    orm: object
    prm: object
    files: dict
    png: str

    def summary(self) -> dict:
        """The numbers Figure 1 is about, read off the two runs."""
        return {
            "offsupport_fraction": float(self.orm.base["offsupport_fraction"]),
            "alpha_off": float(self.orm.config["alpha_off"]),
            "orm_offsupport_likelihood": float(self.orm.trace["offsupport_likelihood"][-1]),
            "prm_offsupport_likelihood": float(self.prm.trace["offsupport_likelihood"][-1]),
            "orm_expected_error": float(self.orm.trace["expected_error"][-1]),
            "prm_expected_error": float(self.prm.trace["expected_error"][-1]),
            "orm_queries": float(self.orm.queries[-1]),
            "prm_queries": float(self.prm.queries[-1]),
        }


def fig1(outdir, overrides: dict | None = None, *, x: str = "steps", overwrite: bool = False, argv=None,
         progress=None) -> Fig1Result:
    """Figure 1: PG with ORM and with PRM from the same task and base model (docs/design.md, "Command line").

    Writes ``fig1-orm.h5``, ``fig1-prm.h5`` and ``fig1.png`` into ``outdir``. ``overrides`` change
    the ``fig1-orm`` preset (``reward`` is set per run). Both runs share the task and base model
    because their random streams are keyed by the task and base parameters only.
    """
    require_matplotlib()  # fail before computing, not after
    out = _outdir(outdir)
    params = {**C.PRESETS["fig1-orm"], **(overrides or {})}
    params.pop("reward", None)
    files = {reward: out / f"fig1-{reward}.h5" for reward in ("orm", "prm")}
    png = out / "fig1.png"
    for path in (*files.values(), png):
        check_output(path, overwrite)
    for reward, path in files.items():
        run({**params, "reward": reward}, path, overwrite=overwrite, argv=argv,
            progress=None if progress is None else (lambda done, r=reward: progress(r, done)))
    orm, prm = load(files["orm"]), load(files["prm"])
    save(fig1_figure(orm, prm, x=x), png)
    return Fig1Result(orm=orm, prm=prm, files={k: str(v) for k, v in files.items()}, png=str(png))


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
                        lr_rules=C.PRETRAIN_LR_RULES, overwrite: bool = False, argv=None,
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
    for *_, path in jobs:
        check_output(path, overwrite)
    check_output(png, overwrite)
    for lr, q, path in jobs:
        pretrain({**params, "pre_lr": lr, "gamma_quantile": q}, path, overwrite=overwrite, argv=argv,
                 progress=None if progress is None else (lambda done, tag=f"{lr} q={q:g}": progress(tag, done)))
    runs = [load(path) for *_, path in jobs]
    save(pretrain_figure(runs), png)
    return PretrainResult(runs=runs, png=str(png))
