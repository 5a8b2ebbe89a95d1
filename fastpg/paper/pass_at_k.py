"""pass@k and coverage (docs/design.md, "pass@k and coverage"; beyond the paper): does post-training
only sharpen what the base model covers, or expand it? On Figure 1's task (skills that do not
transfer, every context on a margin) and on the sphere (skills that transfer), PG with ORM and with
PRM from the same base model, pass@k recorded exactly at every evaluation point.

The rows: with ORM the contexts the base model does not cover at the largest k stay uncovered
(the Likelihood Quantile barrier, read as coverage), with PRM they become covered; the k where the
base model's pass@k overtakes the post-trained model's, and the coverage fractions, are reported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import config as C
from ..analysis.plots import pass_at_k_figure, save
from ..api import run
from ..store import COMPLETE, load, read_status
from .claims import Claim, Experiment, Outcome, Rule, Section, fmt, interval, span

# k up to 4^6 = 4096: a context the base model does not cover there (pass@4096 < 1/2) has likelihood
# below ln 2 / 4096 = 1.7e-4, about 18 times below what ORM reaches in Figure 1's budget by the LQ
# test (c / T = 150 / 50,000 = 3e-3), so the barrier says ORM leaves it uncovered
KS = [4**i for i in range(7)]
FIG1_TASK = {k: v for k, v in C.PRESETS["fig1-orm"].items() if k != "reward"}
TASKS = {"fig1": FIG1_TASK, "sphere": {**FIG1_TASK, "contexts": "sphere"}}  # the same, with skills that transfer


def runs(out: Path, s: dict, progress=None) -> dict:
    """Every run of the experiment (resumable): ``{(task, reward, seed): RunData}``."""
    out.mkdir(parents=True, exist_ok=True)
    done = {}
    for task, params in TASKS.items():
        for reward in ("orm", "prm"):
            for seed in s["seeds"]:
                path = out / f"{task}-{reward}-seed{seed}.h5"
                if not (path.exists() and read_status(path) == COMPLETE):
                    run({**params, **s["overrides"], "reward": reward, "seed": seed, "pass_k": KS}, path,
                        overwrite=True)
                done[(task, reward, seed)] = load(path)
    return done


def reproduce_pass_at_k(out: Path, s: dict, progress=None) -> Outcome:
    """Coverage at the largest k against the base model, per reward and task, and the crossing k."""
    data = runs(out, s, progress)
    seeds, K = s["seeds"], max(KS)

    def final(task, reward, name):
        return [float(data[(task, reward, seed)].trace[name][-1]) for seed in seeds]

    claims = []

    def solved(reward):  # per seed: the fraction of the contexts the base model leaves uncovered that are covered now
        out = []
        for seed in seeds:
            trace = data[("fig1", reward, seed)].trace
            uncovered = trace["coverage_outside"][0]  # step 0: the base model itself
            out.append(trace["coverage_expanded"][-1] / uncovered if uncovered > 0 else float("nan"))
        return out

    orm, prm = interval(solved("orm")), interval(solved("prm"))
    outside = interval([data[("fig1", "orm", seed)].trace["coverage_outside"][0] for seed in seeds])
    what = (f"of the test contexts with pass@{K} < 1/2 at the base model, the fraction with pass@{K} >= 1/2 after PG + "
            "{reward} (expanded / uncovered at the base; Figure 1's task)")
    claims.append(Claim("pass@k and coverage", f"With ORM, post-training does not expand coverage: contexts the base "
                        f"model does not cover at k={K} stay uncovered", what.format(reward="ORM"), *orm,
                        "about 0 (the LQ barrier, read as coverage)",
                        checks=[(Rule("max over seeds", high=0.1), orm[2])], powered=prm[1] >= 0.5,
                        power=f"the same contexts can be covered in this budget: PRM covers {span(prm[1], prm[2])} "
                              "of them (defect reward-swap)",
                        note=f"uncovered at the base: {span(outside[1], outside[2])} of the test set"))
    claims.append(Claim("pass@k and coverage", "With PRM, post-training expands coverage", what.format(reward="PRM"),
                        *prm, "most of them (the barrier moves to the token level)",
                        checks=[(Rule("min over seeds", low=0.5), prm[1])],
                        power="an outcome reward leaves them uncovered (defect reward-swap)"))
    for task in TASKS:
        for reward in ("orm", "prm"):
            crossings = [data[(task, reward, seed)].crossing_k() for seed in seeds]
            shown = ", ".join("none" if c is None else fmt(c) for c in crossings)
            shrunk = interval(final(task, reward, "coverage_shrunk"))
            claims.append(Claim("pass@k and coverage", f"{task}, {reward.upper()}: does the base model's pass@k "
                                "overtake the post-trained model's at some k?", "fraction of seeds where it does, "
                                "searching k up to 1e15 (the crossing k per seed in the note)",
                                float(np.mean([c is not None for c in crossings])), theory="-",
                                note=f"reported: fastpg's measurement, not the paper's; crossing k per seed: {shown}; "
                                     f"coverage shrunk at k={K}: {span(shrunk[1], shrunk[2])}"))
    figure = out / "pass_at_k.png"
    save(pass_at_k_figure({key: value for key, value in data.items() if key[2] == seeds[0]}, KS), figure)
    sections = [Section("pass@k and coverage (beyond the paper)",
                        f"PG with ORM and with PRM on Figure 1's task and on the sphere, seeds {seeds}, pass@k recorded "
                        f"exactly for k = {', '.join(map(str, KS))} (`--pass-k`). The figure: pass@k of the base model "
                        "and of the post-trained models against k, and the coverage fractions at the largest k over "
                        "training.",
                        figure)]
    return Outcome(claims, sections, data)


EXPERIMENT = Experiment("pass_at_k", 60, reproduce_pass_at_k, full={"seeds": [0, 1, 2], "overrides": {}},
                        quick={"seeds": [0, 1], "overrides": {"steps": 30000, "n_test": 512}})
