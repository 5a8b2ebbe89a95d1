"""The paper's experiments (docs/design.md, "Reproducing the paper"), above the library and the
sweeps they run on.

- ``experiments``: Figure 1 and the statistical-learning (pretrain) experiment;
- ``profile``: the query-complexity profile Q(alpha, eps);
- ``reproduce``: every experiment, its claims and rules, and the report (``fastpg reproduce``).
"""
