"""fastpg: a Numba-compiled simulator of policy-gradient post-training of linear autoregressive models.

After *Post-Training with Policy Gradients: Optimality and the Base Model Barrier*
(arXiv:2603.06957). The design, the paper's quantities and every decision taken where the paper is
silent are in docs/design.md, which the modules cite by section.
"""

__version__ = "0.1.0"

from .api import RunFailed, RunResult, continue_run, run  # noqa: E402
from .api import pretrain  # noqa: E402
from .config import PRESETS, ConfigError, RunConfig  # noqa: E402
from .store import RunData, load  # noqa: E402
from .sweep import SweepData, load_sweep  # noqa: E402
from .tasks import margin_quantiles  # noqa: E402

__all__ = ["run", "continue_run", "pretrain", "load", "load_sweep", "SweepData", "RunData", "RunResult", "RunFailed", "RunConfig", "ConfigError", "PRESETS",
           "margin_quantiles",
           "__version__"]
