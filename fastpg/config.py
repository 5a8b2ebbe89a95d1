"""Run configuration: one table of every run parameter, from which everything else is derived.

:data:`PARAMS` is the single description of a run parameter: its type, default, allowed values,
help text and role. From it come the fields of :class:`RunConfig` (whose names are the
``/config`` keys of a result file, a public API), validation (on construction, so that
``replace()`` cannot build an invalid configuration), the parsing of values given as text (CLI,
grid, TOML), the ``fastpg`` command-line options and their ``--help``, which parameters key
which random stream, and the tables the tests draw invalid values from. Adding a parameter is
one new line in :data:`PARAMS` (docs/design.md, "Parameters").

Constants live here too (one place): default budgets, thresholds, presets.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from .codes import (
    ALGORITHM_CODES,
    BASELINE_CODES,
    FEATURE_CODES,
    KL_ESTIMATOR_CODES,
    KL_IN_CODES,
    LR_CODES,
    REWARD_CODES,
)

SCHEMA_VERSION = 2  # 2: /trace/loglik (float64) replaces /trace/likelihood (float32)
ALPHA_OFF = 1e-3
FLOOR = 1e-8
PILOT_SIZE = 4096
FILTER_NO_SKIP_MAX_M = 10**6  # groups per step that --filter-groups --no-skip may sample one by one
MIN_ACCEPTANCE = 1e-3  # below this, rejection sampling for the margin is refused
REJECTION_SAFETY = 50.0  # tries per context = SAFETY / acceptance: failure prob ~ e^-50
LQ_LOG10_ALPHA = (-300.0, 0.0, 601)  # log grid of alpha for the Likelihood Quantile CDFs
LQ_LEVELS = 101  # quantile levels 0, 0.01, ..., 1
MAX_EXACT_INT = 2**53  # float64 counters are exact integers up to here
MAX_INT64 = 2**63 - 1  # every integer parameter is stored as an int64 attribute
MAX_SEED = MAX_INT64

FEATURES = tuple(FEATURE_CODES)
CONTEXTS = ("sphere", "clusters")
TEACHER_SCALES = ("frobenius", "block")
BASES = ("sgd", "teacher", "uniform", "file")
ALGORITHMS = tuple(ALGORITHM_CODES)
REWARDS = tuple(REWARD_CODES)
BASELINES = tuple(BASELINE_CODES)
LR_RULES = tuple(LR_CODES)
KL_REFS = ("base",)
KL_ESTIMATORS = tuple(KL_ESTIMATOR_CODES)
KL_INS = tuple(KL_IN_CODES)


class ConfigError(ValueError):
    """Bad input: ``parameter`` names what is to blame (a parameter of :data:`PARAMS`, or another
    argument: ``outdir``, ``steps`` of a continuation, ``alpha``), ``message`` says what is allowed;
    ``str()`` is ``"eta: got -1; allowed: ..."``. The command line shows it under its flag
    (:attr:`option`, ``--eta``). A caller may also pass a flag, which is kept as it is."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message

    @property
    def option(self) -> str:
        """The command-line spelling of :attr:`parameter` (:func:`option_of`)."""
        return option_of(self.parameter)

    def for_cli(self) -> str:
        """The one line the command line prints: the flag, then the message."""
        return f"{self.option}: {self.message}"


def flag(name: str) -> str:
    """Command-line flag of a parameter (``n_test`` -> ``--n-test``; ``d`` -> ``-d``)."""
    if name in ("d", "k", "N"):
        return "-" + name
    return "--" + name.replace("_", "-")


def option_of(parameter: str) -> str:
    """How the command line spells a parameter in an error: its flag (``eta`` -> ``--eta``), the
    argument ``OUTDIR`` for ``outdir``; a flag or an argument name is kept as it is."""
    if parameter.startswith("-") or (len(parameter) > 1 and parameter.isupper()):
        return parameter
    return "OUTDIR" if parameter == "outdir" else flag(parameter)


