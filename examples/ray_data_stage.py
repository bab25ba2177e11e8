"""Best-of-N inside a Ray Data pipeline: read questions, answer each with N candidates, score, print.

python examples/ray_data_stage.py       # starts a local Ray cluster (pip install 'nbest[ray]'); the embedded model

NBestStage is a callable class for ``Dataset.map_batches``: Ray Data starts a pool of
actors, each builds one replica (an orchestrator and its engine) once and feeds it
batches of rows. Here one replica on this machine; on a cluster, raise the pool's
size and give each replica a GPU (``num_gpus=1``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ray

from nbest.distributed.stage import NBestStage

QUESTIONS = Path(__file__).parent / "data" / "arithmetic.jsonl"


def score(row: dict[str, Any]) -> dict[str, Any]:
    """The top answer (the most voted number) and whether it is the expected one."""
    answers = json.loads(row["answers"]) if row["answers"] else []
    row["top_answer"] = answers[0]["answer"] if answers else None
    row["top_share"] = answers[0]["confidence"] if answers else 0.0
    row["correct"] = row["top_answer"] == str(row["answer"])
    return row


def main() -> None:
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # rows come back in file order
    ds = ray.data.read_json(str(QUESTIONS)).limit(8)  # columns: id, prompt, answer
    ds = ds.map_batches(
        NBestStage,
        fn_constructor_kwargs={
            "n": 4,
            "temperature": 0.7,
            "max_tokens": 64,
            "seed": 0,
            "rerankers": ["vote:number"],
            "id_column": "id",
        },
        compute=ray.data.ActorPoolStrategy(size=1),  # replicas; with Ray < 2.51: concurrency=1
        batch_size=4,
    )
    ds = ds.map(score)
    rows = ds.take_all()
    for row in rows:
        mark = "right" if row["correct"] else f"wrong, expected {row['answer']}"
        print(f"{row['id']}: {row['top_answer']} (vote share {row['top_share']:.2f}, {mark})")
    print(f"{sum(r['correct'] for r in rows)} of {len(rows)} right")


if __name__ == "__main__":
    main()
