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
# Figure 1's task itself (eight tokens) with a KL term: where do the final likelihoods go?
FIG1_KL = {**FIG1_TASK, "lr": "constant", "eta": 0.5, "eval_log": 10}
FIG1_BETAS = (0.03, 0.3)
MIDDLE = (0.1, 0.9)  # a final likelihood in between: neither solved nor left
MAX_GAP = 0.03  # mean |p_final - p*| allowed (the runs measured 0.003-0.018)
PLACEMENTS = (("k1", "loss"), ("k2", "loss"), ("k3", "loss"), ("k1", "reward"), ("k2", "reward"), ("k3", "reward"))
MAX_DISTANCE = 0.1  # relative distance of an expected update to the gradient it should follow
MIN_APART = 0.3  # the reverse and forward gradients must differ by this much for the rows to tell them apart


def optimum(alpha, beta):
    """``p*(alpha) = alpha e^{1/beta} / (1 - alpha + alpha e^{1/beta})``, in a form that does not overflow."""
    alpha = np.asarray(alpha, dtype=float)
    return alpha / (alpha + (1.0 - alpha) * np.exp(-1.0 / beta))


def forward_optimum(alpha, beta):
    """The one-token optimum of ``E[r] - beta KL(pi_0 || pi)`` (the forward KL, which ``k3`` in the
    loss follows): the root in ``[0, 1]`` of ``p^2 + (beta - 1) p - beta alpha = 0``."""
    alpha = np.asarray(alpha, dtype=float)
    b = beta - 1.0
    return 2.0 * beta * alpha / (np.sqrt(b * b + 4.0 * beta * alpha) - b) if b < 0 else \
        (np.sqrt(b * b + 4.0 * beta * alpha) - b) / 2.0


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


def fig1_runs(out: Path, s: dict) -> dict:
    """``{(beta, reward, seed): RunData}`` on Figure 1's task with a KL term (resumable)."""
    done = {}
    for beta in FIG1_BETAS:
        for reward in ("orm", "prm"):
            for seed in s["seeds"]:
                path = out / f"fig1-beta{beta:g}-{reward}-seed{seed}.h5"
                if not (path.exists() and read_status(path) == COMPLETE):
                    run({**FIG1_KL, "reward": reward, "kl_coef": beta, "steps": s["fig1_steps"], "seed": seed}, path,
                        overwrite=True)
                done[(beta, reward, seed)] = load(path)
    return done


