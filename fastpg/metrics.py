"""Test metrics and the Likelihood Quantile (docs/design.md, "Evaluation"), from exact log-likelihoods."""

from __future__ import annotations

import numpy as np

from . import config as C


def test_metrics(loglik: np.ndarray, greedy_ok: np.ndarray, offsupport: np.ndarray) -> dict:
    """Metrics of one evaluation point: one entry per ``metric`` row of :data:`fastpg.outputs.OUTPUTS`.

    ``expected_error = 1 - mean_j pi_W(y*_j | x_j)``; ``greedy_error`` = fraction of contexts whose
    greedy decoding is not ``y*_j``; ``off/onsupport_likelihood`` = mean likelihood over contexts
    whose *base* likelihood is below / at least ``alpha_off`` (``offsupport`` is that mask); the
    mean over an empty set is recorded as 0 (the set's size is stored in ``/base``).
    """
    lik = np.exp(loglik)
    on = ~offsupport
    return {
        "expected_error": float(1.0 - lik.mean()),
        "greedy_error": float(1.0 - greedy_ok.mean()),
        "offsupport_likelihood": float(lik[offsupport].mean()) if offsupport.any() else 0.0,
        "onsupport_likelihood": float(lik[on].mean()) if on.any() else 0.0,
        "mean_loglik": float(np.sum(loglik / len(loglik))),  # no overflow for huge finite values
    }


def lq_alpha() -> np.ndarray:
    lo, hi, n = C.LQ_LOG10_ALPHA
    return 10.0 ** np.linspace(lo, hi, n)


def empirical_cdf(loglik: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``P_j[exp(loglik_j) <= alpha]`` for each ``alpha``, compared in log space."""
    s = np.sort(loglik)
    return np.searchsorted(s, np.log(alpha), side="right") / len(s)


def likelihood_quantile(base_loglik: np.ndarray, base_token_loglik: np.ndarray) -> dict:
    """The base model's Likelihood Quantile at sequence and token level (docs/design.md, "Evaluation").

    Sequence level uses ``pi_0(y*_j | x_j)``; token level ``min_i pi_0(y*_ji | x_j, y*_j<i)``.
    Returns the CDFs on the ``alpha`` grid and the quantile functions (natural-log likelihoods)
    at levels ``0, 0.01, ..., 1``.
    """
    alpha = lq_alpha()
    token_min = base_token_loglik.min(axis=1)
    levels = np.linspace(0.0, 1.0, C.LQ_LEVELS)
    return {
        "alpha": alpha,
        "cdf": empirical_cdf(base_loglik, alpha),
        "token_cdf": empirical_cdf(token_min, alpha),
        "level": levels,
        "loglik_quantile": np.quantile(base_loglik, levels),
        "token_loglik_quantile": np.quantile(token_min, levels),
    }


def eval_points(steps: int, eval_every: int, eval_log: int) -> np.ndarray:
    """Steps at which to evaluate: 0, every ``eval_every`` (or ``eval_log`` log-spaced points), and ``steps``."""
    if eval_log > 0 and steps > 0:
        pts = np.unique(np.round(np.logspace(0.0, np.log10(steps), eval_log)).astype(np.int64))
    else:
        pts = np.arange(eval_every, steps + 1, eval_every, dtype=np.int64)
    return np.unique(np.concatenate([[0], pts, [steps]]).astype(np.int64))
