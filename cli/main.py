"""``fastpg`` subcommands. Thin: parse options, call the library, print one-line errors."""

from __future__ import annotations

import os
import sys

import click

import fastpg
from fastpg import interrupts
from fastpg.analysis.plots import PlotUnavailable
from fastpg.config import ConfigError, flag
from fastpg.interrupts import Terminated
from fastpg.store import OutputError, recording, unclosable_files

from .experiments import fig1_cmd, plot_cmd, pretrain_cmd
from .info import describe
from .options import resolve, run_options
from .profile import profile_cmd
from .progress import Progress
from .reproduce import reproduce_cmd
from .sweep import sweep_cmd

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(fastpg.__version__, prog_name="fastpg")
def main():
    """Simulate policy-gradient post-training of linear autoregressive models (arXiv:2603.06957).

    \b
    Examples:
      fastpg run --preset tiny --out tiny.h5
      fastpg run -d 32 -k 4 -N 8 --algorithm rs --reward prm --base uniform --out rs.h5
      fastpg info tiny.h5
      fastpg fig1 results/fig1
      fastpg pretrain results/pretrain
      fastpg plot lq results/fig1/fig1-orm-seed0.h5 --out lq.png
    """


@main.command("run")
@run_options
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="HDF5 file to write")
@click.option("--overwrite", is_flag=True, help="replace an existing --out file")
@click.option("--continue", "continue_", type=click.Path(dir_okay=False), metavar="FILE",
              help="continue the complete run FILE to a larger --steps (the same file as a run made with it)")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar or summary")
def run_cmd(preset, out, overwrite, continue_, quiet, **given):
    """One run: task, base model and post-training, streamed to one HDF5 file.

    \b
    Examples:
      fastpg run --preset tiny --out tiny.h5
      fastpg run --preset fig1-prm --steps 5000 --out prm.h5
      fastpg run --algorithm rs --reward orm --base uniform -N 6 --eta 0 --out rs.h5
      fastpg run --continue tiny.h5 --steps 4000
    """
    if continue_ is not None:
        other = [name for name, value in given.items() if value is not None and name != "steps"]
        if out or overwrite or preset or other:
            raise ConfigError("--continue", f"takes only --steps (and -q); got {flag(other[0]) if other else '--out'}")
        if given.get("steps") is None:
            raise ConfigError("--steps", "required with --continue: the new, larger budget")
        out = continue_
        bar = Progress(given["steps"], "steps", "post-training", quiet)
        try:
            result = fastpg.continue_run(continue_, given["steps"], progress=bar.update)
        finally:
            bar.close()
    else:
        if not out:
            raise ConfigError("--out", "required: the HDF5 file to write (or --continue FILE)")
        values = resolve(preset, given)
        steps = values.get("steps", fastpg.RunConfig().steps)
        bar = Progress(steps, "steps", "post-training", quiet)
        try:
            result = fastpg.run(values, out, overwrite=overwrite, progress=bar.update)
        finally:
            bar.close()
    if not quiet:
        t = result.trace
        click.echo(
            f"wrote {out}: complete, {int(t['steps'][-1])} steps, expected_error {t['expected_error'][-1]:.4g}, "
            f"greedy_error {t['greedy_error'][-1]:.4g}, orm_queries {t['orm_queries'][-1]:.6g}, "
            f"prm_queries {t['prm_queries'][-1]:.6g}" + (f" ({result.message})" if result.message else "")
        )


@main.command("info")
@click.argument("path", type=click.Path(exists=True))
def info_cmd(path):
    """Summary of a result file (also while it is being written) or a folder of them.

    \b
    Examples:
      fastpg info tiny.h5
    """
    click.echo(describe(path))


main.add_command(sweep_cmd)
main.add_command(fig1_cmd)
main.add_command(pretrain_cmd)
main.add_command(plot_cmd)
main.add_command(profile_cmd)
main.add_command(reproduce_cmd)


def _error(message: str, code: int) -> int:
    click.echo(f"fastpg: error: {message}", err=True)
    return code


def _stopped(exc: BaseException) -> int:
    """The line and exit status for Ctrl-C (130) or SIGTERM (143, as a shell reports a process it ended)."""
    if isinstance(exc, Terminated):
        return _error("terminated (SIGTERM); files of unfinished runs are marked failed", EXIT_TERMINATED)
    return _error("interrupted (Ctrl-C); files of unfinished runs are marked failed", EXIT_INTERRUPTED)


def cli(args=None) -> int:
    """Console entry point: one-line errors, exit 2 for bad input, 1 for failed runs, 130 for
    Ctrl-C, 143 for SIGTERM (both handled where the engine can close its files: fastpg.interrupts)."""
    interrupts.install()
    try:
        with recording(["fastpg", *(sys.argv[1:] if args is None else args)]):  # what result files record
            code = main.main(args=args, prog_name="fastpg", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except click.exceptions.Abort as exc:  # click's wrapper of KeyboardInterrupt (and EOF at a prompt)
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, KeyboardInterrupt):
            return _stopped(cause)
        return _error("interrupted", EXIT_INTERRUPTED)
    except click.ClickException as exc:
        return _error(" ".join(exc.format_message().split()), EXIT_BAD_INPUT)
    except (ConfigError, OutputError) as exc:  # the library names parameters; here they are flags
        return _error(exc.for_cli(), EXIT_BAD_INPUT)
    except PlotUnavailable as exc:
        return _error(str(exc), EXIT_BAD_INPUT)
    except fastpg.RunFailed as exc:
        return _error(exc.for_cli(), EXIT_FAILED)
    except KeyboardInterrupt as exc:
        return _stopped(exc)
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        what = exc.strerror if exc.filename and exc.strerror else str(exc)
        return _error(f"I/O error{where}: {' '.join(what.split())}; unfinished runs are marked failed where possible",
                      EXIT_FAILED)


def entry() -> None:
    code = cli()
    if unclosable_files():  # a full disk left HDF5 files it cannot close: exiting normally would crash
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()