def gap(data, beta, reference=None, curve=optimum) -> float:
    """Mean ``|p - curve(alpha)|`` over test contexts: the final likelihoods (or ``reference``)
    against the optimum (by default the reverse KL's, ``p*``)."""
    alpha = np.exp(data.base["loglik"])
    p = np.exp(data.loglik[-1]) if reference is None else reference
    return float(np.mean(np.abs(p - curve(alpha, beta))))


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
    forward = np.array([forward_gradient(W, W_ref, x) for x in X])
    result = {"reverse": reverse, "forward": forward, "difference": reverse - forward,
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
    norm = np.linalg.norm
    out = {"zero": norm(mean) / norm(result["reverse"]), "noise_zero": noise / norm(result["reverse"])}
    for target in ("reverse", "forward", "difference"):
        out[target] = norm(mean - result[target]) / norm(result[target])
        out[f"noise_{target}"] = noise / norm(result[target])
    return out


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
    gaps = interval([gap(data[(1.0, "k1 in the reward", seed)], 1.0) for seed in seeds])
    claims.append(Claim("KL to the base", "beta=1, k1 in the reward: distance of the final likelihoods from p*(alpha)",
                        "mean |pi_final(y*|x) - p*(alpha)| (the task of the rows above)", *gaps, theory="-",
                        note="reported: k1 in the reward is unbiased for the reverse KL; it ends closer than the exact "
                             "gradient because at the optimum the shaped reward r - beta log(pi/pi_0) is the same for "
                             "every response, so its rloo advantages, and the noise of its steps, vanish there"))
    runs_k3 = [data[(1.0, "k3 in the loss", seed)] for seed in seeds]
    gaps = interval([gap(d, 1.0, curve=forward_optimum) for d in runs_k3])
    apart_curves = min(float(np.mean(np.abs(forward_optimum(np.exp(d.base["loglik"]), 1.0) -
                                            optimum(np.exp(d.base["loglik"]), 1.0)))) for d in runs_k3)
    claims.append(Claim("KL to the base", "beta=1, k3 in the loss: distance of the final likelihoods from the forward "
                        "KL's optimum (sqrt(alpha) at beta=1)", "mean |pi_final(y*|x) - p_fwd(alpha)|, p_fwd the root "
                        "of p^2 + (beta - 1) p - beta alpha (the task of the rows above)", *gaps, theory="-",
                        note=f"reported: its distance from p*(alpha) is {span(*interval([gap(d, 1.0) for d in runs_k3])[1:])}"
                             f"; the two curves are only {fmt(apart_curves)} apart here, too close for a rule"))
    fig1 = fig1_runs(out, s)
    for beta in FIG1_BETAS:
        for reward in ("orm", "prm"):
            finals = [np.exp(fig1[(beta, reward, seed)].loglik[-1]) for seed in seeds]
            middle = interval([np.mean((p > MIDDLE[0]) & (p < MIDDLE[1])) for p in finals])
            low = interval([np.mean(p <= MIDDLE[0]) for p in finals])
            gaps = interval([gap(fig1[(beta, reward, seed)], beta) for seed in seeds])
            claims.append(Claim(
                "KL to the base", f"Figure 1's task, beta={beta:g}, {reward.upper()}: are the final likelihoods "
                "bimodal?", f"fraction of test contexts with final likelihood in ({MIDDLE[0]:g}, {MIDDLE[1]:g}) "
                f"after {s['fig1_steps']:,} steps (lr constant, eta {FIG1_KL['eta']:g})", *middle, theory="-",
                note=f"reported: at most {MIDDLE[0]:g}: {span(low[1], low[2])}; mean |pi_final - p*(alpha)| "
                     f"{span(gaps[1], gaps[2])} (not a prediction here: with eight tokens the policy is a product over "
                     "positions)"))
    est = estimator_updates(out, s)
    apart = float(np.linalg.norm(est["reverse"] - est["forward"]) / np.linalg.norm(est["reverse"]))
    dist = {placement: distances(est, placement) for placement in PLACEMENTS}
    where = (f"the KL term's mean update over {s['draws']:,} sampled responses per context, {s['contexts']} test "
             f"contexts of Figure 1's task, at W after {s['pretrain_steps']:,} steps of PG + ORM (KL to the base "
             f"{fmt(est['kl'])} nats)")
    follows = [(("k1", "loss"), "zero", "has zero expected gradient", "0"),
               (("k1", "reward"), "reverse", "follows the reverse KL KL(pi || pi_0)", "the reverse KL's gradient"),
               (("k2", "loss"), "reverse", "follows the reverse KL KL(pi || pi_0) (position features)",
                "the reverse KL's gradient"),
               (("k3", "loss"), "forward", "follows the forward KL KL(pi_0 || pi) (position features)",
                "the forward KL's gradient"),
               (("k3", "reward"), "difference", "follows the reverse KL's gradient minus the forward KL's (position "
                "features)", "their difference")]
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
    for placement in (("k2", "reward"),):
        d = dist[placement]
        claims.append(Claim("KL to the base", f"{placement[0]} in the {placement[1]}: which gradient does it follow?",
                            f"relative distance to the reverse KL's gradient: {where}", d["reverse"], theory="-",
                            note=f"reported: to the forward KL's {fmt(d['forward'])}, to zero {fmt(d['zero'])}; "
                                 f"noise {fmt(d['noise_reverse'])}"))
    figure = out / "kl.png"
    save(kl_figure({(b, label): data[(b, label, seeds[0])] for (b, label, seed) in data if seed == seeds[0]}, optimum,
                   dist, {(b, reward): fig1[(b, reward, seeds[0])] for b in FIG1_BETAS for reward in ("orm", "prm")}),
         figure)
    gaps_all = [gap(data[(beta, "exact in the loss", seed)], beta) for beta in BETAS for seed in seeds]
    sections = [Section(
        "KL to the base model (beyond the paper)",
        f"Left: PG with a KL penalty to the base model (`--kl-coef` beta = {', '.join(f'{b:g}' for b in BETAS)}, the "
        "exact gradient) on Figure 1's skills with one-token responses, k = 8, seed "
        f"{seeds[0]}: each test context's final likelihood against its base likelihood alpha, with the regularised "
        f"optimum p*(alpha) drawn over it (mean gap {span(min(gaps_all), max(gaps_all))} over betas and seeds "
        f"{seeds}). Middle: the final likelihoods on Figure 1's task itself (eight tokens) with a KL term, per "
        "beta and reward. Right: how far each estimator's expected update lies from the reverse KL's gradient, "
        "from the forward KL's, from their difference and from zero.", figure)]
    return Outcome(claims, sections, {"optimum": data, "fig1": fig1, "estimators": dist})


EXPERIMENT = Experiment("kl", 70, reproduce_kl,
                        full={"seeds": [0, 1, 2], "steps": 20000, "pretrain_steps": 5000, "contexts": 16,
                              "draws": 400000, "fig1_steps": 50000},
                        quick={"seeds": [0], "contexts": 4, "draws": 500000, "fig1_steps": 20000})
