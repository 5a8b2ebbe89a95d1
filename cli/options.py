"""Run options derived from :data:`fastpg.config.PARAMS`: one option per run parameter.

Nothing about a parameter is written here: its flag, type, allowed values, help and default all
come from its row of the table, so a new parameter appears on every command by itself.
"""

from __future__ import annotations

import click

from fastpg import config as C


class ExactInt(click.ParamType):
    """An integer, read exactly (also written as ``1e6``); see :func:`fastpg.config.parse_int`."""

    name = "integer"

    def convert(self, value, param, ctx):
        try:
            return C.parse_int(value)
        except (TypeError, ValueError, ArithmeticError):
            self.fail(f"{value!r} is not an integer", param, ctx)


def click_option(p: C.Param):
    """The click option of parameter ``p`` (unset options default to None)."""
    default = "unset" if p.default is None else p.default
    text = f"{p.help} [default: {default}]"
    if p.kind == "bool":
        return click.option(f"{p.flag}/--no-{p.flag[2:]}", p.name, default=None, help=text)
    typ = {"int": ExactInt(), "float": float, "path": str, "ints": str}.get(p.kind) or click.Choice(p.choices)
    return click.option(p.flag, p.name, type=typ, default=None, help=text)


def run_options(func):
    """Decorate a click command with every run option and ``--preset``."""
    for p in reversed(C.PARAMS):
        func = click_option(p)(func)
    func = click.option("--preset", type=click.Choice(sorted(C.PRESETS)), default=None,
                        help="named setup; explicit options override it")(func)
    return func


def resolve(preset: str | None, given: dict, middle: dict | None = None) -> dict:
    """Parameters from defaults < preset < ``middle`` (e.g. a TOML file) < explicitly given options.

    An explicit ``--eval-every`` (or ``--gamma``) replaces a schedule (or margin) set below it the
    other way, ``eval_log`` (or ``gamma_quantile``): the option the user typed is the one that counts.
    """
    values = dict(C.PRESETS[preset]) if preset else {}
    values.update(middle or {})
    explicit = {key: value for key, value in given.items() if key in C.PARAM and value is not None}
    for chosen, other, off in (("eval_every", "eval_log", 0), ("gamma", "gamma_quantile", None)):
        if chosen in explicit and other not in explicit:
            values.pop(other, None)
            if off is not None:
                values[other] = off
    values.update(explicit)
    return values
