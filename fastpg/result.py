"""One run's results, whether just run (:func:`fastpg.run`) or read from its file (:func:`fastpg.load`):
the one result type, :class:`RunData` (docs/design.md, "Result files"). Plain arrays and
analysis methods; nothing here reruns or writes anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .outputs import TRACE_NAMES

RUNNING, COMPLETE, FAILED = "running", "complete", "failed"  # a run's status


def param_column(name: str) -> str:
    """The column of parameter ``name`` in a table that also holds results (``index.csv``,
    :meth:`RunData.to_pandas`, :func:`fastpg.load_sweep`'s traces): ``name``, or ``config_<name>``
    where a result has that name. Two do: ``steps`` (the budget; the result is the steps taken)
    and ``contexts`` (the context distribution; the result is the number of contexts drawn)."""
    return f"config_{name}" if name in TRACE_NAMES or name == "queries" else name


def require_pandas(what: str):
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(f"{what} needs pandas: pip install 'fastpg[analysis]'") from None
    return pd


@dataclass
class RunData:
    """One run's results in plain arrays.

    Attributes
    ----------
    path : str or None
        Its file (None for a run kept in memory).
    status, message : str
        ``complete``, ``failed`` or ``running``, and why it failed or stopped early (else empty).
    experiment : str
        ``post-training`` or ``pretrain``.
    config : dict
        Its parameters (:data:`fastpg.config.PARAMS`), as ``/config`` stores them.
    trace : dict
        Every 1-D trace column (:data:`fastpg.outputs.TRACE_NAMES`: counters, metrics, wall time),
        one entry per evaluation point.
    loglik : ndarray
        ``log pi_W(y*_j|x_j)``, ``float64[eval point, test context]``.
    token_loglik : ndarray or None
        ``log pi_W(y*_ji|x_j, y*_j<i)``, ``[eval point, test context, position]``, with ``token_trace``.
    base : dict
        The base model's ``loglik`` and ``token_loglik`` over the test set (and ``sampling_loglik``, its
        likelihoods under the sampling policy, at a temperature other than 1) and the ``/base``
        attributes (``offsupport_count``, ``offsupport_fraction``).
    lq : dict
        The base model's Likelihood Quantile tables (``/base/lq``).
    task : dict
        The ``/task`` attributes (``gamma``, ``realised_min_margin``, ...).
    run : str or None
        The run's id in a batch file (None for a run file or a run in memory).
    W : ndarray or None
        The final weights of a complete run (read from the file when first asked for).
    """

    path: str | None
    status: str
    message: str
    experiment: str
    created: str
    fastpg_version: str
    schema_version: int
    config: dict
    trace: dict
    loglik: np.ndarray
    token_loglik: np.ndarray | None
    base: dict
    lq: dict
    task: dict
    run: str | None = None
    final_W: np.ndarray | None = field(default=None, repr=False)
    read_W: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)  # set by the reader

    @property
    def rows(self) -> int:
        """Evaluation points recorded."""
        return len(self.trace["steps"])

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE

    @property
    def W(self) -> np.ndarray | None:
        """The final weights ``W[block, token, d]`` of a complete run, else None."""
        if self.final_W is None and self.complete and self.read_W is not None:
            self.final_W = self.read_W()
        return self.final_W if self.complete else None

    @property
    def queries(self) -> np.ndarray:
        """Total reward queries (ORM + PRM) at each evaluation point."""
        return self.trace["orm_queries"] + self.trace["prm_queries"]

    @property
    def likelihood(self) -> np.ndarray:
        """``pi_W(y*_j|x_j)`` per evaluation point and test context (``exp`` of :attr:`loglik`)."""
        return np.exp(self.loglik)

    def query_complexity(self, alpha: float, eps: float, level: str = "sequence"):
        """Q(alpha, eps) of this run (:func:`fastpg.analysis.complexity.query_complexity`); ``level="token"``
        conditions on the base model's smallest token likelihood instead of the sequence likelihood.

        Parameters
        ----------
        alpha : float
            Likelihood threshold in (0, 1]: the test contexts whose base likelihood is at least ``alpha``.
        eps : float
            Target error in (0, 1).
        level : {"sequence", "token"}

        Returns
        -------
        QueryComplexity
            ``queries`` (None if never reached), ``reached``, ``queries_lo``, ``contexts``.
        """
        from .analysis.complexity import check_alpha, check_eps, query_complexity

        base = self.base["loglik"] if level == "sequence" else self.base["token_loglik"].min(axis=1)
        return query_complexity(self.loglik, base, self.queries, check_alpha(alpha, "alpha"), check_eps(eps, "eps"))

    def first_passage(self, eps: float) -> np.ndarray:
        """Per test context, the reward queries at the first evaluation point with ``pi(y*|x) >= 1 - eps``.

        Parameters
        ----------
        eps : float
            Target error in (0, 1).

        Returns
        -------
        ndarray
            ``float64[test context]``, NaN where it never happens.
        """
        from .analysis.complexity import check_eps, first_passage_queries

        return first_passage_queries(self.loglik, self.queries, check_eps(eps, "eps"))

    def pass_at_k(self, ks) -> np.ndarray:
        """pass@k of every test context at every evaluation point, from the stored log-likelihoods
        (:func:`fastpg.metrics.pass_at_k`; no re-run, any stored run). The base model's is
        ``pass_at_k(self.base["loglik"], ks)``, and a post-training run's row 0 (step 0).

        Parameters
        ----------
        ks : sequence of int
            The numbers of samples, each >= 1.

        Returns
        -------
        ndarray
            ``float64[eval point, test context, k]``.
        """
        from .config import ConfigError
        from .metrics import pass_at_k

        ks = list(ks)
        if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
            raise ConfigError("pass_k", f"got {ks!r}; allowed: integers >= 1")
        return pass_at_k(self.loglik, ks)

    def crossing_k(self, row: int = -1, k_max: float = 1e15) -> float | None:
        """The smallest ``k`` at which the base model's mean pass@k exceeds this run's at evaluation
        point ``row`` (the last by default), or None if it does not up to ``k_max``
        (:func:`fastpg.metrics.crossing_k`): where sampling the base model ``k`` times covers more.

        Parameters
        ----------
        row : int
            The evaluation point.
        k_max : float
            The largest ``k`` searched.

        Returns
        -------
        float or None
        """
        from .metrics import crossing_k

        return crossing_k(self.base["loglik"], self.loglik[row], k_max)

    def to_pandas(self, keys=("seed",)):
        """The 1-D traces as a ``pandas.DataFrame``: one row per evaluation point, with the total
        reward queries (``queries``) and, as constant columns, the run's parameters named in ``keys``
        (a sweep's loader passes its grid), each under :func:`param_column` (``steps`` as
        ``config_steps``, since ``steps`` is the trace's own column); needs pandas.

        Parameters
        ----------
        keys : sequence of str
            Parameters to add as constant columns.

        Returns
        -------
        pandas.DataFrame
        """
        pd = require_pandas("RunData.to_pandas")
        frame = pd.DataFrame({**self.trace, "queries": self.queries})
        for i, key in enumerate(keys):
            frame.insert(i, param_column(key), self.config.get(key))
        return frame
