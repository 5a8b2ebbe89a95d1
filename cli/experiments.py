"""``fastpg fig1``, ``fastpg pretrain`` and ``fastpg plot``: thin wrappers over fastpg.paper and the plots."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fastpg import config as C
from fastpg.analysis.plots import X_AXES

from .options import resolve, run_options


def _parse_floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}; allowed: comma-separated numbers", param_hint=option) from None


def _progress(quiet: bool):
    if quiet:
        return None

    def report(tag, done):
        if sys.stderr.isatty():
            click.echo(f"\r  {tag}: {done} steps", err=True, nl=False)

    return report


@click.command("fig1")
@click.argument("outdir", type=click.Path(file_okay=False))
@run_options
@click.option("--seeds", default="0-2", show_default=True, help="seeds, e.g. 0-2 (one ORM and one PRM run each)")
@click.option("--unconditioned", is_flag=True, help="no margin condition (the paper's figure; its theory assumes one)")
@click.option("--wide-clusters", is_flag=True,
              help="wide clusters (sigma 0.05, n_pre 4000): some contexts differ from their cluster's majority, "
                   "and on-policy PG + PRM stalls on them")
@click.option("--overwrite", is_flag=True, help="replace existing files in OUTDIR")
@click.option("--quiet", "-q", is_flag=True, help="no progress or summary")
def fig1_cmd(outdir, preset, seeds, unconditioned, wide_clusters, overwrite, quiet, **given):
    """Figure 1 end to end: PG with ORM and with PRM from one task and base model, per seed.

    Every context satisfies a margin (the 25% quantile of pilot margins) unless --unconditioned.
    Writes OUTDIR/fig1-orm-seed<s>.h5, OUTDIR/fig1-prm-seed<s>.h5, OUTDIR/fig1.png (against
    steps and against reward queries) and OUTDIR/exceptions.png (PRM's stuck test contexts against
    the exceptions of their clusters). Options override the fig1-orm preset (--reward and --seed
    are set per run). Prints, per seed and on average, the numbers the figure is about and how
    closely the expected error follows the base model's Likelihood Quantile.

    \b
    Examples:
      fastpg fig1 results/fig1
      fastpg fig1 results/fig1-unconditioned --unconditioned
      fastpg fig1 results/fig1-wide --wide-clusters
      fastpg fig1 results/fig1-N12 -N 12 --steps 100000 --seeds 0
    """
    from fastpg.paper.fig1 import fig1
    from fastpg.sweeps.spec import parse_seeds

    overrides = resolve(preset, given)
    result = fig1(outdir, overrides, seeds=parse_seeds(seeds), unconditioned=unconditioned, wide=wide_clusters,
                  overwrite=overwrite, progress=_progress(quiet))
    if quiet:
        return
    click.echo(f"\rwrote {len(result.files)} runs and {result.png}")
    rows = result.per_seed()
    s = result.summary()
    click.echo(f"margin gamma {s['gamma']:.3g}; off-support = base likelihood < {s['alpha_off']:g}")
    head = ("seed", "off-support", "ORM off-lik", "PRM off-lik", "ORM error", "PRM error", "ORM queries", "PRM queries",
            "ORM LQ gap", "PRM LQ gap", "PRM late", "PRM stuck", "stuck exc.", "exceptions")
    keys = ("seed", "offsupport_fraction", "orm_offsupport_likelihood", "prm_offsupport_likelihood",
            "orm_expected_error", "prm_expected_error", "orm_queries", "prm_queries", "orm_lq_max_gap", "prm_lq_max_gap",
            "prm_late_error_ratio", "prm_stuck", "prm_stuck_exceptions", "exceptions")
    click.echo("  ".join(f"{h:>11}" for h in head))
    for r in [*rows, {**s, "seed": "mean"}]:
        click.echo("  ".join(f"{r[k]:>11.4g}" if isinstance(r[k], float) else f"{r[k]:>11}" for k in keys))
    click.echo("LQ gap: largest gap between the expected error and the base model's LQ at c/T (ORM: sequence "
               "level, PRM: token level); PRM late: its error at the end over its error at half the steps; PRM "
               "stuck: test contexts it leaves below likelihood 1/2, of which exceptions (their correct response "
               "differs from their cluster's majority), of how many exceptions in the test set")


@click.command("pretrain")
@click.argument("outdir", type=click.Path(file_okay=False))
@run_options
@click.option("--gamma-quantiles", default=",".join(f"{q:g}" for q in C.PRETRAIN_GAMMA_QUANTILES), show_default=True,
              help="margins as quantiles of pilot margins, comma-separated")
@click.option("--lr-rules", default=",".join(C.PRETRAIN_LR_RULES), show_default=True,
              help=f"learning-rate rules to compare, comma-separated ({', '.join(C.LR_RULES)})")
@click.option("--overwrite", is_flag=True, help="replace existing files in OUTDIR")
@click.option("--quiet", "-q", is_flag=True, help="no progress or summary")
def pretrain_cmd(outdir, preset, gamma_quantiles, lr_rules, overwrite, quiet, **given):
    """Statistical learning: SGD test error against samples seen, per LR rule and margin (docs/design.md, "Base models").

    One HDF5 file per (rule, margin) and OUTDIR/pretrain.png with the 1/(gamma^2 n) rate; prints
    the fitted log-log slope of the greedy test error. Options override the built-in setup
    (d=64, k=4, N=2, sphere, n_pre=300000, n_test=8192).

    \b
    Examples:
      fastpg pretrain results/pretrain
      fastpg pretrain results/pretrain-d16 -d 16 --n-pre 100000 --gamma-quantiles 0.3
    """
    from fastpg.paper.pretrain import pretrain_experiment

    qs = _parse_floats(gamma_quantiles, "--gamma-quantiles")
    if not qs or not all(0.0 <= q <= 1.0 for q in qs):
        raise click.BadParameter(f"{gamma_quantiles!r}; allowed: numbers in [0, 1]", param_hint="--gamma-quantiles")
    rules = tuple(r.strip() for r in lr_rules.split(",") if r.strip())
    bad = [r for r in rules if r not in C.LR_RULES]
    if bad or not rules:
        raise click.BadParameter(f"{lr_rules!r}; allowed: {', '.join(C.LR_RULES)}", param_hint="--lr-rules")
    overrides = resolve(preset, given)
    result = pretrain_experiment(outdir, overrides, gamma_quantiles=qs, lr_rules=rules, overwrite=overwrite,
                                 progress=_progress(quiet))
    if not quiet:
        click.echo(f"\rwrote {len(result.runs)} runs and {result.png}")
        click.echo("greedy test error vs samples seen, fitted log-log slope (points with 10/n_test <= error <= 0.3):")
        for s in result.slopes():
            click.echo(f"  lr={s['lr']:<9} gamma={s['gamma']:.4g} (q={s['gamma_quantile']:g})  slope {s['slope']:+.3f}  "
                       f"final error {s['final_error']:.3g}")
        click.echo("slope of log error against log(gamma^2 n), pooled over margins (-1 is the 1/(gamma^2 n) rate):")
        for lr, slope in result.pooled_slopes().items():
            click.echo(f"  lr={lr:<9} {slope:+.3f}")


PLOT_KINDS = ("fig1", "lq", "pretrain", "trajectories", "scaling")


@click.command("plot")
@click.argument("kind", type=click.Choice(PLOT_KINDS))
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="PNG file to write")
@click.option("--x", "x", default=None,
              help="x axis: steps or queries (trajectories; default steps); a numeric grid parameter, alpha or eps "
                   "(scaling; default the first numeric grid parameter)")
@click.option("--facet", default=None,
              help="scaling: one panel per value of this parameter (a grid parameter other than --x, or alpha with "
                   "--x eps), so that each panel's legend stays short")
@click.option("--overwrite", is_flag=True, help="replace an existing --out file")
def plot_cmd(kind, files, out, x, facet, overwrite):
    """Figures from result files (nothing is rerun).

    \b
    fig1 FILES...          Figure 1 from ORM and PRM runs (one of each per seed; against steps and queries)
    lq FILE...             Likelihood Quantile CDFs of the base models (sequence and token level)
    pretrain FILE...       test error against samples seen (files of fastpg pretrain)
    trajectories FILE      per-context likelihood trajectories coloured by base likelihood
    scaling SWEEPDIR       queries_to_eps against the grid parameter --x, fitted growth printed

    \b
    Examples:
      fastpg plot fig1 out/fig1-*-seed0.h5 --out fig1.png
      fastpg plot lq out/fig1-orm-seed0.h5 --out lq.png
      fastpg plot scaling out/expN --x N --out scaling.png
      fastpg plot scaling out/q --x eps --facet alpha --out q-eps.png
    """
    from fastpg.analysis import plots
    from fastpg.store import check_output, load, load_batch

    check_output(out, overwrite)
    plots.require_matplotlib()
    if kind == "scaling":
        return _plot_scaling(files, x, out, facet)
    if facet is not None:
        raise click.BadParameter(f"applies to scaling only; allowed for {kind}: none", param_hint="--facet")
    x = x or "steps"
    if kind != "fig1" and x not in X_AXES:
        raise click.BadParameter(f"{x!r}; allowed for {kind}: {', '.join(X_AXES)}", param_hint="--x")
    dirs = [f for f in files if Path(f).is_dir()]
    if dirs:
        raise click.BadParameter(f"{dirs[0]} is a folder; allowed for {kind}: result files", param_hint="FILES")
    runs, labels = [], []
    for f in files:  # a batch file (sweep --layout batch) stands for all its runs
        try:
            batch = load_batch(f)
        except ValueError:
            runs.append(load(f))
            labels.append(Path(f).stem)
        else:
            runs.extend(batch.values())
            labels.extend(batch)
    if kind == "fig1":
        orm = [r for r in runs if r.config["reward"] == "orm"]
        prm = [r for r in runs if r.config["reward"] == "prm"]
        if not orm or len(orm) != len(prm):
            raise click.BadParameter(f"got {len(orm)} ORM and {len(prm)} PRM files; allowed: as many PRM as ORM "
                                     "files, at least one", param_hint="FILES")
        fig = plots.fig1_figure(sorted(orm, key=lambda r: r.config["seed"]), sorted(prm, key=lambda r: r.config["seed"]))
    elif kind == "lq":
        fig = plots.lq_figure(runs, labels=labels)
    elif kind == "pretrain":
        fig = plots.pretrain_figure(runs)
    else:
        if len(runs) != 1:
            raise click.BadParameter(f"got {len(runs)} runs; allowed: exactly one run file", param_hint="FILES")
        fig = plots.trajectories_figure(runs[0], x=x)
    click.echo(f"wrote {plots.save(fig, out)}")


def _first(value):
    return value[0] if isinstance(value, list) and value else value


def _plot_scaling(files, x, out, facet=None):
    import json

    from fastpg.analysis import plots
    from fastpg.analysis.summaries import group_label, growth_text, median_text, scaling_table
    from fastpg.sweeps.index import grid_rows, q_rows, read_index
    from fastpg.sweeps.spec import MANIFEST, manifest_keys

    if len(files) != 1 or not Path(files[0]).is_dir():
        raise click.BadParameter("allowed for scaling: exactly one sweep folder", param_hint="FILES")
    folder = Path(files[0])
    if not (folder / MANIFEST).exists():
        raise click.BadParameter(f"{folder} has no {MANIFEST}; allowed: a fastpg sweep folder", param_hint="FILES")
    manifest = json.loads((folder / MANIFEST).read_text())
    grid = manifest_keys(manifest)
    rows, y = grid_rows(read_index(folder), grid), "queries_to_eps"
    if x in ("alpha", "eps") and manifest.get("alpha"):
        rows, grid, y = q_rows(rows, grid, manifest["alpha"], manifest["eps"]), [*grid, "alpha", "eps"], "Q"
    def numeric(name):
        return all(isinstance(r.get(name), (int, float)) for r in rows if r.get(name) is not None)

    levels = ["alpha", "eps"] if manifest.get("alpha") else []
    allowed = sorted((g for g in grid if g not in levels and numeric(g)), key=lambda g: g not in manifest["grid"])
    allowed += levels
    extra = "" if levels else " (alpha and eps need a sweep run with --alpha)"
    if x is None:
        if not allowed:
            raise click.BadParameter("this sweep has no numeric grid parameter; allowed: a sweep over N, eta, ...",
                                     param_hint="--x")
        x = allowed[0]
    if x not in grid:
        raise click.BadParameter(f"{x!r} is not a grid parameter of this sweep; allowed: {', '.join(allowed)}{extra}",
                                 param_hint="--x")
    if x not in allowed:
        raise click.BadParameter(f"{x!r} is not numeric and cannot be an axis; allowed: {', '.join(allowed)}{extra}",
                                 param_hint="--x")
    if facet is not None and (facet == x or facet not in grid):
        choices = [g for g in grid if g != x]
        raise click.BadParameter(f"{facet!r}; allowed: a grid parameter other than --x ({', '.join(choices) or 'none'})",
                                 param_hint="--facet")
    table = scaling_table(rows, grid, x, y)
    for g in table:
        name = group_label(g["group"]) or "all runs"
        click.echo(f"{name}: median {y} {', '.join(median_text(v) for v in g['median'])} at {x} = "
                   f"{', '.join(f'{v:g}' for v in g['x'])} (seeds that got there: "
                   f"{', '.join(f'{r} of {n}' for r, n in zip(g['reached'], g['n']))})")
        click.echo(f"  {growth_text(g['fit'], x)}")
        if sum(g["missing"]):
            click.echo("  not reached (censored: counted as more than their budget; a median over half censored is "
                       "'> budget', left out of the fit and drawn as a triangle): "
                       + ", ".join(f"{m} of {n} at {x}={v:g}" for v, m, n in zip(g["x"], g["missing"], g["n"]) if m))
    eps = None if y == "Q" else _first(manifest.get("eps"))
    click.echo(f"wrote {plots.save(plots.scaling_figure(table, x, y=y, eps=eps, facet=facet), out)}")
