"""Names and integer codes shared by the compiled kernels and the Python layer.

This module imports neither Numba nor any other part of fastpg, so the HDF5 store, the CLI and
analysis code can read counter names and status codes without compiling anything. Every code is
written out once, here: a kernel compares against ``PRM``, the configuration maps ``"prm"`` to it
through :data:`REWARD_CODES`, and reordering a tuple of choices cannot change what a kernel runs
(docs/design.md, "Kernel parameters").
"""

from __future__ import annotations

import numpy as np

# feature maps (docs/design.md, "The model")
POSITION, MARKOV = 0, 1
FEATURE_CODES = {"position": POSITION, "markov": MARKOV}

# algorithms; SFT (supervised steps on labelled contexts) is pre-training only
PG, RS, SFT = 0, 1, 2
ALGORITHM_CODES = {"pg": PG, "rs": RS}

# reward models
ORM, PRM = 0, 1
REWARD_CODES = {"orm": ORM, "prm": PRM}

# advantage baselines of pg
NONE, MEAN, RLOO, GRPO = 0, 1, 2, 3
BASELINE_CODES = {"none": NONE, "mean": MEAN, "rloo": RLOO, "grpo": GRPO}

# learning-rate rules
CONSTANT, ADAPTIVE, INVSQRT = 0, 1, 2
LR_CODES = {"constant": CONSTANT, "adaptive": ADAPTIVE, "invsqrt": INVSQRT}

# KL to the reference model (docs/design.md, "KL to the base model"): the per-token estimator of
# the log-ratio l = log pi_W - log pi_ref along a sampled response, or the exact gradient ...
KL_K1, KL_K2, KL_K3, KL_EXACT = 0, 1, 2, 3
KL_ESTIMATOR_CODES = {"k1": KL_K1, "k2": KL_K2, "k3": KL_K3, "exact": KL_EXACT}
# ... and where a sampled estimator enters: in the reward (REINFORCE on r - beta sum_i k(l_i)) or
# in the loss (the gradient of beta sum_i k(l_i) is added to the update)
KL_IN_REWARD, KL_IN_LOSS = 0, 1
KL_IN_CODES = {"reward": KL_IN_REWARD, "loss": KL_IN_LOSS}

# Counters kept per run (docs/design.md, "Counters"), float64 so that skip-ahead can count
# beyond 2^63; C_* are their positions in a run's counter row.
COUNTERS = ("steps", "contexts", "sequences", "tokens", "orm_queries", "prm_queries", "updates", "mistakes",
            "groups_discarded")
(C_STEPS, C_CONTEXTS, C_SEQUENCES, C_TOKENS, C_ORM, C_PRM, C_UPDATES, C_MISTAKES, C_DISCARDED) = range(len(COUNTERS))

# status codes returned by the step loop
OK, NON_FINITE, REJECTION_FAILED = 0, 1, 2

# Weights beyond this magnitude count as diverged: logits W . x and their exponentials could
# overflow long before a weight itself is inf.
MAX_ABS_WEIGHT = 1e100

# One run's kernel parameters as a record: a kernel reads ``p.eta``, ``p.reward``, ... (a field
# load at a fixed offset, as cheap as indexing a packed array). Integer fields hold the codes above.
RUN_PARAMS = np.dtype(
    [
        ("algorithm", np.int64),
        ("reward", np.int64),
        ("G", np.int64),
        ("baseline", np.int64),
        ("skip", np.int64),
        ("lr", np.int64),
        ("features", np.int64),
        ("max_tries", np.int64),
        ("eta", np.float64),
        ("floor", np.float64),
        ("M", np.float64),
        ("sigma", np.float64),
        ("gamma", np.float64),
        ("kl_coef", np.float64),
        ("kl_estimator", np.int64),
        ("kl_in", np.int64),
        ("filter_groups", np.int64),
    ],
    align=True,
)
