"""The command line's short form of a strategy (``--strategy TEXT``)."""

from __future__ import annotations

import json
from pathlib import Path

from nbest.errors import ConfigError
from nbest.strategies.base import StrategyConfig, from_config, registered

__all__ = ["parse_spec"]


def parse_spec(text: str) -> StrategyConfig:
    """Parse a strategy given on the command line.

    Accepts a registered kind with no options (``fixed``), a JSON object
    (``{"kind": "fixed"}``) or ``@path`` to a JSON or YAML file.

    Raises:
        ConfigError: naming what is allowed.
    """
    text = text.strip()
    if text.startswith("@"):
        return from_config(_load_file(Path(text[1:])))
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--strategy: invalid JSON ({exc.msg})", parameter="strategy", value=text) from None
        return from_config(data)
    if text in registered():
        return from_config({"kind": text})
    raise ConfigError(
        f"--strategy: unknown strategy {text!r}; use one of {', '.join(sorted(registered()))}, a JSON object or @file",
        parameter="strategy",
        value=text,
    )


def _load_file(path: Path) -> dict[str, object]:
    if not path.is_file():
        raise ConfigError(f"--strategy: no such file: {path}", parameter="strategy", value=str(path))
    raw = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--strategy: {path} is not valid YAML ({exc})", parameter="strategy") from None
    else:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--strategy: {path} is not valid JSON ({exc.msg})", parameter="strategy") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--strategy: {path} must hold a mapping with a 'kind'", parameter="strategy")
    return data
