"""``fastpg reproduce``: every experiment of :func:`fastpg.paper.claims.registry`, run in turn into
one folder, and the report of their claims (docs/design.md, "Reproducing the paper").

An experiment is one module of :mod:`fastpg.paper` defining ``EXPERIMENT``; this loop knows none
of them by name. The report (``report.md``) holds the verdict counts, the claims table and each
experiment's sections with their figures; ``results_page`` (``--page``) writes it again as
``docs/results.md`` with its figures beside it, so the results the README points to are generated,
never copied by hand.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ..config import ConfigError
from ..store import command_line
from .claims import Claim, Section, claims_table, registry, verdict_counts


def reproduce(outdir, *, quick: bool = False, only=None, progress=None, page=None) -> dict:
    """Run every experiment of the registry (or those named in ``only``) into ``outdir``, each in
    its own folder, and write ``report.md``.

    Parameters
    ----------
    outdir : path
        The folder (created if missing). Resumable: complete run files are kept and only missing or
        incomplete runs are computed.
    quick : bool
        The experiments' quick settings (a smoke test of a few minutes) instead of the full ones.
    only : list of str, optional
        Names of the experiments to run (default: all).
    progress : callable, optional
        Called with each experiment's name as it starts.
    page : path, optional
        Also write the report as this Markdown file (``docs/results.md``), its figures copied into
        a folder beside it (``docs/results/``).

    Returns
    -------
    dict
        ``claims`` (every :class:`Claim`), ``times`` (seconds per experiment), ``report`` (its path).
    """
    from ..analysis import plots

    plots.require_matplotlib()
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise ConfigError("outdir", f"{out} is a file; allowed: a folder (created if missing)")
    experiments = registry()
    names = [e.name for e in experiments]
    for name in only or []:
        if name not in names:
            raise ConfigError("only", f"got {name!r}; allowed: {', '.join(names)}")
    out.mkdir(parents=True, exist_ok=True)
    claims: list[Claim] = []
    sections: list[Section] = []
    times: dict[str, float] = {}
    for experiment in experiments:
        if only and experiment.name not in only:
            continue
        if progress is not None:
            progress(experiment.name)
        start = time.perf_counter()
        outcome = experiment.run(out / experiment.name, experiment.settings_for(quick))
        times[experiment.name] = time.perf_counter() - start
        claims += outcome.claims
        sections += outcome.sections
    title = f"# fastpg: the paper's claims, reproduced{' (quick)' if quick else ''}"
    report = out / "report.md"
    report.write_text(render(title, claims, sections, times, report.parent))
    if page is not None:
        results_page(Path(page), title, claims, sections, times)
    return {"claims": claims, "times": times, "report": str(report)}


def render(title: str, claims: list[Claim], sections: list[Section], times: dict, folder: Path,
           figure=lambda path: path) -> str:
    """The report as Markdown, its figures linked relative to ``folder`` (where it is written)."""
    lines = [title, "",
             f"`{' '.join(command_line())}`: "
             + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"; {sum(times.values()):.0f} s in all.", "",
             verdict_counts(claims), "",
             claims_table(claims), ""]
    for s in sections:
        lines += [f"## {s.title}", "", s.text, ""]
        if s.figure is not None:
            lines += [f"![{s.title}]({Path(os.path.relpath(figure(s.figure), folder)).as_posix()})", ""]
    return "\n".join(lines)


def results_page(page: Path, title: str, claims, sections, times) -> None:
    """The report as ``page`` (``docs/results.md``), each figure copied into ``<page's stem>/``
    beside it under its experiment's folder name."""
    figures = page.parent / page.stem
    page.parent.mkdir(parents=True, exist_ok=True)
    copies = {}
    for s in sections:
        if s.figure is not None and s.figure.exists():
            target = figures / f"{s.figure.parent.name}-{s.figure.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s.figure, target)
            copies[s.figure] = target
    page.write_text(render(title, claims, sections, times, page.parent, figure=lambda p: copies.get(p, p)))
