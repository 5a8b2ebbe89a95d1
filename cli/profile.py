"""``fastpg profile``: design, run and analyse a query-complexity profile (thin over fastpg.paper.profile)."""

from __future__ import annotations

import sys
import time

import click

from fastpg.sweeps.backends import BACKENDS

from .options import resolve, run_options


@click.command("profile")
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--grid", "grid", multiple=True, metavar="NAME=V1,V2,...",
              help="grid of reward, algorithm (pg, rs), N or gamma (repeatable) [default: reward=orm,prm "
                   "algorithm=pg,rs N=8,10,12 gamma=0.003,0.006,0.012]")
@click.option("--alpha", default=None, metavar="A1,A2,...", help="base-likelihood levels [default: 1e-1,...,1e-6]")
@click.option("--eps", default=None, metavar="E1,E2,...", help="target errors [default: 0.3,0.1,0.03]")
@click.option("--seeds", default=None, help="seeds, e.g. 0-4 [default: 0-4]")
@click.option("--backend", type=click.Choice(BACKENDS), default=None, help="where runs execute [default: local]")
@click.option("--scheduler", default=None, help="address of a running Dask scheduler (implies --backend dask)")
@click.option("--dask-workers", type=int, default=None, help="start a local Dask cluster of this many processes")
@click.option("--quiet", "-q", is_flag=True, help="no progress or table")
@run_options
def profile_cmd(outdir, grid, alpha, eps, seeds, backend, scheduler, dask_workers, quiet, preset, **given):
    """Profile query complexity: Q(alpha, eps) per run, fitted exponents, figures.

    Q(alpha, eps) is the number of reward queries until the expected error on test contexts whose
    base likelihood is at least alpha falls to eps. The default experiment (about 4 minutes on 2
    cores) runs pg over reward x N x gamma x 5 seeds and rs (with its budget tied to each alpha,
    M = ceil(ln(100)/alpha)) at the middle N and gamma, on clustered contexts with a Zipf-pre-trained
    base and a fixed margin. Re-running resumes. Run options change the fixed setup; given for
    -N, --gamma, --reward or --algorithm they replace that grid with one value.

    Writes OUTDIR/pg/ and OUTDIR/rs/ (sweep folders), OUTDIR/profile.csv, OUTDIR/exponents.csv,
    OUTDIR/q_alpha.png and OUTDIR/lq.png, and prints the exponent table.

    \b
    Examples:
      fastpg profile results/profile
      fastpg profile results/profile-orm --grid reward=orm --grid algorithm=pg --seeds 0-4
      fastpg profile results/profile-small --grid N=8 --grid gamma=0.006 --alpha 0.1,0.01 --steps 50000
    """
    from fastpg.analysis import plots
    from fastpg.config import ConfigError
    from fastpg.paper.profile import (
        GRID_NAMES,
        PROFILE_ALPHAS,
        PROFILE_EPS,
        PROFILE_SEEDS,
        Profile,
        format_context_exponents,
        format_exponents,
    )
    from fastpg.sweeps.spec import parse_grid, parse_numbers, parse_seeds

    plots.require_matplotlib()
    fixed = resolve(preset, given)
    grid_values = parse_grid(grid)
    for name in GRID_NAMES:
        if name in fixed:
            if name in grid_values:
                raise ConfigError(f"--{name}" if len(name) > 1 else f"-{name}",
                                  "given both as an option and in --grid; allowed: one of them")
            grid_values[name] = [fixed.pop(name)]
    if dask_workers is not None and dask_workers < 1:
        raise ConfigError("--dask-workers", f"got {dask_workers}; allowed: an integer >= 1")
    if scheduler or dask_workers:
        backend = "dask"
    profile = Profile(outdir, fixed, grid_values,
                      parse_numbers(alpha, "--alpha") if alpha is not None else PROFILE_ALPHAS,
                      parse_numbers(eps, "--eps") if eps is not None else PROFILE_EPS,
                      parse_seeds(seeds) if seeds is not None else PROFILE_SEEDS)
    t0 = time.perf_counter()
    show = not quiet

    def progress(done, total):
        if show:
            click.echo(f"\r  runs {done}/{total}", err=True, nl=not sys.stderr.isatty())

    profile.execute(backend=backend or "local", scheduler=scheduler, dask_workers=dask_workers,
                    progress=progress)
    result = profile.analyse()
    exponents, fits, paths = result["exponents"], result["fits"], result["paths"]
    if quiet:
        return
    click.echo(f"\r{profile.runs} runs in {time.perf_counter() - t0:.0f} s; reference N={profile.N_ref}, "
               f"gamma={profile.gamma_ref:g}, alpha={profile.alpha_ref:g}, eps={profile.eps_ref:g}")
    click.echo(format_exponents(exponents))
    click.echo(format_context_exponents(result["context_exponents"], result["context_quantiles"], profile.eps_ref))
    for reward, fs in fits.items():
        level = "sequence" if reward == "orm" else "token"
        click.echo(f"pg + {reward.upper()}: expected error against the {level}-level LQ at c/T: "
                   + ", ".join(f"c={f['c']:.3g} (max gap {f['max_gap']:.3f})" for f in fs))
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