@dataclass(frozen=True)
class Param:
    """One run parameter.

    ``kind`` is ``int``, ``float``, ``choice``, ``bool``, ``path`` or ``ints`` (integers, as a sorted
    tuple without repeats; ``"1,4,16"`` on the command line, a list in TOML and JSON); ``low``/``high`` bound
    numbers (``low_open`` makes the lower bound strict); ``optional`` allows ``None`` (unset).
    ``role`` says what the parameter fixes, and so which random streams it keys
    (docs/design.md, "Random streams"): ``task`` (the task stream and everything after it),
    ``base`` (the base model's stream and after), ``post`` (post-training only) or ``evaluation``
    (run length and measurement: no stream). ``bases`` limits a ``base`` parameter to the base
    models it affects; ``clusters`` marks task parameters that only matter for clustered contexts.
    """

    name: str
    kind: str
    default: Any
    help: str
    role: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    optional: bool = False
    bases: tuple = ()
    clusters: bool = False

    @property
    def flag(self) -> str:
        return flag(self.name)

    @property
    def type(self) -> type:
        return {"int": int, "float": float, "choice": str, "bool": bool, "path": str, "ints": tuple}[self.kind]

    def allowed(self) -> str:
        """What is allowed, in words, for error messages."""
        if self.kind == "choice":
            return ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.kind == "path":
            return "a file path"
        if self.kind == "ints":
            return f"integers >= {int(self.low)}, comma-separated (1,4,16), or none"
        lo = "" if self.low is None else (f"> {self.low:g}" if self.low_open else f">= {self.low:g}")
        hi = "" if self.high is None else f"<= {self.high:g}"
        if self.kind == "int":
            lo = "" if self.low is None else f">= {int(self.low)}"
            hi = "" if self.high is None else f"<= {int(self.high)}"
            return "an integer " + (" and ".join(p for p in (lo, hi) if p) or "")
        return "a finite number " + (" and ".join(p for p in (lo, hi) if p) or "")

    def parse(self, value, option: str | None = None):
        """Convert a value given as text (command line, grid, TOML) or as a Python value to this type."""
        option = option or self.name
        if value is None and self.optional:
            return None
        try:
            return _PARSERS[self.kind](value)
        except (TypeError, ValueError, OverflowError, ArithmeticError):
            raise ConfigError(option, f"{self.name}={value!r} is not a valid {self.kind}; allowed: {self.allowed()}") from None

    def check(self, value) -> None:
        """Raise :class:`ConfigError` unless ``value`` (already of the right type) is allowed."""
        if value is None and self.optional:
            return
        ok = True
        if self.kind == "choice":
            ok = value in self.choices
        elif self.kind == "bool":
            ok = isinstance(value, bool)
        elif self.kind == "path":
            ok = isinstance(value, str)
        elif self.kind == "ints":
            ok = isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            ok = ok and all((self.low is None or v >= self.low) and (self.high is None or v <= self.high) for v in value)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if self.kind == "int":
                ok = ok and isinstance(value, int)
            ok = ok and math.isfinite(value)
            if ok and self.low is not None:
                ok = value > self.low if self.low_open else value >= self.low
            if ok and self.high is not None:
                ok = value <= self.high
        if not ok:
            raise ConfigError(self.name, f"got {value!r}; allowed: {self.allowed()}")


