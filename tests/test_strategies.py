"""Built-in strategies: exact plans, determinism, validation, config round-trips."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from nbest import ConfigError, Orchestrator
from nbest.strategies import (
    Composite,
    Fixed,
    GreedyPlusSamples,
    Grid,
    MinP,
    Mixture,
    Nucleus,
    PromptVariant,
    PromptVariants,
    Route,
    StrategyConfig,
    TemperatureLadder,
    TopK,
    from_config,
    registered,
)
from nbest.types import CandidateSpec, ChatMessage, Request, SamplingParams
from tests.scripted import ScriptedEngine


def req(n: int, seed: int | None = 100, prompt: Any = "Why?", **params: Any) -> Request:
    return Request(prompt=prompt, n=n, params=SamplingParams(seed=seed, **params))


def rows(specs: list[CandidateSpec]) -> list[tuple[str, float, int | None]]:
    return [(s.strategy, s.params.temperature, s.params.seed) for s in specs]


def assert_indexed(specs: list[CandidateSpec], n: int) -> None:
    assert [s.index for s in specs] == list(range(n))


# -- Fixed ---------------------------------------------------------------------------


def test_fixed_seeds_follow_the_request_seed() -> None:
    specs = Fixed().plan(req(3, seed=7, temperature=0.7))
    assert rows(specs) == [("fixed", 0.7, 7), ("fixed", 0.7, 8), ("fixed", 0.7, 9)]


# -- TemperatureLadder ---------------------------------------------------------------


def test_ladder_linear_exact() -> None:
    specs = TemperatureLadder(0.2, 1.0).plan(req(5))
    assert_indexed(specs, 5)
    assert rows(specs) == [
        ("ladder[t=0.20]", 0.2, 100),
        ("ladder[t=0.40]", 0.4, 101),
        ("ladder[t=0.60]", 0.6, 102),
        ("ladder[t=0.80]", 0.8, 103),
        ("ladder[t=1.00]", 1.0, 104),
    ]


def test_ladder_geometric_exact() -> None:
    assert [s.params.temperature for s in TemperatureLadder(0.25, 2.0, spacing="geometric").plan(req(4))] == [0.25, 0.5, 1.0, 2.0]


def test_ladder_greedy_first_spans_the_rest() -> None:
    specs = TemperatureLadder(0.5, 1.5, greedy_first=True).plan(req(3))
    assert rows(specs) == [("ladder[greedy]", 0.0, 100), ("ladder[t=0.50]", 0.5, 101), ("ladder[t=1.50]", 1.5, 102)]


@pytest.mark.parametrize(
    ("ladder", "n", "expected"),
    [
        (TemperatureLadder(0.3, 1.2), 1, [0.3]),
        (TemperatureLadder(0.0, 1.5), 6, [0.0, 0.3, 0.6, 0.9, 1.2, 1.5]),
        (TemperatureLadder(0.7, 0.7), 3, [0.7, 0.7, 0.7]),
        (TemperatureLadder(0.3, 1.2, greedy_first=True), 1, [0.0]),
        (TemperatureLadder(0.3, 1.2, greedy_first=True), 2, [0.0, 0.3]),
    ],
)
def test_ladder_temperatures(ladder: TemperatureLadder, n: int, expected: list[float]) -> None:
    assert ladder.temperatures(n) == expected


def test_ladder_keeps_the_request_other_settings() -> None:
    specs = TemperatureLadder(0.5, 1.0, engine="big").plan(req(2, top_p=0.9, max_tokens=12, stop=["\n"]))
    for s in specs:
        assert (s.engine, s.params.top_p, s.params.max_tokens, s.params.stop) == ("big", 0.9, 12, ["\n"])


@pytest.mark.parametrize(
    ("kwargs", "parameter", "message"),
    [
        ({"low": 1.2, "high": 0.2}, "low", "must be <= high"),
        ({"low": -0.1}, "low", "greater than or equal to 0"),
        ({"high": -1.0, "low": 0.0}, "high", "greater than or equal to 0"),
        ({"low": 0.005}, "low", "at least 0.01"),
        ({"low": 0.0, "spacing": "geometric"}, "low", "geometric spacing needs low > 0"),
        ({"spacing": "log"}, "spacing", "'linear' or 'geometric'"),
    ],
)
def test_ladder_rejects_bad_bounds(kwargs: dict[str, Any], parameter: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        TemperatureLadder(**kwargs)
    assert info.value.parameter == parameter


def test_positional_and_keyword_together_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="low given both"):
        TemperatureLadder(0.1, low=0.2)


# -- Grid ------------------------------------------------------------------------------


def test_grid_cycles_through_the_product_in_order() -> None:
    specs = Grid(temperature=[0.5, 1.0], top_p=[0.9, 1.0]).plan(req(5))
    got = [(s.strategy, s.params.temperature, s.params.top_p, s.params.seed) for s in specs]
    assert got == [
        ("grid[t=0.50,p=0.90]", 0.5, 0.9, 100),
        ("grid[t=0.50,p=1.00]", 0.5, 1.0, 101),
        ("grid[t=1.00,p=0.90]", 1.0, 0.9, 102),
        ("grid[t=1.00,p=1.00]", 1.0, 1.0, 103),
        ("grid[t=0.50,p=0.90]", 0.5, 0.9, 104),
    ]


def test_grid_axes_left_out_keep_the_request_values() -> None:
    specs = Grid(top_k=[10, 50], min_p=[0.1]).plan(req(2, temperature=0.8, top_p=0.95))
    assert [(s.params.temperature, s.params.top_p, s.params.top_k, s.params.min_p) for s in specs] == [
        (0.8, 0.95, 10, 0.1),
        (0.8, 0.95, 50, 0.1),
    ]
    assert specs[0].strategy == "grid[k=10,m=0.10]"


def test_grid_sample_uses_every_point_before_repeating() -> None:
    grid = Grid(temperature=[0.5, 1.0], top_k=[10, 50], fill="sample")
    specs = grid.plan(req(6))
    labels = [s.strategy for s in specs]
    assert labels == [
        "grid[t=1.00,k=10]",
        "grid[t=0.50,k=50]",
        "grid[t=1.00,k=50]",
        "grid[t=0.50,k=10]",
        "grid[t=0.50,k=10]",
        "grid[t=1.00,k=50]",
    ]
    assert len(set(labels[:4])) == 4
    assert [s.params.seed for s in specs] == list(range(100, 106))
    assert grid.plan(req(6)) == specs
    other_orders = {tuple(s.strategy for s in grid.plan(req(4, seed=seed))) for seed in range(10)}
    assert len(other_orders) > 1


@pytest.mark.parametrize(
    ("kwargs", "parameter", "message"),
    [
        ({}, "grid", "give at least one of temperature, top_p, top_k, min_p"),
        ({"temperature": []}, "temperature", "empty grid axis"),
        ({"temperature": [0.5, -1.0]}, "temperature[1]", "greater than or equal to 0"),
        ({"temperature": [0.001]}, "temperature[0]", "at least 0.01"),
        ({"top_p": [0.0]}, "top_p[0]", "greater than 0"),
        ({"top_p": [0.9, 1.5]}, "top_p[1]", "less than or equal to 1"),
        ({"top_k": [0]}, "top_k[0]", "-1 \\(off\\) or at least 1"),
        ({"min_p": [1.5]}, "min_p[0]", "less than or equal to 1"),
        ({"top_p": [0.9], "fill": "random"}, "fill", "'cycle' or 'sample'"),
    ],
)
def test_grid_validation(kwargs: dict[str, Any], parameter: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Grid(**kwargs)
    assert info.value.parameter == parameter


# -- GreedyPlusSamples and the classic samplers ----------------------------------------


def test_greedy_plus_samples_exact() -> None:
    specs = GreedyPlusSamples(temperature=0.8, top_p=0.95).plan(req(3, seed=1))
    assert [(s.strategy, s.params.temperature, s.params.top_p, s.params.seed) for s in specs] == [
        ("greedy", 0.0, 1.0, 1),
        ("sample", 0.8, 0.95, 2),
        ("sample", 0.8, 0.95, 3),
    ]


def test_greedy_plus_samples_defaults_to_the_request_settings() -> None:
    specs = GreedyPlusSamples().plan(req(2, temperature=0.6))
    assert rows(specs) == [("greedy", 0.0, 100), ("sample", 0.6, 101)]
    assert rows(GreedyPlusSamples().plan(req(1))) == [("greedy", 0.0, 100)]


@pytest.mark.parametrize(
    ("strategy", "field", "value"),
    [
        (Nucleus(), "top_p", 0.9),
        (Nucleus(0.5), "top_p", 0.5),
        (TopK(), "top_k", 40),
        (TopK(5), "top_k", 5),
        (MinP(), "min_p", 0.05),
    ],
)
def test_classic_samplers(strategy: StrategyConfig, field: str, value: float) -> None:
    specs = strategy.plan(req(3, temperature=0.9))
    assert [getattr(s.params, field) for s in specs] == [value] * 3
    assert [s.params.seed for s in specs] == [100, 101, 102]
    assert [s.params.temperature for s in specs] == [0.9] * 3
    assert {s.strategy for s in specs} == {strategy.kind}


def test_sampler_temperature_override() -> None:
    assert [s.params.temperature for s in MinP(0.1, temperature=1.5).plan(req(2))] == [1.5, 1.5]


@pytest.mark.parametrize(
    ("build", "parameter"),
    [
        (lambda: Nucleus(0.0), "top_p"),
        (lambda: Nucleus(1.01), "top_p"),
        (lambda: TopK(0), "top_k"),
        (lambda: MinP(0.0), "min_p"),
        (lambda: MinP(2.0), "min_p"),
        (lambda: Nucleus(temperature=-0.5), "temperature"),
        (lambda: GreedyPlusSamples(temperature=-1.0), "temperature"),
        (lambda: GreedyPlusSamples(top_p=0.0), "top_p"),
        (lambda: GreedyPlusSamples(top_k=-5), "top_k"),
    ],
)
def test_sampler_validation(build: Any, parameter: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert info.value.parameter == parameter
    assert str(info.value).startswith(parameter)


# -- PromptVariants ----------------------------------------------------------------


def test_system_variants_round_robin() -> None:
    specs = PromptVariants(["You are terse.", "You are a teacher."]).plan(req(3))
    assert [s.strategy for s in specs] == ["variant.0:fixed", "variant.1:fixed", "variant.0:fixed"]
    assert specs[1].prompt == [ChatMessage(role="system", content="You are a teacher."), ChatMessage(role="user", content="Why?")]
    assert [s.params.seed for s in specs] == [100, 101, 102]


def test_system_variant_replaces_the_request_system_prompt() -> None:
    request = Request(prompt="Why?", n=1, system="Default persona.", params=SamplingParams(seed=0))
    spec = PromptVariants(["Pirate persona."]).plan(request)[0]
    assert request.rendered(spec.prompt) == [
        ChatMessage(role="system", content="Pirate persona."),
        ChatMessage(role="user", content="Why?"),
    ]


def test_prompt_variants_rewrite_the_prompt() -> None:
    variants = [
        PromptVariant(text="Answer in one word: {prompt}", role="prompt"),
        {"text": "Explain like I am five.", "role": "prompt"},
    ]
    specs = PromptVariants(variants, TemperatureLadder(0.5, 1.0)).plan(req(2))
    assert [(s.prompt, s.strategy) for s in specs] == [
        ("Answer in one word: Why?", "variant.0:ladder[t=0.50]"),
        ("Explain like I am five.", "variant.1:ladder[t=1.00]"),
    ]


def test_prompt_variant_on_chat_messages_rewrites_the_last_user_message() -> None:
    messages = [
        ChatMessage(role="system", content="Be kind."),
        ChatMessage(role="user", content="Hi"),
        ChatMessage(role="assistant", content="Hello!"),
        ChatMessage(role="user", content="Why?"),
    ]
    spec = PromptVariants([{"text": "Q: {prompt}", "role": "prompt"}]).plan(req(1, prompt=messages))[0]
    assert spec.prompt == [*messages[:3], ChatMessage(role="user", content="Q: Why?")]
    system = PromptVariants(["Be terse."]).plan(req(1, prompt=messages))[0]
    assert system.prompt == [ChatMessage(role="system", content="Be terse."), *messages[1:]]


def test_system_variant_needs_chat_mode() -> None:
    request = Request(prompt="Why?", n=2, chat=False)
    with pytest.raises(ConfigError, match="needs a chat request"):
        PromptVariants(["Be terse."]).plan(request)
    specs = PromptVariants([{"text": "Q: {prompt}\nA:", "role": "prompt"}]).plan(request)
    assert [request.rendered(s.prompt) for s in specs] == ["Q: Why?\nA:"] * 2


def test_weighted_variants_are_seeded_and_respect_zero_weights() -> None:
    strategy = PromptVariants(["A", "B", "C"], assign="weighted", weights=[1, 0, 3])
    specs = strategy.plan(req(6))
    assert [s.strategy for s in specs] == ["variant.2:fixed"] * 3 + ["variant.0:fixed"] + ["variant.2:fixed"] * 2
    assert strategy.plan(req(6)) == specs
    many = Counter(v for seed in range(20) for v in strategy.assignment(req(20, seed=seed)))
    assert many[1] == 0 and many[2] > many[0] > 0


@pytest.mark.parametrize(
    ("kwargs", "parameter", "message"),
    [
        ({"variants": []}, "variants", "at least one variant"),
        ({"variants": ["  "]}, "variants", "must not be blank"),
        ({"variants": [""]}, "variants.0.text", "at least 1 character"),
        ({"variants": ["a", "b"], "weights": [1, 1]}, "weights", "only used with assign='weighted'"),
        ({"variants": ["a", "b"], "assign": "weighted", "weights": [1]}, "weights", "one per variant"),
        ({"variants": ["a", "b"], "assign": "weighted", "weights": [0, 0]}, "weights", "sum to a positive number"),
        ({"variants": ["a", "b"], "assign": "weighted", "weights": [2, -1]}, "weights", "must be >= 0"),
        ({"variants": [{"text": "x", "role": "user"}]}, "variants.0.role", "'system' or 'prompt'"),
    ],
)
def test_prompt_variants_validation(kwargs: dict[str, Any], parameter: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        PromptVariants(**kwargs)
    assert info.value.parameter == parameter


# -- Mixture, Route, Composite -------------------------------------------------------


def test_mixture_exact_plan() -> None:
    specs = Mixture([(1, GreedyPlusSamples()), (1, Nucleus(0.8))]).plan(req(6))
    assert_indexed(specs, 6)
    assert [(s.strategy, s.params.temperature, s.params.top_p, s.params.seed) for s in specs] == [
        ("mixture.1:nucleus", 1.0, 0.8, 100),
        ("mixture.0:greedy", 0.0, 1.0, 101),
        ("mixture.1:nucleus", 1.0, 0.8, 102),
        ("mixture.0:sample", 1.0, 1.0, 103),
        ("mixture.1:nucleus", 1.0, 0.8, 104),
        ("mixture.0:sample", 1.0, 1.0, 105),
    ]


def test_mixture_follows_its_weights() -> None:
    mix = Mixture([(3, Nucleus()), (0, TopK()), (1, MinP())])
    counts = Counter(s.strategy for seed in range(10) for s in mix.plan(req(40, seed=seed)))
    assert counts["mixture.1:topk"] == 0
    assert counts["mixture.0:nucleus"] > 2 * counts["mixture.2:minp"] > 0


def test_route_exact_and_labels() -> None:
    specs = Route({"a": 1, "b": 1}, TemperatureLadder(0.5, 1.0)).plan(req(4))
    assert [(s.engine, s.strategy) for s in specs] == [
        ("b", "route.b:ladder[t=0.50]"),
        ("a", "route.a:ladder[t=0.67]"),
        ("b", "route.b:ladder[t=0.83]"),
        ("a", "route.a:ladder[t=1.00]"),
    ]
    assert [s.params.seed for s in specs] == [100, 101, 102, 103]


def test_route_never_picks_a_zero_weight_engine() -> None:
    engines = {s.engine for seed in range(10) for s in Route({"a": 1, "b": 0, "c": 2}).plan(req(16, seed=seed))}
    assert engines == {"a", "c"}


def test_composite_two_greedyish_plus_six_hot() -> None:
    plan = Composite([(2, TemperatureLadder(0.0, 0.2)), (6, Nucleus(0.95, temperature=1.3))])
    specs = plan.plan(req(8))
    assert_indexed(specs, 8)
    assert rows(specs) == [
        ("composite.0:ladder[t=0.00]", 0.0, 100),
        ("composite.0:ladder[t=0.20]", 0.2, 101),
        *[("composite.1:nucleus", 1.3, 100 + i) for i in range(2, 8)],
    ]


@pytest.mark.parametrize(("counts", "n", "expected"), [([2, 6], 8, [2, 6]), ([2, 6], 4, [1, 3]), ([2, 6], 16, [4, 12]),
                                                     ([1, 1, 1], 5, [2, 2, 1]), ([2, 6], 1, [0, 1])])  # fmt: skip
def test_composite_scales_counts_to_n(counts: list[int], n: int, expected: list[int]) -> None:
    plan = Composite([(c, Fixed()) for c in counts])
    assert plan.counts(n) == expected
    assert_indexed(plan.plan(req(n)), n)


@pytest.mark.parametrize(
    ("build", "parameter", "message"),
    [
        (lambda: Mixture([]), "components", "at least one"),
        (lambda: Mixture([(0, Fixed()), (0, Nucleus())]), "components.weight", "sum to a positive number"),
        (lambda: Mixture([(-1, Fixed()), (2, Nucleus())]), "components.0.weight", "greater than or equal to 0"),
        (lambda: Mixture([(1, {"kind": "nucleus", "top_p": 2})]), "components.0.strategy.top_p", "less than or equal to 1"),
        (lambda: Mixture([(1, {"kind": "nope"})]), "components.0.strategy.kind", "unknown strategy 'nope'; known: composite"),
        (lambda: Mixture([(1, 42)]), "components.0.strategy", "a strategy is a kind name or a mapping"),
        (lambda: Route({}), "weights", "at least one engine"),
        (lambda: Route({"a": 0}), "weights", "sum to a positive number"),
        (lambda: Route({" ": 1}), "weights", "must not be empty"),
        (lambda: Composite([]), "parts", "at least one"),
        (lambda: Composite([(0, Fixed())]), "parts.0.count", "greater than or equal to 1"),
    ],
)
def test_combinator_validation(build: Any, parameter: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        build()
    assert info.value.parameter == parameter


# -- every strategy: determinism, seeds, config round-trip ----------------------------

NESTED = Composite(
    [
        (2, GreedyPlusSamples()),
        (6, Route({"a": 1, "b": 2}, Mixture([(1, Nucleus()), (2, PromptVariants(["Be brief."], TemperatureLadder(0.8, 1.4)))]))),
    ]
)

EXAMPLES: list[StrategyConfig] = [
    Fixed(engine="x"),
    TemperatureLadder(0.1, 1.3, spacing="geometric", greedy_first=True),
    Grid(temperature=[0.3, 0.9], top_k=[20], fill="sample"),
    GreedyPlusSamples(temperature=0.9, min_p=0.1),
    Nucleus(0.8, temperature=0.7),
    TopK(20),
    MinP(0.1),
    PromptVariants(["A", {"text": "Q: {prompt}", "role": "prompt"}], Nucleus(), assign="weighted", weights=[1, 2]),
    Mixture([(1, Fixed()), (2, TopK())]),
    Route({"a": 1, "b": 3}, GreedyPlusSamples()),
    NESTED,
]


def test_examples_cover_every_registered_kind() -> None:
    assert {s.kind for s in EXAMPLES} == set(registered())


@pytest.mark.parametrize("strategy", EXAMPLES, ids=lambda s: s.kind)
def test_config_round_trip(strategy: StrategyConfig) -> None:
    data = strategy.model_dump()
    assert data["kind"] == strategy.kind
    loaded = from_config(data)
    assert type(loaded) is type(strategy) and loaded == strategy
    assert from_config(json.loads(strategy.model_dump_json())) == strategy
    assert StrategyConfig.from_config(data) == strategy
    assert type(strategy).from_config(data) == strategy
    assert loaded.plan(req(8)) == strategy.plan(req(8))


@pytest.mark.parametrize("strategy", EXAMPLES, ids=lambda s: s.kind)
def test_plans_are_deterministic_with_distinct_seeds(strategy: StrategyConfig) -> None:
    specs = strategy.plan(req(9, seed=42))
    assert_indexed(specs, 9)
    assert specs == strategy.plan(req(9, seed=42))
    assert [s.params.seed for s in specs] == list(range(42, 51))


@pytest.mark.parametrize("strategy", EXAMPLES, ids=lambda s: s.kind)
def test_plans_without_a_seed_are_deterministic_and_unseeded(strategy: StrategyConfig) -> None:
    specs = strategy.plan(req(7, seed=None))
    assert_indexed(specs, 7)
    assert specs == strategy.plan(req(7, seed=None))
    assert all(s.params.seed is None for s in specs)


def test_nested_plan_labels() -> None:
    specs = NESTED.plan(req(8))
    assert [(s.engine, s.strategy) for s in specs] == [
        ("default", "composite.0:greedy"),
        ("default", "composite.0:sample"),
        ("b", "composite.1:route.b:mixture.1:variant.0:ladder[t=0.80]"),
        ("b", "composite.1:route.b:mixture.1:variant.0:ladder[t=0.92]"),
        ("b", "composite.1:route.b:mixture.1:variant.0:ladder[t=1.04]"),
        ("b", "composite.1:route.b:mixture.1:variant.0:ladder[t=1.16]"),
        ("a", "composite.1:route.a:mixture.1:variant.0:ladder[t=1.28]"),
        ("b", "composite.1:route.b:mixture.1:variant.0:ladder[t=1.40]"),
    ]
    assert [s.params.seed for s in specs] == list(range(100, 108))
    other = NESTED.plan(req(8, seed=7))
    hot = [s.strategy.split(":")[2] for s in other[2:]]
    assert set(hot) == {"mixture.0", "mixture.1"}  # another seed draws both components


def test_wrong_kind_for_a_concrete_class() -> None:
    with pytest.raises(ConfigError, match="kind: expected 'ladder', got 'fixed'"):
        TemperatureLadder.from_config({"kind": "fixed"})


def test_unknown_kind_and_missing_kind() -> None:
    with pytest.raises(ConfigError, match="unknown strategy 'beam'; known: composite, fixed, greedy_plus_samples"):
        from_config({"kind": "beam"})
    with pytest.raises(ConfigError, match="mapping with a 'kind'"):
        from_config({"low": 0.1})
    with pytest.raises(ConfigError, match="lo: Extra inputs are not permitted"):
        from_config({"kind": "ladder", "lo": 0.1})


def test_nested_strategy_may_be_a_kind_name() -> None:
    assert Route({"a": 1}, "greedy_plus_samples").inner == GreedyPlusSamples()


# -- through the orchestrator (scripted engines) ---------------------------------------


@pytest.mark.asyncio
async def test_orchestrator_carries_specs_prompts_and_routes() -> None:
    small, big = ScriptedEngine(name="small"), ScriptedEngine(name="big")
    strategy = Route({"small": 1, "big": 1}, PromptVariants(["Be terse."], TemperatureLadder(0.2, 1.0)))
    async with Orchestrator({"small": small, "big": big}) as orch:
        result = await orch.generate("Why?", n=6, seed=5, strategy=strategy)
    by_index = sorted(result.candidates, key=lambda c: c.index)
    assert [c.spec for c in by_index] == strategy.plan(orch.request("Why?", 6, seed=5))
    assert {c.spec.engine for c in by_index} == {"small", "big"}
    assert len(small.history) + len(big.history) == 6
    for engine in (small, big):
        for call in engine.history:
            index = int(call.request_id.rsplit("-", 1)[1])
            assert by_index[index].spec.engine == engine.name
            assert call.params == by_index[index].spec.params
            assert call.prompt == [ChatMessage(role="system", content="Be terse."), ChatMessage(role="user", content="Why?")]


@pytest.mark.asyncio
async def test_orchestrator_rejects_a_route_to_an_unknown_engine() -> None:
    async with Orchestrator(ScriptedEngine()) as orch:
        with pytest.raises(ConfigError, match="unknown engine 'gpu'"):
            await orch.generate("Why?", n=2, strategy=Route({"gpu": 1}))
