"""Figure 1 (docs/design.md, "Figure 1"): PG with ORM and with PRM from one task and base model,
the LQ tests on the same runs, and the wide-cluster variant where on-policy PG + PRM stalls.

:func:`fig1` runs it (``fastpg fig1``) through :func:`fastpg.api.run`, one HDF5 file per run, and
draws the figures from the files it wrote; :data:`EXPERIMENT` is its part of ``fastpg reproduce``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import config as C
from ..analysis.complexity import lq_fit
from ..analysis.plots import exceptions_figure, fig1_figure, require_matplotlib, save
from ..analysis.summaries import cluster_exceptions
from ..api import run
from ..config import ConfigError
from ..store import check_output, load, read_task_arrays
from .claims import Claim, Experiment, Outcome, Rule, Section, fmt, interval
from .plan import files_to_run, output_folder

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
        (:func:`fastpg.analysis.summaries.cluster_exceptions`)."""
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
    out = output_folder(outdir)
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
    todo = files_to_run({path: {**params, "reward": reward, "seed": seed} for (reward, seed), path in files.items()}, png,
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


def reproduce_fig1(out: Path, s: dict, progress=None) -> Outcome:
    """Figure 1, the LQ tests and Figure 1 with wide clusters (a folder ``<out>-wide`` beside ``out``)."""
    result = fig1(out, s["overrides"], seeds=s["seeds"], resume=True, progress=progress)
    rows = result.per_seed()
    alpha_off = rows[0]["alpha_off"]
    orm = interval(r["orm_offsupport_likelihood"] for r in rows)
    prm = interval(r["prm_offsupport_likelihood"] for r in rows)
    claims = [
        Claim("Figure 1", "With ORM, contexts the base model puts below alpha_off stay unsolved",
              "mean likelihood of off-support test contexts after PG + ORM", *orm, "about 0 (the LQ barrier)",
              checks=[(Rule("max over seeds", high=0.05), orm[2])], powered=prm[1] > 0.05,
              power=f"the same contexts are learnable within this budget: PRM takes them to {fmt(prm[1])} or more. "
                    "A simulator without the barrier puts ORM there too (defects reward-swap, base-shuffled)"),
        Claim("Figure 1", "With PRM, PG passes the barrier", "the same after PG + PRM", *prm, "rises towards 1",
              checks=[(Rule("min over seeds", low=0.5), prm[1])],
              power=f"these contexts start below alpha_off = {alpha_off:g}; a PRM run that does not pass the "
                    "barrier leaves them there (defect reward-swap)"),
    ]
    late = interval(r["prm_late_error_ratio"] for r in rows)
    orm_late = interval(r["orm_late_error_ratio"] for r in rows)
    claims.append(Claim("Figure 1", "With PRM the error keeps decreasing",
                        "PRM's expected error at the last evaluation point over its error at half the steps", *late,
                        "below 1 (the error keeps falling)", checks=[(Rule("max over seeds", high=0.5), late[2])],
                        powered=orm_late[1] > 0.5,
                        power=f"an error that has stopped falling gives about 1, as ORM's here ({fmt(orm_late[1])}-"
                              f"{fmt(orm_late[2])}) and PRM's with wide clusters (defect reward-swap)"))
    # each LQ rule's power: the other reward's run, held to the same LQ, is far from it
    for reward, other, level, text in (("orm", "prm", "sequence", "ORM's error after T queries is the base model's "
                                        "sequence-level LQ at c/T"),
                                       ("prm", "orm", "token", "PRM's error follows the token-level LQ at c/T")):
        v = interval(r[f"{reward}_lq_max_gap"] for r in rows)
        c = interval(r[f"{reward}_lq_c"] for r in rows)
        alt = interval(r[f"{other}_{level}_lq_max_gap"] for r in rows)
        claims.append(Claim("LQ test", text, f"largest gap between expected error and the {level}-level LQ at c/T",
                            *v, "0", checks=[(Rule("max over seeds", high=0.1), v[2])], powered=alt[1] > 0.1,
                            power=f"{other.upper()}'s run, held to the same {level}-level LQ (c fitted too), is "
                                  f"{fmt(alt[1])}-{fmt(alt[2])} away",
                            note=f"fitted c {c[0]:.3g} [{c[1]:.3g}, {c[2]:.3g}]"))
    wide = fig1(out.parent / f"{out.name}-wide", s["overrides"], seeds=s["seeds"], wide=True, resume=True)
    wrows = wide.per_seed()
    w = interval(r["prm_late_error_ratio"] for r in wrows)
    stuck = ", ".join(f"{r['prm_stuck_exceptions']} of {r['prm_stuck']}" for r in wrows)
    claims.append(Claim("Figure 1, wide clusters", "On-policy PG + PRM (G = 1) stalls where a cluster's contexts "
                        "disagree", "the same ratio with wide clusters (sigma 0.05, n_pre 4000)", *w, "-",
                        note=f"reported: fastpg's finding, not the paper's. Stuck test contexts (below 1/2) that are "
                             f"exceptions to their cluster's majority response, per seed: {stuck}"))
    margins = ", ".join(f"{r['gamma']:.3g}" for r in rows)
    fractions = ", ".join(f"{r['offsupport_fraction']:.2f}" for r in rows)
    sections = [
        Section("Figure 1 and the LQ test",
                f"`fastpg fig1` on seeds {', '.join(map(str, s['seeds']))}: PG with ORM and with PRM from one task and "
                f"base model per seed, every context conditioned on a margin. Margins {margins}; off-support "
                f"fractions {fractions}.", Path(result.png)),
        Section("Figure 1 with wide clusters: where on-policy PG + PRM stalls",
                "`fastpg fig1 --wide-clusters` (sigma 0.05, n_pre 4000, the default before). Some test contexts' "
                "correct response differs from their cluster's majority; PG + PRM drives their correct token where "
                "they leave the majority towards 0 and never samples it again. The figure: per cluster, the stuck "
                "fraction against the fraction of such exceptions; the stuck contexts' likelihood over steps; the "
                "base model's likelihood of that token.", Path(wide.exceptions_png)),
    ]
    return Outcome(claims, sections, result)


EXPERIMENT = Experiment("fig1", 10, reproduce_fig1, full={"seeds": list(FIG1_SEEDS), "overrides": {}},
                        quick={"seeds": [0, 1], "overrides": {"steps": 30000, "n_test": 512}})
