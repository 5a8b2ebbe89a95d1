"""Public Python API: :func:`run` one configuration end to end (task, base model, post-training)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from . import codes, defects, interrupts
from .config import SCHEMA_VERSION, ConfigError, RunConfig, check_trace_size, option_of
from .kernels.engine import Batch
from .metrics import eval_points, likelihood_quantile, test_metrics
from .outputs import TRACE_NAMES
from .result import RunData
from .runs import base_model, post_training_run, pretraining_run
from .store import COMPLETE, FAILED, BatchWriter, RunWriter, check_output, one_line, read_final_W, read_task_arrays
from .tasks import make_task
from .version import __version__


class RunFailed(RuntimeError):
    """The run stopped (e.g. non-finite weights); the file, if any, is marked ``failed``.
    ``parameter`` names the parameter to change (``eta``); ``str()`` is ``"eta: ..."`` and the
    command line shows it under the flag (:meth:`for_cli`)."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter, self.message = parameter, message

    def for_cli(self) -> str:
        return f"{option_of(self.parameter)}: {self.message}"


RunResult = RunData  # the name of fastpg.run's result before it was one type with fastpg.load's


def _as_config(config) -> RunConfig:
    if isinstance(config, RunConfig):
        config = config.to_dict()
    return RunConfig.from_dict(dict(config or {}))


def _task_record(task, teacher_scale: str) -> dict:
    """The task's datasets and attributes for its file (units and descriptions: :mod:`fastpg.outputs`)."""
    return {
        "datasets": {"W_star": task.W_star, "test_x": task.test_x, "test_y": task.test_y.astype(np.int32),
                     "test_margin": task.test_margin, "centres": task.centres},
        "attrs": {
            "gamma": task.gamma,
            "realised_min_margin": task.realised_min_margin,
            "acceptance": task.acceptance,
            "pilot_margin_quantiles": json.dumps(task.pilot_margin_quantiles),
        },
        "describe": {"teacher_scale": teacher_scale,
                     "teacher_norm": "Frobenius norm 1" if teacher_scale == "frobenius" else
                                     "every block of norm 1, so ||W*||^2 = the number of blocks"},
    }


def _base_record(W0, loglik, token, offsupport, lq) -> tuple[dict, dict]:
    """The base model's datasets and attributes, and its Likelihood Quantile tables, for its file."""
    base = {
        "datasets": {"W": W0, "loglik": loglik, "token_loglik": token},
        "attrs": {
            "offsupport_count": int(offsupport.sum()),
            "offsupport_fraction": float(offsupport.mean()),
        },
    }
    lq_ds = {name: lq[name] for name in ("alpha", "cdf", "token_cdf", "level", "loglik_quantile", "token_loglik_quantile")}
    return base, lq_ds


def run(config=None, out=None, *, overwrite: bool = False, argv: list[str] | None = None, progress=None) -> RunData:
    """Run one configuration: build the task, the base model, post-train, evaluate, and stream to ``out``.

    Parameters
    ----------
    config : RunConfig or dict
        Run parameters (:data:`fastpg.config.PARAMS`) (missing ones take their defaults).
    out : path, optional
        HDF5 file to write (docs/design.md, "Result files"). ``None`` keeps the results in memory only.
    overwrite : bool
        Replace an existing ``out``; otherwise an existing file is refused before any work.
    progress : callable, optional
        Called with the number of post-training steps done after each evaluation point.

    Returns
    -------
    RunData
        The run's results, the same as :func:`fastpg.load` reads back from ``out``.

    Raises
    ------
    ConfigError
        Bad input, naming the parameter (nothing written).
    RunFailed
        The weights diverged (the file is marked ``failed``).
    """
    (result,) = run_batch([config], [out], overwrite=overwrite, argv=argv, progress=progress, raise_errors=True)
    return result


