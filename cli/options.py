"""Run options generated from :class:`fastpg.RunConfig`: one option per parameter (SPEC §11)."""

from __future__ import annotations

import click

from fastpg import config as C
from fastpg.config import flag


class IntLike(click.ParamType):
    """An integer, also written as an integer-valued float (``1e12``)."""

    name = "integer"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            f = float(value)
            if f.is_integer():
                return int(f)
        except (TypeError, ValueError, OverflowError):
            pass
        self.fail(f"{value!r} is not an integer", param, ctx)


INT = IntLike()

# name -> (click type, help). Order = order in --help.
RUN_OPTIONS: dict[str, tuple] = {
    "d": (INT, "context dimension d"),
    "k": (INT, "vocabulary size k (>= 2)"),
    "N": (INT, "response length N (>= 1)"),
    "features": (click.Choice(C.FEATURES), "feature map"),
    "contexts": (click.Choice(C.CONTEXTS), "context distribution"),
    "C": (INT, "number of clusters (contexts=clusters)"),
    "sigma": (float, "cluster spread"),
    "zipf": (float, "pre-training cluster skew: P(c) ~ c^-zipf"),
    "gamma": (float, "margin: contexts conditioned on m(x) >= gamma"),
    "gamma_quantile": (float, "set gamma to this quantile of pilot margins"),
    "seed": (INT, "root seed"),
    "base": (click.Choice(C.BASES), "base model"),
    "n_pre": (INT, "pre-training samples (base=sgd)"),
    "pre_lr": (click.Choice(C.LR_RULES), "pre-training learning-rate rule"),
    "pre_eta": (float, "pre-training learning rate"),
    "beta": (float, "inverse temperature (base=teacher)"),
    "rho": (float, "noise in [0, 1] (base=teacher)"),
    "base_file": (str, "earlier fastpg file whose final W is the base (base=file)"),
    "algorithm": (click.Choice(C.ALGORITHMS), "post-training algorithm"),
    "reward": (click.Choice(C.REWARDS), "reward model"),
    "G": (INT, "samples per step (pg)"),
    "baseline": (click.Choice(C.BASELINES), "advantage baseline (pg)"),
    "M": (INT, "query budget per step, per token for prm (rs)"),
    "skip": (None, "exact geometric skip-ahead (rs)"),
    "lr": (click.Choice(C.LR_RULES), "learning-rate rule"),
    "eta": (float, "learning rate"),
    "floor": (float, "loss floor of the adaptive rule"),
    "steps": (INT, "post-training steps"),
    "n_train": (INT, "training pool size (0: fresh contexts every step)"),
    "n_test": (INT, "test contexts"),
    "eval_every": (INT, "evaluate every this many steps"),
    "eval_log": (INT, "instead, this many log-spaced evaluation points (0: off)"),
    "alpha_off": (float, "base likelihood below which a context is off-support"),
    "token_trace": (None, "also store per-token log-likelihoods at every evaluation point"),
}
assert set(RUN_OPTIONS) == set(C.RunConfig.names()), "every RunConfig field needs an option"


def run_options(func):
    """Decorate a click command with every run option (all default to None: unset)."""
    defaults = C.RunConfig()
    for name, (typ, help_) in reversed(list(RUN_OPTIONS.items())):
        default = getattr(defaults, name)
        text = f"{help_} [default: {default}]"
        if name == "skip":
            opt = click.option("--skip/--no-skip", "skip", default=None, help=text)
        elif name == "token_trace":
            opt = click.option("--token-trace", "token_trace", is_flag=True, default=None, help=text)
        else:
            opt = click.option(flag(name), name, type=typ, default=None, help=text)
        func = opt(func)
    func = click.option("--preset", type=click.Choice(sorted(C.PRESETS)), default=None,
                        help="named setup; explicit options override it")(func)
    return func


def resolve(preset: str | None, given: dict, middle: dict | None = None) -> dict:
    """Parameters from defaults < preset < ``middle`` (e.g. a TOML file) < explicitly given options."""
    values = dict(C.PRESETS[preset]) if preset else {}
    values.update(middle or {})
    values.update({key: value for key, value in given.items() if key in RUN_OPTIONS and value is not None})
    return values
