"""KL to the base model (docs/design.md, "KL to the base model"; beyond the paper): where does a KL
penalty leave each context, and which gradient does each of the practitioners' estimators follow?

Two measurements:

* **The regularised optimum.** Maximising ``E[r] - beta KL(pi || pi_0)`` over all policies gives
  ``pi*(y) ~ pi_0(y) e^{r(y)/beta}``: a context whose base likelihood is ``alpha`` ends at
  ``p*(alpha) = alpha e^{1/beta} / (1 - alpha + alpha e^{1/beta})``. On Figure 1's skills (tight
  orthonormal clusters, each with its own logits) with one-token responses the linear model can
  represent every such policy, so PG with the exact KL gradient should end on the curve. The row's
  rule: mean ``|pi_final(y*|x) - p*(alpha)|`` over test contexts at most ``MAX_GAP`` for every beta
  and seed; powered where both alternatives (no KL: likelihood 1; a KL to the uniform model:
  ``p*(1/k)``) are at least twice as far.
* **The estimators' expected gradients.** At a fixed post-trained ``W`` on Figure 1's task, the KL
  term's update (no outcome reward) is averaged over many sampled responses
  (:func:`fastpg.kernels.kl.kl_term_updates`) for each estimator and placement, and compared with
  the reverse KL's exact gradient and with the forward (token) KL's gradient ``pi_i - pi_0,i``.
  Theory (position features): ``k1`` in the loss has expected gradient 0, ``k1`` in the reward and
  ``k2`` in the loss follow the reverse KL, ``k3`` in the loss the forward KL; ``k2`` and ``k3`` in
  the reward follow neither (reported).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import codes
from .. import config as C
from ..analysis.plots import kl_figure, save
from ..api import run
from ..kernels.kl import add_kl_gradient, kl_term_updates
from ..kernels.rng import seed_sequence, xoshiro_state
from ..kernels.tables import new_table
from ..runs import base_model, run_params
from ..store import COMPLETE, load, read_status
from ..tasks import make_task
from .claims import Claim, Experiment, Outcome, Rule, Section, fmt, interval, span

FIG1_TASK = {k: v for k, v in C.PRESETS["fig1-orm"].items() if k not in ("reward", "steps", "eval_log")}
# Figure 1's skills with one-token responses and k = 8: every policy of a skill is representable
OPTIMUM_TASK = {**FIG1_TASK, "k": 8, "N": 1, "n_pre": 300, "G": 4, "baseline": "rloo", "lr": "constant", "eta": 0.2,
                "n_test": 512, "eval_log": 10, "kl_estimator": "exact"}
BETAS = (0.3, 1.0, 3.0)
MAX_GAP = 0.03  # mean |p_final - p*| allowed (the runs measured 0.003-0.018)
PLACEMENTS = (("k1", "loss"), ("k2", "loss"), ("k3", "loss"), ("k1", "reward"), ("k2", "reward"), ("k3", "reward"))
MAX_DISTANCE = 0.1  # relative distance of an expected update to the gradient it should follow
MIN_APART = 0.3  # the reverse and forward gradients must differ by this much for the rows to tell them apart


def optimum(alpha, beta):
    """``p*(alpha) = alpha e^{1/beta} / (1 - alpha + alpha e^{1/beta})``, in a form that does not overflow."""
    alpha = np.asarray(alpha, dtype=float)
    return alpha / (alpha + (1.0 - alpha) * np.exp(-1.0 / beta))


def optimum_runs(out: Path, s: dict) -> dict:
    """``{(beta, estimator, seed): RunData}`` (resumable)."""
    out.mkdir(parents=True, exist_ok=True)
    done = {}
    cases = [(beta, "exact", "loss") for beta in BETAS] + [(1.0, e, i) for e, i in (("k1", "reward"), ("k3", "loss"))]
    for beta, estimator, kl_in in cases:
        for seed in s["seeds"]:
            path = out / f"optimum-beta{beta:g}-{estimator}-{kl_in}-seed{seed}.h5"
            if not (path.exists() and read_status(path) == COMPLETE):
                run({**OPTIMUM_TASK, "steps": s["steps"], "kl_coef": beta, "kl_estimator": estimator, "kl_in": kl_in,
                     "seed": seed}, path, overwrite=True)
            done[(beta, f"{estimator} in the {kl_in}", seed)] = load(path)
    return done


def gap(data, beta, reference=None) -> float:
    """Mean ``|p - p*(alpha)|`` over test contexts: the final likelihoods (or ``reference``) against the optimum."""
    alpha = np.exp(data.base["loglik"])
    p = np.exp(data.loglik[-1]) if reference is None else reference
    return float(np.mean(np.abs(p - optimum(alpha, beta))))


def forward_gradient(W, W_ref, x):
    """``-(pi_b - pi_0,b)`` per block (position features): minus the gradient of ``KL(pi_0 || pi)``
    with respect to the logits of each position, the expected update of ``k3`` in the loss."""
    def softmax(s):
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return -(softmax(W @ x) - softmax(W_ref @ x))


def estimator_updates(out: Path, s: dict) -> dict:
    """Monte Carlo expected KL updates of each placement at a post-trained ``W`` of Figure 1's task,
    with the exact reverse and forward gradients, stacked over test contexts."""
    cfg = C.RunConfig(**{**FIG1_TASK, "steps": s["pretrain_steps"], "eval_log": 3})
    out.mkdir(parents=True, exist_ok=True)
    path = out / "estimators-W.h5"
    if not (path.exists() and read_status(path) == COMPLETE):
        run(cfg, path, overwrite=True)
    W = np.ascontiguousarray(load(path).W)
    task = make_task(cfg)
    W_ref = base_model(cfg, task)
    B, k = W.shape[:2]
    X, Y = task.test_x[:s["contexts"]], task.test_y[:s["contexts"]].astype(np.int64)
    reverse = np.zeros((len(X), B, k))
    for j, x in enumerate(X):
        add_kl_gradient(W, W_ref, x, codes.POSITION, cfg.N, *new_table(B, k), *new_table(B, k),
                        np.zeros((cfg.N, k + 1)), np.zeros((2, k + 1)), -1.0, reverse[j], np.zeros(B, dtype=np.bool_))
    result = {"reverse": reverse, "forward": np.array([forward_gradient(W, W_ref, x) for x in X]),
              "kl": float(load(path).trace["kl_to_base"][-1])}
    for estimator, kl_in in PLACEMENTS:
        kcfg = C.RunConfig(**{**FIG1_TASK, "lr": "constant", "eta": 1.0, "kl_coef": 1.0, "kl_estimator": estimator,
                              "kl_in": kl_in})
        p = run_params(kcfg, task, algorithm=codes.PG, lr="constant", eta=1.0)[()]
        mean, var = np.empty((len(X), B, k)), np.empty((len(X), B, k))
        for j, x in enumerate(X):
            state = xoshiro_state(seed_sequence(j, "kl-estimators", {"estimator": estimator, "kl_in": kl_in}))
            kl_term_updates(W, W_ref, x, Y[j], p, state, s["draws"], mean[j], var[j])
        result[(estimator, kl_in)] = (mean, float(np.sqrt(var.sum() / s["draws"])))
    return result


def distances(result, placement) -> dict:
    """Relative distances of a placement's mean update to 0 and to the reverse and forward gradients,
    and the Monte Carlo noise (the expected norm of the mean's error) relative to each of them."""
    mean, noise = result[placement]
    rev, fwd = result["reverse"], result["forward"]
    norm = np.linalg.norm
    return {"zero": norm(mean) / norm(rev), "reverse": norm(mean - rev) / norm(rev),
            "forward": norm(mean - fwd) / norm(fwd), "noise_zero": noise / norm(rev), "noise_reverse": noise / norm(rev),
            "noise_forward": noise / norm(fwd)}


def reproduce_kl(out: Path, s: dict, progress=None) -> Outcome:
    data = optimum_runs(out, s)
    seeds = s["seeds"]
    claims = []
    k = OPTIMUM_TASK["k"]
    for beta in BETAS:
        runs = [data[(beta, "exact in the loss", seed)] for seed in seeds]
        gaps = interval([gap(d, beta) for d in runs])
        none = min(gap(d, beta, np.ones(d.loglik.shape[1])) for d in runs)
        uniform = min(gap(d, beta, np.full(d.loglik.shape[1], optimum(1.0 / k, beta))) for d in runs)
        claims.append(Claim(
            "KL to the base", f"beta={beta:g}: PG with the exact KL gradient ends at the regularised optimum "
            "p*(alpha) of each context", "mean |pi_final(y*|x) - p*(alpha)| over test contexts (one-token responses "
            "on Figure 1's skills, k=8)", *gaps, "0 (every policy of a skill is representable)",
            checks=[(Rule("max over seeds", high=MAX_GAP), gaps[2])], powered=min(none, uniform) >= 2 * MAX_GAP,
            power=f"without the KL term the gap would be {fmt(none)}, with a KL to the uniform model {fmt(uniform)} "
                  "(defect kl-uniform-ref)"))
    for label in ("k1 in the reward", "k3 in the loss"):
        gaps = interval([gap(data[(1.0, label, seed)], 1.0) for seed in seeds])
        claims.append(Claim("KL to the base", f"beta=1, {label}: distance of the final likelihoods from p*(alpha)",
                            "mean |pi_final(y*|x) - p*(alpha)| (same runs as the rows above)", *gaps, theory="-",
                            note="reported: k1 in the reward is unbiased for the reverse KL; k3 in the loss follows "
                                 "the forward KL, whose optimum is another curve"))
    est = estimator_updates(out, s)
    apart = float(np.linalg.norm(est["reverse"] - est["forward"]) / np.linalg.norm(est["reverse"]))
    dist = {placement: distances(est, placement) for placement in PLACEMENTS}
    where = (f"the KL term's mean update over {s['draws']:,} sampled responses per context, {s['contexts']} test "
             f"contexts of Figure 1's task, at W after {s['pretrain_steps']:,} steps of PG + ORM (KL to the base "
             f"{fmt(est['kl'])} nats)")
    follows = [(("k1", "loss"), "zero", "has zero expected gradient", "0"),
               (("k1", "reward"), "reverse", "follows the reverse KL KL(pi || pi_0)", "the reverse KL's gradient"),
               (("k2", "loss"), "reverse", "follows the reverse KL KL(pi || pi_0)", "the reverse KL's gradient"),
               (("k3", "loss"), "forward", "follows the forward KL KL(pi_0 || pi) per token",
                "the forward KL's gradient")]
    for placement, target, text, theory in follows:
        d = dist[placement]
        name = f"{placement[0]} in the {placement[1]}"
        measured = ("|mean update| / |reverse gradient|" if target == "zero" else
                    f"|mean update - {target} gradient| / |{target} gradient|")
        claims.append(Claim(
            "KL to the base", f"{name} {text}", f"{measured}: {where}", d[target], theory=theory,
            checks=[(Rule("relative distance", high=MAX_DISTANCE), d[target])],
            powered=apart >= MIN_APART and d[f"noise_{target}"] <= MAX_DISTANCE / 2,
            power=f"the reverse and forward gradients differ by {fmt(apart)} of the reverse one; Monte Carlo noise "
                  f"{fmt(d[f'noise_{target}'])} (defect kl-estimator-shift)"))
    for placement in (("k2", "reward"), ("k3", "reward")):
        d = dist[placement]
        claims.append(Claim("KL to the base", f"{placement[0]} in the {placement[1]}: which gradient does it follow?",
                            f"relative distance to the reverse KL's gradient: {where}", d["reverse"], theory="-",
                            note=f"reported: to the forward KL's {fmt(d['forward'])}, to zero {fmt(d['zero'])}; "
                                 f"noise {fmt(d['noise_reverse'])}"))
    figure = out / "kl.png"
    save(kl_figure({(b, label): data[(b, label, seeds[0])] for (b, label, seed) in data if seed == seeds[0]}, optimum,
                   dist), figure)
    gaps_all = [gap(data[(beta, "exact in the loss", seed)], beta) for beta in BETAS for seed in seeds]
    sections = [Section(
        "KL to the base model (beyond the paper)",
        f"Left: PG with a KL penalty to the base model (`--kl-coef` beta = {', '.join(f'{b:g}' for b in BETAS)}, the "
        "exact gradient) on Figure 1's skills with one-token responses, k = 8, seed "
        f"{seeds[0]}: each test context's final likelihood against its base likelihood alpha, with the regularised "
        f"optimum p*(alpha) drawn over it (mean gap {span(min(gaps_all), max(gaps_all))} over betas and seeds "
        f"{seeds}). Right: how far each estimator's expected update lies from the reverse KL's gradient, from the "
        "forward KL's and from zero.", figure)]
    return Outcome(claims, sections, {"optimum": data, "estimators": dist})


EXPERIMENT = Experiment("kl", 70, reproduce_kl,
                        full={"seeds": [0, 1, 2], "steps": 20000, "pretrain_steps": 5000, "contexts": 16,
                              "draws": 400000},
                        quick={"seeds": [0], "contexts": 4, "draws": 500000})
