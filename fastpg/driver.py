"""The engine's Python half: advance a batch of runs between evaluation points, evaluate each run,
and stream its rows to a sink (docs/design.md, "Architecture").

A :class:`Member` is one run of a batch (its trace so far, its result); a :class:`Sink` is where
the batch's rows go: :class:`RunFiles` (a file per run), :class:`BatchFile` (one file for the
batch) or :class:`Sink` itself (memory only). :func:`drive` knows nothing of layouts: it opens the
sink once the base model is evaluated, hands it every evaluation point's rows and every run that
ends, then closes it, or aborts it on any error.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import time

import numpy as np

from . import codes, defects, interrupts
from .config import SCHEMA_VERSION, ConfigError, option_of
from .metrics import likelihood_quantile, test_metrics
from .outputs import sampling_policy, trace_names
from .result import COMPLETE, FAILED, RunData
from .store import ResultWriter, check_output, one_line
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


def task_record(task, teacher_scale: str) -> dict:
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


def base_record(W0, loglik, token, offsupport, sampling_loglik=None) -> tuple[dict, dict]:
    """The base model's datasets and attributes, and its Likelihood Quantile tables, for its file
    (``sampling_loglik``: its likelihoods under the sampling policy, where that is another)."""
    base = {
        "datasets": {"W": W0, "loglik": loglik, "token_loglik": token,
                     **({} if sampling_loglik is None else {"sampling_loglik": sampling_loglik})},
        "attrs": {
            "offsupport_count": int(offsupport.sum()),
            "offsupport_fraction": float(offsupport.mean()),
        },
    }
    lq = likelihood_quantile(loglik, token)
    lq_ds = {name: lq[name] for name in ("alpha", "cdf", "token_cdf", "level", "loglik_quantile", "token_loglik_quantile")}
    return base, lq_ds


class Chunker:
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


class Member:
    """One run of a batch: its configuration, its trace so far, and its result once it ends.

    ``experiment`` is ``"post-training"`` or ``"pretrain"``; ``eta_name`` the step size a
    divergence names (``eta`` or ``pre_eta``); ``out`` the run's file, if it has one.
    """

    def __init__(self, index, cfg, task, out=None, experiment="post-training", eta_name="eta", eta=None):
        self.index, self.cfg, self.task, self.out = index, cfg, task, out
        self.experiment, self.eta_name = experiment, eta_name
        self.eta = cfg.eta if eta is None else eta
        self.created = _dt.datetime.now(_dt.UTC).isoformat()
        self.trace = {name: [] for name in trace_names(cfg.to_dict())}
        self.logliks, self.token_logliks = [], []
        self.offsupport: np.ndarray | None = None
        self.static: dict | None = None  # task, base model and LQ records (set_static())
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

    @property
    def sampling(self) -> bool:
        """Whether the run samples from another policy than ``pi_W`` (:func:`fastpg.outputs.sampling_policy`)."""
        return self.experiment == "post-training" and sampling_policy(self.cfg.to_dict())

    def set_static(self, W0, loglik0, token0, sampling0=None) -> None:
        """The run's static data, for its file and its result: task, base model and Likelihood Quantile records."""
        base, lq_ds = base_record(W0, loglik0, token0, self.offsupport, sampling0 if self.sampling else None)
        self.static = {"task": task_record(self.task, self.cfg.teacher_scale), "base": base, "lq": lq_ds}

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
        for name, values in self.trace.items():
            values.append(row[name])
        self.logliks.append(np.array(loglik, dtype=np.float64))
        if self.cfg.token_trace:
            self.token_logliks.append(np.array(token, dtype=np.float64))

    def finish(self, status: str, W: np.ndarray | None, message: str = "") -> None:
        """The run's :class:`RunData` (``final_W``: ``W`` when complete): what :func:`fastpg.load`
        reads back from its file."""
        complete = status == COMPLETE
        cfg, static = self.cfg, self.static
        n = len(self.logliks)
        self.result = RunData(
            path=None if self.out is None else str(self.out), status=status, message=message, experiment=self.experiment,
            created=self.created, fastpg_version=__version__, schema_version=SCHEMA_VERSION, config=cfg.to_dict(),
            trace={k: np.array(v, dtype=np.float64) for k, v in self.trace.items()},
            loglik=np.array(self.logliks).reshape(n, cfg.n_test),
            token_loglik=np.array(self.token_logliks).reshape(n, cfg.n_test, cfg.N) if cfg.token_trace else None,
            base={} if static is None else {**{name: value for name, value in static["base"]["datasets"].items()
                                               if name != "W"}, **static["base"]["attrs"]},
            lq={} if static is None else dict(static["lq"]),
            task={} if static is None else dict(static["task"]["attrs"]),
            final_W=W.copy() if complete and W is not None else None,
        )

    def not_started(self, message: str) -> RunData:
        """The result of a run that could not start (bad input): ``failed``, with no rows."""
        self.finish(FAILED, None, message)
        return self.result


