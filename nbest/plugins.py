"""Third-party strategies, rerankers and engines, loaded explicitly.

A package publishes its kinds through entry points; nothing is loaded at
import time. The CLI and the server call :func:`load_plugins` once before they
build anything, so a plugin kind works in ``--strategy``, ``--reranker``,
``--engines`` files, HTTP bodies and config files alike::

    [project.entry-points."nbest.rerankers"]
    shout = "nbest_shout:ShoutConfig"        # a RerankerConfig registered as "shout"

>>> load_plugins()  # nothing installed here: the built-in kinds only
{'strategies': [], 'rerankers': [], 'engines': []}
"""

from __future__ import annotations

__all__ = ["load_plugins"]


def load_plugins() -> dict[str, list[str]]:
    """Register every kind published in the ``nbest.strategies``, ``nbest.rerankers``
    and ``nbest.engines`` entry-point groups (once; later calls find nothing new).
    Returns the kinds loaded, by group.

    Raises:
        ConfigError: a plugin that fails to load or is not a config class of its registry.
    """
    from nbest.engines import ENGINES
    from nbest.rerankers import RERANKERS
    from nbest.strategies import STRATEGIES

    return {
        "strategies": STRATEGIES.load_plugins(),
        "rerankers": RERANKERS.load_plugins(),
        "engines": ENGINES.load_plugins(),
    }