def parse_int(value) -> int:
    """An exact integer: ``12``, ``"12"``, ``"1_000"``, or an integer written with an exponent or a
    fraction of zero (``"1e6"``, ``"3.0"``, ``1e6`` as a float up to 2^53). Text is read with
    :class:`decimal.Decimal`, so a 19-digit seed keeps every digit; a float above 2^53 is refused
    because it no longer says which integer was meant, and so is anything beyond 64 bits."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(value, int):
        if abs(value) > MAX_INT64:
            raise ValueError("does not fit in 64 bits")
        return value
    if isinstance(value, float):
        if not value.is_integer() or abs(value) > MAX_EXACT_INT:
            raise ValueError("not an exact integer")
        return int(value)
    text = str(value).strip()
    try:
        dec = Decimal(text.replace("_", ""))
    except InvalidOperation:
        raise ValueError("not a number") from None
    if not dec.is_finite() or dec != dec.to_integral_value():
        raise ValueError("not an integer")
    if abs(dec) > MAX_INT64:
        raise ValueError("does not fit in 64 bits")
    return int(dec)


def parse_float(value) -> float:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return float(value)


def parse_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError("not a boolean")


def _parse_text(value) -> str:
    if not isinstance(value, str):
        raise ValueError("not text")
    return value


def parse_ints(value) -> tuple:
    """Integers (each as :func:`parse_int` reads it) from ``"1,4,16"``, ``""`` or a list, as a sorted tuple
    without repeats."""
    if isinstance(value, str):  # "1,4,16", or as Python or JSON print it: "(1, 4, 16)", "[1, 4, 16]"
        value = [v for v in value.replace(" ", "").strip("()[]").split(",") if v]
    elif not isinstance(value, (list, tuple)):
        raise ValueError("not a list of integers")
    return tuple(sorted({parse_int(v) for v in value}))


_PARSERS = {"int": parse_int, "float": parse_float, "choice": _parse_text, "bool": parse_bool, "path": _parse_text,
            "ints": parse_ints}


# The table. Order = field order of RunConfig = order in --help.
PARAMS: tuple[Param, ...] = (
    # task (docs/design.md, "Tasks")
    Param("d", "int", 16, "context dimension d", "task", low=1),
    Param("k", "int", 4, "vocabulary size k", "task", low=2),
    Param("N", "int", 4, "response length N", "task", low=1),
    Param("features", "choice", "position", "feature map: position (tokens independent given x) or markov "
          "(each position also sees the previous token)", "task", choices=FEATURES),
    Param("teacher_scale", "choice", "frobenius", "teacher normalisation: frobenius (||W*|| = 1) or block (every "
          "block W*[b] has norm 1, so margins per position do not shrink with N)", "task", choices=TEACHER_SCALES),
    Param("contexts", "choice", "sphere", "context distribution: uniform on the sphere, or clusters "
          "(C skills, Zipf-skewed in pre-training)", "task", choices=CONTEXTS),
    Param("C", "int", 8, "number of clusters (contexts=clusters)", "task", low=1, clusters=True),
    Param("sigma", "float", 0.1, "cluster spread (contexts=clusters)", "task", low=0.0, clusters=True),
    Param("zipf", "float", 1.0, "pre-training cluster skew: P(c) ~ c^-zipf (contexts=clusters)", "task", low=0.0,
          clusters=True),
    Param("gamma", "float", 0.0, "margin: every context is conditioned on m(x) >= gamma (0: no condition); the scale "
          "depends on d, k, N (a run that cannot meet it prints the pilot's margin quantiles), so --gamma-quantile "
          "is often easier", "task", low=0.0),
    Param("gamma_quantile", "float", None, "instead of --gamma, the q-quantile of the margins of 4096 pilot "
          "contexts", "task", low=0.0, high=1.0, optional=True),
    Param("seed", "int", 0, "root seed of every random stream of the run", "task", low=0, high=MAX_SEED),
    # base model (docs/design.md, "Base models")
    Param("base", "choice", "sgd", "base model: sgd (pre-trained), teacher (noisy W*), uniform (W = 0), "
          "file (an earlier run's final W)", "base", choices=BASES),
    Param("n_pre", "int", 1000, "pre-training samples (base=sgd)", "base", low=0, bases=("sgd",)),
    Param("pre_lr", "choice", "adaptive", "pre-training learning-rate rule (base=sgd)", "base", choices=LR_RULES,
          bases=("sgd",)),
    Param("pre_eta", "float", 0.5, "pre-training learning rate (base=sgd)", "base", low=0.0, bases=("sgd",)),
    Param("beta", "float", 1.0, "inverse temperature (base=teacher)", "base", low=0.0, bases=("teacher",)),
    Param("rho", "float", 0.0, "noise: sine of the angle between W0 and W* (base=teacher)", "base", low=0.0,
          high=1.0, bases=("teacher",)),
    Param("base_file", "path", None, "earlier fastpg file whose final W is the base (base=file); {N}, {k}, ... "
          "are filled from the run's parameters", "base",
          optional=True, bases=("file",)),
    # post-training (docs/design.md, "Algorithms")
    Param("algorithm", "choice", "pg", "post-training algorithm: pg (on-policy REINFORCE with G samples) or rs "
          "(reject until success: query until a response, or with prm a token, is rewarded, then learn it)",
          "post", choices=ALGORITHMS),
    Param("reward", "choice", "orm", "reward model: orm (one reward for the whole response) or prm (a reward "
          "per prefix)", "post", choices=REWARDS),
    Param("G", "int", 1, "responses sampled per step (pg)", "post", low=1),
    Param("baseline", "choice", "none", "advantage baseline of pg (mean, rloo, grpo need --G >= 2)", "post",
          choices=BASELINES),
    Param("M", "int", 10**12, "query budget per step, per token with prm (rs); groups per step with --filter-groups",
          "post", low=1, high=MAX_EXACT_INT),
    Param("skip", "bool", True, "exact skip-ahead: rs skips failed queries; pg on a pool (--n-train > 0) jumps from "
          "one update to the next, skipping the steps that cannot move W (--no-skip steps through)", "post"),
    Param("lr", "choice", "adaptive", "learning-rate rule: adaptive eta / max(loss, floor) (the paper's near-optimal "
          "rule, used by every preset), constant eta, invsqrt eta / sqrt(t)", "post", choices=LR_RULES),
    Param("eta", "float", 0.5, "learning rate", "post", low=0.0),
    Param("floor", "float", FLOOR, "loss floor of the adaptive rule", "post", low=0.0, low_open=True, bases=("sgd",)),
    Param("filter_groups", "bool", False, "DAPO's dynamic sampling (pg with --G >= 2 and a group baseline): a group "
          "whose rewards are all equal is discarded and a new one sampled for the same context, its queries counted, "
          "until one is mixed or --M groups are spent (/trace/groups_discarded); with --skip the discarded groups are "
          "skipped ahead exactly", "post"),
    Param("steps", "int", 1000, "post-training steps", "evaluation", low=0),
    Param("n_train", "int", 0, "training pool size (0: a fresh context every step)", "post", low=0),
    # KL to the base model (docs/design.md, "KL to the base model")
    Param("kl_coef", "float", 0.0, "KL penalty beta to the reference model (pg; 0: off). Every step then moves W, so "
          "pg on a pool steps through (the file records --no-skip)", "post", low=0.0),
    Param("kl_ref", "choice", "base", "the KL's reference model: the frozen base model", "post", choices=KL_REFS),
    Param("kl_estimator", "choice", "exact", "what the KL term is: the exact gradient of KL(pi_W || pi_ref) for the "
          "step's context, or a per-token estimator of the log-ratio l along each sampled response: k1 = l, "
          "k2 = l^2/2, k3 = exp(-l) - 1 + l", "post", choices=KL_ESTIMATORS),
    Param("kl_in", "choice", "loss", "where a sampled estimator enters: the loss (its gradient is added to the "
          "update) or the reward (REINFORCE on r - beta sum_i k(l_i), before the baseline: with grpo a group's "
          "scale is normalised away, beta included)", "post", choices=KL_INS),
    # the sampling policy (docs/design.md, "Temperature")
    Param("temperature", "float", 1.0, "sampling temperature tau: post-training samples from pi_{W/tau} and steps "
          "along eta grad_W log pi_{W/tau} (logits divided by tau, as TRL does); evaluation stays at pi_W, and "
          "/trace/expected_error_sampling adds the sampling policy's error", "post", low=0.01, high=100.0),
    # evaluation (docs/design.md, "Evaluation")
    Param("n_test", "int", 256, "test contexts", "evaluation", low=1),
    Param("eval_every", "int", 100, "evaluate every this many steps", "evaluation", low=1),
    Param("eval_log", "int", 0, "instead, this many log-spaced evaluation points (0: off); points that round to "
          "the same step count once, so short runs get fewer", "evaluation", low=0),
    Param("alpha_off", "float", ALPHA_OFF, "base likelihood below which a test context is off-support",
          "evaluation", low=0.0, high=1.0, low_open=True),
    Param("token_trace", "bool", False, "also store per-token log-likelihoods at every evaluation point",
          "evaluation"),
    Param("pass_k", "ints", (), "record pass@k = 1 - (1 - pi(y*|x))^k at these k (exact, from the stored "
          "likelihoods) and coverage against the base model at the largest; none by default",
          "evaluation", low=1, high=MAX_EXACT_INT),
    # early stopping (docs/design.md, "Budgets"): checked at evaluation points; the run is complete
    Param("stop_eps", "float", 0.0, "stop at the first evaluation point where the expected error is at most this "
          "(0: off); the run is complete and its message says why", "evaluation", low=0.0, high=1.0),
    Param("max_queries", "int", 0, "stop at the first evaluation point where the reward queries (orm_queries with "
          "ORM, prm_queries with PRM) reach this (0: off)", "evaluation", low=0, high=MAX_EXACT_INT),
)
PARAM = {p.name: p for p in PARAMS}

# The parameters of the first schema. A parameter added later keys a random stream only when it
# differs from its default, so adding one never changes the results of an existing configuration.
STREAM_KEYED_AT_DEFAULT = frozenset(
    "d k N features contexts C sigma zipf gamma gamma_quantile seed base n_pre pre_lr pre_eta beta rho base_file "
    "algorithm reward G baseline M skip lr eta floor steps n_train n_test eval_every eval_log alpha_off "
    "token_trace".split()
)
# parameters that do not change a run's dynamics, only its length and what is measured
KL_OPTIONS = frozenset(("kl_ref", "kl_estimator", "kl_in"))  # what the KL term is: inert without one (kl_coef = 0)


class _RunConfigMethods:
    """Methods of :class:`RunConfig` (its fields come from :data:`PARAMS`)."""

    def __post_init__(self):
        for p in PARAMS:  # one type per parameter: 1 and 1.0 key the same stream
            value = getattr(self, p.name)
            if p.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, p.name, float(value))
            if p.kind == "ints" and isinstance(value, list):
                object.__setattr__(self, p.name, parse_ints(value))
        if self.kl_coef > 0 and self.algorithm == "pg" and self.skip is True:
            # a KL term moves W at every step: nothing can be skipped, and the file says what ran
            object.__setattr__(self, "skip", False)
        validate(self)

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {p.name: list(getattr(self, p.name)) if p.kind == "ints" else getattr(self, p.name) for p in PARAMS}

    @classmethod
    def names(cls) -> list[str]:
        return [p.name for p in PARAMS]

    @classmethod
    def from_dict(cls, values: dict) -> RunConfig:
        unknown = sorted(set(values) - set(PARAM))
        if unknown:
            raise ConfigError(unknown[0], f"unknown parameter; allowed: {', '.join(PARAM)}")
        return cls(**{name: parse_value(name, value) for name, value in values.items()})

    def _key(self, names) -> dict:
        out = {}
        for name in names:
            value = getattr(self, name)
            if name in KL_OPTIONS and self.kl_coef == 0:
                continue  # no KL term: its options change nothing that runs, so they key no stream
            if name in STREAM_KEYED_AT_DEFAULT or value != PARAM[name].default:
                out[name] = value
        return out

    def task_params(self) -> dict:
        """The parameters that fix the task: they key the task's random stream (cluster
        parameters only for clustered contexts)."""
        return self._key(p.name for p in PARAMS if p.role == "task" and p.name != "seed"
                         and not (p.clusters and self.contexts != "clusters"))

    def base_params(self) -> dict:
        """Task parameters plus those that fix the base model (those of its kind of base)."""
        names = [p.name for p in PARAMS if p.role == "base" and (not p.bases or self.base in p.bases)]
        names += [p.name for p in PARAMS if p.role != "base" and self.base in p.bases]
        return {**self.task_params(), **self._key(names)}

    def dynamics_params(self) -> dict:
        """Everything but run length and evaluation: it keys the post-training stream, so a longer
        run (or one evaluated differently) extends a shorter one step for step."""
        return self._key(p.name for p in PARAMS if p.role != "evaluation")


RunConfig = dataclasses.make_dataclass(
    "RunConfig",
    [(p.name, p.type | None if p.optional else p.type, dataclasses.field(default=p.default)) for p in PARAMS],
    bases=(_RunConfigMethods,),
    frozen=True,
)
RunConfig.__module__ = __name__  # pickles by name (make_dataclass takes module= only from Python 3.12)
RunConfig.__doc__ = "Every resolved parameter of one run; fields and their meaning are :data:`PARAMS`."


def parse_value(name: str, value, option: str | None = None):
    """Convert a value given as text (command line, grid, TOML) to the type of parameter ``name``."""
    if name not in PARAM:
        raise ConfigError(option or name, f"unknown parameter {name!r}; allowed: {', '.join(PARAM)}")
    return PARAM[name].parse(value, option)


# Named setups (docs/design.md, "Command line"). Experiments are data: plain dictionaries of overrides.
PRESETS: dict[str, dict] = {
    "tiny": dict(d=8, k=3, N=3, contexts="clusters", C=4, sigma=0.2, zipf=1.5, n_pre=200, steps=400,
                 algorithm="pg", reward="prm", G=4, baseline="rloo", n_test=64, eval_every=100),
    # Figure 1: 32 orthonormal "skills" (clusters), pre-trained with a Zipf(1.5) skew so that rare
    # skills are off-support; on-policy PG with one sample and the adaptive rule. Every context is
    # conditioned on a margin, the 25% quantile of the pilot margins (the theory assumes one); then
    # 26-48% of test contexts have base likelihood below alpha_off (measured for seeds 0-2). Tight
    # clusters (sigma 0.01): each skill has one correct response, and PRM's error keeps falling
    # (docs/design.md, "Figure 1").
    "fig1-orm": dict(d=32, k=4, N=8, contexts="clusters", C=32, sigma=0.01, zipf=1.5, gamma_quantile=0.25,
                     n_pre=2000, pre_lr="adaptive", pre_eta=0.5, algorithm="pg", reward="orm", G=1,
                     lr="adaptive", eta=0.5, steps=50000, n_test=1024, eval_log=60),
}
PRESETS["fig1-prm"] = {**PRESETS["fig1-orm"], "reward": "prm"}
# Figure 1 with wide clusters (the default before): some contexts' correct response differs from
# their cluster's majority, and on-policy PG + PRM stalls on them for good (docs/design.md, "Figure 1").
FIG1_WIDE = dict(sigma=0.05, n_pre=4000)

# The statistical-learning experiment (docs/design.md, "Base models"): SGD on the log-loss, test error vs samples seen,
# for each learning-rate rule and each margin (given as quantiles of the pilot margins).
PRETRAIN = dict(d=64, k=4, N=2, contexts="sphere", n_pre=300000, pre_eta=0.5, n_test=8192, eval_log=30)
PRETRAIN_GAMMA_QUANTILES = (0.2, 0.3, 0.4)  # 1/gamma^2 about 50k, 17k, 10k: well inside n_pre
PRETRAIN_LR_RULES = ("adaptive", "constant")


def evaluation_count(steps: int, eval_every: int, eval_log: int) -> int:
    """How many evaluation points :func:`fastpg.metrics.eval_points` makes (at most; without
    building them): 0, every ``eval_every`` steps or ``eval_log`` log-spaced points, and ``steps``."""
    return (eval_log if eval_log > 0 and steps > 0 else steps // eval_every) + 2


def memory_bytes() -> int:
    """Physical memory of this machine (a large number where it cannot be read)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def check_trace_size(cfg, steps: int, option: str = "eval_every") -> None:
    """Refuse a trace that could not be held: each evaluation point keeps ``n_test`` log-likelihoods
    (``n_test x N`` more with ``token_trace``) in memory and in the file; all of them may take at
    most a quarter of this machine's memory."""
    points = evaluation_count(steps, cfg.eval_every, cfg.eval_log)
    per_point = 8 * (cfg.n_test * (1 + (cfg.N if cfg.token_trace else 0)) + 16)
    limit = memory_bytes() // 4
    if points * per_point > limit:
        raise ConfigError(option, f"{steps} steps evaluated every {cfg.eval_every} make {points:,} evaluation points, "
                                  f"{points * per_point / 2**30:.3g} GiB of trace; allowed: at most {limit // 2**30} GiB "
                                  f"(a quarter of this machine's memory): a larger --eval-every, or --eval-log K for K "
                                  "log-spaced points")


