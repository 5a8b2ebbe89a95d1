"""Deliberate defects, for testing the report only (docs/design.md, "A report that can fail").

A claim's rule is worth what its power is: a rule that a broken simulator still passes says
nothing. This module lets the test suite break fastpg on purpose and check that the claims the
defect should spoil come out ``no``. It is not a user option and no command line flag reaches it:
the defects are switched on by the environment variable ``FASTPG_DEFECT`` (a comma-separated list
of names from :data:`DEFECTS`, read when this module is imported, so a child process sees it) or,
in process, by :func:`injected`.

Every defect acts in the Python layer, on what the kernels are given or on what is recorded, so a
broken run needs no recompilation (Numba's cache does not see changed globals) and the kernels
carry no code that exists only to be broken. Nothing here changes a result while no defect is on.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

DEFECTS = {
    "reward-swap": "the kernels run PRM where ORM was asked for and ORM where PRM was (the file records the "
                   "configured reward)",
    "adaptive-constant": "the adaptive learning-rate rule runs as the constant rule with the same eta",
    "prm-one-query": "a PRM-scored response is counted as one query, not min(f + 1, N)",
    "base-shuffled": "the base model's per-context likelihoods are recorded against the wrong contexts (a fixed "
                     "permutation): the off-support set and every base-likelihood level are wrong",
    "teacher-mismatch": "training contexts are labelled (and margin-conditioned) by a teacher rotated away from the "
                        "one that labels the test set (sine of the angle 0.3)",
    "kl-uniform-ref": "the KL term and kl_to_base measure the KL to the uniform model (W = 0), not to the base model",
    "temperature-ignored": "the kernels sample and step at temperature 1 whatever --temperature says (the file records "
                           "the configured temperature, and the base model's likelihoods under it)",
    "kl-estimator-shift": "the kernels run the next KL estimator of k1, k2, k3 where one was asked for (k2 for k1, k3 "
                          "for k2, k1 for k3)",
}
ENV = "FASTPG_DEFECT"


def _parse(text: str) -> frozenset:
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(names - DEFECTS.keys())
    if unknown:
        raise ValueError(f"{ENV}: got {unknown[0]!r}; allowed: {', '.join(DEFECTS)}")
    return names


_active = _parse(os.environ.get(ENV, ""))


def active(name: str) -> bool:
    """True when the defect ``name`` is switched on (never in normal use)."""
    return name in _active


@contextlib.contextmanager
def injected(*names: str):
    """Switch defects on inside a ``with`` block (in this process only)."""
    global _active
    before = _active
    _active = before | _parse(",".join(names))
    try:
        yield
    finally:
        _active = before


def base_likelihoods(loglik: np.ndarray, token: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The base model's test log-likelihoods ``[R, n]`` and ``[R, n, N]`` as recorded: as given,
    or with ``base-shuffled`` permuted over the test contexts (the same permutation for every run)."""
    if not active("base-shuffled"):
        return loglik, token
    perm = np.random.default_rng(12345).permutation(loglik.shape[1])
    return loglik[:, perm], token[:, perm]


def training_teacher(W_star: np.ndarray) -> np.ndarray:
    """The teacher the kernels label training contexts with: ``W_star``, or with
    ``teacher-mismatch`` one rotated to sine 0.3 of the angle and rescaled to the same norm."""
    if not active("teacher-mismatch"):
        return W_star
    noise = np.random.default_rng(54321).standard_normal(W_star.shape)
    noise *= np.linalg.norm(W_star) / np.linalg.norm(noise)
    return np.sqrt(1.0 - 0.3**2) * W_star + 0.3 * noise


def kl_reference(W0: np.ndarray) -> np.ndarray:
    """The reference model of the KL term and of ``kl_to_base``: the base weights ``W0``, or with
    ``kl-uniform-ref`` the uniform model ``W = 0``."""
    return np.zeros_like(W0) if active("kl-uniform-ref") else W0
