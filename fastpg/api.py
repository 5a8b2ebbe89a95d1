"""Public Python API: :func:`run` one configuration end to end (task, base model, post-training)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from . import steps as S
from .config import ConfigError, RunConfig, validate
from .engine import Batch
from .metrics import eval_points, likelihood_quantile, test_metrics
from .runs import base_model, post_training_run, pretraining_run
from .store import COMPLETE, FAILED, TRACE_NAMES, RunWriter, check_output, read_final_W
from .tasks import make_task


class RunFailed(RuntimeError):
    """The run stopped (e.g. non-finite weights); the file, if any, is marked ``failed``."""


@dataclass
class RunResult:
    """What a run produced: its config, the trace (one entry per evaluation point) and final weights."""

    config: RunConfig
    path: str | None
    trace: dict = field(default_factory=dict)
    likelihood: np.ndarray | None = None
    W: np.ndarray | None = None
    base_loglik: np.ndarray | None = None

    def final(self, name: str) -> float:
        return float(self.trace[name][-1])


def _as_config(config) -> RunConfig:
    if isinstance(config, RunConfig):
        validate(config)
        return config
    return RunConfig.from_dict(dict(config or {}))


def _task_record(cfg: RunConfig, task) -> dict:
    return {
        "datasets": {
            "W_star": (task.W_star, "weight", "teacher weights W*[block, token, d], Frobenius norm 1"),
            "test_x": (task.test_x, "unit vector", "test contexts x_j (rows, norm 1)"),
            "test_y": (task.test_y.astype(np.int32), "token", "correct responses y*(x_j): greedy decoding of W*"),
            "test_margin": (task.test_margin, "logit", "teacher margin m(x_j) of each test context"),
            "centres": (task.centres, "unit vector", "cluster centres (empty for the sphere)"),
        },
        "attrs": {
            "gamma": task.gamma,
            "realised_min_margin": task.realised_min_margin,
            "acceptance": task.acceptance,
            "pilot_margin_quantiles": str(task.pilot_margin_quantiles),
        },
    }


def _base_record(W0, loglik, token, offsupport, lq) -> tuple[dict, dict]:
    base = {
        "datasets": {
            "W": (W0, "weight", "base weights W0[block, token, d]"),
            "loglik": (loglik, "nats", "log pi_0(y*_j|x_j) of the base model"),
            "token_loglik": (token, "nats", "log pi_0(y*_ji|x_j, y*_j<i) of the base model"),
        },
        "attrs": {
            "offsupport_count": int(offsupport.sum()),
            "offsupport_fraction": float(offsupport.mean()),
        },
    }
    lq_ds = {
        "alpha": (lq["alpha"], "probability", "likelihood thresholds alpha (log grid)"),
        "cdf": (lq["cdf"], "fraction", "P_j[pi_0(y*_j|x_j) <= alpha]"),
        "token_cdf": (lq["token_cdf"], "fraction", "P_j[min_i pi_0(y*_ji|x_j,y*_j<i) <= alpha]"),
        "level": (lq["level"], "fraction", "quantile levels q"),
        "loglik_quantile": (lq["loglik_quantile"], "nats", "q-quantile of log pi_0(y*_j|x_j)"),
        "token_loglik_quantile": (lq["token_loglik_quantile"], "nats", "q-quantile of min_i log pi_0(y*_ji|...)"),
    }
    return base, lq_ds


def run(config=None, out=None, *, overwrite: bool = False, argv: list[str] | None = None, progress=None) -> RunResult:
    """Run one configuration: build the task, the base model, post-train, evaluate, and stream to ``out``.

    Parameters
    ----------
    config : RunConfig or dict
        Parameters of SPEC §1–§7 (missing ones take their defaults).
    out : path, optional
        HDF5 file to write (SPEC §8). ``None`` keeps the results in memory only.
    overwrite : bool
        Replace an existing ``out``; otherwise an existing file is refused before any work.
    progress : callable, optional
        Called with the number of post-training steps done after each evaluation point.
    """
    cfg = _as_config(config)
    if out is not None:
        check_output(out, overwrite)
    task = make_task(cfg)
    W0 = base_model(cfg, task, read_final_W)
    batch = Batch([post_training_run(cfg, task, W0)])
    points = eval_points(cfg.steps, cfg.eval_every, cfg.eval_log)
    return _drive(cfg, task, batch, points, out, argv=argv, progress=progress, experiment="post-training",
                  eta_flag="--eta", eta=cfg.eta)


def pretrain(config=None, out=None, *, overwrite: bool = False, argv: list[str] | None = None,
             progress=None) -> RunResult:
    """The statistical-learning experiment (SPEC §3): SGD on the log-loss from ``W = 0``.

    Runs ``n_pre`` steps of pre-training on fresh labelled contexts from the pre-training
    distribution, evaluating at the points given by ``eval_every`` / ``eval_log`` (counted in
    samples seen). The file has the run layout: ``/base`` holds the starting point ``W = 0``,
    ``/trace/steps`` the samples seen, ``/final/W`` the pre-trained weights; the root attribute
    ``experiment`` is ``"pretrain"``.
    """
    cfg = _as_config(config)
    if out is not None:
        check_output(out, overwrite)
    task = make_task(cfg)
    batch = Batch([pretraining_run(cfg, task)])
    points = eval_points(cfg.n_pre, cfg.eval_every, cfg.eval_log)
    return _drive(cfg, task, batch, points, out, argv=argv, progress=progress, experiment="pretrain",
                  eta_flag="--pre-eta", eta=cfg.pre_eta)


def _drive(cfg, task, batch, points, out, *, argv, progress, experiment, eta_flag, eta) -> RunResult:
    """Advance a one-run batch between evaluation ``points``, evaluating and streaming each row."""
    W0 = batch.W[0].copy()
    loglik0, token0, greedy0 = (a[0] for a in batch.evaluate())
    if not np.all(np.isfinite(loglik0)):
        raise ConfigError("--beta" if cfg.base == "teacher" else "--pre-eta", "the base model's likelihoods are not finite; allowed: smaller weights")
    offsupport = loglik0 < math.log(cfg.alpha_off)
    lq = likelihood_quantile(loglik0, token0)
    trace = {name: [] for name in TRACE_NAMES}
    likelihoods = []
    diverged = f"{eta_flag}: {{what}} before step {{done}} ({eta_flag[2:].replace('-', '_')}={eta:g}); allowed: a smaller {eta_flag}"

    writer = None
    if out is not None:
        writer = RunWriter(out, config=cfg.to_dict(), argv=list(argv or []), n_test=cfg.n_test, N=cfg.N,
                           token_trace=cfg.token_trace, experiment=experiment)
    try:
        if writer is not None:
            base, lq_ds = _base_record(W0, loglik0, token0, offsupport, lq)
            writer.open(task=_task_record(cfg, task), base=base, lq=lq_ds, W_shape=W0.shape)
        start = time.perf_counter()
        done = 0
        for step in points:
            if step > done:
                status = batch.advance(step - done)[0]
                done = int(step)
                if status == S.NON_FINITE:
                    raise RunFailed(diverged.format(what=f"weights diverged (non-finite or above {S.MAX_ABS_WEIGHT:g})", done=done))
                if status == S.REJECTION_FAILED:  # pragma: no cover - probability about e^-50
                    raise RunFailed("--gamma: rejection sampling for the margin ran out of tries; allowed: a smaller --gamma")
                loglik, token, greedy = (a[0] for a in batch.evaluate())
            else:
                loglik, token, greedy = loglik0, token0, greedy0
            if not np.all(np.isfinite(loglik)):
                raise RunFailed(diverged.format(what="likelihoods became non-finite", done=done))
            row = dict(zip(S.COUNTERS, batch.counters[0].tolist()))
            row.update(test_metrics(loglik, greedy, offsupport))
            row["wall_time"] = time.perf_counter() - start
            if not all(math.isfinite(v) for v in row.values()):
                raise RunFailed(diverged.format(what="metrics became non-finite", done=done))
            for name in TRACE_NAMES:
                trace[name].append(row[name])
            likelihoods.append(np.exp(loglik).astype(np.float32))
            if writer is not None:
                writer.append(row, np.exp(loglik), token)
            if progress is not None:
                progress(done)
    except BaseException as exc:
        if writer is not None:
            writer.close(FAILED, message=str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)
        raise
    W = batch.W[0].copy()
    if writer is not None:
        writer.close(COMPLETE, W_final=W)
    return RunResult(
        config=cfg, path=None if out is None else str(out), trace={k: np.array(v) for k, v in trace.items()},
        likelihood=np.array(likelihoods), W=W, base_loglik=loglik0,
    )