def run_batch(configs, outs=None, *, overwrite: bool = False, argv=None, progress=None,
              raise_errors: bool = False, batch_file=None, run_ids=None) -> list[RunData]:
    """Runs of one shape and one evaluation schedule, advanced together by one parallel kernel.

    Every run keeps its own random streams, so its results are bit-identical to running it
    alone. Results go to a file per run (``outs``, None entries for none) or to one
    ``batch_file`` holding every run that starts, named by ``run_ids`` (docs/design.md, "Batch
    files").

    Parameters
    ----------
    configs : list of RunConfig or dict
        The runs; they must share the shape and evaluation schedule (:func:`_batch_key`).
    outs : list of path or None, optional
        A file per run (None: kept in memory only).
    overwrite : bool
        Replace existing files; otherwise an existing file is refused before any work.
    progress : callable, optional
        Called with the steps done after each evaluation point.
    raise_errors : bool
        Raise the first run's error; with False a run that cannot start (bad input) or diverges
        is returned with ``status = "failed"`` and its ``message``, and the others go on.
    batch_file, run_ids
        One file for all the runs, and their ids (what ``fastpg sweep --layout batch`` uses).

    Returns
    -------
    list of RunData
        One per configuration, in order.
    """
    cfgs = [_as_config(c) for c in configs]
    shape = {_batch_key(c) for c in cfgs}
    if len(shape) > 1:
        raise ValueError("run_batch needs runs of one shape and one evaluation schedule")
    if batch_file is not None:
        if outs is not None and any(o is not None for o in outs):
            raise ValueError("run_batch takes outs or batch_file, not both")
        if run_ids is None or len(run_ids) != len(cfgs):
            raise ValueError("a batch_file needs one run id per configuration")
        check_output(batch_file, overwrite)
    outs = [None] * len(cfgs) if outs is None else outs
    for out in outs:
        if out is not None:
            check_output(out, overwrite)
    results, members, arrays = [None] * len(cfgs), [], []
    for i, (cfg, out) in enumerate(zip(cfgs, outs)):
        try:
            task = make_task(cfg)
            W0 = base_model(cfg, task, read_final_W)
        except ConfigError as exc:
            if raise_errors:
                raise
            results[i] = _Member(i, cfg, None, None, "post-training", "eta", cfg.eta).not_started(str(exc))
            continue
        members.append(_Member(i, cfg, task, out, "post-training", "eta", cfg.eta))
        arrays.append(post_training_run(cfg, task, W0))
    if members:
        points = eval_points(cfgs[0].steps, cfgs[0].eval_every, cfgs[0].eval_log)
        _drive(members, Batch(arrays), points, argv=argv, progress=progress, raise_errors=raise_errors,
               batch_file=batch_file, run_ids=run_ids)
        for m in members:
            results[m.index] = m.result
    return results


