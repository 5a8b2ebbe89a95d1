"""The paper's experiments on small settings, and the default Figure 1 against its numeric conditions."""

import math

import numpy as np
import pytest

import fastpg
from fastpg.analysis.fits import fit_loglog_slope, pooled_rate_slope
from fastpg.config import flag
from fastpg.paper.fig1 import fig1
from fastpg.paper.pretrain import pretrain_experiment
from test_cli import fastpg as fastpg_cmd

SMALL_FIG1 = dict(d=8, N=4, C=4, n_pre=200, steps=300, n_test=64, eval_log=8)


@pytest.mark.slow
def test_default_fig1_shows_the_orm_barrier_and_prm_passing_it(tmp_path):
    """The conditions of the paper-experiments issue, on the default settings (three seeds, a margin)."""
    result = fig1(tmp_path)
    for s in result.per_seed():
        assert s["gamma"] > 0
        assert 0.15 <= s["offsupport_fraction"] <= 0.5
        assert s["orm_offsupport_likelihood"] < 0.05
        assert s["prm_offsupport_likelihood"] > 0.5
        assert s["prm_late_error_ratio"] < 0.5  # PRM's error keeps falling (the paper's centre panel)
        assert s["exceptions"] == 0  # tight clusters: one correct response per skill
        assert s["orm_expected_error"] >= s["offsupport_fraction"] - 0.05
        assert s["prm_expected_error"] <= s["orm_expected_error"] - 0.1
        assert s["orm_lq_max_gap"] < 0.15
    assert (tmp_path / "fig1.png").stat().st_size > 10_000


@pytest.mark.slow
def test_fig1_command_small(tmp_path):
    r = fastpg_cmd("fig1", tmp_path / "out", *[a for k, v in SMALL_FIG1.items() for a in (flag(k), v)], "--seeds", "0-1")
    assert r.returncode == 0, r.stderr
    for name in ("fig1-orm-seed0.h5", "fig1-prm-seed0.h5", "fig1-orm-seed1.h5", "fig1-prm-seed1.h5", "fig1.png"):
        assert (tmp_path / "out" / name).exists()
    for seed in (0, 1):
        orm = fastpg.load(tmp_path / "out" / f"fig1-orm-seed{seed}.h5")
        prm = fastpg.load(tmp_path / "out" / f"fig1-prm-seed{seed}.h5")
        assert orm.complete and prm.complete and orm.config["seed"] == prm.config["seed"] == seed
        assert orm.config["reward"] == "orm" and prm.config["reward"] == "prm"
        np.testing.assert_array_equal(orm.base["loglik"], prm.base["loglik"])  # same task and base model
        assert orm.task["gamma"] > 0 and orm.task["realised_min_margin"] >= orm.task["gamma"]
    assert "off-support" in r.stdout and "mean" in r.stdout and "LQ gap" in r.stdout
    again = fastpg_cmd("fig1", tmp_path / "out", "-d", "8")
    assert again.returncode == 2 and "--overwrite" in again.stderr
    free = fastpg_cmd("fig1", tmp_path / "free", *[a for k, v in SMALL_FIG1.items() for a in (flag(k), v)], "--seeds", "0",
                      "--unconditioned", "-q")
    assert free.returncode == 0, free.stderr
    assert fastpg.load(tmp_path / "free" / "fig1-orm-seed0.h5").task["gamma"] == 0.0
    wide = fastpg_cmd("fig1", tmp_path / "wide", *[a for k, v in SMALL_FIG1.items() for a in (flag(k), v)], "--seeds", "0",
                      "--wide-clusters")
    assert wide.returncode == 0, wide.stderr
    cfg = fastpg.load(tmp_path / "wide" / "fig1-prm-seed0.h5").config
    assert cfg["sigma"] == 0.05 and cfg["n_pre"] == 200  # the wide clusters, and an option typed still wins
    assert (tmp_path / "wide" / "exceptions.png").exists() and "exceptions" in wide.stdout
    sphere = fastpg_cmd("fig1", tmp_path / "sphere", *[a for k, v in SMALL_FIG1.items() for a in (flag(k), v)],
                        "--seeds", "0", "--contexts", "sphere", "-q")  # no clusters: no exceptions, no crash
    assert sphere.returncode == 0, sphere.stderr
    assert (tmp_path / "sphere" / "exceptions.png").exists()


@pytest.mark.slow
def test_pretrain_experiment_small(tmp_path):
    res = pretrain_experiment(tmp_path, dict(d=16, N=2, n_pre=20000, n_test=2048, eval_log=15),
                              gamma_quantiles=(0.2, 0.4), lr_rules=("adaptive",))
    assert len(res.runs) == 2 and (tmp_path / "pretrain.png").exists()
    for run in res.runs:
        assert run.experiment == "pretrain" and run.complete
        assert run.trace["steps"][-1] == 20000
        err = run.trace["greedy_error"]
        assert err[-1] < err[0]  # learning happened
    for s in res.slopes():
        assert math.isnan(s["slope"]) or -5 < s["slope"] < 0
    gammas = [r.task["gamma"] for r in res.runs]
    assert gammas[0] < gammas[1]


def test_pretrain_command_rejects_bad_lists(tmp_path):
    r = fastpg_cmd("pretrain", tmp_path, "--gamma-quantiles", "0.5,2")
    assert r.returncode == 2 and "--gamma-quantiles" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = fastpg_cmd("pretrain", tmp_path, "--lr-rules", "adaptive,fast")
    assert r.returncode == 2 and "--lr-rules" in r.stderr


