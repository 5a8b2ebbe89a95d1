"""What an experiment of ``fastpg reproduce`` is and what it reports (docs/design.md, "Reproducing
the paper", "A report that can fail").

An experiment is one module of :mod:`fastpg.paper` that defines ``EXPERIMENT``, an
:class:`Experiment`: its name (its folder under the report's), its settings (full and quick), and
the function that runs it and returns an :class:`Outcome`: its :class:`Claim` rows and the report's
:class:`Section` with its figure. :func:`registry` finds them; ``fastpg reproduce`` is a loop over it.
A claim's verdict comes from :class:`Rule` objects, whose text is rendered from the limits they check.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

YES, NO, VACUOUS, NOT_MEASURED, REPORTED = "yes", "no", "vacuous", "not measured", "reported"


@dataclass(frozen=True)
class Rule:
    """A prediction: the measured ``statistic`` lies in ``[low, high]``. Its text is rendered from the
    same limits the check uses, so the report cannot say one thing and check another."""

    statistic: str
    low: float = -math.inf
    high: float = math.inf

    def holds(self, x) -> bool | None:
        """Whether ``x`` lies in the limits; None where ``x`` was not measured (nan, None)."""
        if x is None or not math.isfinite(x):
            return None
        return bool(self.low <= x <= self.high)

    def __str__(self) -> str:
        if self.low == -math.inf:
            return f"{self.statistic} <= {self.high:.3g}"
        if self.high == math.inf:
            return f"{self.statistic} >= {self.low:.3g}"
        return f"{self.statistic} in [{self.low:.3g}, {self.high:.3g}]"


@dataclass
class Claim:
    """One row of the report (docs/design.md, "A report that can fail").

    ``checks`` pairs each :class:`Rule` with the statistic it is checked on; ``power`` says what
    would make the rules fail on this design (an alternative the data could have shown, or the
    deliberate defect of :mod:`fastpg.defects` that flips the row in the test suite), and
    ``powered`` is False where this design could not have failed them whatever the simulator did.
    The verdict, :attr:`status`, is ``reported`` without rules, ``not measured`` where a statistic
    is missing (censored, no points), ``no`` where a rule fails, ``vacuous`` where the rules hold
    but could not have failed, else ``yes``.
    """

    experiment: str
    claim: str
    measured: str
    value: float
    low: float = float("nan")
    high: float = float("nan")
    theory: str = ""
    checks: list = field(default_factory=list)
    power: str = ""
    powered: bool = True
    note: str = ""

    @property
    def status(self) -> str:
        if not self.checks:
            return REPORTED
        verdicts = [rule.holds(x) for rule, x in self.checks]
        if any(v is None for v in verdicts):
            return NOT_MEASURED
        if not all(verdicts):
            return NO  # a rule that failed could fail, whatever its power
        return YES if self.powered else VACUOUS

    @property
    def holds(self) -> bool | None:
        """True / False for a powered, measured rule; None otherwise."""
        return {YES: True, NO: False}.get(self.status)

    @property
    def rule(self) -> str:
        return "; ".join(f"{rule} (here {fmt(x)})" for rule, x in self.checks)


@dataclass(frozen=True)
class Section:
    """A part of the report: a title, a paragraph and the figure it shows (a file the experiment wrote)."""

    title: str
    text: str
    figure: Path | None = None


@dataclass
class Outcome:
    """What an experiment returns: its claims, its report sections, and its own result (for callers
    that want the numbers behind them: the runs, the fits)."""

    claims: list[Claim]
    sections: list[Section]
    result: object = None


@dataclass(frozen=True)
class Experiment:
    """One experiment of ``fastpg reproduce``.

    ``run(out, settings, progress)`` computes it into the folder ``out`` (resumable: complete run
    files are kept) and returns its :class:`Outcome`; ``settings`` are :meth:`settings_for` the
    run's size: ``full`` (the default report) updated by ``quick`` (a smoke test) where asked.
    ``order`` places it in the report.
    """

    name: str
    order: int
    run: Callable[..., Outcome]
    full: dict
    quick: dict = field(default_factory=dict)

    def settings_for(self, quick: bool = False) -> dict:
        return {**self.full, **(self.quick if quick else {})}


def registry() -> list[Experiment]:
    """Every module of :mod:`fastpg.paper` that defines ``EXPERIMENT``, in report order."""
    from .. import paper

    found = []
    for module in pkgutil.iter_modules(paper.__path__):
        experiment = getattr(importlib.import_module(f"{paper.__name__}.{module.name}"), "EXPERIMENT", None)
        if isinstance(experiment, Experiment):
            found.append(experiment)
    return sorted(found, key=lambda e: (e.order, e.name))


def fmt(v) -> str:
    """A number for the report: three significant digits, ``-`` for none."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.3g}"


def span(low, high) -> str:
    """``low-high`` for the report, one value where they are equal."""
    return fmt(low) if fmt(low) == fmt(high) else f"{fmt(low)}-{fmt(high)}"


def interval(values) -> tuple[float, float, float]:
    """Mean, min and max of the finite ``values`` (nan where there are none)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    return float(np.mean(v)), float(np.min(v)), float(np.max(v))


def claims_table(claims: list[Claim]) -> str:
    """The report's table: one row per claim, with its verdict, the rule and the statistic it was
    checked on, and what would have made the rule fail here."""
    lines = ["| experiment | claim | measured quantity | fitted value [interval over seeds] | theory | verdict | "
             "rule (the statistic here) | power: what fails it |",
             "|---|---|---|---|---|---|---|---|"]
    for c in claims:
        span = f" [{fmt(c.low)}, {fmt(c.high)}]" if math.isfinite(c.low) or math.isfinite(c.high) else ""
        status = c.status
        verdict = "**no**" if status == NO else status
        note = f" ({c.note})" if c.note else ""
        cells = [c.experiment, c.claim, c.measured + note, fmt(c.value) + span, c.theory, verdict, c.rule or "-",
                 c.power or "-"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def verdict_counts(claims: list[Claim]) -> str:
    """The report's summary line: how many rows hold, fail, are vacuous, not measured or reported."""
    n = {status: sum(c.status == status for c in claims) for status in (YES, NO, VACUOUS, NOT_MEASURED, REPORTED)}
    return (f"{n[YES]} of {n[YES] + n[NO]} claims with a powered rule hold ({n[NO]} {'does' if n[NO] == 1 else 'do'} "
            f"not); {n[VACUOUS]} vacuous "
            f"(this design could not have failed them), {n[NOT_MEASURED]} not measured, {n[REPORTED]} reported "
            "without a rule.")
