"""``fastpg sweep``: a grid of run parameters times seeds, resumable, local or Dask."""

from __future__ import annotations

import os
from pathlib import Path

import click

from fastpg.analysis.summaries import median_text
from fastpg.config import PARAM
from fastpg.sweeps.backends import BACKENDS
from fastpg.sweeps.execute import START_SECONDS
from fastpg.sweeps.spec import DEFAULT_EPS, LAYOUTS, MAX_BATCH, id_value

from .options import resolve, run_options
from .progress import Progress, duration

# a sweep of at least this many runs, each modelled under this many seconds, is told of --layout batch
SMALL_RUNS_MANY = 500
SMALL_RUN_SECONDS = 0.5

LARGE_RUNS = 10_000  # a sweep above this many runs, or LARGE_BYTES on disk, needs --yes
LARGE_BYTES = 10e9


@click.command("sweep")
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--grid", "grid", multiple=True, metavar="NAME=V1,V2,...",
              help="a grid parameter and its values (repeatable); NAME is any run parameter: "
                   + ", ".join(p for p in PARAM if p != "seed"))
@click.option("--seeds", default=None, help="seeds, e.g. 0-9 or 0,3,5  [default: 0, or the TOML file's]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML sweep file: seeds, eps, alpha, [fixed] and [grid] tables, [[cases]] (each crossed with the grid)")
@click.option("--eps", default=None, metavar="E1,E2,...",
              help=f"target expected errors: queries_to_eps for the first, more columns for the others [default: {DEFAULT_EPS}]")
@click.option("--alpha", default=None, metavar="A1,A2,...",
              help="base-likelihood levels: index columns Q_alpha=A_eps=E, the queries until E[1 - pi | pi_0 >= A] <= E")
@click.option("--backend", type=click.Choice(BACKENDS), default=None, help="where runs execute [default: local]")
@click.option("--scheduler", default=None, help="address of a running Dask scheduler (implies --backend dask)")
@click.option("--dask-workers", type=int, default=None,
              help="start a local Dask cluster of this many processes (implies --backend dask)")
@click.option("--batch-size", type=int, default=None, help="at most this many runs advanced together [default: 64]")
@click.option("--layout", type=click.Choice(LAYOUTS), default=None,
              help="run: one HDF5 file per run; batch: one file per batch of runs, for sweeps of very many small "
                   "runs (read with fastpg.load_sweep) [default: run, or the folder's]")
@click.option("--yes", "-y", is_flag=True, help=f"start a sweep above {LARGE_RUNS} runs or {LARGE_BYTES / 1e9:g} GB "
                                                  "(otherwise refused after printing its size)")
@click.option("--continue", "continue_", is_flag=True,
              help="with a larger --steps than the folder's: continue its complete runs to it (each file becomes "
                   "the run made with the new steps)")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar or summary")
