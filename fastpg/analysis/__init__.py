"""Analysis of results (docs/design.md, "Architecture"): what the sweeps, the experiments and the
command line compute from runs, never rerunning anything.

- ``complexity``: query complexity Q(alpha, eps), first passages, censored fits, the theory's bound;
- ``fits``: log-log slopes, censored quantiles, cluster exceptions, text for tables;
- ``plots``: the figures (needs matplotlib).
"""
