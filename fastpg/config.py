"""Run configuration: every parameter of SPEC §1–§7, its default, presets and validation.

Constants live here (STYLE: one place). :class:`RunConfig` is a frozen dataclass whose
field names are the ``/config`` keys of the HDF5 file (SPEC §8, a public API).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields

SCHEMA_VERSION = 1
ALPHA_OFF = 1e-3
FLOOR = 1e-8
PILOT_SIZE = 4096
MIN_ACCEPTANCE = 1e-3  # below this, rejection sampling for the margin is refused
REJECTION_SAFETY = 50.0  # tries per context = SAFETY / acceptance: failure prob ~ e^-50
LQ_LOG10_ALPHA = (-300.0, 0.0, 601)  # log grid of alpha for the Likelihood Quantile CDFs
LQ_LEVELS = 101  # quantile levels 0, 0.01, ..., 1

FEATURES = ("position", "markov")
CONTEXTS = ("sphere", "clusters")
BASES = ("sgd", "teacher", "uniform", "file")
ALGORITHMS = ("pg", "rs")
REWARDS = ("orm", "prm")
BASELINES = ("none", "mean", "rloo", "grpo")
LR_RULES = ("constant", "adaptive", "invsqrt")


# parameters that do not change a run's dynamics, only its length and what is measured
EVALUATION_PARAMS = ("steps", "n_test", "eval_every", "eval_log", "alpha_off", "token_trace")


class ConfigError(ValueError):
    """Bad input: ``option`` is the command-line flag to blame, the message says what is allowed."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


def flag(name: str) -> str:
    """Command-line flag of a parameter (``n_test`` -> ``--n-test``; ``d`` -> ``-d``)."""
    if name in ("d", "k", "N"):
        return "-" + name
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class RunConfig:
    """Every resolved parameter of one run (SPEC §8 ``/config`` keys)."""

    # task (SPEC §2)
    d: int = 16
    k: int = 4
    N: int = 4
    features: str = "position"
    contexts: str = "sphere"
    C: int = 8
    sigma: float = 0.1
    zipf: float = 1.0
    gamma: float = 0.0
    gamma_quantile: float | None = None
    seed: int = 0
    # base model (SPEC §3)
    base: str = "sgd"
    n_pre: int = 1000
    pre_lr: str = "adaptive"
    pre_eta: float = 0.5
    beta: float = 1.0
    rho: float = 0.0
    base_file: str | None = None
    # post-training (SPEC §4-§6)
    algorithm: str = "pg"
    reward: str = "orm"
    G: int = 1
    baseline: str = "none"
    M: int = 10**12
    skip: bool = True
    lr: str = "constant"
    eta: float = 0.5
    floor: float = FLOOR
    steps: int = 1000
    n_train: int = 0
    # evaluation (SPEC §7)
    n_test: int = 256
    eval_every: int = 100
    eval_log: int = 0
    alpha_off: float = ALPHA_OFF
    token_trace: bool = False

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ConfigError(flag(unknown[0]), f"unknown parameter; allowed: {', '.join(cls.names())}")
        # one type per parameter, so that equal values key equal random streams (1 == 1.0 as JSON they are not)
        typed = {name: None if value is None else parse_value(name, value) for name, value in values.items()}
        cfg = cls(**typed)
        validate(cfg)
        return cfg

    def task_params(self) -> dict:
        """The parameters that fix the task (SPEC §2): they key the task's random stream."""
        keys = ("d", "k", "N", "features", "contexts", "C", "sigma", "zipf", "gamma", "gamma_quantile")
        out = {key: getattr(self, key) for key in keys}
        if self.contexts == "sphere":  # cluster parameters do not matter on the sphere
            for key in ("C", "sigma", "zipf"):
                out.pop(key)
        return out

    def dynamics_params(self) -> dict:
        """Everything but run length and evaluation: it keys the post-training stream, so a longer
        run (or one evaluated differently) extends a shorter one step for step."""
        out = self.to_dict()
        for key in EVALUATION_PARAMS:
            out.pop(key)
        return out

    def base_params(self) -> dict:
        """Task parameters plus those that fix the base model."""
        keys = {"sgd": ("n_pre", "pre_lr", "pre_eta", "floor"), "teacher": ("beta", "rho"),
                "uniform": (), "file": ("base_file",)}[self.base]
        return {**self.task_params(), "base": self.base, **{key: getattr(self, key) for key in keys}}


def _as_int(text) -> int:
    if isinstance(text, bool):
        raise ValueError
    if isinstance(text, int):
        return text
    f = float(text)
    if not f.is_integer():
        raise ValueError
    return int(f)


def _as_bool(text) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError


_KIND = {"int": _as_int, "float": float, "str": str, "bool": _as_bool}
PARAM_KINDS = {
    f.name: ("float" if f.name == "gamma_quantile" else "str" if f.name == "base_file"
             else type(f.default).__name__)
    for f in fields(RunConfig)
}


