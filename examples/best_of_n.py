"""Best-of-N answering: 8 candidates for a real question, ranked, with a confidence.

python examples/best_of_n.py
"""

from __future__ import annotations

import anyio

from nbest import Orchestrator, VLLMEngine, rerankers, strategies
from nbest.cli.render import print_result

QUESTION = "A shop sells pens at 3 dollars each. How many dollars do 17 pens cost? Answer with a number."


async def main() -> None:
    async with Orchestrator(VLLMEngine.default()) as orch:
        result = await orch.generate(
            QUESTION,
            n=8,
            seed=0,
            max_tokens=96,
            strategy=strategies.TemperatureLadder(low=0.3, high=1.2),
            rerankers=[rerankers.MajorityVote(extract="number"), rerankers.MeanLogProb()],
        )
    print(f"Q: {QUESTION}\n")
    print_result(result)
    for answer in result.answers[:3]:
        print(f"answer {answer.answer!r}: confidence {answer.confidence:.2f}, candidates {answer.support}")


if __name__ == "__main__":
    anyio.run(main, backend="asyncio")
