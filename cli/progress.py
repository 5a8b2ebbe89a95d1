"""Progress on long work: a bar on a terminal, a line every so often in a log (no TTY), nothing with --quiet."""

from __future__ import annotations

import os
import sys
import time

import click

from fastpg.analysis.summaries import duration

LOG_INTERVAL = 30.0  # seconds between progress lines when stderr is not a terminal (FASTPG_PROGRESS_SECONDS)


class Progress:
    """``update(done)`` with a running count out of ``total`` ``unit``; ``close()`` at the end.

    On a terminal: click's progress bar. Otherwise (a batch job's log) one line at most every
    ``FASTPG_PROGRESS_SECONDS`` (default 30) seconds: done / total, the rate and the time left.
    """

    def __init__(self, total: int, unit: str, label: str, quiet: bool = False):
        self.total, self.unit, self.label = max(int(total), 1), unit, label
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.start = time.perf_counter()
        self.last_line = self.start
        self.interval = float(os.environ.get("FASTPG_PROGRESS_SECONDS", LOG_INTERVAL))
        self.done = 0
        self.first = None  # (time, done, work) at the first update with work done
        self.work = None
        self.bar = None
        if not quiet and self.tty:
            self.bar = click.progressbar(length=self.total, label=label, file=sys.stderr)
            self.bar.__enter__()

    COMPILE_NOTE = 10.0  # a first update later than this many seconds is said to be mostly compilation

    def update(self, done: int, work: float | None = None) -> None:
        """``done`` of ``total`` finished; ``work``, where given, the fraction of the work they were
        (runs of a sweep differ in cost): the time left is then measured in it."""
        done = int(done)
        now = time.perf_counter()
        noted = False
        self.work = work
        if self.first is None and done > 0:
            # the rate is measured from here: before it, the kernels were compiled (or loaded)
            self.first = (now, done, work)
            if self.bar is None and not self.quiet and now - self.start > self.COMPILE_NOTE:
                click.echo(f"fastpg: the first {done} {self.unit} of the {self.label} took {duration(now - self.start)}, "
                           "most of it compiling kernels (once: later runs load them from Numba's cache); "
                           "the rate follows", err=True)
                noted = True  # no rate line yet: the only rate so far would include the compilation
                self.last_line = now
        if self.bar is not None:
            self.bar.update(done - self.done)
        elif not self.quiet and not noted:
            if now - self.last_line >= self.interval and done > 0:
                self.last_line = now
                self.line(done, now)
        self.done = done

    def line(self, done: int, now: float) -> None:
        if self.first is not None and done > self.first[1] and now > self.first[0]:
            rate = (done - self.first[1]) / (now - self.first[0])  # compilation left out
        else:
            elapsed = now - self.start
            rate = done / elapsed if elapsed > 0 else float("nan")
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        if self.first is not None and self.first[2] is not None and self.work is not None and self.work > self.first[2]:
            eta = (1 - self.work) * (now - self.first[0]) / (self.work - self.first[2])
        click.echo(f"fastpg: {self.label}: {done}/{self.total} {self.unit} ({100 * done / self.total:.0f}%), "
                   f"{rate:.3g} {self.unit}/s, about {duration(eta)} left", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
