"""The blocking convenience over the async core."""

from __future__ import annotations

from typing import Any

import anyio

from nbest.types import Prompt, Result

__all__ = ["generate"]


def generate(prompt: Prompt, n: int = 8, *, model: str | None = None, **kwargs: Any) -> Result:
    """Blocking best-of-N for scripts: start an engine, generate, shut it down.

    Keyword arguments go to :meth:`Orchestrator.generate`. Call it under an
    ``if __name__ == "__main__":`` guard (vLLM starts worker processes).

    >>> result = nbest.generate("What is 17 * 3?", n=4)   # doctest: +SKIP
    """
    from nbest.engines.vllm import VLLMEngine
    from nbest.orchestrator import Orchestrator

    async def main() -> Result:
        engine = VLLMEngine.default() if model is None else VLLMEngine(model)
        async with Orchestrator(engine) as orch:
            request = orch.request(
                prompt, n, **{k: v for k, v in kwargs.items() if k not in ("strategy", "rerankers", "timeout")}
            )
            return await orch.run(
                request, strategy=kwargs.get("strategy"), rerankers=kwargs.get("rerankers"), timeout=kwargs.get("timeout")
            )

    return anyio.run(main, backend="asyncio")
