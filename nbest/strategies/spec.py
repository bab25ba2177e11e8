"""The command line's strategy argument (``--strategy TEXT``), over :data:`STRATEGIES`.

Each kind defines its short form next to its class (``from_short``):

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

from nbest.errors import ConfigError
from nbest.strategies.base import STRATEGIES, StrategyConfig

__all__ = ["parse_spec"]


def parse_spec(text: str, *, files: bool = True) -> StrategyConfig:
    """Parse a strategy given as text (see the module's table); ``files=False``
    refuses ``@FILE`` (input from the network).

    >>> parse_spec("ladder:0.2-1.2,geometric")
    TemperatureLadder(kind='ladder', engine='default', low=0.2, high=1.2, spacing='geometric', greedy_first=False)

    Raises:
        ConfigError: one line naming what was wrong and what is allowed.
    """
    text = text.strip()
    try:
        return STRATEGIES.build(text, files=files)
    except ConfigError as exc:
        raise ConfigError(f"--strategy {text!r}: {exc}", parameter=exc.parameter or "strategy", value=exc.value) from None
