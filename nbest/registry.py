"""One registry per extension kind: strategies, rerankers, engines.

Each kind of thing nbest builds from user input has exactly one
:class:`Registry`. An implementation registers its *config class* — a pydantic
model with a ``kind`` field — under that kind, and says next to the class how
its command-line short form reads (:meth:`Registered.from_short`). Every
surface (Python, CLI, HTTP, batch lines, config files) then builds through the
registry's one builder, :meth:`Registry.build`, from either

- a config mapping: ``{"kind": "vote", "extract": "number", "weight": 2}``,
- a short form: ``"vote:number"`` (``NAME[:ARG]``),
- a JSON object given as text: ``'{"kind": "vote"}'``,
- a config file, ``@plan.yaml`` (YAML, JSON or TOML; refused where files must
  not be read, e.g. over HTTP).

Third parties add kinds through Python entry points (``nbest.strategies``,
``nbest.rerankers``, ``nbest.engines``): each entry point names a config class
registered under its kind. They are loaded explicitly, by
:meth:`Registry.load_plugins` (the CLI and the server do it at start-up),
never at import time::

    # pyproject.toml of a plugin package
    [project.entry-points."nbest.rerankers"]
    shout = "nbest_shout:ShoutConfig"

>>> from nbest.rerankers import RERANKERS
>>> RERANKERS.build("vote:number").model_dump()
{'kind': 'vote', 'weight': 1.0, 'extract': 'number', 'votes': 'uniform'}
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar

from nbest.errors import ConfigError
from nbest.types import NbestModel

__all__ = ["Registered", "Registry", "read_config_file"]


class Registered(NbestModel):
    """Base of every registered config: a validated model with a ``kind``.

    Subclasses declare ``kind: Literal["name"] = "name"`` and may override
    :meth:`from_short` to read an argument (``ladder:0.2-1.2``).
    """

    kind: str
    """Which implementation this is (the registry key)."""

    registry_kind: ClassVar[str] = ""
    """The kind this class is registered under (set by :meth:`Registry.register`)."""
    short_help: ClassVar[str] = ""
    """How the short form reads, for help texts (e.g. ``vote[:EXTRACTOR]``); empty: the kind alone."""

    @classmethod
    def from_short(cls, arg: str) -> Self:
        """This kind from the text after ``NAME:`` in a short form ("" when there was none).

        Raises:
            ConfigError: the argument is not understood.
        """
        if arg:
            raise ConfigError(
                f"{cls.registry_kind} takes no argument (got {arg!r}); give it as a JSON object to set its fields",
                parameter="kind",
                value=arg,
            )
        try:
            return cls.parse({"kind": cls.registry_kind})
        except ConfigError as exc:
            raise ConfigError(
                f"{exc} (give {cls.registry_kind} as a JSON object or @FILE)", parameter=exc.parameter, value=exc.value
            ) from None


C = TypeVar("C", bound=Registered)


class Registry(Generic[C]):
    """The kinds of one extension point, their config classes and short forms.

    Args:
        what: what it holds, for messages (``"strategy"``, ``"reranker"``).
        group: the entry-point group third parties register in.
        base: the config base class every kind must subclass.
    """

    def __init__(self, what: str, group: str, base: type[C]) -> None:
        self.what, self.group, self.base = what, group, base
        self._kinds: dict[str, type[C]] = {}
        self._aliases: dict[str, str] = {}
        self._plugins_loaded = False

    # -- registering ---------------------------------------------------------

    def register(self, kind: str, *, aliases: Iterable[str] = ()) -> Callable[[type[C]], type[C]]:
        """Class decorator: make ``cls`` buildable under ``kind`` (and ``aliases`` in short forms).

        Raises:
            ConfigError: the kind or an alias is taken by another class.
        """

        def decorate(cls: type[C]) -> type[C]:
            self.add(kind, cls, aliases=aliases)
            return cls

        return decorate

    def add(self, kind: str, cls: type[C], *, aliases: Iterable[str] = ()) -> None:
        """Register ``cls`` under ``kind`` (what :meth:`register` does)."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise ConfigError(f"{self.what} kind {kind!r}: {cls!r} is not a {self.base.__name__}", parameter="kind", value=kind)
        for name in (kind, *aliases):
            owner = self._kinds.get(self._aliases.get(name, name))
            if owner is not None and owner is not cls:
                raise ConfigError(f"{self.what} kind {name!r} is registered twice", parameter="kind", value=name)
        cls.registry_kind = kind
        self._kinds[kind] = cls
        for alias in aliases:
            self._aliases[alias] = kind

    def load_plugins(self) -> list[str]:
        """Register the kinds third parties publish in the entry-point group
        (once; later calls return at once). Returns the kinds loaded.

        Raises:
            ConfigError: an entry point that does not load or is not a config
                class of this registry (named in the message).
        """
        if self._plugins_loaded:
            return []
        self._plugins_loaded = True
        loaded = []
        for point in entry_points(group=self.group):
            try:
                cls = point.load()
            except Exception as exc:
                raise ConfigError(f"{self.group} plugin {point.name!r} ({point.value}) failed to load: {exc}") from exc
            kind = getattr(cls, "registry_kind", "") or point.name
            if self._kinds.get(kind) is not cls:
                self.add(kind, cls)
            loaded.append(kind)
        return loaded

    # -- looking up ----------------------------------------------------------

    def kinds(self) -> dict[str, type[C]]:
        """The registered kinds and their config classes."""
        return dict(self._kinds)

    def get(self, kind: str) -> type[C]:
        """The config class of ``kind`` (or of an alias).

        Raises:
            ConfigError: unknown kind; the message lists the known ones.
        """
        cls = self._kinds.get(self._aliases.get(kind, kind)) if isinstance(kind, str) else None
        if cls is None:
            raise ConfigError(f"kind: unknown {self.what} {kind!r}; known: {self.known()}", parameter="kind", value=kind)
        return cls

    def known(self) -> str:
        """The kinds, comma-separated, for messages."""
        return ", ".join(sorted(self._kinds))

    def short_forms(self) -> str:
        """Every kind's short form, for help texts."""
        return ", ".join(self._kinds[k].short_help or k for k in sorted(self._kinds))

    # -- building ------------------------------------------------------------

    def from_config(self, data: Mapping[str, Any]) -> C:
        """Validate a config mapping by its ``kind``.

        Raises:
            ConfigError: no or unknown ``kind``, or a bad field (named with its path).
        """
        if isinstance(data, self.base):
            return data
        if not isinstance(data, Mapping) or "kind" not in data:
            raise ConfigError(f"a {self.what} config is a mapping with a 'kind' (one of {self.known()})", parameter="kind")
        return self.get(data["kind"]).parse(dict(data))

    def build(self, spec: C | Mapping[str, Any] | str, *, files: bool = True) -> C:
        """The one builder: a config from a config object or mapping, a short
        form ``NAME[:ARG]``, a JSON object as text, or ``@FILE``.

        ``files=False`` refuses ``@FILE`` (input from a network client must not
        name files on the server).

        Raises:
            ConfigError: one line naming what was wrong and what is allowed.
        """
        if isinstance(spec, self.base):
            return spec
        if isinstance(spec, Mapping):
            return self.from_config(spec)
        if not isinstance(spec, str):
            raise ConfigError(f"a {self.what} is a short form, a config object or @FILE (got {type(spec).__name__})")
        text = spec.strip()
        if text.startswith("@"):
            if not files:
                raise ConfigError(f"{self.what} {text!r}: config files (@FILE) are not read over HTTP; send the config object")
            return self.from_config(read_config_file(Path(text[1:]).expanduser(), self.what))
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{self.what} {text!r}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            return self.from_config(data)
        name, _, arg = text.partition(":")
        name = name.strip()
        if name not in self._kinds and name not in self._aliases:
            raise ConfigError(
                f"unknown {self.what} {name!r}; use {self.short_forms()}, a JSON object or @FILE",
                parameter=self.what,
                value=text,
            )
        return self.get(name).from_short(arg.strip())


def read_config_file(path: Path, what: str = "config") -> dict[str, Any]:
    """Read a config file: ``.yaml``/``.yml``, ``.json`` or ``.toml``, holding a mapping.

    Raises:
        ConfigError: the file is missing, has another suffix, does not parse,
            or does not hold a mapping.
    """
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json", ".toml"):
        raise ConfigError(f"{what} file {path}: use .yaml, .yml, .json or .toml", parameter=what, value=str(path))
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what} file not found: {path} ({exc.strerror or exc})", parameter=what, value=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})", parameter=what) from None
    data: Any
    try:
        if suffix == ".json":
            data = json.loads(raw)
        elif suffix == ".toml":
            data = tomllib.loads(raw)
        else:
            import yaml

            data = yaml.safe_load(raw)
    except Exception as exc:  # json, toml and yaml errors all say where
        text = str(exc).replace("\n", " ")
        raise ConfigError(f"{what} file {path} is not valid {suffix[1:].upper()} ({text})", parameter=what) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} file {path} must hold a mapping", parameter=what, value=str(path))
    return data
