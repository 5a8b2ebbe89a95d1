"""Every output of a run, in one table (docs/design.md, "Result files").

One :class:`Output` row per counter, metric, trace array, per-run dataset and attribute: where it
lives in a run file, its type, shape, units, description and the code that fills it. The writers
(:mod:`fastpg.store`), the readers (``RunData``, ``load_sweep``, ``index.csv``), ``fastpg info``
and the file layout of docs/design.md are derived from it. Adding a metric is one row here (kind
``metric``) plus its computation in :func:`fastpg.metrics.test_metrics`; adding a counter is one
row here plus its slot in :data:`fastpg.codes.COUNTERS` (the kernels' counter row).

A batch file (docs/design.md, "Batch files") holds the same outputs with a leading run axis (the
trace arrays: ``[eval, run, ...]``); a row's ``batch_description`` is what its description
becomes there, where that differs.

This module imports nothing of fastpg but :mod:`fastpg.codes`, so the store, the CLI and analysis
code read it without compiling a kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import codes

COUNTER, METRIC, CLOCK, TRACE, AXIS, DATASET, ATTRIBUTE = (
    "counter", "metric", "clock", "trace", "axis", "dataset", "attribute")


@dataclass(frozen=True)
class Output:
    """One output. ``path`` is its place in a run file (``trace/expected_error``, ``task/W_star``,
    ``base/lq/cdf``; an attribute ``group@name``: ``task@gamma``, ``@status`` at the root)."""

    path: str
    kind: str
    dtype: str
    shape: str
    units: str
    description: str
    filled_by: str
    batch_description: str = ""
    only: str = ""  # "run" or "batch": in files of that layout only
    when: str = ""  # a run parameter (the output exists only in runs where it is set: true, non-empty) or a
    # condition of CONDITIONS

    @property
    def name(self) -> str:
        return self.path.rsplit("@", 1)[-1] if "@" in self.path else self.path.rsplit("/", 1)[-1]

    @property
    def group(self) -> str:
        return self.path.rsplit("@", 1)[0] if "@" in self.path else self.path.rsplit("/", 1)[0]

    def describe(self, batch: bool = False, **values) -> str:
        """The description (the batch file's where it differs), with ``{placeholders}`` filled from ``values``."""
        text = self.batch_description if batch and self.batch_description else self.description
        return text.format(**values) if values else text


_KERNELS = "the step kernels (fastpg.kernels.steps, events)"
_METRICS = "fastpg.metrics.test_metrics"
_TASK = "fastpg.tasks.make_task"
_BASE = "fastpg.runs.base_model, evaluated by fastpg.kernels.engine"
_LQ = "fastpg.metrics.likelihood_quantile"
_STORE = "fastpg.store (the writers)"
_DRIVER = "fastpg.driver"

OUTPUTS: tuple[Output, ...] = (
    # root and /config attributes
    Output("@schema_version", ATTRIBUTE, "int", "[]", "", "version of this file layout", _STORE),
    Output("@fastpg_version", ATTRIBUTE, "str", "[]", "", "version of fastpg that wrote the file", _STORE),
    Output("@created", ATTRIBUTE, "str", "[]", "", "UTC time the file was created (ISO 8601)", _STORE),
    Output("@argv", ATTRIBUTE, "str", "[]", "", "the command line, as JSON", _STORE),
    Output("@cpu_model", ATTRIBUTE, "str", "[]", "", "the CPU the file was written on", "fastpg.machine"),
    Output("@cpu_target", ATTRIBUTE, "str", "[]", "", "the LLVM CPU the kernels were compiled for (NUMBA_CPU_NAME "
           "where set)", "fastpg.machine"),
    Output("@cpu_isa", ATTRIBUTE, "str", "[]", "", "the widest SIMD instruction set of that target (AVX-512, AVX2, "
           "...): SIMD sums compiled for another width round differently", "fastpg.machine"),
    Output("@seed", ATTRIBUTE, "int", "[]", "", "the run's seed (also in /config)", _STORE, only="run"),
    Output("@experiment", ATTRIBUTE, "str", "[]", "", "post-training or pretrain", _STORE),
    Output("@status", ATTRIBUTE, "str", "[]", "", "running, complete or failed (written last)", _STORE),
    Output("@message", ATTRIBUTE, "str", "[]", "", "why the run failed or stopped early, else empty", _STORE),
    Output("config@<param>", ATTRIBUTE, "", "[]", "", "every parameter of fastpg.config.PARAMS, and all of them as "
           "JSON in config@json", _STORE, only="run"),
    Output("@layout", ATTRIBUTE, "str", "[]", "", "batch", _STORE, only="batch"),
    Output("@runs", ATTRIBUTE, "int", "[]", "runs", "runs in the file", _STORE, only="batch"),
    Output("runs/id", DATASET, "str", "[run]", "", "each run's id (its place in the sweep)", _STORE, only="batch"),
    Output("runs/seed", DATASET, "i8", "[run]", "", "each run's seed", _STORE, only="batch"),
    Output("runs/config", DATASET, "str", "[run]", "", "each run's parameters, as JSON", _STORE, only="batch"),
    Output("runs/rows", DATASET, "i8", "[run]", "rows", "evaluation points written for each run (a run that fails "
           "stops there)", _STORE, only="batch"),
    Output("runs/status", DATASET, "str", "[run]", "", "each run's status, written when the file closes", _STORE,
           only="batch"),
    Output("runs/message", DATASET, "str", "[run]", "", "each run's message", _STORE, only="batch"),
    # /task
    Output("task/W_star", DATASET, "f8", "[block, token, d]", "weight",
           "teacher weights W*[block, token, d], i.i.d. normal scaled by teacher_scale={teacher_scale}: {teacher_norm}",
           _TASK),
    Output("task/test_x", DATASET, "f8", "[context, d]", "unit vector", "test contexts x_j (rows, norm 1)", _TASK),
    Output("task/test_y", DATASET, "i4", "[context, position]", "token", "correct responses y*(x_j): greedy decoding of W*",
           _TASK),
    Output("task/test_margin", DATASET, "f8", "[context]", "logit", "teacher margin m(x_j) of each test context", _TASK),
    Output("task/centres", DATASET, "f8", "[cluster, d]", "unit vector", "cluster centres (empty for the sphere)", _TASK),
    Output("task@gamma", ATTRIBUTE, "f8", "[]", "logit", "the margin condition m(x) >= gamma (0: none)", _TASK),
    Output("task@realised_min_margin", ATTRIBUTE, "f8", "[]", "logit",
           "smallest teacher margin among the stored contexts", _TASK),
    Output("task@acceptance", ATTRIBUTE, "f8", "[]", "fraction", "acceptance rate of the margin condition's pilot", _TASK),
    Output("task@pilot_margin_quantiles", ATTRIBUTE, "str", "[]", "logit",
           "quantiles of the margin on a pilot sample, as JSON", _TASK),
    # /base
    Output("base/W", DATASET, "f8", "[block, token, d]", "weight", "base weights W0[block, token, d]", _BASE),
    Output("base/loglik", DATASET, "f8", "[context]", "nats", "log pi_0(y*_j|x_j) of the base model", _BASE),
    Output("base/token_loglik", DATASET, "f8", "[context, position]", "nats",
           "log pi_0(y*_ji|x_j, y*_j<i) of the base model", _BASE),
    Output("base/sampling_loglik", DATASET, "f8", "[context]", "nats",
           "log pi_{W0/tau}(y*_j|x_j): the base model's likelihoods under the sampling policy (temperature tau), "
           "its alpha_tau", _BASE, when="sampling_policy"),
    Output("base@offsupport_count", ATTRIBUTE, "int", "[]", "contexts",
           "test contexts whose base likelihood is below alpha_off", _DRIVER),
    Output("base@offsupport_fraction", ATTRIBUTE, "f8", "[]", "fraction", "the same, as a fraction of the test set",
           _DRIVER),
    # /base/lq
    Output("base/lq/alpha", DATASET, "f8", "[alpha]", "probability", "likelihood thresholds alpha (log grid)", _LQ),
    Output("base/lq/cdf", DATASET, "f8", "[alpha]", "fraction", "P_j[pi_0(y*_j|x_j) <= alpha]", _LQ),
    Output("base/lq/token_cdf", DATASET, "f8", "[alpha]", "fraction", "P_j[min_i pi_0(y*_ji|x_j,y*_j<i) <= alpha]", _LQ),
    Output("base/lq/level", DATASET, "f8", "[level]", "fraction", "quantile levels q", _LQ),
    Output("base/lq/loglik_quantile", DATASET, "f8", "[level]", "nats", "q-quantile of log pi_0(y*_j|x_j)", _LQ),
    Output("base/lq/token_loglik_quantile", DATASET, "f8", "[level]", "nats",
           "q-quantile of min_i log pi_0(y*_ji|...)", _LQ),
    # /trace: a row per evaluation point
    Output("trace/steps", COUNTER, "f8", "[eval]", "steps",
           "steps taken (post-training; labelled samples seen in a pretrain experiment)", _KERNELS),
    Output("trace/contexts", COUNTER, "f8", "[eval]", "contexts", "post-training contexts drawn", _KERNELS),
    Output("trace/sequences", COUNTER, "f8", "[eval]", "responses", "responses sampled, skipped ones included", _KERNELS),
    Output("trace/tokens", COUNTER, "f8", "[eval]", "tokens", "tokens sampled, skipped ones included", _KERNELS),
    Output("trace/orm_queries", COUNTER, "f8", "[eval]", "queries", "outcome reward model queries", _KERNELS),
    Output("trace/prm_queries", COUNTER, "f8", "[eval]", "queries", "process reward model (prefix) queries", _KERNELS),
    Output("trace/updates", COUNTER, "f8", "[eval]", "updates", "steps with a non-zero update", _KERNELS),
    Output("trace/mistakes", COUNTER, "f8", "[eval]", "responses",
           "sampled responses (tokens for rs+prm) that were not correct", _KERNELS),
    Output("trace/groups_discarded", COUNTER, "f8", "[eval]", "groups", "groups of G responses discarded because "
           "their rewards were all equal (filter_groups); each is also counted in sequences, tokens, queries and "
           "mistakes", _KERNELS, when="filter_groups"),
    Output("trace/expected_error", METRIC, "f8", "[eval]", "probability",
           "1 - mean_j pi_W(y*_j|x_j) over the test set", _METRICS),
    Output("trace/greedy_error", METRIC, "f8", "[eval]", "fraction",
           "fraction of test contexts whose greedy decoding is not y*", _METRICS),
    Output("trace/offsupport_likelihood", METRIC, "f8", "[eval]", "probability",
           "mean pi_W(y*|x) over test contexts with base likelihood < alpha_off (0 if none)", _METRICS),
    Output("trace/onsupport_likelihood", METRIC, "f8", "[eval]", "probability",
           "mean pi_W(y*|x) over test contexts with base likelihood >= alpha_off (0 if none)", _METRICS),
    Output("trace/mean_loglik", METRIC, "f8", "[eval]", "nats", "mean_j log pi_W(y*_j|x_j)", _METRICS),
    Output("trace/kl_to_base", METRIC, "f8", "[eval]", "nats", "mean_j KL(pi_W(.|x_j) || pi_0(.|x_j)) over whole "
           "responses, exact (pi_0: the base model; in a pretrain experiment the starting W = 0)", _METRICS),
    Output("trace/entropy", METRIC, "f8", "[eval]", "nats", "mean_j H(pi_W(.|x_j)), the entropy of whole responses, "
           "exact", _METRICS),
    Output("trace/expected_error_sampling", METRIC, "f8", "[eval]", "probability",
           "1 - mean_j pi_{W/tau}(y*_j|x_j): the expected error of the sampling policy (temperature tau)", _METRICS,
           when="sampling_policy"),
    Output("trace/coverage_preserved", METRIC, "f8", "[eval]", "fraction", "test contexts whose pass@k is >= 1/2 for "
           "both the base model and this one, at the largest k of pass_k", _METRICS, when="pass_k"),
    Output("trace/coverage_expanded", METRIC, "f8", "[eval]", "fraction", "test contexts whose pass@k is below 1/2 "
           "for the base model and >= 1/2 for this one (largest k)", _METRICS, when="pass_k"),
    Output("trace/coverage_shrunk", METRIC, "f8", "[eval]", "fraction", "test contexts whose pass@k is >= 1/2 for "
           "the base model and below 1/2 for this one (largest k)", _METRICS, when="pass_k"),
    Output("trace/coverage_outside", METRIC, "f8", "[eval]", "fraction", "test contexts whose pass@k is below 1/2 "
           "for both (largest k)", _METRICS, when="pass_k"),
    Output("trace/wall_time", CLOCK, "f8", "[eval]", "seconds", "wall-clock time since the start of post-training",
           _DRIVER),
    Output("trace/loglik", TRACE, "f8", "[eval, context]", "nats",
           "log pi_W(y*_j|x_j) per evaluation point (rows) and test context (columns); float64 resolves both "
           "1 - 1e-12 and 1e-300", "fastpg.kernels.engine (evaluate_runs)",
           batch_description="log pi_W(y*_j|x_j) per evaluation point, run and test context (NaN after a run failed)"),
    Output("trace/token_loglik", TRACE, "f8", "[eval, context, position]", "nats",
           "log pi_W(y*_ji|x_j, y*_j<i) per evaluation point, test context and position", "fastpg.kernels.engine "
           "(evaluate_runs), with token_trace",
           batch_description="log pi_W(y*_ji|x_j, y*_j<i) per evaluation point, run, test context and position",
           when="token_trace"),
    Output("trace/pass_at_k", TRACE, "f8", "[eval, k]", "probability",
           "mean over test contexts of pass@k_j = 1 - (1 - pi_W(y*_j|x_j))^k, one column per k of pass_k (attribute k)",
           "fastpg.metrics.pass_k_metrics", batch_description="the same per evaluation point, run and k",
           when="pass_k"),
    Output("trace/pass_at_k@k", ATTRIBUTE, "i8", "[k]", "samples", "the k of each column (pass_k)", _STORE,
           when="pass_k"),
    # /trace axes (HDF5 dimension scales; not trace columns)
    Output("trace/context", AXIS, "i8", "[context]", "", "index of the test context (row of /task/test_x)", _STORE),
    Output("trace/position", AXIS, "i8", "[position]", "", "position i of the response (0 is the first token)", _STORE),
    Output("trace/eval", AXIS, "i8", "[eval]", "", "index of the evaluation point (each run has its own steps there)",
           _STORE, only="batch"),
    Output("trace/run", AXIS, "str", "[run]", "", "run id (as /runs/id)", _STORE, only="batch"),
    # /final
    Output("final/W", DATASET, "f8", "[block, token, d]", "weight",
           "final weights W[block, token, d] (block layout of docs/design.md); valid once status is complete", _DRIVER,
           batch_description="final weights W[run, block, token, d]; valid for runs whose status is complete"),
    Output("final/W_sampling", DATASET, "f8", "[block, token, d]", "weight",
           "the sampling policy's weights W/tau that the kernels advance (final/W is tau times them, rounded); what "
           "fastpg run --continue restores; valid once status is complete", _DRIVER, only="run",
           when="sampling_policy"),
    Output("final/state", DATASET, "u8", "[4]", "",
           "the run's generator state (xoshiro256**) after its last step; valid once status is complete", _DRIVER,
           only="run"),
    Output("final/events", DATASET, "f8", "[slot]", "",
           "the event-driven state after the last step (pending move, deferred and step-through steps, held updates); "
           "valid once status is complete", _DRIVER, only="run"),
)

_BY_PATH = {o.path: o for o in OUTPUTS}
TRACE_NAMES = tuple(o.name for o in OUTPUTS if o.kind in (COUNTER, METRIC, CLOCK) and not o.when)
"""The 1-D trace columns every run has (a value per evaluation point), in file order: counters,
metrics, wall time. :func:`trace_columns` adds those of a run's options."""
COUNTERS = tuple(o.name for o in OUTPUTS if o.kind == COUNTER)
"""The kernels' counter row (:data:`fastpg.codes.COUNTERS`); a run records those of :func:`trace_names`."""
RUN_COUNTERS = tuple(o.name for o in OUTPUTS if o.kind == COUNTER and not o.when)
"""The counters every run records (``index.csv`` has a column for each)."""
METRICS = tuple(o.name for o in OUTPUTS if o.kind == METRIC and not o.when)
TRACE_AXES = tuple(o.name for o in OUTPUTS if o.kind == AXIS)
"""Dimension scales in /trace: the axes of the trace arrays, not rows of the trace (readers leave them out)."""
if COUNTERS != codes.COUNTERS:  # the kernels' counter row, slot by slot
    raise ImportError("fastpg.outputs: the counter rows must be fastpg.codes.COUNTERS, in order")


def output(path: str) -> Output:
    return _BY_PATH[path]


def sampling_policy(config: dict) -> bool:
    """Whether a run of ``config`` samples from another policy than ``pi_W`` (a temperature other than 1)."""
    return config.get("temperature", 1.0) != 1.0


CONDITIONS = {"sampling_policy": sampling_policy}
"""Conditions an output's ``when`` may name besides a run parameter."""


def present(o: Output, config: dict) -> bool:
    """Whether a run of ``config`` has output ``o`` (its ``when`` parameter set or condition true, if it has one)."""
    if o.when in CONDITIONS:
        return CONDITIONS[o.when](config)
    return not o.when or bool(config.get(o.when))


def trace_columns(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """The ``/trace`` datasets of a run of ``config``, in file order, each with the shape of one of
    its rows (``()`` for a 1-D column; ``(n_test,)`` for ``loglik``, ...)."""
    dims = {"context": config["n_test"], "position": config["N"], "k": len(config.get("pass_k") or ())}
    return [(o.name, tuple(dims[dim.strip()] for dim in o.shape.strip("[]").split(",")[1:]))
            for o in OUTPUTS if o.kind in (COUNTER, METRIC, CLOCK, TRACE) and present(o, config)]


def trace_names(config: dict) -> tuple[str, ...]:
    """The 1-D trace columns of a run of ``config``: :data:`TRACE_NAMES` and those of its options."""
    return tuple(name for name, tail in trace_columns(config) if tail == ())


def markdown_table() -> str:
    """The table as docs/design.md shows it, in Markdown."""
    lines = ["| path | kind | dtype | shape | units | description | filled by |", "|---|---|---|---|---|---|---|"]
    for o in OUTPUTS:
        text = o.description
        if o.batch_description:
            text += f" (batch file: {o.batch_description})"
        if o.only:
            text += f" ({o.only} files only)"
        text = text.replace("|", "\\|")  # a table cell: pi(y|x) keeps its bar
        lines.append(f"| `{o.path}` | {o.kind} | {o.dtype} | {o.shape} | {o.units} | {text} | {o.filled_by} |")
    return "\n".join(lines) + "\n"