@run_options
def sweep_cmd(outdir, grid, seeds, config_file, eps, alpha, backend, scheduler, dask_workers, batch_size, layout, yes,
              continue_, quiet, preset, **given):
    """Run a grid of parameters times seeds; one HDF5 file per run (or per batch) and OUTDIR/index.csv.

    Re-running the same command resumes: complete runs are kept, incomplete ones redone.
    Run options set the fixed parameters (defaults < --preset < TOML [fixed] < options).

    \b
    Examples:
      fastpg sweep out/n --grid N=2,4,6,8 --grid reward=orm,prm --seeds 0-4 --algorithm rs --base uniform
      fastpg sweep out/expN --config examples/exp_in_N.toml
      fastpg sweep out/expN --config examples/exp_in_N.toml --dask-workers 2
    """
    from fastpg.config import ConfigError
    from fastpg.sweeps.execute import estimate, execute
    from fastpg.sweeps.spec import Sweep, folder_layout, load_toml, parse_grid, parse_seeds

    if given.get("seed") is not None:
        raise ConfigError("--seed", "a sweep runs every seed of --seeds; allowed: --seeds 0-9 (or seeds = ... in the TOML file)")

    toml = load_toml(config_file) if config_file else {"fixed": {}, "grid": {}, "cases": [], "seeds": None, "eps": None,
                                                        "alpha": None}
    fixed = resolve(preset, given, middle=toml["fixed"])
    grid_values = {**toml["grid"], **parse_grid(grid)}
    seed_list = parse_seeds(seeds) if seeds is not None else (toml["seeds"] or [0])
    if dask_workers is not None and dask_workers < 1:
        raise ConfigError("--dask-workers", f"got {dask_workers}; allowed: an integer >= 1")
    if scheduler or dask_workers:
        if backend == "local":
            raise ConfigError("--backend", "local cannot take --scheduler or --dask-workers; allowed: dask")
        backend = "dask"
    sweep = Sweep(outdir, fixed, grid_values, seed_list, eps if eps is not None else (toml["eps"] or DEFAULT_EPS),
                  batch_size if batch_size is not None else MAX_BATCH,
                  alphas=alpha if alpha is not None else (toml["alpha"] or []), cases=toml["cases"],
                  layout=layout or folder_layout(outdir), extend=continue_)
    sweep.check_folder()  # a folder of another sweep is refused before anything is printed or started
    sweep.check_writable()
    pending = sweep.pending()
    size = estimate(pending, sweep.layout)
    cores = os.cpu_count() or 1
    disk = f"{size['bytes'] / 1e9:.3g} GB" if size["bytes"] >= 1e9 else f"{size['bytes'] / 1e6:.3g} MB"
    hours = duration(START_SECONDS + size["core_seconds"] / cores)
    if (len(pending) > LARGE_RUNS or size["bytes"] > LARGE_BYTES) and not yes:
        raise ConfigError("--yes", f"{len(pending)} runs to do, about {disk} on disk and {hours} on {cores} cores (a rough "
                                   "estimate): a sweep this large starts only with --yes (or fewer --seeds)")
    if not quiet:
        click.echo(f"fastpg: {len(sweep.runs)} runs, {len(pending)} to do: about {disk} on disk and {hours} on {cores} "
                   "cores here (a rough estimate)", err=True)
        if layout is None and sweep.layout != "batch" and len(pending) >= SMALL_RUNS_MANY \
                and size["core_seconds"] < SMALL_RUN_SECONDS * len(pending) and not (Path(outdir) / "sweep.json").exists():
            click.echo(f"fastpg: {len(pending)} small runs: --layout batch writes them {batch_size or MAX_BATCH} to a file, "
                       "about 7x faster and 3x smaller on this project's machine (1000 tiny runs: 4 s and 31 MB "
                       "against 25 s and 94 MB)", err=True)
    bar = Progress(len(sweep.runs), "runs", "sweep", quiet)

    def progress(done, total, work=None):
        bar.update(done, work)

    def notify(message):
        click.echo(f"fastpg: {message}", err=True)

    try:
        index = execute(sweep, backend=backend or "local", scheduler=scheduler, dask_workers=dask_workers,
                        pending=pending,
                        progress=progress, notify=notify, report=None if quiet else notify)
    finally:
        bar.close()
    if not quiet:
        _print_summary(sweep, index)
    unfinished = [row for row in index.rows.values() if row["status"] != "complete"]
    if unfinished:
        first = unfinished[0]
        click.echo(f"fastpg: error: {len(unfinished)} of {len(sweep.runs)} runs are not complete "
                   f"(first: {first['file'] or first['run']}: "
                   f"{first['status']}{': ' + first['message'] if first['message'] else ''}); see "
                   f"{sweep.outdir / 'index.csv'}; re-run the same command to redo them", err=True)
        return 1
    return 0


def _print_summary(sweep, index) -> None:
    from fastpg.sweeps.index import summary

    rows = summary(sweep, index)
    cols = [*sweep.point_names, "complete", "expected_error", "queries_to_eps", "reached_eps"]
    cells = [{c: (id_value(r[c]) if c in r else "-") if c in sweep.point_names else _cell(r[c]) for c in cols}
             for r in rows]
    width = {c: max(len(c), *(len(r[c]) for r in cells)) for c in cols}
    click.echo("  ".join(c.rjust(width[c]) for c in cols))
    for r in cells:
        click.echo("  ".join(r[c].rjust(width[c]) for c in cols))
    click.echo(f"index: {sweep.outdir / 'index.csv'} (median over seeds, those that never reached eps = {sweep.eps:g} "
               "counted as more than their budget; '> budget': over half did not)")


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return median_text(v)
    return str(v)
