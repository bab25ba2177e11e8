"""Strategies: how each of the N candidates is sampled.

>>> from nbest import strategies
>>> strategies.Fixed().kind
'fixed'
"""

from __future__ import annotations

from nbest.strategies.base import Strategy, StrategyConfig, from_config, register, registered
from nbest.strategies.fixed import Fixed
from nbest.strategies.spec import parse_spec

__all__ = ["Fixed", "Strategy", "StrategyConfig", "from_config", "parse_spec", "register", "registered"]
