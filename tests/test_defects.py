"""The report can say no: each deliberate defect (:mod:`fastpg.defects`) flips the claims it should.

Every experiment of ``fastpg reproduce --quick`` that a defect touches runs once as it is and once
with the defect (in process, quick settings, a smaller profile grid); a row named for a defect must
be ``yes`` without it and ``no`` with it. Every ``yes`` row of the clean runs must be named for at
least one defect: a rule no defect can flip would be a rule that cannot fail (docs/design.md, "A
report that can fail").
"""

import os
import subprocess
import sys

import pytest

from fastpg import defects
from fastpg.paper import claims as paper


def _quick(experiment) -> dict:
    settings = experiment.settings_for(quick=True)
    if experiment.name == "profile":  # its claims are read at the reference N and gamma only: the rest is left out
        settings["grid"] = {**settings["grid"], "N": [8], "gamma": [0.003]}
    return settings


# every experiment of fastpg reproduce: a new one is checked here without a line added
EXPERIMENTS = {e.name: (lambda out, e=e: e.run(out, _quick(e)).claims) for e in paper.registry()}

ORM_BARRIER = "With ORM, contexts the base model puts below alpha_off stay unsolved"
PRM_PASSES = "With PRM, PG passes the barrier"
PRM_DECREASES = "With PRM the error keeps decreasing"
ORM_LQ = "ORM's error after T queries is the base model's sequence-level LQ at c/T"
PG_ORM_SLOPE = "pg + ORM reaches 1 - eps"
RS_ORM_SLOPE = "rs + ORM reaches 1 - eps"
CONTEXT_ORM = "pg + ORM: a test context with base likelihood alpha_j reaches"
CONTEXT_PRM = "pg + PRM: the sequence-level alpha barely matters"
EXP_IN_N = "With ORM the cost grows exponentially in N whatever the base model"
SGD_GREEDY_RATE = "SGD (adaptive rule): greedy error about 1/(gamma^2 n)"
SGD_EXPECTED_RATE = "SGD (adaptive rule): expected error about 1/(gamma^2 n)"
SGD_BOUNDED = "SGD (adaptive rule): error x gamma^2 n stays bounded"
SGD_CONSTANT_BOUNDED = "SGD (constant rule): error x gamma^2 n stays bounded"
MISTAKES_BOUNDED = "PG with the adaptive rule makes a bounded number of mistakes"
ORM_NO_EXPANSION = "With ORM, post-training does not expand coverage"
PRM_EXPANDS = "With PRM, post-training expands coverage"
KL_OPTIMUM = [f"beta={beta:g}: PG with the exact KL gradient ends at the regularised optimum" for beta in (0.3, 1, 3)]
KL_ESTIMATORS = ["k1 in the loss has zero expected gradient", "k1 in the reward follows the reverse KL",
                 "k2 in the loss follows the reverse KL", "k3 in the loss follows the forward KL",
                 "k3 in the reward follows the reverse KL's gradient minus the forward KL's"]
TEMPERATURE_LQ = "At temperature tau, ORM's sampling policy is held at the LQ of its own base likelihoods"
TEMPERATURE_COLLAPSE = "Q(alpha_tau) collapses across temperatures"