def validate(cfg) -> None:
    """Raise :class:`ConfigError` naming the first offending option: every parameter against its
    row of :data:`PARAMS`, then the rules that tie parameters together."""
    for p in PARAMS:
        p.check(getattr(cfg, p.name))
    check_trace_size(cfg, cfg.steps)
    if cfg.base == "file" and not cfg.base_file:
        raise ConfigError("base_file", "required with --base file: the path of an earlier fastpg HDF5 file")
    if cfg.baseline != "none" and cfg.G < 2:
        raise ConfigError("baseline", f"{cfg.baseline!r} needs --G >= 2 (with one sample every advantage is 0); "
                                        "allowed with --G 1: none")
    if cfg.kl_coef > 0:
        if cfg.algorithm != "pg":
            raise ConfigError("kl_coef", f"got {cfg.kl_coef:g} with --algorithm {cfg.algorithm} (it has no KL term); "
                                         "allowed: 0, or --algorithm pg")
        if cfg.lr == "adaptive":
            raise ConfigError("lr", "adaptive divides by the log-loss of the step's rewarded target, which a step moved "
                                    "only by its KL term does not have; allowed with --kl-coef > 0: constant, invsqrt")
        if cfg.kl_estimator == "exact" and cfg.kl_in == "reward":
            raise ConfigError("kl_in", "reward needs a sampled estimator (the exact KL gradient is not a reward); "
                                       "allowed with --kl-estimator exact: loss")
    if cfg.filter_groups:
        if cfg.algorithm != "pg" or cfg.baseline == "none":
            name = "algorithm" if cfg.algorithm != "pg" else "baseline"
            raise ConfigError("filter_groups", f"needs pg with a group baseline (a group of equal rewards moves W only "
                                               f"without one), got --{name} {getattr(cfg, name)}; allowed: "
                                               "--algorithm pg with --baseline mean, rloo or grpo (and --G >= 2)")
        if cfg.kl_coef > 0:
            raise ConfigError("filter_groups", "a KL term moves W whatever the rewards, so no group is uninformative; "
                                               "allowed with --kl-coef > 0: false")
        if not cfg.skip and cfg.M > FILTER_NO_SKIP_MAX_M:
            # every discarded group sampled, inside one kernel call that signals cannot interrupt
            raise ConfigError("M", f"got {cfg.M} with --filter-groups --no-skip, which samples every discarded group "
                                   f"(a solved context discards about 1/(G(1-p)) of them a step); allowed: at most "
                                   f"{FILTER_NO_SKIP_MAX_M:g}, or --skip")
