"""``fastpg reproduce``: every experiment of the paper that fastpg supports, and a report (thin over fastpg.paper.reproduce)."""

from __future__ import annotations

import time

import click


@click.command("reproduce")
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--quick", is_flag=True, help="smaller runs (a check that everything works, not for quoting)")
@click.option("--only", multiple=True, metavar="NAME",
              help="run only this experiment (repeatable): fig1, profile, any_pretraining, pretrain, mistakes, pass_at_k, "
                   "kl, temperature, filtering")
@click.option("--page", type=click.Path(dir_okay=False), default=None,
              help="also write the report as this Markdown page (docs/results.md), its figures in a folder beside it")
@click.option("--quiet", "-q", is_flag=True, help="no progress or table")
def reproduce_cmd(outdir, quick, only, page, quiet):
    """Run Figure 1, the LQ test, the query-complexity profile, exponential-in-N for several base
    models, statistical learning, online mistakes, and beyond the paper pass@k coverage, KL to the base
    model, sampling temperature and filtering uninformative groups, and write OUTDIR/report.md.

    The report has one row per claim: the quantity measured, its fitted value with an interval over
    seeds, the theory's value and whether it holds by a stated rule, then a section per experiment
    with its figure. Re-running resumes (complete runs are kept). The report's first line says how
    long each experiment took.

    \b
    Examples:
      fastpg reproduce results/paper
      fastpg reproduce results/paper-quick --quick
      fastpg reproduce results/paper --page docs/results.md
    """
    from fastpg.paper.claims import claims_table
    from fastpg.paper.reproduce import reproduce

    t0 = time.perf_counter()

    def progress(name):
        if not quiet:
            click.echo(f"[{time.perf_counter() - t0:5.0f} s] {name}", err=True)

    result = reproduce(outdir, quick=quick, only=list(only), progress=progress, page=page)
    if quiet:
        return
    click.echo(claims_table(result["claims"]))
    click.echo(f"wrote {result['report']}" + (f" and {page}" if page else "") + f" in {time.perf_counter() - t0:.0f} s")
