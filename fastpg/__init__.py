"""fastpg: a Numba-compiled simulator of policy-gradient post-training of linear autoregressive models.

After *Post-Training with Policy Gradients: Optimality and the Base Model Barrier*
(arXiv:2603.06957). The design, the paper's quantities and every decision taken where the paper is
silent are in docs/design.md, which the modules cite by section.
"""

from .api import RunFailed, RunResult, continue_run, pretrain, run
from .config import PRESETS, ConfigError, RunConfig
from .result import RunData
from .store import load
from .sweeps.data import SweepData, load_sweep
from .tasks import margin_quantiles
from .version import __version__

__all__ = ["run", "continue_run", "pretrain", "load", "load_sweep", "SweepData", "RunData", "RunResult", "RunFailed",
           "RunConfig", "ConfigError", "PRESETS", "margin_quantiles", "__version__"]