# defect -> experiment -> the claims (prefixes) it must turn from yes to no, or to "not measured"
# where the defect leaves nothing to measure (every point censored)
CENSORED = "not measured"
FLIPS = {
    "reward-swap": {"fig1": [ORM_BARRIER, PRM_PASSES, PRM_DECREASES, ORM_LQ],
                    "profile": [PG_ORM_SLOPE, CONTEXT_ORM, CONTEXT_PRM],
                    "any_pretraining": [EXP_IN_N], "pass_at_k": [ORM_NO_EXPANSION, PRM_EXPANDS]},
    # the base pre-trained on 300 contexts has a steep PRM cost of its own (degree 2.9, 1.9 with the defect)
    "prm-one-query": {"any_pretraining": [f"{EXP_IN_N} ({case}" for case in
                                          ("base=sgd, n_pre=30)", "base=teacher,", "base=file)")]},
    # with the base likelihoods shuffled, ORM's per-context slope is about 0: PRM's row loses its power
    "base-shuffled": {"fig1": [ORM_BARRIER], "profile": [CONTEXT_ORM, (CONTEXT_PRM, paper.VACUOUS),
                                                         (PG_ORM_SLOPE, CENSORED), (RS_ORM_SLOPE, CENSORED)]},
    "adaptive-constant": {"mistakes": [MISTAKES_BOUNDED], "pretrain": [SGD_EXPECTED_RATE]},
    "teacher-mismatch": {"pretrain": [SGD_GREEDY_RATE, SGD_EXPECTED_RATE, SGD_BOUNDED, SGD_CONSTANT_BOUNDED]},
    "kl-uniform-ref": {"kl": KL_OPTIMUM},
    "kl-estimator-shift": {"kl": KL_ESTIMATORS},
    "temperature-ignored": {"temperature": [TEMPERATURE_LQ, TEMPERATURE_COLLAPSE]},
}


def _expected(entry):
    return entry if isinstance(entry, tuple) else (entry, paper.NO)


@pytest.fixture(scope="session")
def clean(tmp_path_factory):
    """The claims of every experiment without a defect, computed once."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = EXPERIMENTS[name](tmp_path_factory.mktemp(f"clean-{name}"))
        return cache[name]

    return get


def _rows(claims, prefix):
    rows = [c for c in claims if c.claim.startswith(prefix)]
    assert rows, prefix
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("defect", sorted(FLIPS))
def test_each_defect_flips_the_claims_it_should(defect, clean, tmp_path):
    for experiment, prefixes in FLIPS[defect].items():
        with defects.injected(defect):
            broken = EXPERIMENTS[experiment](tmp_path / experiment)
        for prefix, status in map(_expected, prefixes):
            pairs = [(good, bad) for good, bad in zip(_rows(clean(experiment), prefix), _rows(broken, prefix))
                     if good.status == paper.YES]
            assert pairs, (experiment, prefix, "no row holds without the defect")
            for _, bad in pairs:
                assert bad.status == status, (defect, bad.claim, bad.rule, bad.value)


@pytest.mark.slow
def test_every_yes_row_has_a_defect_that_flips_it(clean):
    named = {(experiment, _expected(entry)[0]) for flips in FLIPS.values() for experiment, entries in flips.items()
             for entry in entries}
    for experiment in EXPERIMENTS:
        for claim in clean(experiment):
            if claim.status == paper.YES:
                assert any(e == experiment and claim.claim.startswith(p) for e, p in named), (experiment, claim.claim)


@pytest.mark.slow
def test_a_defect_changes_nothing_once_its_block_ends(clean, tmp_path):
    with defects.injected("reward-swap"):
        pass
    again = EXPERIMENTS["fig1"](tmp_path / "fig1")
    assert [c.value for c in again] == [c.value for c in clean("fig1")]


def test_defects_are_named_through_the_environment_only():
    env = dict(os.environ, FASTPG_DEFECT="no-such-defect")
    r = subprocess.run([sys.executable, "-P", "-c", "import fastpg.defects"], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "FASTPG_DEFECT: got 'no-such-defect'; allowed: reward-swap" in r.stderr
    env["FASTPG_DEFECT"] = "reward-swap, prm-one-query"
    code = "import fastpg.defects as d; print(d.active('reward-swap'), d.active('prm-one-query'), d.active('base-shuffled'))"
    r = subprocess.run([sys.executable, "-P", "-c", code], env=env, capture_output=True, text=True)
    assert r.stdout.split() == ["True", "True", "False"], r.stderr
    assert not any(defects.active(name) for name in defects.DEFECTS)  # never on in a normal process
