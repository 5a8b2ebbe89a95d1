"""Filtering uninformative groups (docs/design.md, "Filtering uninformative groups"; beyond the paper):
what does DAPO's dynamic sampling buy on Figure 1's task?

PG + ORM with ``G = 4`` responses and a leave-one-out baseline, with and without ``--filter-groups``
(a budget of :data:`BUDGET` groups per step). A discarded group costs its ``G`` queries and moves
nothing, so filtering trades steps for queries: each step learns, but a rare context costs about
``1 / (G p)`` groups to give a mixed one. The plain run is taken to the filtered run's query count
(``--max-queries``), so both are read at equal queries. No theory fixes the numbers; the rows are
reported:

* the final error with filtering minus the plain run's at equal queries;
* the plain run's steps over the filtered run's (what filtering saves);
* with the adaptive learning-rate rule, the filtered run's final error minus the plain run's at
  equal steps: the adaptive rule divides the step by the log-loss, tiny on a nearly solved context,
  and filtering makes every step on such a context a step with a wrong response in its group.
"""

from __future__ import annotations

from pathlib import Path

from .. import config as C
from ..analysis.plots import filtering_figure, save
from ..api import run
from ..store import COMPLETE, load, read_status
from .claims import Claim, Experiment, Outcome, Section, interval

TASK = {**{k: v for k, v in C.PRESETS["fig1-orm"].items() if k != "reward"}, "reward": "orm", "G": 4, "baseline": "rloo",
        "lr": "constant", "eta": 0.5}
BUDGET = 64  # groups per step (--M): a solved context then costs at most 64 groups a step


def _run(path: Path, params: dict):
    if not (path.exists() and read_status(path) == COMPLETE):
        run(params, path, overwrite=True)
    return load(path)


def runs(out: Path, s: dict) -> dict:
    """Every run (resumable): ``{(what, seed): RunData}``, ``what`` in ``filtered``, ``plain`` (to the
    filtered run's queries), ``adaptive-filtered``, ``adaptive-plain`` (the same steps)."""
    out.mkdir(parents=True, exist_ok=True)
    done = {}
    for seed in s["seeds"]:
        base = {**TASK, **s["overrides"], "seed": seed}
        filtered = done[("filtered", seed)] = _run(out / f"filtered-seed{seed}.h5",
                                                   {**base, "filter_groups": True, "M": BUDGET})
        queries = int(filtered.trace["orm_queries"][-1])
        done[("plain", seed)] = _run(out / f"plain-seed{seed}.h5",
                                     {**base, "steps": queries // TASK["G"] + 1, "max_queries": queries})
        adaptive = {**base, "lr": "adaptive"}
        done[("adaptive-filtered", seed)] = _run(out / f"adaptive-filtered-seed{seed}.h5",
                                                 {**adaptive, "filter_groups": True, "M": BUDGET})
        done[("adaptive-plain", seed)] = _run(out / f"adaptive-plain-seed{seed}.h5", adaptive)
    return done


def final(data, name: str = "expected_error") -> float:
    return float(data.trace[name][-1])


def reproduce_filtering(out: Path, s: dict, progress=None) -> Outcome:
    data = runs(out, s)
    seeds = s["seeds"]
    gap = interval(final(data[("filtered", seed)]) - final(data[("plain", seed)]) for seed in seeds)
    errors = "; ".join(f"seed {seed}: {final(data[('filtered', seed)]):.3g} / {final(data[('plain', seed)]):.3g} at "
                       f"{data[('filtered', seed)].queries[-1]:.3g} / {data[('plain', seed)].queries[-1]:.3g} queries"
                       for seed in seeds)
    steps = interval(final(data[("plain", seed)], "steps") / final(data[("filtered", seed)], "steps") for seed in seeds)
    discarded = interval(final(data[("filtered", seed)], "groups_discarded") / final(data[("filtered", seed)], "steps")
                         for seed in seeds)
    adaptive = interval(final(data[("adaptive-filtered", seed)]) - final(data[("adaptive-plain", seed)])
                        for seed in seeds)
    adaptive_errors = "; ".join(f"seed {seed}: {final(data[('adaptive-filtered', seed)]):.3g} / "
                                f"{final(data[('adaptive-plain', seed)]):.3g}" for seed in seeds)
    claims = [
        Claim("filtering", "At equal queries, filtering uninformative groups ends about where plain PG does",
              "final expected error with --filter-groups minus plain PG's, the plain run taken to the filtered run's "
              "ORM queries (G = 4, rloo, constant rule)", *gap, "-",
              note=f"reported: no theory fixes it; filtered / plain: {errors}"),
        Claim("filtering", "Filtering saves steps, not queries",
              "plain PG's steps over the filtered run's, at equal queries", *steps, "-",
              note=f"reported: discarded groups per filtered step {discarded[0]:.3g} [{discarded[1]:.3g}, "
                   f"{discarded[2]:.3g}] (budget {BUDGET})"),
        Claim("filtering", "With the adaptive rule, filtering raises the final error",
              "final expected error with --filter-groups minus without, the adaptive rule, equal steps", *adaptive, "-",
              note=f"reported: filtered / plain {adaptive_errors}; the rule divides by a log-loss near 0 on solved "
                   "contexts, and filtering makes every step there one with a wrong response"),
    ]
    figure = out / "filtering.png"
    first = seeds[0]
    save(filtering_figure({what: data[(what, first)] for what in ("filtered", "plain", "adaptive-filtered",
                                                                  "adaptive-plain")}), figure)
    sections = [Section("Filtering uninformative groups (beyond the paper)",
                        f"PG + ORM on Figure 1's task, G = 4, rloo, with and without `--filter-groups` (budget {BUDGET} "
                        f"groups a step), seeds {seeds}. The figure: expected error against ORM queries and against "
                        "steps, for the constant rule (the plain run taken to the filtered run's queries) and the "
                        "adaptive rule (equal steps).", figure)]
    return Outcome(claims, sections, data)


EXPERIMENT = Experiment("filtering", 80, reproduce_filtering, full={"seeds": [0, 1, 2], "overrides": {}},
                        quick={"seeds": [0, 1], "overrides": {"steps": 10000, "n_test": 512}})
