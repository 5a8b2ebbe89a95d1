"""Figures from loaded result files (:class:`fastpg.result.RunData`); never reruns anything.

Needs matplotlib (the optional extra ``plot``); :func:`require_matplotlib` gives a one-line
error naming the extra when it is missing.
"""

from __future__ import annotations

import math

import numpy as np

from .fits import fit_loglog_slope
from .summaries import LEVEL_AXES, group_label, growth_text

X_AXES = ("steps", "queries")


class PlotUnavailable(ImportError):
    """matplotlib is not installed."""


def require_matplotlib():
    """Import matplotlib with the non-interactive Agg backend, or raise :class:`PlotUnavailable`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable("plots need matplotlib: pip install 'fastpg[plot]'") from None
    return plt


def x_values(run, x: str) -> tuple[np.ndarray, str]:
    """The x axis of a trace: post-training steps or total reward queries (ORM + PRM)."""
    if x == "queries":
        return run.queries, "reward queries (ORM + PRM)"
    return run.trace["steps"], "samples seen" if run.experiment == "pretrain" else "post-training steps"


def _positive(xs, *ys):
    """Drop the x = 0 row (step 0) so that the x axis can be logarithmic."""
    keep = xs > 0
    return (xs[keep], *(y[keep] for y in ys))


def _trajectories(fig, ax, run, x, max_contexts=200):
    """Draw per-context likelihood trajectories on ``ax``, coloured by base likelihood; returns (shown, n)."""
    plt = require_matplotlib()
    from matplotlib.colors import LogNorm

    xs, _ = x_values(run, x)
    base_lik = np.exp(run.base["loglik"])
    n = run.likelihood.shape[1]
    shown = np.random.default_rng(0).choice(n, size=min(n, max_contexts), replace=False)
    floor = 1e-12  # colour scale floor: likelihoods below it share the darkest colour
    norm = LogNorm(vmin=max(float(base_lik.min()), floor), vmax=1.0)
    cmap = plt.get_cmap("viridis")
    keep = xs > 0
    for j in shown[np.argsort(base_lik[shown])]:
        ax.plot(xs[keep], run.likelihood[keep, j], color=cmap(norm(max(base_lik[j], floor))), lw=0.7, alpha=0.7)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="base likelihood pi_0(y*|x)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("likelihood of the correct response")
    return len(shown), n


def fig1_figure(orm, prm):
    """The paper's Figure 1 from ORM and PRM runs of the same tasks, against steps (top row) and
    against reward queries (bottom row).

    ``orm`` and ``prm`` are runs (or lists of runs, one per seed, in the same order). Left: mean
    likelihood over test contexts whose base likelihood is below ``alpha_off``. Center: expected
    test error, with the off-support fraction ``P_j[pi_0 < alpha_off]``. Right: per-context
    likelihood trajectories, coloured by base likelihood (log scale), of the first ORM run against
    steps (top) and of the first PRM run against queries (bottom). Each
    seed is a thin line, their mean a thick one.
    """
    plt = require_matplotlib()
    orm = orm if isinstance(orm, (list, tuple)) else [orm]
    prm = prm if isinstance(prm, (list, tuple)) else [prm]
    alpha_off = orm[0].config["alpha_off"]
    off = [float(r.base["offsupport_fraction"]) for r in orm]
    fig, axes = plt.subplots(2, 3, figsize=(16, 9), constrained_layout=True)
    colors = {"ORM": "tab:red", "PRM": "tab:blue"}
    for row, x in enumerate(("steps", "queries")):
        for name, runs in (("ORM", orm), ("PRM", prm)):
            curves = []
            for r in runs:
                xs, label = x_values(r, x)
                xs, lik, err = _positive(xs, r.trace["offsupport_likelihood"], r.trace["expected_error"])
                axes[row, 0].plot(xs, lik, color=colors[name], lw=0.7, alpha=0.5)
                axes[row, 1].plot(xs, err, color=colors[name], lw=0.7, alpha=0.5)
                curves.append((xs, lik, err))
            if x == "steps" or len(runs) == 1:  # seeds share the step grid; queries differ per seed
                xs = curves[0][0]
                n = min(len(c[0]) for c in curves)
                axes[row, 0].plot(xs[:n], np.mean([c[1][:n] for c in curves], axis=0), color=colors[name], lw=2.2,
                                  label=f"PG + {name}" + (f" (mean of {len(runs)} seeds)" if len(runs) > 1 else ""))
                axes[row, 1].plot(xs[:n], np.mean([c[2][:n] for c in curves], axis=0), color=colors[name], lw=2.2,
                                  label=f"PG + {name}")
            else:
                axes[row, 0].plot([], [], color=colors[name], lw=2, label=f"PG + {name} (one line per seed)")
                axes[row, 1].plot([], [], color=colors[name], lw=2, label=f"PG + {name}")
        axes[row, 0].set_ylim(-0.03, 1.03)
        axes[row, 0].set_title(f"off-support contexts (base likelihood < {alpha_off:g}; "
                               f"{min(off):.0%}-{max(off):.0%} of test set)" if len(off) > 1 else
                               f"off-support contexts (base likelihood < {alpha_off:g}; {off[0]:.0%} of test set)")
        axes[row, 0].set_ylabel("mean likelihood of the correct response")
        axes[row, 1].axhline(float(np.mean(off)), color="gray", ls="--", lw=1.2,
                             label=f"off-support fraction P[base lik. < {alpha_off:g}], mean")
        axes[row, 1].set_ylim(0, 1.02)
        axes[row, 1].set_title("expected test error 1 - E[pi(y*|x)]")
        axes[row, 1].set_ylabel("expected test error")
        # right: ORM's per-context trajectories against steps (the paper's panel), PRM's against queries
        # (with G = 1, ORM's queries are its steps: the same panel twice)
        name, run = ("ORM", orm[0]) if row == 0 else ("PRM", prm[0])
        shown, n = _trajectories(fig, axes[row, 2], run, x)
        axes[row, 2].set_title(f"PG + {name}, seed {run.config['seed']}: likelihood per test context ({shown} of {n})")
        for ax in axes[row]:
            ax.set_xscale("log")
            ax.set_xlabel(x_values(orm[0], x)[1])
            ax.grid(alpha=0.3)
        axes[row, 0].legend(loc="center left", fontsize=8)
        axes[row, 1].legend(loc="lower left", fontsize=8)
    cfg = orm[0].config
    margin = (f"margin gamma = {float(orm[0].task['gamma']):.3g} (pilot quantile {cfg['gamma_quantile']:g})"
              if cfg.get("gamma_quantile") is not None else f"margin gamma = {cfg['gamma']:g}")
    fig.suptitle(f"Figure 1: d={cfg['d']}, k={cfg['k']}, N={cfg['N']}, {cfg['contexts']} (C={cfg['C']}, "
                 f"sigma={cfg['sigma']:g}, zipf={cfg['zipf']}), "
                 f"{margin}, base={cfg['base']} (n_pre={cfg['n_pre']}), pg G={cfg['G']}, lr={cfg['lr']} eta={cfg['eta']}, "
                 f"seeds {', '.join(str(r.config['seed']) for r in orm)}")
    return fig


def exceptions_figure(prm, exceptions):
    """What stops on-policy PG + PRM: the stuck test contexts (final likelihood below 1/2) against
    the exceptions of their clusters (:func:`fastpg.analysis.summaries.cluster_exceptions`), one entry of
    ``exceptions`` per run of ``prm``. Left: per cluster, the fraction stuck against the fraction of
    exceptions (all runs). Centre: mean log-likelihood over steps of the stuck exceptions, the other
    exceptions and the rest (first run): the stuck ones fall. Right: the base model's likelihood of
    the correct token where an exception leaves its cluster's majority, stuck or not (all runs)."""
    plt = require_matplotlib()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), constrained_layout=True)
    for i, ex in enumerate(exceptions):
        clusters = np.unique(ex["cluster"][ex["cluster"] >= 0])  # none on a task without clusters
        frac_ex = [ex["exception"][ex["cluster"] == c].mean() for c in clusters]
        frac_stuck = [ex["stuck"][ex["cluster"] == c].mean() for c in clusters]
        axes[0].scatter(frac_ex, frac_stuck, s=14, alpha=0.7, label=f"seed {prm[i].config['seed']}: "
                        f"{ex['stuck_exceptions']} of {ex['n_stuck']} stuck are exceptions")
    axes[0].plot([0, 1], [0, 1], ":", color="gray", lw=1)
    axes[0].set(xlabel="fraction of the cluster's test contexts that are exceptions", ylabel="fraction stuck (< 1/2)",
                title="per cluster: stuck against exceptions")
    axes[0].legend(fontsize=7)
    run, ex = prm[0], exceptions[0]
    steps = np.asarray(run.trace["steps"], float)
    keep = steps > 0
    groups = (("stuck exceptions", ex["stuck"] & ex["exception"], "tab:red"),
              ("other exceptions", ~ex["stuck"] & ex["exception"], "tab:orange"),
              ("the rest", ~ex["exception"], "tab:blue"))
    for label, mask, color in groups:
        if mask.any():
            axes[1].plot(steps[keep], run.loglik[keep][:, mask].mean(axis=1), color=color, lw=2,
                         label=f"{label} ({int(mask.sum())})")
    axes[1].set(xscale="log", xlabel="post-training steps", ylabel="mean log-likelihood of the correct response",
                title=f"PG + PRM, seed {run.config['seed']}: the stuck fall")
    axes[1].legend(fontsize=8)
    axes[1].grid(alpha=0.3)
    stuck = np.concatenate([e["base_token"][e["stuck"] & e["exception"]] for e in exceptions])
    free = np.concatenate([e["base_token"][~e["stuck"] & e["exception"]] for e in exceptions])
    bins = np.logspace(-12, 0, 25)
    for values, label, color in ((stuck, "stuck", "tab:red"), (free, "learned", "tab:blue")):
        if len(values):
            axes[2].hist(np.clip(values, 1e-12, 1), bins=bins, alpha=0.6, color=color, label=f"{label} ({len(values)})")
    axes[2].set(xscale="log", xlabel="base likelihood of the correct token where it leaves the majority",
                ylabel="exceptions", title="at the base model, most had a likely correct token there")
    if len(stuck) or len(free):
        axes[2].legend(fontsize=8)
    else:
        axes[2].text(0.5, 0.5, "no exceptions: each cluster has one correct response", ha="center",
                     transform=axes[2].transAxes)
    cfg = run.config
    fig.suptitle(f"Stuck contexts of PG + PRM (G={cfg['G']}, baseline {cfg['baseline']}, lr {cfg['lr']}): "
                 f"clusters C={cfg['C']}, sigma={cfg['sigma']:g}, {cfg['steps']} steps")
    return fig