@pytest.fixture(scope="module")
def small_fig1(tmp_path_factory):
    out = tmp_path_factory.mktemp("fig1")
    result = fig1(out, SMALL_FIG1, seeds=[0])
    result.files.update(orm=result.files["orm-seed0"], prm=result.files["prm-seed0"])
    return result


@pytest.mark.parametrize("kind,files", [("fig1", ["orm", "prm"]), ("lq", ["orm", "prm"]), ("trajectories", ["orm"]),
                                         ("pretrain", ["orm"])])
@pytest.mark.slow
def test_plot_command_writes_png(tmp_path, small_fig1, kind, files):
    paths = [small_fig1.files[f] for f in files]
    r = fastpg_cmd("plot", kind, *paths, "--out", tmp_path / "p.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_wrong_file_count(tmp_path, small_fig1):
    r = fastpg_cmd("plot", "fig1", small_fig1.files["orm"], "--out", tmp_path / "p.png")
    assert r.returncode == 2 and "as many PRM as ORM" in r.stderr


def test_missing_matplotlib_is_one_clear_line(tmp_path, small_fig1):
    blocker = tmp_path / "block"
    (blocker / "matplotlib").mkdir(parents=True)
    (blocker / "matplotlib" / "__init__.py").write_text("raise ImportError('blocked for the test')\n")
    r = fastpg_cmd("plot", "lq", small_fig1.files["orm"], "--out", tmp_path / "p.png",
                   env={"PYTHONPATH": str(blocker)})
    assert r.returncode == 2 and "pip install 'fastpg[plot]'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "p.png").exists()


def test_load_and_to_pandas(small_fig1):
    run = fastpg.load(small_fig1.files["prm"])
    df = run.to_pandas()
    assert list(df["steps"]) == list(run.trace["steps"])
    assert run.likelihood.shape == (run.rows, SMALL_FIG1["n_test"])
    assert run.config["N"] == SMALL_FIG1["N"] and run.lq["cdf"].shape == run.lq["alpha"].shape
    np.testing.assert_array_equal(run.queries, run.trace["prm_queries"])


def test_slope_fits():
    n = np.logspace(1, 5, 30)
    err = 50.0 / n
    assert fit_loglog_slope(n, err, n_test=10**6) == pytest.approx(-1.0, abs=1e-9)
    assert math.isnan(fit_loglog_slope(n, np.zeros_like(n), n_test=100))

    class Run:
        def __init__(self, g):
            self.task = {"gamma": g}
            self.config = {"n_test": 10**7}
            self.trace = {"steps": n, "greedy_error": np.minimum(0.9, 0.01 / (g * g * n))}

    assert pooled_rate_slope([Run(0.01), Run(0.03)]) == pytest.approx(-1.0, abs=1e-9)


def test_cluster_exceptions_on_a_hand_made_task():
    """Two clusters; in the first, three contexts answer (0, 1) and one (0, 2): the last is the
    exception, leaving the majority at position 1. A context is stuck when its final likelihood
    is below 1/2."""
    from types import SimpleNamespace

    from fastpg.analysis.summaries import cluster_exceptions

    centres = np.eye(2)
    X = np.array([[1, 0.1], [1, 0.0], [1, -0.1], [1, 0.2], [0.1, 1], [0.0, 1]], float)
    Y = np.array([[0, 1], [0, 1], [0, 1], [0, 2], [3, 3], [3, 3]])
    final = np.log([0.9, 0.9, 0.2, 0.1, 0.99, 0.6])
    token = np.log(np.full((6, 2), 0.5))
    token[3, 1] = np.log(0.125)
    run = SimpleNamespace(loglik=np.stack([np.zeros(6), final]), base={"token_loglik": token})
    ex = cluster_exceptions(run, {"test_x": X, "test_y": Y, "centres": centres})
    assert list(ex["cluster"]) == [0, 0, 0, 0, 1, 1]
    assert list(ex["exception"]) == [False, False, False, True, False, False]
    assert list(ex["stuck"]) == [False, False, True, True, False, False]
    assert list(ex["leave"]) == [-1, -1, -1, 1, -1, -1]
    assert ex["base_token"][3] == pytest.approx(0.125) and np.isnan(ex["base_token"][:3]).all()
    assert (ex["n_stuck"], ex["n_exceptions"], ex["stuck_exceptions"]) == (2, 1, 1)
    none = cluster_exceptions(run, {"test_x": X, "test_y": Y, "centres": np.zeros((0, 2))})  # a sphere task
    assert list(none["cluster"]) == [-1] * 6 and none["n_exceptions"] == 0 and none["n_stuck"] == 2


@pytest.mark.slow
def test_resume_refuses_complete_files_made_with_other_parameters(tmp_path):
    """A folder from an earlier default (Figure 1's wide clusters) is not silently reused by a resume."""
    from fastpg.config import ConfigError

    small = dict(SMALL_FIG1, steps=50)
    fig1(tmp_path, small, seeds=[0], resume=True)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.h5")}
    fig1(tmp_path, small, seeds=[0], resume=True)  # the same parameters: kept as they are
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.h5")} == stamps
    with pytest.raises(ConfigError, match="^outdir: fig1-orm-seed0.h5 was made with sigma=0.01, not 0.05"):
        fig1(tmp_path, small, seeds=[0], resume=True, wide=True)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.h5")} == stamps  # nothing touched
