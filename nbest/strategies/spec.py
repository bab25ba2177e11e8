"""The command line's short form of a strategy (``--strategy TEXT``).

=================================  ==============================================
``fixed`` (any kind, no options)   that strategy with its defaults
``ladder:0.2-1.2[,geometric]``     :class:`TemperatureLadder` (``,greedy``: greedy first)
``grid:t=0.5,1.0;p=0.9,1.0``       :class:`Grid` (axes t, p, k, m; ``;fill=sample``)
``greedy+`` / ``greedy+:0.8``      :class:`GreedyPlusSamples` (samples' temperature)
``nucleus:0.9``                    :class:`Nucleus`
``topk:40``                        :class:`TopK`
``minp:0.05``                      :class:`MinP`
``{"kind": ...}``                  a JSON config
``@plan.yaml``                     a YAML, JSON or TOML config file
=================================  ==============================================
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbest.errors import ConfigError
from nbest.strategies.base import StrategyConfig, from_config, registered
from nbest.strategies.greedy import GreedyPlusSamples
from nbest.strategies.grid import Grid
from nbest.strategies.ladder import TemperatureLadder
from nbest.strategies.samplers import MinP, Nucleus, TopK

__all__ = ["ALLOWED", "parse_spec"]

ALLOWED = (
    "ladder:LOW-HIGH[,geometric][,greedy], grid:t=..;p=..;k=..;m=..[;fill=sample], greedy+[:T], "
    "nucleus:P, topk:K, minp:P, a strategy kind ({kinds}), a JSON object or @FILE (.yaml, .json, .toml)"
)
"""What ``--strategy`` accepts (``{kinds}``: the registered kinds)."""

_GRID_AXES = {"t": "temperature", "temperature": "temperature", "p": "top_p", "top_p": "top_p", "k": "top_k", "top_k": "top_k",
              "m": "min_p", "min_p": "min_p"}  # fmt: skip


def _allowed() -> str:
    return ALLOWED.format(kinds=", ".join(sorted(registered())))


def _fail(text: str, what: str) -> ConfigError:
    return ConfigError(f"--strategy {text!r}: {what}", parameter="strategy", value=text)


def _number(text: str, raw: str, example: str, kind: Callable[[str], Any] = float) -> Any:
    try:
        return kind(raw.strip())
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise _fail(text, f"{raw.strip()!r} is not {what}; e.g. {example}") from None


def _ladder(text: str, arg: str) -> StrategyConfig:
    if not arg:
        return TemperatureLadder()
    bounds, *flags = [part.strip() for part in arg.split(",")]
    low, sep, high = bounds.partition("-")
    if not sep:
        raise _fail(text, "expected ladder:LOW-HIGH, e.g. ladder:0.2-1.2")
    options: dict[str, Any] = {}
    for flag in flags:
        if flag == "geometric":
            options["spacing"] = "geometric"
        elif flag == "greedy":
            options["greedy_first"] = True
        else:
            raise _fail(text, f"unknown ladder option {flag!r}; use geometric or greedy")
    return TemperatureLadder(_number(text, low, "ladder:0.2-1.2"), _number(text, high, "ladder:0.2-1.2"), **options)


def _grid(text: str, arg: str) -> StrategyConfig:
    options: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in arg.split(";"))):
        key, sep, values = part.partition("=")
        key = key.strip()
        if not sep:
            raise _fail(text, f"expected KEY=VALUES in {part!r}, e.g. grid:t=0.5,1.0;p=0.9,1.0")
        if key == "fill":
            options["fill"] = values.strip()
            continue
        axis = _GRID_AXES.get(key)
        if axis is None:
            raise _fail(text, f"unknown grid axis {key!r}; use t (temperature), p (top_p), k (top_k), m (min_p) or fill")
        if axis in options:
            raise _fail(text, f"grid axis {axis} given twice")
        convert: Callable[[str], Any] = int if axis == "top_k" else float
        options[axis] = [_number(text, v, "grid:t=0.5,1.0;p=0.9,1.0", convert) for v in values.split(",") if v.strip()]
    return Grid(**options)


def _one_number(
    build: Callable[..., StrategyConfig], example: str, convert: Callable[[str], Any] = float
) -> Callable[[str, str], StrategyConfig]:
    def parse(text: str, arg: str) -> StrategyConfig:
        return build(_number(text, arg, example, convert)) if arg else build()

    return parse


def _greedy(text: str, arg: str) -> StrategyConfig:
    return GreedyPlusSamples(temperature=_number(text, arg, "greedy+:0.8")) if arg else GreedyPlusSamples()


_SHORT: dict[str, Callable[[str, str], StrategyConfig]] = {
    "ladder": _ladder,
    "grid": _grid,
    "greedy+": _greedy,
    "nucleus": _one_number(Nucleus, "nucleus:0.9"),
    "topk": _one_number(TopK, "topk:40", int),
    "minp": _one_number(MinP, "minp:0.05"),
}


def parse_spec(text: str) -> StrategyConfig:
    """Parse a strategy given on the command line (see the module's table).

    >>> parse_spec("ladder:0.2-1.2,geometric")
    TemperatureLadder(kind='ladder', engine='default', low=0.2, high=1.2, spacing='geometric', greedy_first=False)

    Raises:
        ConfigError: one line naming what was wrong and what is allowed.
    """
    text = text.strip()
    try:
        if text.startswith("@"):
            return from_config(Path(text[1:]).expanduser())
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise _fail(text, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
            return from_config(data)
        name, _, arg = text.partition(":")
        name, arg = name.strip(), arg.strip()
        if name in _SHORT:
            return _SHORT[name](text, arg)
        if name in registered() and not arg:
            try:
                return from_config({"kind": name})
            except ConfigError as exc:
                raise _fail(text, f"{exc} (give {name} as a JSON object or @FILE)") from None
    except ConfigError as exc:
        if exc.parameter == "strategy" and str(exc).startswith("--strategy"):
            raise
        raise ConfigError(f"--strategy {text!r}: {exc}", parameter=exc.parameter, value=exc.value) from None
    raise _fail(text, f"unknown strategy; use {_allowed()}")
