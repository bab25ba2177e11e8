"""Strategy config files: YAML, TOML and JSON load the same nested plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbest import ConfigError
from nbest.strategies import (
    Composite,
    GreedyPlusSamples,
    Mixture,
    Nucleus,
    PromptVariant,
    PromptVariants,
    TemperatureLadder,
    from_config,
)

YAML = """\
kind: composite
parts:
  - count: 2
    strategy: {kind: greedy_plus_samples}
  - count: 6
    strategy:
      kind: mixture
      components:
        - weight: 1
          strategy: {kind: nucleus, top_p: 0.9}
        - weight: 2
          strategy:
            kind: prompt_variants
            variants: ["Be brief.", {text: "Q: {prompt}", role: prompt}]
            inner: {kind: ladder, low: 0.8, high: 1.4}
"""

TOML = """\
kind = "composite"

[[parts]]
count = 2
strategy = { kind = "greedy_plus_samples" }

[[parts]]
count = 6
[parts.strategy]
kind = "mixture"
[[parts.strategy.components]]
weight = 1
strategy = { kind = "nucleus", top_p = 0.9 }
[[parts.strategy.components]]
weight = 2
[parts.strategy.components.strategy]
kind = "prompt_variants"
variants = ["Be brief.", { text = "Q: {prompt}", role = "prompt" }]
inner = { kind = "ladder", low = 0.8, high = 1.4 }
"""

FILE_PLAN = Composite(
    [
        (2, GreedyPlusSamples()),
        (
            6,
            Mixture(
                [
                    (1, Nucleus(0.9)),
                    (
                        2,
                        PromptVariants(
                            ["Be brief.", PromptVariant(text="Q: {prompt}", role="prompt")], TemperatureLadder(0.8, 1.4)
                        ),
                    ),
                ]
            ),
        ),
    ]
)


@pytest.mark.parametrize(("name", "text"), [("plan.yaml", YAML), ("plan.toml", TOML), ("plan.json", FILE_PLAN.model_dump_json())])
def test_config_files_load(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert from_config(path) == FILE_PLAN
    assert from_config(str(path)) == FILE_PLAN
    assert Composite.from_config(path) == FILE_PLAN


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("plan.yaml", "kind: [", "not valid YAML"),
        ("plan.toml", "kind = ", "not valid TOML"),
        ("plan.json", "{", "not valid JSON"),
        ("plan.yaml", "- 1\n- 2\n", "must hold a mapping"),
        ("plan.ini", "kind=fixed", "use .yaml, .yml, .json or .toml"),
        ("plan.yaml", "kind: ladder\nlow: 2\nhigh: 1\n", "low: must be <= high"),
    ],
)
def test_bad_config_files(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        from_config(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="strategy file not found"):
        from_config(tmp_path / "nope.yaml")
