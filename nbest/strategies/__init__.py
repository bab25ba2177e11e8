"""Strategies: how each of the N candidates is sampled, prompted and routed.

>>> from nbest import strategies
>>> strategies.TemperatureLadder(0.3, 1.2).kind
'ladder'
>>> strategies.parse_spec("ladder:0.2-1.2") == strategies.TemperatureLadder(0.2, 1.2)
True
"""

from __future__ import annotations

from nbest.strategies.base import (
    STRATEGIES,
    NestedStrategy,
    SamplingStrategy,
    Strategy,
    StrategyConfig,
    from_config,
    load_config,
    register,
    registered,
)
from nbest.strategies.composite import Composite, CompositePart
from nbest.strategies.fixed import Fixed
from nbest.strategies.greedy import GreedyPlusSamples
from nbest.strategies.grid import Grid
from nbest.strategies.ladder import TemperatureLadder
from nbest.strategies.mixture import Mixture, MixtureComponent
from nbest.strategies.route import Route
from nbest.strategies.samplers import MinP, Nucleus, TopK
from nbest.strategies.spec import parse_spec
from nbest.strategies.variants import PromptVariant, PromptVariants

__all__ = [
    "STRATEGIES",
    "Composite",
    "CompositePart",
    "Fixed",
    "GreedyPlusSamples",
    "Grid",
    "MinP",
    "Mixture",
    "MixtureComponent",
    "NestedStrategy",
    "Nucleus",
    "PromptVariant",
    "PromptVariants",
    "Route",
    "SamplingStrategy",
    "Strategy",
    "StrategyConfig",
    "TemperatureLadder",
    "TopK",
    "from_config",
    "load_config",
    "parse_spec",
    "register",
    "registered",
]
