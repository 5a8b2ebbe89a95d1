"""The paper's experiments (docs/design.md, "Reproducing the paper"), above the library and the
sweeps they run on. Each experiment is one module defining ``EXPERIMENT`` (its settings, how to
run it, its claims and its figure); ``fastpg reproduce`` is a loop over them.

- ``claims``: what an experiment is (:class:`~fastpg.paper.claims.Experiment`), its claims and
  rules, the report's table, and the registry of experiments;
- ``fig1``: Figure 1 and the LQ tests (``fastpg fig1``);
- ``profile``: the query-complexity profile Q(alpha, eps) (``fastpg profile``);
- ``any_pretraining``: exponential in N, whatever the base model;
- ``pretrain``: statistical learning (``fastpg pretrain``);
- ``mistakes``: online learning, mistakes;
- ``plan``: which run files an experiment computes or keeps;
- ``reproduce``: the loop and the report (``fastpg reproduce``).
"""
