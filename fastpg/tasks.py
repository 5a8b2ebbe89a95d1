"""Tasks (docs/design.md, "Tasks"): teacher, context distributions, margin conditioning, test set, training pool.

A task is fully determined by ``(d, k, N, features, contexts, C, sigma, zipf, gamma, seed)``
(and ``gamma_quantile`` when given): its random streams are keyed by exactly these, so
runs that differ only in base model or algorithm share their task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import config as C
from .codes import FEATURE_CODES
from .config import ConfigError, RunConfig
from .kernels.contexts import draw_labelled_contexts
from .kernels.rng import seed_sequence, xoshiro_state
from .kernels.tables import n_blocks


@dataclass
class Task:
    """Arrays of one task. ``W_star[B, k, d]``, ``centres[C, d]`` (empty on the sphere),
    cumulative cluster distributions ``post_cdf`` / ``pre_cdf``, the test set
    ``test_x[n_test, d]``, ``test_y[n_test, N]``, ``test_margin[n_test]`` and the
    training pool ``pool_x``, ``pool_y``, ``pool_margin`` (``n_train`` rows)."""

    features: int
    W_star: np.ndarray
    centres: np.ndarray
    post_cdf: np.ndarray
    pre_cdf: np.ndarray
    sigma: float
    gamma: float
    max_tries: int
    acceptance: float
    pilot_margin_quantiles: dict
    test_x: np.ndarray
    test_y: np.ndarray
    test_margin: np.ndarray
    pool_x: np.ndarray
    pool_y: np.ndarray
    pool_margin: np.ndarray

    @property
    def realised_min_margin(self) -> float:
        """Smallest teacher margin among the stored contexts (test set and training pool)."""
        return float(np.min(np.concatenate([self.test_margin, self.pool_margin])))


def teacher(rng: np.random.Generator, blocks: int, k: int, d: int, scale: str = "frobenius") -> np.ndarray:
    """``W*`` i.i.d. standard normal, scaled to Frobenius norm 1 (``frobenius``) or with every block
    ``W*[b]`` scaled to norm 1 (``block``: a position's margin has the same law for every ``N``)."""
    W = rng.standard_normal((blocks, k, d))
    if scale == "block":
        return W / np.linalg.norm(W.reshape(blocks, -1), axis=1)[:, None, None]
    return W / np.linalg.norm(W)


def cluster_centres(rng: np.random.Generator, n_clusters: int, d: int) -> np.ndarray:
    """Orthonormal centres when ``C <= d`` (QR of a Gaussian matrix), else random unit vectors."""
    g = rng.standard_normal((d, n_clusters))
    if n_clusters <= d:
        q, _ = np.linalg.qr(g)
        return np.ascontiguousarray(q.T)
    g = g.T
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def cluster_cdf(n_clusters: int, zipf: float) -> np.ndarray:
    """Cumulative distribution with ``P(c) ~ c^-zipf`` for 1-based ``c`` (``zipf = 0``: uniform)."""
    w = np.arange(1, n_clusters + 1, dtype=np.float64) ** -zipf
    cdf = np.cumsum(w / w.sum())
    cdf[-1] = 1.0
    return cdf


def _draw(seq, W_star, features, centres, cdf, sigma, gamma, max_tries, n):
    d = W_star.shape[2]
    N = W_star.shape[0] if features == 0 else W_star.shape[0] // (W_star.shape[1] + 1)
    X = np.empty((n, d))
    Y = np.empty((n, N), dtype=np.int64)
    margin = np.empty(n)
    ok = draw_labelled_contexts(xoshiro_state(seq), W_star, features, centres, cdf, sigma, gamma, max_tries, X, Y, margin)
    return ok, X, Y, margin


PILOT_LEVELS = (0.01, 0.1, 0.5, 0.9, 0.99)


def pilot_quantiles(margins: np.ndarray) -> dict:
    """``{"q01": ..., "q99": ...}``: quantiles of pilot margins at :data:`PILOT_LEVELS`."""
    return {f"q{int(q * 100):02d}": float(np.quantile(margins, q)) for q in PILOT_LEVELS}


def margin_quantiles(cfg: RunConfig | dict) -> dict:
    """The teacher-margin quantiles of ``cfg``'s post-training contexts (a :class:`RunConfig` or a
    dict of parameters, as :func:`fastpg.run` takes), from the task's pilot draw (the same numbers a
    run with a margin condition records): what to look at when choosing ``gamma``."""
    if not isinstance(cfg, RunConfig):
        cfg = RunConfig.from_dict(dict(cfg or {}))
    features = FEATURE_CODES[cfg.features]
    root = seed_sequence(cfg.seed, "task", cfg.task_params())
    s_teacher, s_centres, s_pilot, _, _ = root.spawn(5)
    W_star = teacher(np.random.default_rng(s_teacher), n_blocks(features, cfg.N, cfg.k), cfg.k, cfg.d, cfg.teacher_scale)
    centres, cdf, sigma = np.zeros((0, cfg.d)), np.zeros(0), 0.0
    if cfg.contexts == "clusters":
        centres = cluster_centres(np.random.default_rng(s_centres), cfg.C, cfg.d)
        cdf, sigma = cluster_cdf(cfg.C, 0.0), float(cfg.sigma)
    _, _, _, m = _draw(s_pilot.spawn(2)[0], W_star, features, centres, cdf, sigma, -1.0, 1, C.PILOT_SIZE)
    return pilot_quantiles(m)


def make_task(cfg: RunConfig) -> Task:
    """Build the task of ``cfg``; raise :class:`ConfigError` (``gamma``) if the margin is infeasible."""
    features = FEATURE_CODES[cfg.features]
    blocks = n_blocks(features, cfg.N, cfg.k)
    root = seed_sequence(cfg.seed, "task", cfg.task_params())
    s_teacher, s_centres, s_pilot, s_test, s_pool = root.spawn(5)
    W_star = teacher(np.random.default_rng(s_teacher), blocks, cfg.k, cfg.d, cfg.teacher_scale)
    if cfg.contexts == "clusters":
        centres = cluster_centres(np.random.default_rng(s_centres), cfg.C, cfg.d)
        post_cdf = cluster_cdf(cfg.C, 0.0)
        pre_cdf = cluster_cdf(cfg.C, cfg.zipf)
        sigma = float(cfg.sigma)
    else:
        centres = np.zeros((0, cfg.d))
        post_cdf = pre_cdf = np.zeros(0)
        sigma = 0.0

    # pilot: margins of unconditioned contexts from both distributions, drawn only when the margin
    # condition needs them (they cost about as much as a small run; see docs/design.md, "Tasks")
    gamma = float(cfg.gamma)
    quantiles: dict = {}
    acceptance = 1.0  # every margin is >= 0, so gamma <= 0 accepts every context
    if gamma > 0.0 or cfg.gamma_quantile is not None:
        pilots = []
        for seq, cdf in zip(s_pilot.spawn(2), (post_cdf, pre_cdf)):
            _, _, _, m = _draw(seq, W_star, features, centres, cdf, sigma, -1.0, 1, C.PILOT_SIZE)
            pilots.append(m)
        quantiles = pilot_quantiles(pilots[0])
        if cfg.gamma_quantile is not None:
            gamma = float(np.quantile(pilots[0], cfg.gamma_quantile))
        acceptance = min(float(np.mean(m >= gamma)) for m in pilots)
        if acceptance < C.MIN_ACCEPTANCE:
            shown = ", ".join(f"{q * 100:g}%: {np.quantile(pilots[0], q):.3g}" for q in PILOT_LEVELS)
            raise ConfigError(
                "gamma" if cfg.gamma_quantile is None else "gamma_quantile",
                f"margin {gamma:.3g} accepts {acceptance:.2g} of {C.PILOT_SIZE} pilot contexts (need >= {C.MIN_ACCEPTANCE:g}); "
                f"pilot margin quantiles {shown}; allowed: a smaller --gamma such as {np.quantile(pilots[0], 0.5):.3g}, "
                f"or a smaller --gamma-quantile q in [0, 1]",
            )
    max_tries = int(math.ceil(C.REJECTION_SAFETY / acceptance))

    ok, test_x, test_y, test_margin = _draw(s_test, W_star, features, centres, post_cdf, sigma, gamma, max_tries, cfg.n_test)
    ok2, pool_x, pool_y, pool_margin = _draw(s_pool, W_star, features, centres, post_cdf, sigma, gamma, max_tries, cfg.n_train)
    if not (ok and ok2):  # pragma: no cover - probability about e^-50 per context
        raise ConfigError("gamma", f"rejection sampling for margin {gamma:.3g} ran out of tries; allowed: a smaller --gamma")
    return Task(
        features=features, W_star=W_star, centres=centres, post_cdf=post_cdf, pre_cdf=pre_cdf, sigma=sigma,
        gamma=gamma, max_tries=max_tries, acceptance=acceptance, pilot_margin_quantiles=quantiles,
        test_x=test_x, test_y=test_y, test_margin=test_margin, pool_x=pool_x, pool_y=pool_y, pool_margin=pool_margin,
    )