class Sink:
    """Where a batch's rows go; this base class keeps them in memory only (each run's
    :class:`RunData`). The protocol, called by :func:`drive`: :meth:`open` once the base model
    is evaluated (``live``: the runs that start), :meth:`append` per evaluation point,
    :meth:`end` as each run ends, :meth:`close` when every run has ended, and :meth:`abort`
    (never raises) on any error."""

    def open(self, members: list[Member], live: list[int], batch, n_points: int) -> None:
        pass

    def append(self, rows: dict, loglik: np.ndarray, token: np.ndarray) -> None:
        """``rows[r]``: the row of run ``r`` of the batch, for the runs that recorded this point."""

    def end(self, r: int, member: Member, W, resume: dict) -> None:
        """Run ``r`` has ended (its ``member.result`` is set); ``W`` is its final model and ``resume``
        its final states for ``--continue`` (``state``, ``events``, ``W_sampling``)."""

    def close(self, members: list[Member], batch) -> None:
        pass

    def abort(self, message: str) -> None:
        pass


def _writer(path, members: list[Member], ids=None, **options) -> ResultWriter:
    return ResultWriter(path, configs=[m.cfg.to_dict() for m in members], experiment=members[0].experiment, ids=ids,
                        **options)


def _open(writer: ResultWriter, members: list[Member], W_shape) -> ResultWriter:
    records = [m.static for m in members]
    writer.open(tasks=[x["task"] for x in records], bases=[x["base"] for x in records],
                lqs=[x["lq"] for x in records], W_shape=W_shape)
    return writer


class RunFiles(Sink):
    """A file per run (the run layout), at ``Member.out`` (runs without one stay in memory); a
    run's file is closed, with its status, as soon as the run ends."""

    def __init__(self):
        self.writers: dict[int, ResultWriter] = {}

    def open(self, members, live, batch, n_points) -> None:
        for r in live:
            m = members[r]
            if m.out is not None:
                resume = None
                if m.experiment == "post-training":
                    resume = {"state": (batch.states[r].shape, "u8"), "events": (batch.events[r].shape, "f8")}
                    if m.sampling:
                        resume["W_sampling"] = (batch.W[r].shape, "f8")
                self.writers[r] = _open(_writer(m.out, [m], resume=resume), [m], batch.W[r].shape)

    def append(self, rows, loglik, token) -> None:
        for r, row in rows.items():
            if r in self.writers:
                self.writers[r].append([row], loglik[r:r + 1], token[r:r + 1])

    def end(self, r, member, W, resume) -> None:
        writer = self.writers.pop(r, None)
        if writer is not None:
            res = member.result
            complete = res.status == COMPLETE
            writer.close([res.status], [res.message], W if complete else None, resume if complete else None)

    def abort(self, message: str) -> None:
        for writer in self.writers.values():
            writer.abort(message)
        self.writers = {}


class BatchFile(Sink):
    """One file for every run of the batch that starts, named by ``ids`` (one per member; the
    batch layout, docs/design.md, "Batch files"); it is closed once every run has ended."""

    def __init__(self, path, ids: list[str], *, overwrite: bool = False):
        self.path, self.ids = path, list(ids)
        check_output(path, overwrite)
        self.writer: ResultWriter | None = None
        self.slots: list[int] = []

    def open(self, members, live, batch, n_points) -> None:
        if len(self.ids) != len(members):
            raise ValueError("a batch file needs one run id per run")
        self.slots = list(live)
        if self.slots:
            runs = [members[r] for r in self.slots]
            self.writer = _open(_writer(self.path, runs, ids=[self.ids[m.index] for m in runs], expected_rows=n_points),
                                runs, batch.W[self.slots[0]].shape)

    def append(self, rows, loglik, token) -> None:
        if self.writer is not None:
            self.writer.append([rows.get(r) for r in self.slots], loglik[self.slots], token[self.slots])

    def close(self, members, batch) -> None:
        if self.writer is None:
            return
        results = [members[r].result for r in self.slots]
        W = np.stack([batch.model_W(r) if res.status == COMPLETE else np.zeros_like(batch.W[r])
                      for r, res in zip(self.slots, results)])
        self.writer.close([res.status for res in results], [res.message for res in results], W)
        self.writer = None

    def abort(self, message: str) -> None:
        if self.writer is not None:
            self.writer.abort(message)
            self.writer = None


