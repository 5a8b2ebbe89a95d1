"""Test metrics and the Likelihood Quantile (docs/design.md, "Evaluation"), from exact log-likelihoods."""

from __future__ import annotations

import numpy as np

from . import config as C


def test_metrics(loglik: np.ndarray, greedy_ok: np.ndarray, offsupport: np.ndarray, kl: np.ndarray,
                 entropy: np.ndarray, base_loglik=None, pass_k=(), sampling_loglik=None) -> dict:
    """Metrics of one evaluation point: one entry per ``metric`` row of :data:`fastpg.outputs.OUTPUTS`
    (and, with ``pass_k``, the ``pass_at_k`` row and the coverage against ``base_loglik``:
    :func:`pass_k_metrics`).

    ``expected_error = 1 - mean_j pi_W(y*_j | x_j)``; ``greedy_error`` = fraction of contexts whose
    greedy decoding is not ``y*_j``; ``off/onsupport_likelihood`` = mean likelihood over contexts
    whose *base* likelihood is below / at least ``alpha_off`` (``offsupport`` is that mask); the
    mean over an empty set is recorded as 0 (the set's size is stored in ``/base``);
    ``kl_to_base`` and ``entropy`` are the means of the per-context sequence KL to the base model
    and entropy (``kl``, ``entropy``: :meth:`fastpg.kernels.engine.Batch.divergences`);
    ``expected_error_sampling = 1 - mean_j pi_{W/tau}(y*_j | x_j)`` from the sampling policy's
    log-likelihoods ``sampling_loglik``, where it is another than ``pi_W``.
    """
    lik = np.exp(loglik)
    on = ~offsupport
    return {
        "expected_error": float(1.0 - lik.mean()),
        "greedy_error": float(1.0 - greedy_ok.mean()),
        "offsupport_likelihood": float(lik[offsupport].mean()) if offsupport.any() else 0.0,
        "onsupport_likelihood": float(lik[on].mean()) if on.any() else 0.0,
        "mean_loglik": float(np.sum(loglik / len(loglik))),  # no overflow for huge finite values
        "kl_to_base": float(np.mean(kl)),
        "entropy": float(np.mean(entropy)),
        **pass_k_metrics(loglik, base_loglik, pass_k),
        **({} if sampling_loglik is None else {"expected_error_sampling": float(1.0 - np.exp(sampling_loglik).mean())}),
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


def log1m_exp(loglik) -> np.ndarray:
    """``log(1 - p)`` from ``log p <= 0``, accurate everywhere: ``log(-expm1(l))`` near ``p = 1``
    (where ``1 - p`` cancels) and ``log1p(-exp(l))`` for small ``p`` (where ``expm1`` rounds to -1);
    ``-inf`` at ``p = 1``. The array form of the kernels' scalar :func:`fastpg.kernels.variates.log1mexp`
    (the same branches), for evaluation in NumPy."""
    loglik = np.minimum(np.asarray(loglik, dtype=np.float64), 0.0)
    out = np.empty_like(loglik)
    near_one = loglik > -np.log(2.0)
    with np.errstate(divide="ignore"):
        out[near_one] = np.log(-np.expm1(loglik[near_one]))
    out[~near_one] = np.log1p(-np.exp(loglik[~near_one]))
    return out


def pass_at_k(loglik, ks) -> np.ndarray:
    """``pass@k = 1 - (1 - p)^k`` for every likelihood ``p = exp(loglik)`` and every ``k`` in ``ks``
    (a last axis of ``len(ks)``): the chance that at least one of ``k`` independent samples is the
    correct response (docs/design.md, "pass@k and coverage"). Computed as ``-expm1(k log(1 - p))``,
    so it keeps full relative precision at ``p = 1e-300`` and at ``1 - p = 1e-15``."""
    k = np.asarray(ks, dtype=np.float64)
    return -np.expm1(log1m_exp(loglik)[..., None] * k)


COVERAGE = ("preserved", "expanded", "shrunk", "outside")


def coverage(loglik, base_loglik, k: int, now=None) -> dict:
    """Coverage at ``k`` against the base model, threshold 1/2, as fractions of the test contexts:
    ``preserved`` (pass@k >= 1/2 for both), ``expanded`` (base below, now at least), ``shrunk``
    (now below, base at least) and ``outside`` (both below). ``now``: the model's pass@k, if known."""
    now = (pass_at_k(loglik, [k])[:, 0] if now is None else now) >= 0.5
    base = pass_at_k(base_loglik, [k])[:, 0] >= 0.5
    parts = (now & base, now & ~base, ~now & base, ~now & ~base)
    return {f"coverage_{name}": float(part.mean()) for name, part in zip(COVERAGE, parts)}


def pass_k_metrics(loglik, base_loglik, ks) -> dict:
    """The outputs of ``pass_k`` at one evaluation point: ``pass_at_k`` (mean over test contexts,
    one per ``k``) and the coverage fractions at the largest ``k``; empty without ``ks``."""
    if not len(ks):
        return {}
    ks = sorted(ks)
    cube = pass_at_k(loglik, ks)
    return {"pass_at_k": cube.mean(axis=0), **coverage(loglik, base_loglik, ks[-1], now=cube[:, -1])}


def crossing_k(base_loglik, loglik, k_max: float = 1e15, per_decade: int = 20) -> float | None:
    """The smallest ``k`` (to 1e-9 relative, on a continuous ``k``) at which the base model's mean
    pass@k exceeds the model's, or None if it does not up to ``k_max``: where the base model
    overtakes the post-trained one as more samples are drawn. ``log(1 - p)`` of both is formed
    once; the log grid is one array operation, then bisection between its two points."""
    base, model = log1m_exp(base_loglik), log1m_exp(loglik)

    def gap(k):  # mean pass@k of the base minus the model's, for an array of k
        return -np.expm1(base[:, None] * k).mean(axis=0) + np.expm1(model[:, None] * k).mean(axis=0)

    grid = np.logspace(0.0, np.log10(k_max), int(per_decade * np.log10(k_max)) + 1)
    above = gap(grid) > 0
    if not above.any():
        return None
    i = int(np.argmax(above))
    if i == 0:
        return 1.0
    lo, hi = np.log(grid[i - 1]), np.log(grid[i])
    while hi - lo > 1e-9:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if gap(np.array([np.exp(mid)]))[0] > 0 else (mid, hi)
    return float(np.exp(hi))
