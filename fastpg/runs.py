"""From a configuration and a task to the engine's per-run arrays (pre- and post-training)."""

from __future__ import annotations

import hashlib

import numpy as np

from . import codes, defects
from .config import ConfigError, RunConfig
from .kernels.engine import Batch
from .kernels.rng import seed_sequence, xoshiro_state
from .tasks import Task


def run_params(cfg: RunConfig, task: Task, *, algorithm: int, lr: str, eta: float) -> np.ndarray:
    """One run's kernel parameters: a record of :data:`fastpg.codes.RUN_PARAMS` (read as ``p.eta`` in kernels)."""
    p = np.zeros((), dtype=codes.RUN_PARAMS)
    p["algorithm"] = algorithm
    p["reward"] = codes.REWARD_CODES[cfg.reward]
    p["G"] = cfg.G
    p["baseline"] = codes.BASELINE_CODES[cfg.baseline]
    p["skip"] = int(bool(cfg.skip))
    p["lr"] = codes.LR_CODES[lr]
    if defects.active("reward-swap"):  # testing only (fastpg.defects): never in normal use
        p["reward"] = codes.PRM if p["reward"] == codes.ORM else codes.ORM
    if defects.active("adaptive-constant") and p["lr"] == codes.ADAPTIVE:
        p["lr"] = codes.CONSTANT
    p["features"] = task.features
    p["max_tries"] = task.max_tries
    p["eta"] = eta
    p["floor"] = cfg.floor
    p["M"] = float(cfg.M)
    p["sigma"] = task.sigma
    p["gamma"] = task.gamma
    p["kl_coef"] = cfg.kl_coef
    p["kl_estimator"] = codes.KL_ESTIMATOR_CODES[cfg.kl_estimator]
    if defects.active("kl-estimator-shift") and p["kl_estimator"] != codes.KL_EXACT:
        p["kl_estimator"] = {codes.KL_K1: codes.KL_K2, codes.KL_K2: codes.KL_K3, codes.KL_K3: codes.KL_K1}[int(p["kl_estimator"])]
    p["kl_in"] = codes.KL_IN_CODES[cfg.kl_in]
    p["filter_groups"] = int(cfg.filter_groups)
    return p


def run_arrays(cfg: RunConfig, task: Task, W0: np.ndarray, *, stream: str, cdf: np.ndarray, pool: bool,
               algorithm: int, lr: str, eta: float, key: dict) -> dict:
    """One run's arrays for :class:`fastpg.kernels.engine.Batch`, with its own random stream."""
    d, N = cfg.d, cfg.N
    return dict(
        W=np.array(W0, dtype=np.float64), W_ref=defects.kl_reference(W0), W_star=defects.training_teacher(task.W_star),
        centres=task.centres, cdf=cdf,
        pool_x=task.pool_x if pool else np.zeros((0, d)), pool_y=task.pool_y if pool else np.zeros((0, N), np.int64),
        state=xoshiro_state(seed_sequence(cfg.seed, stream, key)),
        params=run_params(cfg, task, algorithm=algorithm, lr=lr, eta=eta),
        test_x=task.test_x, test_y=task.test_y,
    )


def pretraining_run(cfg: RunConfig, task: Task) -> dict:
    """SGD on the log-loss over fresh contexts from the (Zipf-skewed) pre-training distribution, from ``W = 0``."""
    W0 = np.zeros_like(task.W_star)
    key = {k: v for k, v in cfg.base_params().items() if k != "n_pre"}  # more samples extend fewer
    return run_arrays(cfg, task, W0, stream="pretrain", cdf=task.pre_cdf, pool=False, algorithm=codes.SFT,
                      lr=cfg.pre_lr, eta=cfg.pre_eta, key=key)


def post_training_run(cfg: RunConfig, task: Task, W0: np.ndarray) -> dict:
    """The post-training run of ``cfg`` starting from the base weights ``W0`` (docs/design.md, "Algorithms")."""
    algorithm = codes.ALGORITHM_CODES[cfg.algorithm]
    key = cfg.dynamics_params()
    if cfg.base == "file":  # key by what the file holds, not where it lies: moving a folder changes no result
        key["base_file"] = hashlib.sha256(np.ascontiguousarray(W0, dtype=np.float64).tobytes()).hexdigest()
    arrays = run_arrays(cfg, task, W0, stream="post", cdf=task.post_cdf, pool=cfg.n_train > 0, algorithm=algorithm,
                        lr=cfg.lr, eta=cfg.eta, key=key)
    arrays["temperature"] = 1.0 if defects.active("temperature-ignored") else cfg.temperature
    return arrays


def base_file_path(cfg: RunConfig) -> str:
    """``base_file`` with ``{name}`` placeholders filled from the run's parameters (``bases/N={N}.h5``),
    so that a sweep over ``N`` can take each run's base from a file of the right shape."""
    try:
        return cfg.base_file.format(**cfg.to_dict())
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError("base_file", f"cannot fill {cfg.base_file!r} ({exc.__class__.__name__}: {exc}); "
                                         "allowed: a path with {name} placeholders of run parameters") from None


def base_model(cfg: RunConfig, task: Task, load_final_W=None) -> np.ndarray:
    """Base weights ``W0`` (docs/design.md, "Base models") (``sgd``, ``teacher``, ``uniform`` or ``file``)."""
    if cfg.base == "uniform":
        return np.zeros_like(task.W_star)
    if cfg.base == "teacher":
        rng = np.random.default_rng(seed_sequence(cfg.seed, "base", cfg.base_params()))
        G = rng.standard_normal(task.W_star.shape)
        mix = np.sqrt(1.0 - cfg.rho**2) * task.W_star + cfg.rho * G / np.linalg.norm(G)
        return cfg.beta * mix / np.linalg.norm(mix)
    if cfg.base == "file":
        W = load_final_W(base_file_path(cfg))
        if W.shape != task.W_star.shape:
            raise ConfigError("base_file", f"its final W has shape {W.shape}; "
                                             f"allowed: a file whose W has shape {task.W_star.shape}")
        return np.array(W, dtype=np.float64)
    batch = Batch([pretraining_run(cfg, task)])
    status = batch.advance(cfg.n_pre)
    if status[0] == codes.NON_FINITE:
        raise ConfigError("pre_eta", "pre-training weights became non-finite; allowed: a smaller --pre-eta")
    if status[0] == codes.REJECTION_FAILED:  # pragma: no cover - probability about e^-50
        raise ConfigError("gamma", "rejection sampling for the margin ran out of tries; allowed: a smaller --gamma")
    return batch.W[0].copy()