def trajectories_figure(run, x: str = "steps", max_contexts: int = 200):
    """Per-context likelihood trajectories of one run, coloured by base likelihood (log scale)."""
    plt = require_matplotlib()

    fig, ax = plt.subplots(figsize=(7, 4.8), constrained_layout=True)
    shown, n = _trajectories(fig, ax, run, x, max_contexts)
    label = x_values(run, x)[1]
    cfg = run.config
    ax.set(xscale="log", xlabel=label, title=f"{cfg['algorithm']} + {cfg['reward'].upper()}: {shown} of {n} test contexts")
    ax.grid(alpha=0.3)
    return fig


def lq_figure(runs, labels=None):
    """Likelihood Quantile of base models: ``P_j[pi_0(y*_j|x_j) <= alpha]`` and its token-level twin."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(7.5, 4.8), constrained_layout=True)
    labels = labels or [run.path for run in runs]
    for i, (run, label) in enumerate(zip(runs, labels)):
        color = f"C{i}"
        alpha = run.lq["alpha"]
        ax.step(alpha, run.lq["cdf"], where="post", color=color, lw=2, label=f"{label}: sequence pi_0(y*|x)")
        ax.step(alpha, run.lq["token_cdf"], where="post", color=color, lw=1.5, ls="--",
                label=f"{label}: token min_i pi_0(y*_i|x,y*_<i)")
        a_off = run.config["alpha_off"]
        frac = float(np.mean(run.base["loglik"] <= math.log(a_off)))
        ax.plot([a_off], [frac], "o", color=color)
        ax.annotate(f"{frac:.0%} below {a_off:g}", (a_off, frac), textcoords="offset points", xytext=(6, -12),
                    color=color)
    lo = min(max(float(np.exp(run.lq["loglik_quantile"][0])), 1e-300) for run in runs)
    ax.set(xscale="log", xlim=(max(lo / 10, 1e-300), 1.5), ylim=(0, 1.02), xlabel="likelihood threshold alpha",
           ylabel="fraction of test contexts with likelihood <= alpha",
           title="Likelihood Quantile of the base model")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def pretrain_figure(runs, metric: str = "greedy_error"):
    """Test error against samples seen for pre-training runs, against the ``1/(gamma^2 n)`` rate.

    Left: the error (log-log) with its fitted slope per run and ``1/(gamma^2 n)`` per margin.
    Right: ``error * gamma^2 * n``, which stays below a constant when the rate holds.
    """
    plt = require_matplotlib()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 5.2), constrained_layout=True)
    gammas = sorted({round(float(run.task["gamma"]), 12) for run in runs})
    styles = {"adaptive": "-", "constant": "--", "invsqrt": ":"}
    n_test = runs[0].config["n_test"]
    for run in runs:
        g = round(float(run.task["gamma"]), 12)
        color = f"C{gammas.index(g)}"
        ls = styles.get(run.config["pre_lr"], "-")
        n, err = _positive(run.trace["steps"], run.trace[metric])
        slope = fit_loglog_slope(n, err, run.config["n_test"])
        label = f"gamma={g:.3g}, {run.config['pre_lr']} (slope {slope:.2f})"
        ax.plot(n, np.maximum(err, 0.5 / n_test), ls, color=color, lw=1.8, label=label)
        resolved = err >= 1.0 / n_test
        ax2.plot(n[resolved], (err * g * g * n)[resolved], ls, color=color, lw=1.8, label=label)
    n_max = max(float(run.trace["steps"][-1]) for run in runs)
    grid = np.logspace(0, math.log10(max(n_max, 10)), 100)
    for i, g in enumerate(gammas):
        if g > 0:
            ax.plot(grid, np.minimum(1.0, 1.0 / (g * g * grid)), color=f"C{i}", lw=1, alpha=0.5, ls="-.",
                    label=f"1/(gamma^2 n), gamma={g:.3g}")
    ax.axhline(1.0 / n_test, color="gray", lw=0.8, ls=":", label=f"resolution 1/n_test = {1 / n_test:.1e}")
    ax2.axhline(1.0, color="gray", lw=1, ls="-.", label="error = 1/(gamma^2 n)")
    cfg = runs[0].config
    what = metric.replace("_", " ")
    ax.set(xscale="log", yscale="log", xlabel="labelled samples seen n", ylabel=f"{what} (test)",
           ylim=(0.3 / n_test, 1.5),
           title=f"Statistical learning (SGD on log-loss): d={cfg['d']}, k={cfg['k']}, N={cfg['N']}, {cfg['contexts']}")
    ax2.set(xscale="log", yscale="log", xlim=(1, max(n_max, 10) * 1.5), xlabel="labelled samples seen n",
            ylabel=f"{what} x gamma^2 n",
            title="rate check: error x gamma^2 n stays bounded (points with >= 1 test error)")
    for a in (ax, ax2):
        a.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower left")
    ax2.legend(fontsize=8, loc="lower right")
    return fig


def save(fig, path) -> str:
    fig.savefig(path, dpi=110)
    require_matplotlib().close(fig)
    return str(path)


def scaling_figure(table, x: str, y: str = "queries_to_eps", eps: float | None = None, facet: str | None = None):
    """``y`` (median over seeds, quartile bars) against grid parameter ``x``, one line per group, log y;
    with ``facet``, one panel per value of that parameter (the groups that have it), y shared.

    Each line is labelled with its fitted growth: slope of ``log y`` in ``x`` and in ``log x``
    (for alpha and eps, in ``log(1/x)``).
    """
    plt = require_matplotlib()
    panels: dict = {}
    for g in table:
        panels.setdefault(g["group"].get(facet) if facet else None, []).append(g)
    keys = sorted(panels, key=lambda v: (isinstance(v, str), v)) if facet else [None]
    most = max(len(v) for v in panels.values()) if panels else 0
    wide = most > 4
    fig, axes = plt.subplots(1, len(keys), figsize=((8 + (4 if wide else 0)) * (1 if len(keys) == 1 else 0.75) * len(keys), 5.2),
                             constrained_layout=True, sharey=True, squeeze=False)
    level = x in LEVEL_AXES  # alpha, eps: log axis, fitted in log(1/x)
    what = y.replace("_", " ") + (f" (eps = {eps:g})" if eps is not None else "")
    for ax, key in zip(axes[0], keys):
        groups = panels.get(key, [])
        for i, g in enumerate(groups):
            name = group_label({k: v for k, v in g["group"].items() if k != facet}) or "all"
            fit = g["fit"]
            label = f"{name}: {growth_text(fit, x).replace('slope of log queries', 'log-slope')}"
            ok = np.isfinite(g["median"]) & (g["median"] > 0)
            hi = np.where(np.isfinite(g["q75"]), g["q75"], g["median"])
            err = np.vstack([g["median"] - g["q25"], hi - g["median"]])
            ax.errorbar(g["x"][ok], g["median"][ok], yerr=err[:, ok], marker="o", capsize=3, color=f"C{i}", lw=1.8,
                        label=label)
            above = [xv for xv, m in zip(g["x"], g["median"]) if math.isinf(m)]
            if above:
                top = float(np.nanmax(np.where(ok, g["median"], np.nan))) * 2 if ok.any() else 1.0
                ax.plot(above, [top] * len(above), "^", color=f"C{i}", mfc="none", ms=9,
                        label=f"{name}: median > budget (over half not reached)")
            if ok.sum() >= 2 and math.isfinite(fit["exp_slope"]):
                t = np.log(1.0 / g["x"]) if level else g["x"]
                a = np.mean(np.log(g["median"][ok]) - fit["exp_slope"] * t[ok])
                ax.plot(g["x"], np.exp(a + fit["exp_slope"] * t), color=f"C{i}", ls=":", lw=1)
        title = (f"{facet} = {key:g}" if isinstance(key, float) else f"{facet} = {key}") if facet else \
            f"{what} against {x} (bars: quartiles; dotted: fit {'in log(1/' + x + ')' if level else 'exponential'})"
        ax.set(yscale="log", xlabel=x, title=title)
        if level:
            ax.set_xscale("log")
            ax.invert_xaxis()  # harder to the right: smaller alpha or eps
        ax.grid(alpha=0.3, which="both")
        if wide and len(keys) == 1:  # many groups: the legend beside the axes, not over them
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        elif groups:
            ax.legend(fontsize=7 if wide else 8)
    axes[0][0].set_ylabel(f"{what}, censored median over seeds")
    if facet:
        fig.suptitle(f"{what} against {x}, one panel per {facet} (bars: quartiles; dotted: fit "
                     f"{'in log(1/' + x + ')' if level else 'exponential'})")
    return fig

def profile_figure(rows: list[dict], N_ref, gamma_ref):
    """Q(alpha, eps) against 1/alpha (log-log), one panel per algorithm and reward, a line per eps.

    Medians over seeds of the reached runs at the reference ``N`` and ``gamma``; a triangle marks
    where some seed did not reach (at the queries it had spent, a lower bound); the dotted line has
    slope 1, the bound's slope where ``1/alpha`` dominates.
    """
    plt = require_matplotlib()
    rows = [r for r in rows if r["level"] == "sequence"]
    pairs = sorted({(r["algorithm"], r["reward"]) for r in rows})
    fig, axes = plt.subplots(1, max(1, len(pairs)), figsize=(4.6 * max(1, len(pairs)), 4.4), constrained_layout=True,
                             squeeze=False)
    for ax, (algorithm, reward) in zip(axes[0], pairs):
        mine = [r for r in rows if r["algorithm"] == algorithm and r["reward"] == reward and r["N"] == N_ref
                and r["gamma_setting"] == gamma_ref]
        for i, eps in enumerate(sorted({r["eps"] for r in mine}, reverse=True)):
            color = f"C{i}"
            xs, med, missing = [], [], []
            for alpha in sorted({r["alpha"] for r in mine}, reverse=True):
                cell = [r for r in mine if r["eps"] == eps and r["alpha"] == alpha]
                got = [r["queries"] for r in cell if r["reached"] and r["queries"] > 0]
                if got:
                    xs.append(1 / alpha)
                    med.append(float(np.median(got)))
                lost = [r["queries_lo"] for r in cell if not r["reached"] and r["queries_lo"] > 0]
                if lost:
                    missing.append((1 / alpha, float(np.median(lost))))
            if xs:
                ax.plot(xs, med, "o-", color=color, lw=1.8, label=f"eps = {eps:g}")
            if missing:
                ax.plot(*zip(*missing), "^", color=color, mfc="none", ms=8)
        ys = [r["queries"] for r in mine if r["reached"] and r["queries"] > 0]
        if ys:
            x0, y0 = 1 / max(r["alpha"] for r in mine), float(np.median(ys))
            guide = np.array([x0, 1 / min(r["alpha"] for r in mine)])
            ax.plot(guide, y0 * guide / x0, ":", color="gray", label="slope 1")
        ax.set(xscale="log", yscale="log", xlabel="1 / alpha (base likelihood level)",
               ylabel="Q(alpha, eps): reward queries", title=f"{algorithm} + {reward.upper()} (N={N_ref}, gamma={gamma_ref:g})")
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:  # nothing labelled when no level was reached
            ax.legend(fontsize=8, title="triangles: not reached", title_fontsize=7)
    return fig


def lq_fit_figure(fits: dict):
    """Expected error against reward queries T with the base model's LQ at ``c/T`` fitted to it
    (:func:`fastpg.analysis.complexity.lq_curve`): ORM against the sequence-level LQ, PRM against the
    token-level LQ (one line per seed)."""
    plt = require_matplotlib()
    rewards = [r for r in ("orm", "prm") if r in fits]
    fig, axes = plt.subplots(1, max(1, len(rewards)), figsize=(6.2 * max(1, len(rewards)), 4.4),
                             constrained_layout=True, squeeze=False)
    for ax, reward in zip(axes[0], rewards):
        level = "sequence" if reward == "orm" else "token"
        for i, fit in enumerate(fits[reward]):
            run = fit["run"]
            T, err = _positive(run.queries, run.trace["expected_error"])
            ax.plot(T, err, color=f"C{i}", lw=1.8, label=f"seed {run.config['seed']}: expected error")
            ax.plot(fit["queries"], fit["curve"], color=f"C{i}", ls="--", lw=1.2,
                    label=f"LQ at c/T, c={fit['c']:.3g}, max gap {fit['max_gap']:.3f}")
        ax.set(xscale="log", ylim=(0, 1.02), xlabel="reward queries T",
               ylabel="expected test error", title=f"PG + {reward.upper()} against the {level}-level LQ of the base")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def growth_figure(growth: list[dict], eps: float):
    """Queries to reach expected error ``eps`` against N (median over seeds, log scale), one line per
    base model (case), ORM solid and PRM dashed."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(8, 5.2), constrained_layout=True)
    cases = []
    for g in growth:
        key = ", ".join(f"{a}={b}" for a, b in g["case"].items() if a != "base_file")
        if key not in cases:
            cases.append(key)
        xs = sorted(g["medians"])
        label = f"{key}, {g['reward'].upper()}: slope {g['exp_slope']:.2f}/N"
        ax.plot(xs, [g["medians"][x] for x in xs], "o-" if g["reward"] == "orm" else "s--",
                color=f"C{cases.index(key)}", lw=1.8, label=label)
    ax.set(yscale="log", xlabel="response length N", ylabel=f"reward queries to expected error <= {eps:g}",
           title="ORM grows exponentially in N for every base model; PRM does not")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return fig


