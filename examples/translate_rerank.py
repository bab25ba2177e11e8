"""Translation candidate reranking: 8 translations, ranked by MBR-chrF and source similarity.

    python examples/translate_rerank.py ["Der Hund schläft im Garten."] [German] [English]

Runs the embedded default model (SmolLM2-135M-Instruct) on CPU; a real
deployment names a stronger model and a multilingual similarity model::

    VLLMEngine("Qwen/Qwen2.5-7B-Instruct"), similarity_model="sentence-transformers/LaBSE"
"""

from __future__ import annotations

import sys

import anyio

from nbest import Orchestrator, VLLMEngine
from nbest.tasks import translate


async def main(text: str, source_lang: str, target_lang: str) -> None:
    async with Orchestrator(VLLMEngine.default()) as orch:
        result = await translate(orch, text, source_lang, target_lang, n=8, temperature=0.7, max_tokens=60, seed=0)
    print(f"{source_lang}: {text}")
    for cand in result.candidates:
        scores = "  ".join(f"{name}={value:.3f}" for name, value in cand.scores.items() if value is not None)
        print(f"{cand.rank}. [{cand.confidence:.2f}] {cand.text.strip()}    ({scores})")


if __name__ == "__main__":
    args = sys.argv[1:]
    text = args[0] if args else "Der Hund schläft im Garten."
    source_lang = args[1] if len(args) > 1 else "German"
    target_lang = args[2] if len(args) > 2 else "English"
    anyio.run(main, text, source_lang, target_lang, backend="asyncio")