def parse_value(name: str, text, option: str | None = None):
    """Convert a value given as text (command line, grid, TOML) to the type of parameter ``name``.

    Integers may be written as integer-valued floats (``1e6``).
    """
    option = option or flag(name)
    if name not in PARAM_KINDS:
        raise ConfigError(option, f"unknown parameter {name!r}; allowed: {', '.join(RunConfig.names())}")
    kind = PARAM_KINDS[name]
    try:
        return _KIND[kind](text)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(option, f"{name}={text!r} is not a valid {kind}") from None


# Named setups (SPEC §11). Experiments are data: plain dictionaries of overrides.
PRESETS: dict[str, dict] = {
    "tiny": dict(d=8, k=3, N=3, contexts="clusters", C=4, sigma=0.2, zipf=1.5, n_pre=200, steps=400,
                 algorithm="pg", reward="prm", G=4, baseline="rloo", n_test=64, eval_every=100),
    # Figure 1: 32 orthonormal "skills" (clusters), pre-trained with a Zipf(1.5) skew so that rare
    # skills are off-support; on-policy PG with one sample and the adaptive rule. About 30% of test
    # contexts have base likelihood below alpha_off (measured for seeds 0-2: 0.29-0.36).
    "fig1-orm": dict(d=32, k=4, N=8, contexts="clusters", C=32, sigma=0.05, zipf=1.5, n_pre=4000,
                     pre_lr="adaptive", pre_eta=0.5, algorithm="pg", reward="orm", G=1,
                     lr="adaptive", eta=0.5, steps=50000, n_test=1024, eval_log=60),
}
PRESETS["fig1-prm"] = {**PRESETS["fig1-orm"], "reward": "prm"}

# The statistical-learning experiment (SPEC §3): SGD on the log-loss, test error vs samples seen,
# for each learning-rate rule and each margin (given as quantiles of the pilot margins).
PRETRAIN = dict(d=64, k=4, N=2, contexts="sphere", n_pre=300000, pre_eta=0.5, n_test=8192, eval_log=30)
PRETRAIN_GAMMA_QUANTILES = (0.2, 0.3, 0.4)  # 1/gamma^2 about 50k, 17k, 10k: well inside n_pre
PRETRAIN_LR_RULES = ("adaptive", "constant")


def _choice(cfg, name, allowed):
    if getattr(cfg, name) not in allowed:
        raise ConfigError(flag(name), f"got {getattr(cfg, name)!r}; allowed: {', '.join(allowed)}")


def _int_at_least(cfg, name, low):
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(flag(name), f"got {value!r}; allowed: an integer >= {low}")


def _real(cfg, name, low=None, high=None, low_open=False):
    value = getattr(cfg, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
        hi = "" if high is None else f"<= {high}"
        allowed = " and ".join(p for p in (lo, hi) if p) or "any"
        raise ConfigError(flag(name), f"got {value!r}; allowed: a finite number {allowed}")


def validate(cfg: RunConfig) -> None:
    """Raise :class:`ConfigError` naming the first offending option, before any work is done."""
    _int_at_least(cfg, "d", 1)
    _int_at_least(cfg, "k", 2)
    _int_at_least(cfg, "N", 1)
    _choice(cfg, "features", FEATURES)
    _choice(cfg, "contexts", CONTEXTS)
    _int_at_least(cfg, "C", 1)
    _real(cfg, "sigma", 0.0)
    _real(cfg, "zipf", 0.0)
    _real(cfg, "gamma", 0.0)
    if cfg.gamma_quantile is not None:
        _real(cfg, "gamma_quantile", 0.0, 1.0)
    _int_at_least(cfg, "seed", 0)
    _choice(cfg, "base", BASES)
    _int_at_least(cfg, "n_pre", 0)
    _choice(cfg, "pre_lr", LR_RULES)
    _real(cfg, "pre_eta", 0.0)
    _real(cfg, "beta", 0.0)
    _real(cfg, "rho", 0.0, 1.0)
    if cfg.base == "file" and not cfg.base_file:
        raise ConfigError("--base-file", "required with --base file: the path of an earlier fastpg HDF5 file")
    _choice(cfg, "algorithm", ALGORITHMS)
    _choice(cfg, "reward", REWARDS)
    _int_at_least(cfg, "G", 1)
    _choice(cfg, "baseline", BASELINES)
    if cfg.baseline != "none" and cfg.G < 2:
        raise ConfigError("--baseline", f"{cfg.baseline!r} needs --G >= 2 (with one sample every advantage is 0); allowed with --G 1: none")
    _int_at_least(cfg, "M", 1)
    if cfg.M > 2**53:
        raise ConfigError("--M", f"got {cfg.M}; allowed: an integer from 1 to 2^53 (counters are exact float64)")
    _choice(cfg, "lr", LR_RULES)
    _real(cfg, "eta", 0.0)
    _real(cfg, "floor", 0.0, low_open=True)
    _int_at_least(cfg, "steps", 0)
    _int_at_least(cfg, "n_train", 0)
    _int_at_least(cfg, "n_test", 1)
    _int_at_least(cfg, "eval_every", 1)
    _int_at_least(cfg, "eval_log", 0)
    _real(cfg, "alpha_off", 0.0, 1.0, low_open=True)
