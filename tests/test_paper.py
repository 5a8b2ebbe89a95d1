"""The paper's claims: analysis functions on synthetic traces with known answers, the example sweep
against the experiment's definition, and fastpg reproduce --quick end to end."""

import math
import os

import numpy as np
import pytest

from fastpg.paper.any_pretraining import ANY_PRETRAINING
from fastpg.paper.any_pretraining import EXPERIMENT as ANY
from fastpg.paper.claims import Claim, Rule, claims_table, verdict_counts
from fastpg.paper.mistakes import late_fraction, mistakes_exponents
from fastpg.sweeps.spec import load_toml
from test_cli import fastpg as fastpg_cmd


def test_late_fraction_tells_levelling_from_steady_growth():
    steps = np.linspace(0, 1000, 101)
    assert late_fraction(steps, np.minimum(steps, 200.0)) == 0.0  # all mistakes before step 200
    assert late_fraction(steps, 0.3 * steps) == pytest.approx(0.5)  # a constant rate
    assert late_fraction(steps, np.sqrt(steps)) == pytest.approx(1 - math.sqrt(0.5))
    assert late_fraction(steps, np.zeros_like(steps)) == 0.0


def test_mistakes_exponents_recover_known_slopes():
    rng = np.random.default_rng(1)
    rows = []
    for seed in range(4):
        for gamma in (0.025, 0.05, 0.1):
            for k, N in ((2, 2), (2, 3), (3, 2)):
                m = 3.0 * (1 / gamma**2) ** 0.5 * (k**N) ** 0.25 * math.exp(rng.normal(0, 0.05))
                rows.append({"k": k, "N": N, "lr": "adaptive", "gamma": gamma, "seed": seed, "mistakes": m})
                rows.append({"k": k, "N": N, "lr": "constant", "gamma": gamma, "seed": seed, "mistakes": 10 * m})
    ex = mistakes_exponents(rows, (2, 2), 0.05)
    slope, lo, hi = ex["gamma"]
    assert slope == pytest.approx(0.5, abs=0.05) and lo < 0.5 < hi
    slope, lo, hi = ex["responses"]
    assert slope == pytest.approx(0.25, abs=0.05) and lo < 0.25 < hi


def test_claims_table_escapes_pipes_and_marks_every_verdict():
    rows = [Claim("E", "norm ||W*||", "m", 0.5, 0.1, 0.9, "1", checks=[(Rule("max", high=0.3), 0.9)]),
            Claim("E", "c", "m", 2.0, checks=[(Rule("slope", 1.5, 2.5), 2.0)], power="p"),
            Claim("E", "c", "m", 2.0, checks=[(Rule("slope", low=0.0), 2.0)], powered=False),
            Claim("E", "c", "m", float("nan"), checks=[(Rule("slope", low=0.0), float("nan"))]),
            Claim("E", "c", "m", 1.0)]
    assert [c.status for c in rows] == ["no", "yes", "vacuous", "not measured", "reported"]
    assert [c.holds for c in rows] == [False, True, None, None, None]
    lines = claims_table(rows).splitlines()
    assert len(lines) == 7 and all(line.count("|") - line.count("\\|") == 9 for line in lines)
    assert "**no**" in lines[2] and "0.5 [0.1, 0.9]" in lines[2] and "max <= 0.3 (here 0.9)" in lines[2]
    assert "| yes | slope in [1.5, 2.5] (here 2) | p |" in lines[3]
    assert "| vacuous |" in lines[4] and "| not measured |" in lines[5] and "| reported | - | - |" in lines[6]
    assert verdict_counts(rows).startswith("1 of 2 claims with a powered rule hold (1 does not); 1 vacuous")


def test_a_rule_renders_the_limits_it_checks():
    assert str(Rule("x", high=0.05)) == "x <= 0.05" and Rule("x", high=0.05).holds(0.06) is False
    assert str(Rule("x", low=10.0)) == "x >= 10" and Rule("x", low=10.0).holds(10.0) is True
    assert str(Rule("x", 0.7, 1.3)) == "x in [0.7, 1.3]" and Rule("x", 0.7, 1.3).holds(0.5) is False
    assert Rule("x", high=1.0).holds(float("nan")) is None and Rule("x", high=1.0).holds(None) is None