def _advance(batch, members, steps: int, chunk: Chunker, progress, done: int) -> np.ndarray:
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


def drive(members: list[Member], batch, points, sink: Sink | None = None, *, progress=None,
          raise_errors: bool = False, base=None, base_W=None, history=None) -> None:
    """Advance ``batch`` (the members' states) to each of the evaluation ``points`` in turn,
    evaluate every run there and hand its row to ``sink``; each member's ``result`` is set.

    A run that fails is ended as ``failed`` and frozen (it takes no more steps); with
    ``raise_errors`` its error is raised once every file is closed. Ctrl-C and SIGTERM are taken
    between kernel calls (:mod:`fastpg.interrupts`): the sink is then aborted (its files marked
    ``failed``). A continued run passes the base model's evaluation ``base`` and weights
    ``base_W`` from before its state was restored, and ``history = (steps done, rows so far)``.
    """
    sink = Sink() if sink is None else sink
    with interrupts.deferred():
        try:
            _drive(members, batch, points, sink, progress, base, base_W, history)
        except BaseException as exc:
            sink.abort(one_line(exc))
            raise
    if raise_errors:
        for m in members:
            if m.error is not None:
                raise m.error


def _drive(members, batch, points, sink, progress, base, base_W, history) -> None:
    loglik0, token0, greedy0 = batch.evaluate() if base is None else base
    base0, base_token0 = defects.base_likelihoods(loglik0, token0)  # as evaluated (a testing hook aside)
    W0 = batch.model_W() if base_W is None else base_W
    sampling = any(m.sampling for m in members)  # then evaluate the sampling policies too
    # the base model under each run's configured sampling policy (docs/design.md, "Temperature")
    tau = np.array([m.cfg.temperature if m.sampling else 1.0 for m in members])
    sampling0 = batch.evaluate(W0 / tau[:, None, None, None])[0] if sampling else None
    for r, m in enumerate(members):
        m.set_base(base0[r])
        if m.error is None:
            m.set_static(W0[r], base0[r], base_token0[r], None if sampling0 is None else sampling0[r])
    sink.open(members, [r for r, m in enumerate(members) if m.error is None], batch, len(points))

    def end(r, status, message=""):
        m = members[r]
        complete = status == COMPLETE
        W = batch.model_W(r)
        m.finish(status, W if complete else None, message)
        resume = {"state": batch.states[r], "events": batch.events[r], "W_sampling": batch.W[r]}
        sink.end(r, m, W, resume)

    start = time.perf_counter()
    done = 0
    if history is not None:  # a continued run: its rows so far, then on from their last step
        done, rows_so_far = history
        for row, loglik, token in rows_so_far:
            members[0].record(row, loglik, token)
            sink.append({0: row}, loglik[None], token[None])
        start -= rows_so_far[-1][0]["wall_time"]
    chunk = Chunker()
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
        kl, entropy = batch.divergences()
        sampling_loglik = batch.evaluate(batch.W)[0] if sampling else None  # what the kernels sample from
        rows, ending = {}, []
        for r, m in enumerate(members):
            if m.result is not None:  # failed or stopped early: frozen
                continue
            error = m.check(status[r], loglik[r], done)
            if error is None:
                row = dict(zip(codes.COUNTERS, batch.counters[r].tolist()))
                if defects.active("prm-one-query") and m.cfg.reward == "prm":  # testing only (fastpg.defects)
                    row["prm_queries"] = row["sequences"]
                row.update(test_metrics(loglik[r], greedy[r], m.offsupport, kl[r], entropy[r], base0[r], m.cfg.pass_k,
                                        sampling_loglik[r] if m.sampling else None))
                row["wall_time"] = time.perf_counter() - start
                if all(np.all(np.isfinite(v)) for v in row.values()):
                    m.record(row, loglik[r], token[r])
                    rows[r] = row
                    reason = m.stop_reason(row, done)
                    if reason:
                        ending.append((r, COMPLETE, reason))
                else:
                    error = m.diverged("metrics became non-finite", done)
            if error is not None:
                m.error = error
                ending.append((r, FAILED, str(error)))
        sink.append(rows, loglik, token)
        for r, status_, message in ending:
            end(r, status_, message)
        if progress is not None:
            progress(done)
    for r, m in enumerate(members):
        if m.result is None:
            end(r, *((COMPLETE, "") if m.error is None else (FAILED, str(m.error))))
    sink.close(members, batch)
