"""The blocking convenience over the async core."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio

from nbest.rerankers.base import Reranker
from nbest.rerankers.ranker import Ranker
from nbest.strategies.base import Strategy
from nbest.types import Prompt, Result

if TYPE_CHECKING:
    from nbest.orchestrator.pruning import Prune
    from nbest.orchestrator.stopping import StoppingRule

__all__ = ["generate"]


def generate(
    prompt: Prompt,
    n: int = 8,
    *,
    model: str | None = None,
    strategy: Strategy | None = None,
    rerankers: Sequence[Reranker] | Ranker | None = None,
    timeout: float | None = None,
    until: StoppingRule | None = None,
    wave: int | None = None,
    prune: Prune | None = None,
    **kwargs: Any,
) -> Result:
    """Blocking best-of-N for scripts: start an engine, generate, shut it down.

    Other keyword arguments (sampling settings, ``stop`` strings, ``system``)
    build the request, which is validated, with ``until``/``wave`` (adaptive
    stopping) and ``prune`` (online pruning), as in :meth:`Orchestrator.run`,
    before the model loads. Call it
    under an ``if __name__ == "__main__":`` guard (vLLM starts worker processes).

    >>> result = nbest.generate("What is 17 * 3?", n=4)   # doctest: +SKIP

    Raises:
        ConfigError: bad input, before any engine starts.
    """
    from nbest.engines.vllm import VLLMEngine
    from nbest.orchestrator import Orchestrator
    from nbest.orchestrator.adaptive import check_adaptive
    from nbest.orchestrator.pruning import check_prune

    orch = Orchestrator(VLLMEngine.default() if model is None else VLLMEngine(model))
    request = orch.request(prompt, n, **kwargs)
    check_adaptive(until, wave)
    check_prune(prune)

    async def main() -> Result:
        async with orch:
            return await orch.run(
                request, strategy=strategy, rerankers=rerankers, timeout=timeout, until=until, wave=wave, prune=prune
            )

    return anyio.run(main, backend="asyncio")
