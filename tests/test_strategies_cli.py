"""``--strategy`` short forms and the ``nbest plan`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from nbest import ConfigError
from nbest.cli.plan import plan_command
from nbest.strategies import (
    Fixed,
    GreedyPlusSamples,
    Grid,
    MinP,
    Mixture,
    Nucleus,
    PromptVariants,
    StrategyConfig,
    TemperatureLadder,
    TopK,
    parse_spec,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fixed", Fixed()),
        ("ladder", TemperatureLadder()),
        ("ladder:0.2-1.2", TemperatureLadder(0.2, 1.2)),
        ("ladder:0-1.5,greedy", TemperatureLadder(0.0, 1.5, greedy_first=True)),
        ("ladder:0.25-2,geometric", TemperatureLadder(0.25, 2.0, spacing="geometric")),
        ("grid:t=0.5,1.0;p=0.9,1.0", Grid(temperature=[0.5, 1.0], top_p=[0.9, 1.0])),
        ("grid:k=10,40;m=0.05;fill=sample", Grid(top_k=[10, 40], min_p=[0.05], fill="sample")),
        ("grid:temperature=0.7;top_p=0.8", Grid(temperature=[0.7], top_p=[0.8])),
        ("greedy+", GreedyPlusSamples()),
        ("greedy+:0.8", GreedyPlusSamples(temperature=0.8)),
        ("minp:0.05", MinP(0.05)),
        ("minp", MinP()),
        ("nucleus:0.9", Nucleus(0.9)),
        ("topk:40", TopK(40)),
        ("greedy_plus_samples", GreedyPlusSamples()),
        ('{"kind": "nucleus", "top_p": 0.7}', Nucleus(0.7)),
        ('{"kind": "mixture", "components": [[1, "fixed"], [3, {"kind": "topk"}]]}', Mixture([(1, Fixed()), (3, TopK())])),
        ("  ladder:0.2-1.2  ", TemperatureLadder(0.2, 1.2)),
    ],
)
def test_short_forms(text: str, expected: StrategyConfig) -> None:
    assert parse_spec(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("beam", "unknown strategy 'beam'; use composite, fixed, greedy\\+\\[:T\\], grid:t="),
        ("ladder:0.5", "expected ladder:LOW-HIGH, e.g. ladder:0.2-1.2"),
        ("ladder:a-1", "'a' is not a number; e.g. ladder:0.2-1.2"),
        ("ladder:1.2-0.2", "low: must be <= high"),
        ("ladder:0.2-1.2,log", "unknown ladder option 'log'; use geometric or greedy"),
        ("grid:", "give at least one of temperature, top_p, top_k, min_p"),
        ("grid:t=", "temperature: an empty grid axis"),
        ("grid:x=1", "unknown grid axis 'x'; use t \\(temperature\\), p \\(top_p\\), k \\(top_k\\), m \\(min_p\\) or fill"),
        ("grid:t=0.5;t=1.0", "grid axis temperature given twice"),
        ("grid:t0.5", "expected KEY=VALUES"),
        ("grid:p=0.9;fill=random", "fill: Input should be 'cycle' or 'sample'"),
        ("grid:t=-1", "temperature\\[0\\]: Input should be greater than or equal to 0"),
        ("topk:0.5", "'0.5' is not an integer; e.g. topk:40"),
        ("topk:0", "top_k: Input should be greater than or equal to 1"),
        ("nucleus:1.5", "top_p: Input should be less than or equal to 1"),
        ("minp:x", "'x' is not a number; e.g. minp:0.05"),
        ("greedy+:-1", "temperature: Input should be greater than or equal to 0"),
        ("{bad json", "invalid JSON"),
        ('{"kind": "beam"}', "unknown strategy 'beam'"),
        ("mixture", "components: Field required \\(give mixture as a JSON object or @FILE\\)"),
        ("@/no/such/plan.yaml", "strategy file not found"),
        ("fixed:3", "fixed takes no argument"),
    ],
)
def test_bad_short_forms_are_one_line_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_spec(text)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("--strategy ")


def test_unknown_strategy_lists_what_is_allowed() -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec("beam")
    message = str(info.value)
    for allowed in ("ladder:LOW-HIGH", "grid:t=", "greedy+", "nucleus:P", "topk:K", "minp:P", "fixed", "JSON", "@FILE"):
        assert allowed in message


def test_at_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(
        "kind: prompt_variants\nvariants: [Be brief.]\ninner: {kind: ladder, low: 0.2, high: 0.8}\n", encoding="utf-8"
    )
    assert parse_spec(f"@{path}") == PromptVariants(["Be brief."], TemperatureLadder(0.2, 0.8))


# -- nbest plan --------------------------------------------------------------------


def invoke(*args: str) -> tuple[str, BaseException | None, int]:
    result = CliRunner().invoke(plan_command, list(args), env={"COLUMNS": "160"})  # rich: a wide terminal
    return result.output, result.exception, result.exit_code


def test_plan_json() -> None:
    output, exc, code = invoke("Why?", "-n", "4", "--seed", "10", "--strategy", "ladder:0.2-1.1", "--top-p", "0.9", "--json")
    assert exc is None and code == 0
    data = json.loads(output)
    assert data["n"] == 4 and data["seed"] == 10
    assert data["strategy"] == TemperatureLadder(0.2, 1.1).model_dump(mode="json")
    specs = data["specs"]
    assert [s["index"] for s in specs] == [0, 1, 2, 3]
    assert [s["params"]["temperature"] for s in specs] == [0.2, 0.5, 0.8, 1.1]
    assert [s["params"]["seed"] for s in specs] == [10, 11, 12, 13]
    assert {s["params"]["top_p"] for s in specs} == {0.9}
    assert [s["strategy"] for s in specs] == ["ladder[t=0.20]", "ladder[t=0.50]", "ladder[t=0.80]", "ladder[t=1.10]"]


def test_plan_without_seed_draws_one_and_numbers_from_it() -> None:
    output, exc, _ = invoke("Why?", "-n", "3", "--json")
    assert exc is None
    data = json.loads(output)
    seed = data["seed"]
    assert isinstance(seed, int)
    assert [s["params"]["seed"] for s in data["specs"]] == [seed, seed + 1, seed + 2]
    assert data["strategy"] == {"kind": "fixed", "engine": "default"}


def test_plan_table_shows_labels_settings_and_variants() -> None:
    strategy = '{"kind": "prompt_variants", "variants": ["Be brief."], "inner": "greedy_plus_samples"}'
    output, exc, code = invoke("Why?", "-n", "2", "--seed", "3", "--strategy", strategy, "-t", "0.7")
    assert exc is None and code == 0
    assert "prompt_variants · n=2 · seed=3" in output
    assert "variant.0:greedy" in output and "variant.0:sample" in output
    assert "system: Be brief." in output
    lines = [line for line in output.splitlines() if line.startswith("│ 0 ") or line.startswith("│ 1 ")]
    assert len(lines) == 2
    assert " 0.7 " in lines[1] and " 4 " in lines[1]  # sampled at the base temperature, seed 3 + 1


def test_plan_table_escapes_brackets_in_labels() -> None:
    output, exc, _ = invoke("Why?", "-n", "2", "--seed", "0", "--strategy", "grid:t=0.5;p=0.9,1.0")
    assert exc is None
    assert "grid[t=0.50,p=0.90]" in output and "grid[t=0.50,p=1.00]" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Why?", "--strategy", "beam"], "unknown strategy"),
        (["Why?", "--temperature", "-1"], "temperature: Input should be greater than or equal to 0"),
        (["Why?", "--top-p", "0"], "top_p: Input should be greater than 0"),
        (["Why?", "-n", "0"], "n: Input should be greater than or equal to 1"),
        (["Why?", "-n", "65"], "-n: at most 64 candidates"),
        (["  ", "-n", "2"], "prompt must not be empty"),
    ],
)
def test_plan_bad_input_raises_config_error(args: list[str], message: str) -> None:
    _, exc, code = invoke(*args)
    assert isinstance(exc, ConfigError)
    assert code != 0
    with pytest.raises(ConfigError, match=message):
        raise exc


def test_plan_options_come_from_sampling_params() -> None:
    output, exc, _ = invoke("--help")
    assert exc is None
    for flag in ("--temperature", "--top-p", "--top-k", "--min-p", "--max-tokens", "--seed", "--strategy", "--json", "-n"):
        assert flag in output
    assert "Nucleus sampling" in output  # the field's own documentation
