"""Running a sweep (docs/design.md, "Sweeps and backends"): batches of runs submitted to a backend's
executor, the index kept as they finish, the estimate printed before and the time left measured
during. :func:`run_sweep_batch` is what a worker runs.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

from ..analysis.summaries import duration
from ..api import BatchFile, RunFailed, continue_run, run_batch, run_into
from ..config import ConfigError, RunConfig
from ..store import (
    BATCH_LAYOUT,
    COMPLETE,
    FAILED,
    batch_statuses,
    command_line,
    read_budget,
    read_status,
    recording,
)
from .backends import open_backend
from .index import Index, index_values
from .spec import DEFAULT_EPS, MAX_BATCH, RUN_LAYOUT, Sweep


def run_sweep_batch(configs: list[dict], paths: list[str] | None, argv=None, num_threads: int | None = None,
                    eps_list=(DEFAULT_EPS,), alphas=(), batch_file: str | None = None, run_ids=None,
                    extend: bool = False) -> list[tuple]:
    """Run one batch (also on a Dask worker); returns ``(status, message, index values)`` per run.

    Results go to ``paths`` (a file per run) or to one ``batch_file`` (its runs named by
    ``run_ids``); paths are absolute (a worker may run in another directory). The files record
    ``argv``, the sweep's command line (:func:`fastpg.store.recording`). Runs whose file is
    already complete are skipped and reported complete (their index values are then read from the
    file). The index values of a run that completed here are computed from its results in memory,
    so the sweep does not read its file back (:func:`index_values`).
    """
    with recording(command_line() if argv is None else argv):
        return _run_sweep_batch(configs, paths, num_threads, eps_list, alphas, batch_file, run_ids, extend)


def _run_sweep_batch(configs, paths, num_threads, eps_list, alphas, batch_file, run_ids, extend) -> list[tuple]:
    if num_threads:
        import numba

        numba.set_num_threads(max(1, min(num_threads, numba.config.NUMBA_NUM_THREADS)))
    for path in paths or [batch_file]:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # A task can run twice (a scheduler recomputes the tasks of a lost worker): a run whose file is
    # already complete is never redone, so a complete file is never rewritten.
    if batch_file is not None:  # a closed batch file is never rewritten, whatever its runs' statuses
        status, _, done = batch_statuses(batch_file) if Path(batch_file).exists() else ("missing", "", {})
        if status == COMPLETE:
            return [(done.get(rid, "missing"), "" if rid in done else "not in its batch file", None) for rid in run_ids]
        todo = list(range(len(configs)))
    else:
        todo = [i for i, path in enumerate(paths) if read_status(path) != COMPLETE]
    out = [(COMPLETE, "", None)] * len(configs)
    for i in [] if batch_file is not None or not extend else [i for i in range(len(configs)) if i not in todo]:
        steps, message = read_budget(paths[i])
        if steps < configs[i]["steps"] and not message:  # a complete run continued to the larger budget
            try:
                r = continue_run(paths[i], configs[i]["steps"])
                out[i] = (r.status, r.message, index_values(r, eps_list, alphas))
            except (ConfigError, RunFailed) as exc:
                out[i] = (FAILED, f"not continued: {exc}", None)
    if todo:
        if batch_file is not None:
            results = run_into(BatchFile(batch_file, run_ids, overwrite=True), configs)
        else:
            results = run_batch([configs[i] for i in todo], [paths[i] for i in todo], overwrite=True)
        for i, r in zip(todo, results):
            values = None
            if r.status == COMPLETE and len(r.trace.get("steps", ())):  # the index row, computed here once
                values = index_values(r, eps_list, alphas)
            out[i] = (r.status, r.message, values)
    return out


START_SECONDS = 3.0  # a sweep's start: imports, kernels loaded from Numba's cache, workers started


def estimate(runs, layout: str = RUN_LAYOUT, *, per_run: bool = False) -> dict:
    """A rough size of ``runs`` before starting them: bytes on disk and seconds of one core
    (with ``per_run``, also ``run_seconds``: each run's share, in order).

    Disk: about 75 KB of HDF5 structure per file (per run, or per batch of up to 64 runs), the
    test set, the base model's Likelihood Quantile tables (17 KB), three copies of ``W`` and a row
    of ``n_test`` log-likelihoods per evaluation point. Time: about 0.4 us plus 2.4 us per 8192
    weights per step (the bench's step cost), the same per pre-training sample (``base=sgd``), the
    exact evaluations, 40 ms (run layout) or 3 ms (batch layout) per run of file and task
    overhead, and 1.8 ms (run layout) or 0.15 ms (batch layout) per run and evaluation point
    (the row written, in Python). An event-driven ``pg`` run (a pool with ``skip``) pays per update, not per step: it
    is counted as at most 1e6 steps. The constants were measured on this project's 2-core machine
    (docs/design.md, "Estimates"); the sweep corrects them by timing its first batch.
    """
    from ..metrics import eval_points

    disk = seconds = 0.0
    run_seconds = []
    for run in runs:
        cfg = run.config
        E = len(eval_points(cfg.steps, cfg.eval_every, cfg.eval_log))
        weights = (cfg.N if cfg.features == "position" else cfg.N * (cfg.k + 1)) * cfg.k * cfg.d
        n, N = cfg.n_test, cfg.N
        per_file = 75_000 if layout == RUN_LAYOUT else 75_000 / MAX_BATCH
        disk += (per_file + n * (cfg.d * 8 + N * 12 + 16) + 17_000 + 3 * weights * 8
                 + E * (n * 8 + 120 + (n * N * 8 if cfg.token_trace else 0)))
        steps = min(cfg.steps, 10**6) if (cfg.algorithm == "pg" and cfg.n_train > 0 and cfg.skip) else cfg.steps
        steps += cfg.n_pre if cfg.base == "sgd" else 0
        one = (steps * (0.4e-6 + 2.4e-6 * weights / 8192) + E * n * 2 * weights / 25e9
               + (0.040 + E * 1.8e-3 if layout == RUN_LAYOUT else 0.003 + E * 0.15e-3))
        seconds += one
        run_seconds.append(one)
    out = {"runs": len(runs), "bytes": disk, "core_seconds": seconds}
    if per_run:
        out["run_seconds"] = run_seconds
    return out


def warm_up(config: RunConfig) -> None:
    """Compile (or load from cache) every kernel a sweep uses, with a tiny run of its shape."""
    small = dict(config.to_dict(), steps=2, n_test=min(config.n_test, 4), n_pre=min(config.n_pre, 2),
                 eval_every=1, eval_log=0, n_train=0)
    try:
        run_batch([small], [None], raise_errors=False)
    except Exception:  # noqa: BLE001 - warming up is best effort; the real run reports errors
        pass


def execute(sweep: Sweep, *, backend: str = "local", scheduler: str | None = None, dask_workers: int | None = None,
            progress=None, notify=None, report=None, pending: list | None = None) -> Index:
    """Run every pending run of ``sweep`` on a backend; returns the index (also written to ``index.csv``).

    Batches go to the backend's executor (:func:`fastpg.backends.open_backend`), at most twice as
    many at once as it has slots; as each finishes, its runs' rows are read from their files, the
    index is rewritten atomically and ``progress(done_runs, total_runs, work=...)`` is called
    (``work``: the fraction of the modelled cost done, :func:`estimate`). A batch that
    raised (a lost worker) leaves its runs incomplete, with the error as their message; so does a
    batch that finished without leaving a complete file where the sweep looks. A re-run redoes
    them. ``notify(message)`` receives the backend's waiting messages (no workers yet), ``report(message)`` the lines
    for the log as the sweep goes: each batch that failed, as it fails, and after the first batch
    the time left from its timing (the pilot). ``pending``
    saves reading every file's status again when the caller has just done it.
    """
    pending = sweep.pending() if pending is None else pending
    if not pending:
        sweep.claim_folder()
        index = Index(sweep)
        index.refresh(sweep.runs)  # every run complete: the sweep has nothing to run
        index.write()
        if progress is not None:
            progress(len(sweep.runs), len(sweep.runs))
        return index
    # connect to the backend first: if no cluster answers, nothing is created
    with open_backend(backend, scheduler=scheduler, n_workers=dask_workers, warm_up=lambda: warm_up(pending[0].config),
                      notify=notify) as (executor, slots, threads):
        sweep.claim_folder()
        if sweep.layout == BATCH_LAYOUT:
            sweep.drop_incomplete_batch_files()
        index = Index(sweep)
        pending_ids = {run.id for run in pending}
        index.refresh([run for run in sweep.runs if run.id not in pending_ids])
        index.write()
        total, done = len(sweep.runs), len(sweep.runs) - len(pending)
        # each run's modelled cost: the time left is measured in it, not in runs (runs of a grid
        # over N can differ by orders of magnitude), and the first batch's time calibrates it
        cost = dict(zip((r.id for r in pending), estimate(pending, sweep.layout, per_run=True)["run_seconds"]))
        work_total, work_done = sum(cost.values()), 0.0
        first = None  # (time, work done) at the first finished batch: before it, workers start and load kernels
        finished_batches = 0
        if progress is not None:
            progress(done, total)
        batches = iter(sweep.batches(pending, n_parts=slots))
        running: dict = {}

        def submit_next() -> None:
            batch = next(batches, None)
            if batch is not None:
                if sweep.layout == BATCH_LAYOUT:
                    target = {"paths": None, "batch_file": str(sweep.batch_file(batch)), "run_ids": [r.id for r in batch]}
                else:
                    target = {"paths": [str(r.path) for r in batch]}
                future = executor.submit(run_sweep_batch, [r.config.to_dict() for r in batch], argv=command_line(),
                                         num_threads=threads, eps_list=sweep.eps_list, alphas=sweep.alphas,
                                         extend=sweep.extend, **target)
                running[future] = (batch, target.get("batch_file"))

        # index.csv is rewritten whole (every run's row), so on a large sweep writing it after each
        # batch costs more than the batches (20,000 runs: 0.3 s a write, 313 batches). It is written
        # once the time since the last write is ten times what that write took (after every batch
        # on small sweeps, so at most a tenth of the time on large ones) and always at the end, on
        # Ctrl-C too; a resume reads the files' own status, not the index.
        written = {"at": 0.0, "took": 0.0}

        def write_index(force: bool = False) -> None:
            now = time.perf_counter()
            if force or now - written["at"] >= 10 * written["took"]:
                index.write()
                written["at"], written["took"] = time.perf_counter(), time.perf_counter() - now

        try:
            for _ in range(2 * slots):
                submit_next()
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    batch, batch_file = running.pop(future)
                    values = {}
                    try:
                        results = future.result()
                        messages = {run.id: msg for run, (_, msg, _) in zip(batch, results) if msg}
                        values = {run.id: v for run, (_, _, v) in zip(batch, results)}
                    except Exception as exc:  # noqa: BLE001 - a lost worker or a crash: those runs are redone next time
                        messages = {run.id: f"worker error: {exc.__class__.__name__}: {exc}" for run in batch}
                        if report is not None:  # in the log as it happens, not only in index.csv at the end
                            report(f"a batch of {len(batch)} runs ({batch[0].id}, ...) failed on the backend "
                                   f"({exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}); a re-run redoes them")
                    index.refresh(batch, messages, values,
                                  where=sweep.locate(batch, files=[batch_file] if batch_file else None))
                    write_index()
                    done += len(batch)
                    batch_work = sum(cost[run.id] for run in batch)
                    work_done += batch_work
                    finished_batches += 1
                    now = time.perf_counter()
                    if first is None:
                        first = (now, work_done)
                    elif finished_batches == slots + 1 and report is not None and running and work_done > first[1]:
                        # the pilot: every slot has finished a batch since the first did, so the time
                        # per modelled second is this machine's, start-up left out
                        left = (now - first[0]) / (work_done - first[1]) * (work_total - work_done)
                        batches_text = f"{finished_batches - 1} batch{'es' if finished_batches > 2 else ''}"
                        report(f"timed {batches_text} after the first: about {duration(left)} left "
                               f"({done}/{total} runs done; the estimate before starting was "
                               f"{duration(START_SECONDS + work_total / (os.cpu_count() or 1))})")
                    if progress is not None:
                        progress(done, total, work=work_done / work_total if work_total > 0 else None)
                    submit_next()
        finally:
            write_index(force=True)
    return index