def mistakes_figure(rows: list[dict], ref_shape, ref_gamma):
    """Online learning: mistakes against steps (adaptive vs constant rule), and the adaptive rule's
    final mistakes against 1/gamma^2 and against k^N (medians over seeds)."""
    plt = require_matplotlib()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), constrained_layout=True)
    styles = {"adaptive": "-", "constant": "--"}
    gammas = sorted({r["gamma"] for r in rows})
    for r in rows:
        if (r["k"], r["N"]) != tuple(ref_shape):
            continue
        run = r["run"]
        i = min(range(len(gammas)), key=lambda j: abs(gammas[j] - r["gamma"]))
        n, m = _positive(run.trace["steps"], run.trace["mistakes"])
        axes[0].plot(n, m, styles[r["lr"]], color=f"C{i}", lw=1, alpha=0.8,
                     label=f"{r['lr']}, gamma={r['gamma']:.3g}" if r["seed"] == min(x["seed"] for x in rows) else None)
    axes[0].set(xscale="log", yscale="log", xlabel="steps", ylabel="mistakes (responses not fully correct)",
                title=f"PG + ORM, k={ref_shape[0]}, N={ref_shape[1]}: adaptive levels off, constant does not")
    axes[0].legend(fontsize=7)
    ada = [r for r in rows if r["lr"] == "adaptive" and (r["k"], r["N"]) == tuple(ref_shape)]
    xs = sorted({r["gamma"] for r in ada})
    med = [float(np.median([r["mistakes"] for r in ada if r["gamma"] == g])) for g in xs]
    axes[1].plot([1 / g**2 for g in xs], med, "o-", lw=1.8, label="adaptive, median over seeds")
    if med:
        x0 = 1 / xs[-1] ** 2
        axes[1].plot([x0, 1 / xs[0] ** 2], [med[-1], med[-1] * (1 / xs[0] ** 2) / x0], ":", color="gray", label="slope 1")
    axes[1].set(xscale="log", yscale="log", xlabel="1 / gamma^2", ylabel="mistakes after all steps",
                title="plateau against the margin")
    shapes = sorted({(r["k"], r["N"]) for r in rows if r["lr"] == "adaptive"}, key=lambda s: s[0] ** s[1])
    ada = [r for r in rows if r["lr"] == "adaptive" and math.isclose(r["gamma"], ref_gamma)]
    ys = [float(np.median([r["mistakes"] for r in ada if (r["k"], r["N"]) == s])) for s in shapes]
    axes[2].plot([k**N for k, N in shapes], ys, "o", ms=7)
    for (k, N), y in zip(shapes, ys):
        axes[2].annotate(f"k={k}, N={N}", (k**N, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    axes[2].set(xscale="log", yscale="log", xlabel="number of responses |Y| = k^N", ylabel="mistakes after all steps",
                title=f"plateau against |Y| (gamma = {ref_gamma:g})")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=8)
    return fig


def pass_at_k_figure(runs: dict, ks):
    """pass@k against k (log) of the base model (dotted) and after post-training, per task (panels)
    and reward, and the coverage fractions at the largest k over training. ``runs``:
    ``{(task, reward, seed): RunData}`` of one seed."""
    from ..metrics import pass_at_k

    plt = require_matplotlib()
    tasks = sorted({task for task, _, _ in runs})
    fig, axes = plt.subplots(2, len(tasks), figsize=(5.2 * len(tasks), 8), constrained_layout=True, squeeze=False)
    for col, task in enumerate(tasks):
        ax, cov = axes[0, col], axes[1, col]
        for i, reward in enumerate(("orm", "prm")):
            run = next(r for (t, w, _), r in runs.items() if t == task and w == reward)
            if i == 0:
                ax.plot(ks, pass_at_k(run.base["loglik"], ks).mean(axis=0), "k:", lw=2, label="base model")
            ax.plot(ks, pass_at_k(run.loglik[-1], ks).mean(axis=0), "-o", ms=3, color=f"C{i}",
                    label=f"after PG + {reward.upper()}")
            xs = np.maximum(run.queries, 1)
            for j, part in enumerate(("expanded", "shrunk", "outside")):
                cov.plot(xs, run.trace[f"coverage_{part}"], ["-", "--", ":"][j], color=f"C{i}",
                         label=f"{reward.upper()}: {part}")
        ax.set(xscale="log", xlabel="k (samples)", ylabel="mean pass@k over test contexts", ylim=(0, 1.02),
               title=f"{task}: pass@k")
        cov.set(xscale="log", xlabel="reward queries (ORM + PRM)", ylabel=f"fraction of test contexts (k={max(ks)})",
                title=f"{task}: coverage against the base model")
        for a in (ax, cov):
            a.grid(alpha=0.3, which="both")
            a.legend(fontsize=7)
    return fig


def kl_figure(runs: dict, optimum, distances: dict, fig1: dict | None = None):
    """Left: final against base likelihood per test context for each beta (``runs``:
    ``{(beta, placement): RunData}``, one seed), with the regularised optimum ``optimum(alpha, beta)``
    drawn over it. Middle (with ``fig1``, ``{(beta, reward): RunData}``): histograms of the final
    likelihoods on Figure 1's task. Right: each estimator's relative distance to the reverse and
    forward KL's gradients, their difference and zero (``distances``:
    ``{(estimator, kl_in): {"reverse": .., "forward": .., "difference": .., "zero": ..}}``)."""
    plt = require_matplotlib()
    fig, axes = plt.subplots(1, 3 if fig1 else 2, figsize=(16 if fig1 else 11, 4.5), constrained_layout=True)
    ax, bars = axes[0], axes[-1]
    alpha = np.linspace(0.0, 1.0, 201)
    exact = sorted(beta for beta, label in runs if label.startswith("exact"))
    for i, beta in enumerate(exact):
        run = runs[(beta, next(label for b, label in runs if b == beta and label.startswith("exact")))]
        ax.scatter(np.exp(run.base["loglik"]), np.exp(run.loglik[-1]), s=6, alpha=0.5, color=f"C{i}",
                   label=f"beta={beta:g} (exact)")
        ax.plot(alpha, optimum(alpha, beta), "-", color=f"C{i}", lw=1)
    ax.plot(alpha, alpha, "k:", lw=1, label="no change")
    ax.set(xlabel="base likelihood alpha = pi_0(y*|x)", ylabel="final likelihood pi(y*|x)", xlim=(0, 1), ylim=(0, 1.02),
           title="one-token skills: final likelihood against p*(alpha) (lines)")
    ax.legend(fontsize=7)
    if fig1:
        hist = axes[1]
        edges = np.linspace(0.0, 1.0, 21)
        for i, ((beta, reward), run) in enumerate(sorted(fig1.items())):
            hist.hist(np.exp(run.loglik[-1]), bins=edges, histtype="step", lw=1.5, color=f"C{i}",
                      label=f"beta={beta:g}, {reward.upper()}")
        hist.set(xlabel="final likelihood pi(y*|x)", ylabel="test contexts", yscale="log",
                 title="Figure 1's task (N=8) with a KL term")
        hist.legend(fontsize=7)
    names = [f"{e}\nin {i}" for e, i in distances]
    xs = np.arange(len(names))
    targets = ("reverse", "forward", "difference", "zero")
    for j, target in enumerate(targets):
        bars.bar(xs + (j - 1.5) * 0.2, [d[target] for d in distances.values()], 0.2,
                 label={"reverse": "to the reverse KL's gradient", "forward": "to the forward KL's",
                        "difference": "to reverse - forward", "zero": "to zero"}[target])
    bars.set(xticks=xs, xticklabels=names, yscale="log", ylabel="relative distance of the expected update",
             title="which gradient each estimator follows")
    bars.axhline(0.1, color="k", lw=0.8, ls="--")
    bars.legend(fontsize=7)
    for a in axes:
        a.grid(alpha=0.3, which="both")
    return fig


def temperature_figure(runs: dict, fits: dict):
    """Left: the sampling policy's expected error against ORM queries for each temperature (``runs``:
    ``{tau: RunData}``), with the LQ of its own base likelihoods ``alpha_tau`` at the fitted ``c/T``
    (``fits[tau]["own"]``, dashed). Right: per test context, the model's final likelihood against
    ``alpha_tau T / c_tau`` (``T``: the run's ORM queries): the LQ test puts every temperature's
    barrier at 1."""
    plt = require_matplotlib()
    fig, (ax, sc) = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    for i, (tau, run) in enumerate(sorted(runs.items())):
        err = run.trace.get("expected_error_sampling", run.trace["expected_error"])
        ax.plot(np.maximum(run.queries, 1), err, "-", color=f"C{i}", label=f"tau={tau:g}")
        f = fits[tau]["own"]
        ax.plot(f["queries"], f["curve"], "--", color=f"C{i}", lw=1)
        log_alpha = run.base.get("sampling_loglik", run.base["loglik"])
        x = np.exp(log_alpha + np.log(run.queries[-1] / f["c"]))
        sc.scatter(np.maximum(x, 1e-12), np.exp(run.loglik[-1]), s=5, alpha=0.5, color=f"C{i}", label=f"tau={tau:g}")
    ax.set(xscale="log", xlabel="ORM queries", ylabel="expected error of the sampling policy", ylim=(0, 1),
           title="error against the LQ of alpha_tau at c/T (dashed)")
    sc.axvline(1.0, color="k", lw=0.8, ls="--")
    sc.set(xscale="log", xlabel="alpha_tau T / c_tau (the LQ barrier at 1)",
           ylabel="final likelihood pi_W(y*|x)", ylim=(0, 1.02), title="per test context: one barrier for every tau")
    for a in (ax, sc):
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=7)
    return fig


def filtering_figure(runs: dict):
    """Expected error against ORM queries (left) and against steps (right) for runs with and without
    ``--filter-groups`` (``runs``: ``{label: RunData}``)."""
    plt = require_matplotlib()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    for i, (label, run) in enumerate(runs.items()):
        style = "-" if "filtered" in label else "--"
        color = f"C{i // 2}"
        axes[0].plot(np.maximum(run.queries, 1), run.trace["expected_error"], style, color=color, label=label)
        axes[1].plot(np.maximum(run.trace["steps"], 1), run.trace["expected_error"], style, color=color, label=label)
    axes[0].set(xscale="log", xlabel="ORM queries (discarded groups included)", ylabel="expected error", ylim=(0, 1),
                title="at equal queries")
    axes[1].set(xscale="log", xlabel="steps", ylabel="expected error", ylim=(0, 1), title="at equal steps")
    for a in axes:
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=7)
    return fig