def continue_run(path, steps: int, *, argv: list[str] | None = None, progress=None) -> RunData:
    """Continue a complete run to the larger budget ``steps`` (docs/design.md, "Budgets").

    The file becomes the one a run made with ``steps`` from the start would have written, bit
    for bit (``wall_time`` and the ``created``/``argv`` attributes aside): the task and base
    model are rebuilt from the stored parameters (and checked against the file), the weights,
    counters, generator and event states restored from ``/final``, the stored rows kept and the
    run advanced from its last step. The new file is written beside the old one and replaces it
    only once complete, so an interrupted continuation leaves the old file as it was.

    Parameters
    ----------
    path : path
        A complete post-training run file.
    steps : int
        The new budget, larger than the run's.
    progress : callable, optional
        Called with the steps done after each evaluation point.

    Returns
    -------
    RunData
        The continued run (its file replaced).

    Raises
    ------
    ConfigError
        (``continue`` or ``steps``) For a file that cannot be continued: not complete, stopped
        early, made before fastpg stored the states, a batch file, or with evaluation points that
        a longer run would not share (``eval_log``, or a budget that is not a multiple of
        ``eval_every``).
    """
    from .store import load

    path = Path(path)
    try:
        data = load(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError("continue", f"cannot read {path} ({exc.__class__.__name__}); allowed: a complete fastpg "
                                        "run file") from None
    if data.status != COMPLETE or data.experiment != "post-training":
        raise ConfigError("continue", f"{path} is {data.status} ({data.experiment}); allowed: a complete "
                                        "post-training run file")
    if data.message:
        raise ConfigError("continue", f"{path} {data.message}: a longer budget would stop there again")
    final = read_task_arrays(path, group="final")
    if "state" not in final:
        raise ConfigError("continue", f"{path} was made before fastpg stored a run's generator state; allowed: "
                                        "files from this version (re-run it)")
    done = int(data.trace["steps"][-1])
    cfg = RunConfig.from_dict({**data.config, "steps": steps})
    if steps <= done:
        raise ConfigError("steps", f"got {steps}; allowed: more than the {done} steps {path} has done")
    if cfg.eval_log > 0 or done % cfg.eval_every:
        raise ConfigError("continue", f"{path} has evaluation points a run of {steps} steps would not have "
                                        f"(eval_log={cfg.eval_log}, {done} steps every {cfg.eval_every}); allowed: runs "
                                        "with --eval-every whose budget is a multiple of it")
    task = make_task(cfg)
    batch = Batch([post_training_run(cfg, task, base_model(cfg, task, read_final_W))])
    base, base_W = batch.evaluate(), batch.W.copy()
    if not np.array_equal(base[0][0], data.base["loglik"]):
        raise ConfigError("continue", f"{path}: this fastpg does not rebuild the same base model (a file of "
                                        "another version?); allowed: files whose base model it reproduces")
    batch.W[0][...] = final["W"]
    batch.states[0][...] = final["state"]
    batch.events[0][...] = final["events"]
    batch.counters[0][...] = [data.trace[name][-1] for name in codes.COUNTERS]
    token = data.token_loglik if cfg.token_trace else np.zeros((data.rows, cfg.n_test, cfg.N))
    rows = [({name: float(data.trace[name][i]) for name in TRACE_NAMES}, data.loglik[i], token[i])
            for i in range(data.rows)]
    tmp = path.with_name(f".{path.name}.continue")
    member = _Member(0, cfg, task, tmp, "post-training", "eta", cfg.eta)
    try:
        _drive([member], batch, eval_points(steps, cfg.eval_every, cfg.eval_log), argv=argv, progress=progress,
               raise_errors=True, base=base, base_W=base_W, history=(done, rows))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.replace(tmp, path)
    member.result.path = str(path)
    return member.result


def _batch_key(cfg: RunConfig) -> tuple:
    """Runs with equal keys can share a batch: same array shapes and evaluation points."""
    contexts = cfg.C if cfg.contexts == "clusters" else 0
    return (cfg.d, cfg.k, cfg.N, cfg.features, contexts, cfg.n_train, cfg.n_test, cfg.G, cfg.steps,
            cfg.eval_every, cfg.eval_log, cfg.token_trace)


def pretrain(config=None, out=None, *, overwrite: bool = False, argv: list[str] | None = None,
             progress=None) -> RunData:
    """The statistical-learning experiment (docs/design.md, "Base models"): SGD on the log-loss from ``W = 0``.

    Runs ``n_pre`` steps of pre-training on fresh labelled contexts from the pre-training
    distribution, evaluating at the points given by ``eval_every`` / ``eval_log`` (counted in
    samples seen). The file has the run layout: ``/base`` holds the starting point ``W = 0``,
    ``/trace/steps`` the samples seen, ``/final/W`` the pre-trained weights; the root attribute
    ``experiment`` is ``"pretrain"``.

    Parameters
    ----------
    config : RunConfig or dict
        The task and the pre-training parameters (``n_pre``, ``pre_lr``, ``pre_eta``, ...).
    out : path, optional
        HDF5 file to write; None keeps the results in memory only.
    overwrite : bool
        Replace an existing ``out``.
    progress : callable, optional
        Called with the samples seen after each evaluation point.

    Returns
    -------
    RunData
        With ``experiment == "pretrain"``.
    """
    cfg = _as_config(config)
    if out is not None:
        check_output(out, overwrite)
    task = make_task(cfg)
    member = _Member(0, cfg, task, out, "pretrain", "pre_eta", cfg.pre_eta)
    check_trace_size(cfg, cfg.n_pre)
    points = eval_points(cfg.n_pre, cfg.eval_every, cfg.eval_log)
    _drive([member], Batch([pretraining_run(cfg, task)]), points, argv=argv, progress=progress, raise_errors=True)
    return member.result


class _Chunker:
    """Sub-chunk sizes that keep each kernel call near ``CHUNK_SECONDS`` of wall time.

    The kernels cannot see signals, so a long segment between evaluation points is advanced in
    pieces; a run's state (weights, counters, generator) carries over exactly, so the results
    are the same for any chunking.
    """

    CHUNK_SECONDS = 0.25

    def __init__(self):
        self.n = 256

    def size(self, remaining: int) -> int:
        return int(min(remaining, self.n))

    def observe(self, n: int, seconds: float) -> None:
        if seconds < self.CHUNK_SECONDS / 4:
            self.n = min(self.n * 4, 1 << 40)
        elif seconds > self.CHUNK_SECONDS:
            self.n = max(1, self.n // 2)


class _Member:
    """One run of a batch: its writer, its trace so far, and whether it has failed."""

    def __init__(self, index, cfg, task, out, experiment, eta_name, eta):
        self.index, self.cfg, self.task, self.out = index, cfg, task, out
        self.experiment, self.eta_name, self.eta = experiment, eta_name, eta
        self.writer: RunWriter | None = None
        self.created = _dt.datetime.now(_dt.UTC).isoformat()
        self.trace = {name: [] for name in TRACE_NAMES}
        self.logliks, self.token_logliks = [], []
        self.offsupport: np.ndarray | None = None
        self.static: dict | None = None  # task, base model and LQ records (records())
        self.error: Exception | None = None
        self.result: RunData | None = None

    def diverged(self, what: str, done: int) -> RunFailed:
        name = self.eta_name
        return RunFailed(name, f"{what} before step {done} ({name}={self.eta:g}); allowed: a smaller {name}")

    def set_base(self, loglik: np.ndarray) -> None:
        """The base model's test log-likelihoods: they define the off-support set (or an error)."""
        if not np.all(np.isfinite(loglik)):
            name = "beta" if self.cfg.base == "teacher" else "pre_eta"
            self.error = ConfigError(name, "the base model's likelihoods are not finite; allowed: smaller weights")
        else:
            self.offsupport = loglik < math.log(self.cfg.alpha_off)

    def set_static(self, W0, loglik0, token0) -> None:
        """The run's static data, for its file and its result: task, base model and Likelihood Quantile records."""
        base, lq_ds = _base_record(W0, loglik0, token0, self.offsupport, likelihood_quantile(loglik0, token0))
        self.static = {"task": _task_record(self.task, self.cfg.teacher_scale), "base": base, "lq": lq_ds}

    def open_writer(self, argv, W_shape, resume_shapes=None) -> None:
        """Create the run's file with its task, base model and Likelihood Quantile (SWMR from here)."""
        cfg = self.cfg
        self.writer = RunWriter(self.out, config=cfg.to_dict(), argv=list(argv or []), n_test=cfg.n_test, N=cfg.N,
                                token_trace=cfg.token_trace, experiment=self.experiment)
        self.writer.open(**self.static, W_shape=W_shape, resume_shapes=resume_shapes)

    def check(self, status: int, loglik: np.ndarray, done: int) -> Exception | None:
        """The error that ends this run at an evaluation point, if any (kernel status, likelihoods)."""
        if status == codes.NON_FINITE:
            return self.diverged(f"weights diverged (non-finite or above {codes.MAX_ABS_WEIGHT:g})", done)
        if status == codes.REJECTION_FAILED:  # pragma: no cover - probability about e^-50
            return RunFailed("gamma", "rejection sampling for the margin ran out of tries; allowed: a smaller gamma")
        if not np.all(np.isfinite(loglik)):
            return self.diverged("likelihoods became non-finite", done)
        return None

    def stop_reason(self, row: dict, done: int) -> str:
        """Why the run stops early at this evaluation point (``stop_eps``, ``max_queries``), or ""."""
        cfg = self.cfg
        if cfg.stop_eps > 0 and row["expected_error"] <= cfg.stop_eps:
            return (f"stopped early at step {done}: expected error {row['expected_error']:.6g} <= stop_eps "
                    f"{cfg.stop_eps:g}")
        queries = row["orm_queries" if cfg.reward == "orm" else "prm_queries"]
        if cfg.max_queries > 0 and queries >= cfg.max_queries:
            return f"stopped early at step {done}: {cfg.reward}_queries {queries:.6g} >= max_queries {cfg.max_queries}"
        return ""

    def record(self, row, loglik, token) -> None:
        for name in TRACE_NAMES:
            self.trace[name].append(row[name])
        self.logliks.append(np.array(loglik, dtype=np.float64))
        if self.cfg.token_trace:
            self.token_logliks.append(np.array(token, dtype=np.float64))
        if self.writer is not None:
            self.writer.append(row, loglik, token)

    def finish(self, status: str, W: np.ndarray | None, message: str = "", state=None, events=None) -> None:
        """Close the run: its file's final status (with ``W`` and, for continuing it, the generator
        ``state`` and ``events`` when complete) and its :class:`RunData`: what :func:`fastpg.load`
        reads back from the file."""
        complete = status == COMPLETE
        if self.writer is not None:
            self.writer.close(status, W_final=W if complete else None, message=message,
                              state=state if complete else None, events=events if complete else None)
            self.writer = None
        cfg, static = self.cfg, self.static
        n = len(self.logliks)
        self.result = RunData(
            path=None if self.out is None else str(self.out), status=status, message=message, experiment=self.experiment,
            created=self.created, fastpg_version=__version__, schema_version=SCHEMA_VERSION, config=cfg.to_dict(),
            trace={k: np.array(v, dtype=np.float64) for k, v in self.trace.items()},
            loglik=np.array(self.logliks).reshape(n, cfg.n_test),
            token_loglik=np.array(self.token_logliks).reshape(n, cfg.n_test, cfg.N) if cfg.token_trace else None,
            base={} if static is None else {"loglik": static["base"]["datasets"]["loglik"],
                                            "token_loglik": static["base"]["datasets"]["token_loglik"],
                                            **static["base"]["attrs"]},
            lq={} if static is None else dict(static["lq"]),
            task={} if static is None else dict(static["task"]["attrs"]),
            final_W=W.copy() if complete and W is not None else None,
        )

    def not_started(self, message: str) -> RunData:
        """The result of a run that could not start (bad input): ``failed``, with no rows."""
        self.finish(FAILED, None, message)
        return self.result

    def fail(self, error: Exception) -> None:
        self.error = error
        self.finish(FAILED, None, str(error))


def _advance(batch, members, steps: int, chunk: _Chunker, progress, done: int) -> np.ndarray:
    """Advance every live run by ``steps`` in bounded sub-chunks (Ctrl-C is seen promptly; results do
    not depend on the chunking); returns the worst kernel status of each run."""
    status = np.zeros(len(members), dtype=np.int64)
    target = done + steps
    while done < target:
        n = chunk.size(target - done)
        t0 = time.perf_counter()
        st = batch.advance(np.array([0 if m.result is not None or status[r] else n for r, m in enumerate(members)]),
                           settle=done + n >= target)
        chunk.observe(n, time.perf_counter() - t0)
        status = np.maximum(status, st)
        done += n
        interrupts.check()  # Ctrl-C or SIGTERM received during the chunk
        if progress is not None and done < target:
            progress(done)
    return status


def _open_batch_file(path, members, slots, ids, argv, batch, n_points) -> BatchWriter:
    """One file for the runs ``slots`` of the batch (docs/design.md, "Batch files")."""
    cfg = members[slots[0]].cfg
    writer = BatchWriter(path, ids=[ids[members[r].index] for r in slots], configs=[members[r].cfg.to_dict() for r in slots],
                         argv=list(argv or []), n_test=cfg.n_test, N=cfg.N, token_trace=cfg.token_trace,
                         experiment=members[slots[0]].experiment, expected_rows=n_points)
    records = [members[r].static for r in slots]
    writer.open(tasks=[x["task"] for x in records], bases=[x["base"] for x in records],
                lqs=[x["lq"] for x in records], W_shape=batch.W[slots[0]].shape)
    return writer


def _drive(members, batch, points, **options) -> None:
    """Advance a batch between evaluation ``points``, evaluating every run and streaming its rows,
    to a file per run (``_Member.out``) or to one ``batch_file`` for all (runs named by ``run_ids``).

    A run that fails is closed as ``failed`` and frozen (it takes no more steps); with
    ``raise_errors`` its error is raised once every file is closed. Ctrl-C and SIGTERM are taken
    between kernel calls (:mod:`fastpg.interrupts`): every open file is then marked ``failed``.
    """
    with interrupts.deferred():
        _drive_batch(members, batch, points, **options)


def _drive_batch(members, batch, points, *, argv, progress, raise_errors, batch_file=None, run_ids=None, base=None,
                 base_W=None, history=None) -> None:
    # the base model's evaluation; a continued run (``history``) gets it from before its state was restored
    loglik0, token0, greedy0 = batch.evaluate() if base is None else base
    base0, base_token0 = defects.base_likelihoods(loglik0, token0)  # as evaluated (a testing hook aside)
    for r, m in enumerate(members):
        m.set_base(base0[r])
        if m.error is None:
            m.set_static(batch.W[r] if base_W is None else base_W[r], base0[r], base_token0[r])
    batch_writer, slots = None, [r for r, m in enumerate(members) if m.error is None]
    try:
        if batch_file is not None and slots:
            batch_writer = _open_batch_file(batch_file, members, slots, run_ids, argv, batch, len(points))
        for r, m in enumerate(members):
            if m.error is None and m.out is not None:
                m.open_writer(argv, batch.W[r].shape,
                              (batch.states[r].shape, batch.events[r].shape) if m.experiment == "post-training" else None)
        start = time.perf_counter()
        done = 0
        if history is not None:  # a continued run: its rows so far, then on from their last step
            done, rows_so_far = history
            for row, loglik, token in rows_so_far:
                members[0].record(row, loglik, token)
            start -= rows_so_far[-1][0]["wall_time"]
        chunk = _Chunker()
        for step in points:
            if all(m.result is not None for m in members):
                break  # every run stopped early or failed: nothing left to advance
            if history is not None and step <= done:
                continue
            if step > done:
                status = _advance(batch, members, step - done, chunk, progress, done)
                done = step
                loglik, token, greedy = batch.evaluate()
            else:
                status = np.zeros(len(members), dtype=np.int64)
                loglik, token, greedy = loglik0, token0, greedy0
            rows = {}
            for r, m in enumerate(members):
                if m.result is not None:  # failed or stopped early: frozen
                    continue
                error = m.check(status[r], loglik[r], done)
                if error is None:
                    row = dict(zip(codes.COUNTERS, batch.counters[r].tolist()))
                    if defects.active("prm-one-query") and m.cfg.reward == "prm":  # testing only (fastpg.defects)
                        row["prm_queries"] = row["sequences"]
                    row.update(test_metrics(loglik[r], greedy[r], m.offsupport))
                    row["wall_time"] = time.perf_counter() - start
                    if all(math.isfinite(v) for v in row.values()):
                        m.record(row, loglik[r], token[r])
                        rows[r] = row
                        reason = m.stop_reason(row, done)
                        if reason:
                            m.finish(COMPLETE, batch.W[r], reason, batch.states[r], batch.events[r])
                    else:
                        error = m.diverged("metrics became non-finite", done)
                if error is not None:
                    m.fail(error)
            if batch_writer is not None:
                batch_writer.append([rows.get(r) for r in slots], loglik[slots], token[slots])
            if progress is not None:
                progress(done)
        for r, m in enumerate(members):
            if m.result is not None:
                continue
            if m.error is None:
                m.finish(COMPLETE, batch.W[r], "", batch.states[r], batch.events[r])
            else:
                m.finish(FAILED, None, str(m.error))
        if batch_writer is not None:
            done_ok = [members[r].result.status == COMPLETE for r in slots]
            batch_writer.close([members[r].result.status for r in slots], [members[r].result.message for r in slots],
                               np.stack([batch.W[r] if ok else np.zeros_like(batch.W[r]) for r, ok in zip(slots, done_ok)]))
    except BaseException as exc:
        message = one_line(exc)
        if batch_writer is not None:
            batch_writer.abort(message)
        for m in members:
            if m.writer is not None:
                m.writer.abort(message)
                m.writer = None
        raise
    if raise_errors:
        for m in members:
            if m.error is not None:
                raise m.error