def test_example_sweep_is_the_experiment_reproduce_runs():
    spec = load_toml(os.path.join(os.path.dirname(__file__), "..", "examples", "any_pretraining.toml"))
    fixed = dict(spec["fixed"])
    assert fixed.pop("steps") == ANY.full["steps"]
    assert fixed == ANY_PRETRAINING["fixed"]
    assert spec["cases"] == ANY_PRETRAINING["cases"]
    assert spec["grid"] == {"N": ANY.full["N"], **ANY_PRETRAINING["grid"]}
    assert spec["eps"] == [ANY_PRETRAINING["eps"]] and spec["seeds"] == ANY.full["seeds"]


@pytest.mark.slow
def test_reproduce_quick_fills_every_row(tmp_path):
    r = fastpg_cmd("reproduce", tmp_path / "paper", "--quick")
    assert r.returncode == 0, r.stderr
    report = (tmp_path / "paper" / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ") and not line.startswith("| experiment")]
    assert len(rows) >= 20
    for row in rows:
        value = [cell.strip() for cell in row.split(" | ")][3]
        assert value != "-", row  # every measured value is filled
    for png in ("fig1/fig1.png", "fig1-wide/exceptions.png", "profile/q_alpha.png", "any_pretraining/growth.png",
                "pretrain/pretrain.png", "mistakes/mistakes.png", "pass_at_k/pass_at_k.png",
                "kl/kl.png", "temperature/temperature.png", "filtering/filtering.png"):
        assert (tmp_path / "paper" / png).exists(), png
        assert f"]({png})" in report
    again = fastpg_cmd("reproduce", tmp_path / "paper", "--quick", "-q")  # resumes: nothing recomputed
    assert again.returncode == 0, again.stderr


def test_an_experiment_is_one_module(tmp_path, monkeypatch):
    """fastpg reproduce finds every module of fastpg.paper defining EXPERIMENT: adding one adds its
    claims and section to the report, with nothing else edited (here a module in a folder put on
    the package's path)."""
    import sys

    import fastpg.paper
    from fastpg.paper.claims import registry
    from fastpg.paper.reproduce import reproduce

    assert [e.name for e in registry()] == ["fig1", "profile", "any_pretraining", "pretrain", "mistakes", "pass_at_k", "kl",
                                                "temperature", "filtering"]
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "dummy_experiment.py").write_text(
        "from fastpg.paper.claims import Claim, Experiment, Outcome, Rule, Section\n"
        "def go(out, s, progress=None):\n"
        "    out.mkdir(parents=True, exist_ok=True)\n"
        "    return Outcome([Claim('Dummy', 'two is small', 'the number', s['n'], checks=[(Rule('n', high=3), s['n'])])],\n"
        "                   [Section('A dummy', f'n is {s[\"n\"]}')])\n"
        "EXPERIMENT = Experiment('dummy', 99, go, full={'n': 2}, quick={'n': 4})\n")
    monkeypatch.setattr(fastpg.paper, "__path__", [*fastpg.paper.__path__, str(extra)])
    monkeypatch.delitem(sys.modules, "fastpg.paper.dummy_experiment", raising=False)
    try:
        assert registry()[-1].name == "dummy"
        full = reproduce(tmp_path / "full", only=["dummy"], page=tmp_path / "docs" / "results.md")
        quick = reproduce(tmp_path / "quick", quick=True, only=["dummy"])
    finally:
        sys.modules.pop("fastpg.paper.dummy_experiment", None)
    assert [(c.claim, c.status) for c in full["claims"]] == [("two is small", "yes")]
    assert [c.status for c in quick["claims"]] == ["no"]  # its quick settings: n = 4 > 3
    report = (tmp_path / "full" / "report.md").read_text()
    assert "| Dummy | two is small |" in report and "## A dummy" in report and "n is 2" in report
    assert (tmp_path / "docs" / "results.md").read_text().split("\n", 3)[3] == report.split("\n", 3)[3]
    with pytest.raises(fastpg.ConfigError, match="only: got 'nope'; allowed: fig1, profile"):
        reproduce(tmp_path / "x", only=["nope"])
