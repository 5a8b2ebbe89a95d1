"""Public Python API: :func:`run` one configuration end to end (task, base model, post-training)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from . import codes
from .config import ConfigError, RunConfig, check_trace_size
from .driver import BatchFile, Member, RunFailed, RunFiles, Sink, drive
from .kernels.engine import Batch
from .metrics import eval_points, pass_k_metrics
from .outputs import sampling_policy, trace_names
from .result import RunData
from .runs import base_model, post_training_run, pretraining_run
from .store import COMPLETE, check_output, read_final_W, read_task_arrays
from .tasks import make_task

__all__ = ["run", "run_batch", "continue_run", "pretrain", "run_into", "RunFailed", "RunResult", "BatchFile", "RunFiles",
           "Sink"]


RunResult = RunData  # the name of fastpg.run's result before it was one type with fastpg.load's


def _as_config(config) -> RunConfig:
    if isinstance(config, RunConfig):
        config = config.to_dict()
    return RunConfig.from_dict(dict(config or {}))


def run(config=None, out=None, *, overwrite: bool = False, progress=None) -> RunData:
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
    (result,) = run_batch([config], [out], overwrite=overwrite, progress=progress, raise_errors=True)
    return result


def run_batch(configs, outs=None, *, overwrite: bool = False, progress=None, raise_errors: bool = False) -> list[RunData]:
    """Runs of one shape and one evaluation schedule, advanced together by one parallel kernel.

    Every run keeps its own random streams, so its results are bit-identical to running it
    alone.

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

    Returns
    -------
    list of RunData
        One per configuration, in order.
    """
    outs = [None] * len(configs) if outs is None else list(outs)
    if len(outs) != len(configs):
        raise ValueError("run_batch needs one out (or None) per configuration")
    for out in outs:
        if out is not None:
            check_output(out, overwrite)
    return run_into(RunFiles(), configs, outs, progress=progress, raise_errors=raise_errors)


def run_into(sink: Sink, configs, outs=None, *, progress=None, raise_errors: bool = False) -> list[RunData]:
    """:func:`run_batch` with its rows going to ``sink`` (:mod:`fastpg.driver`): a
    :class:`BatchFile` puts every run of the batch in one file (``fastpg sweep --layout batch``).
    ``outs`` are the members' own files, for a :class:`RunFiles` sink."""
    cfgs = [_as_config(c) for c in configs]
    if len({_batch_key(c) for c in cfgs}) > 1:
        raise ValueError("run_batch needs runs of one shape and one evaluation schedule")
    outs = [None] * len(cfgs) if outs is None else outs
    results, members, arrays = [None] * len(cfgs), [], []
    for i, (cfg, out) in enumerate(zip(cfgs, outs)):
        try:
            task = make_task(cfg)
            W0 = base_model(cfg, task, read_final_W)
        except ConfigError as exc:
            if raise_errors:
                raise
            results[i] = Member(i, cfg, None).not_started(str(exc))
            continue
        members.append(Member(i, cfg, task, out))
        arrays.append(post_training_run(cfg, task, W0))
    if members:
        points = eval_points(cfgs[0].steps, cfgs[0].eval_every, cfgs[0].eval_log)
        drive(members, Batch(arrays), points, sink, progress=progress, raise_errors=raise_errors)
        for m in members:
            results[m.index] = m.result
    return results


def continue_run(path, steps: int, *, progress=None) -> RunData:
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
    missing = [name for name in trace_names(cfg.to_dict()) if name not in data.trace]
    if missing:
        raise ConfigError("continue", f"{path} was made before fastpg recorded {missing[0]}; allowed: files from this "
                                        "version (re-run it)")
    if steps <= done:
        raise ConfigError("steps", f"got {steps}; allowed: more than the {done} steps {path} has done")
    if cfg.eval_log > 0 or done % cfg.eval_every:
        raise ConfigError("continue", f"{path} has evaluation points a run of {steps} steps would not have "
                                        f"(eval_log={cfg.eval_log}, {done} steps every {cfg.eval_every}); allowed: runs "
                                        "with --eval-every whose budget is a multiple of it")
    task = make_task(cfg)
    batch = Batch([post_training_run(cfg, task, base_model(cfg, task, read_final_W))])
    base, base_W = batch.evaluate(), batch.model_W().copy()
    if not np.array_equal(base[0][0], data.base["loglik"]):
        raise ConfigError("continue", f"{path}: this fastpg does not rebuild the same base model (a file of "
                                        "another version?); allowed: files whose base model it reproduces")
    batch.W[0][...] = final["W_sampling"] if "W_sampling" in final else final["W"]  # what the kernels advance
    batch.states[0][...] = final["state"]
    batch.events[0][...] = final["events"]
    # a counter a run does not record (groups_discarded without filter_groups) is 0 throughout
    batch.counters[0][...] = [data.trace[name][-1] if name in data.trace else 0.0 for name in codes.COUNTERS]
    token = data.token_loglik if cfg.token_trace else np.zeros((data.rows, cfg.n_test, cfg.N))
    rows = [({**{name: float(data.trace[name][i]) for name in trace_names(cfg.to_dict())},
              **pass_k_metrics(data.loglik[i], data.base["loglik"], cfg.pass_k)}, data.loglik[i], token[i])
            for i in range(data.rows)]
    tmp = path.with_name(f".{path.name}.continue")
    member = Member(0, cfg, task, tmp)
    try:
        drive([member], batch, eval_points(steps, cfg.eval_every, cfg.eval_log), RunFiles(), progress=progress,
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
            cfg.eval_every, cfg.eval_log, cfg.token_trace, tuple(cfg.pass_k), sampling_policy(cfg.to_dict()),
            cfg.filter_groups)


def pretrain(config=None, out=None, *, overwrite: bool = False, progress=None) -> RunData:
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
    if cfg.temperature != 1.0:  # its file would promise the sampling policy's outputs
        raise ConfigError("temperature", f"got {cfg.temperature:g}, but pre-training samples nothing; allowed: 1")
    if out is not None:
        check_output(out, overwrite)
    task = make_task(cfg)
    member = Member(0, cfg, task, out, "pretrain", "pre_eta", cfg.pre_eta)
    check_trace_size(cfg, cfg.n_pre)
    points = eval_points(cfg.n_pre, cfg.eval_every, cfg.eval_log)
    drive([member], Batch([pretraining_run(cfg, task)]), points, RunFiles(), progress=progress, raise_errors=True)
    return member.result
