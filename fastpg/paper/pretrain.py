"""Statistical learning (docs/design.md, "Base models"): SGD on the log-loss from ``W = 0``, its test
error against samples seen per learning-rate rule and margin, against the rate ``1/(gamma^2 n)``.

:func:`pretrain_experiment` runs it (``fastpg pretrain``); :data:`EXPERIMENT` is its part of
``fastpg reproduce``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import config as C
from ..analysis.fits import fit_loglog_slope, pooled_rate_slope
from ..analysis.plots import pretrain_figure, require_matplotlib, save
from ..api import pretrain
from ..store import load
from .claims import Claim, Experiment, Outcome, Rule, Section, interval
from .plan import files_to_run, output_folder


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
    out = output_folder(outdir)
    params = {**C.PRETRAIN, **(overrides or {})}
    jobs = [(lr, q, out / f"pretrain-lr={lr}-gq={q:g}.h5") for lr in lr_rules for q in gamma_quantiles]
    png = out / "pretrain.png"
    todo = files_to_run({path: {**params, "pre_lr": lr, "gamma_quantile": q} for lr, q, path in jobs}, png, overwrite, resume)
    for lr, q, path in jobs:
        if path not in todo:
            continue
        pretrain({**params, "pre_lr": lr, "gamma_quantile": q}, path, overwrite=True,
                 progress=None if progress is None else (lambda done, tag=f"{lr} q={q:g}": progress(tag, done)))
    runs = [load(path) for *_, path in jobs]
    save(pretrain_figure(runs), png)
    return PretrainResult(runs=runs, png=str(png))


def rate_bound(runs) -> tuple[float, int, bool]:
    """The check of ``error <= C / (gamma^2 n)``: max of ``greedy error x gamma^2 n`` over the
    evaluation points with ``gamma^2 n >= 1`` (below that, an error <= 1 satisfies C = 1 whatever
    the simulator does), their number, and whether the design has power: some point where the test
    set resolves an error of ``1 / (gamma^2 n)`` (``gamma^2 n <= n_test``)."""
    vals, powered = [], False
    for run in runs:
        g2n = float(run.task["gamma"]) ** 2 * np.asarray(run.trace["steps"], float)
        late = g2n >= 1.0
        vals.extend(np.asarray(run.trace["greedy_error"], float)[late] * g2n[late])
        powered |= bool(np.any(late & (g2n <= run.config["n_test"])))
    return (float(max(vals)) if vals else float("nan")), len(vals), powered


def reproduce_pretrain(out: Path, s: dict, progress=None) -> Outcome:
    """Statistical learning: SGD's rate in 1/(gamma^2 n), per learning-rate rule."""
    result = pretrain_experiment(out, s["overrides"], resume=True, progress=progress)
    claims = []
    for metric in ("greedy_error", "expected_error"):
        slopes = result.pooled_slopes(metric)
        for lr, slope in slopes.items():
            per_run = [r["slope"] for r in result.slopes(metric) if r["lr"] == lr]
            v = interval(per_run)
            adaptive = lr == "adaptive"
            claims.append(Claim("Statistical learning", f"SGD ({lr} rule): {metric.replace('_', ' ')} about 1/(gamma^2 n)",
                                f"slope of log {metric.replace('_', ' ')} in log(gamma^2 n), pooled over margins "
                                "(per-margin slopes in the interval)", slope, v[1], v[2], "-1",
                                checks=[(Rule("pooled slope", high=-0.8), slope)] if adaptive else [],
                                power="an error that levels off (defect teacher-mismatch) or falls slower than "
                                      "1/n^0.8 fails it" if adaptive else "",
                                note="" if adaptive else "the theory's rate is the adaptive rule's"))
    for lr in sorted({r.config["pre_lr"] for r in result.runs}):
        bound, points, powered = rate_bound([r for r in result.runs if r.config["pre_lr"] == lr])
        claims.append(Claim("Statistical learning", f"SGD ({lr} rule): error x gamma^2 n stays bounded",
                            "max of greedy error x gamma^2 n over the points with gamma^2 n >= 1", bound,
                            theory="a constant", checks=[(Rule("max", high=1.0), bound)], powered=powered,
                            power="below gamma^2 n = 1 an error <= 1 passes by itself, so only later points count; "
                                  "there the test set resolves an error of 1/(gamma^2 n) "
                                  + ("" if powered else "nowhere: the design cannot fail it ")
                                  + "(an error that levels off fails it: defect teacher-mismatch)",
                            note=f"{points} points"))
    sections = [Section("Statistical learning",
                        "`fastpg pretrain`: SGD on the log-loss over margin-conditioned contexts, per rule and margin; "
                        "slopes on greedy and on expected error.", Path(result.png))]
    return Outcome(claims, sections, result)


EXPERIMENT = Experiment("pretrain", 40, reproduce_pretrain, full={"overrides": {}},
                        quick={"overrides": {"n_pre": 100000, "n_test": 4096}})
