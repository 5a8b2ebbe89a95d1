"""fastpg: a Numba-compiled simulator of policy-gradient post-training of linear autoregressive models.

After *Post-Training with Policy Gradients: Optimality and the Base Model Barrier*
(arXiv:2603.06957). See ``SPEC.md`` sections cited in each module.
"""

__version__ = "0.1.0"

from .api import RunFailed, RunResult, run  # noqa: E402
from .api import pretrain  # noqa: E402
from .config import PRESETS, ConfigError, RunConfig  # noqa: E402
from .store import RunData, load  # noqa: E402

__all__ = ["run", "pretrain", "load", "RunData", "RunResult", "RunFailed", "RunConfig", "ConfigError", "PRESETS",
           "__version__"]
