"""Generate ``reasoning.jsonl``: short word problems with worked examples, for ``nbest eval``.

Every item is made from a few random whole numbers (a fixed seed: the file is
the same on every run) by one of a handful of *families*; its answer is
computed from those numbers by :func:`answer`, and the numbers are kept in the
item (``family``, ``params``) so that a test can recompute every answer. Each
prompt opens with a worked example of its family (one-shot), because the
embedded 135M model solves almost nothing when asked cold (about 10 %, measured)
but follows a worked example: its greedy answers land between the floor and
the ceiling, where reranking and pruning have something to show. The worked
solutions take one to three short steps ending in "The answer is N." (35-60
generated tokens), so an early stop has tokens to save. Families whose greedy
accuracy measured near zero (two-digit sums and differences, change, sharing,
"twice as many") were left out.

Evaluate with the stop string ``Question:`` (the model would otherwise write a
question of its own and answer it, and its last number would be scored).

Each item belongs to the ``tuning`` or the ``heldout`` split by a fixed hash of
its id (about 40 % / 60 %): tune temperatures and policies on ``tuning`` only
and report on ``heldout`` (``nbest eval --split heldout``).

Run from the repository root::

    python examples/data/make_reasoning.py            # writes examples/data/reasoning.jsonl
    nbest eval examples/data/reasoning.jsonl --answer-field answer --split heldout \\
        --stop Question: --max-tokens 96 -n 8 --greedy
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SEED = 13
PER_FAMILY = 40
TUNING_SHARE = 0.4
SHOTS = 1
"""Worked examples per prompt. Two were measured too: the model then copies the
pattern on and writes further questions, and its accuracy fell on every family."""
STOP = "Question:"
"""The stop string to evaluate with: the model would go on with a question of its own."""

Params = dict[str, int]


def split_of(ident: str) -> str:
    """``tuning`` for about 40 % of ids, ``heldout`` for the rest: a fixed hash of the id."""
    digest = hashlib.sha256(ident.encode()).digest()
    return "tuning" if digest[0] < round(256 * TUNING_SHARE) else "heldout"


@dataclass(frozen=True)
class Family:
    draw: Callable[[random.Random], Params]
    """The item's numbers."""
    solve: Callable[[Params], int]
    """Its answer."""
    ask: Callable[[Params], str]
    """Its question."""
    shots: tuple[tuple[str, str], ...]
    """Worked examples: (question, solution)."""

    def prompt(self, params: Params, shots: int = SHOTS) -> str:
        worked = "".join(f"Question: {q}\nSolution: {a}\n\n" for q, a in self.shots[:shots])
        head = "Example" if shots == 1 else "Examples"
        return f"{head}:\n{worked}Now solve this one the same way.\nQuestion: {self.ask(params)}\nSolution:"


FAMILIES: dict[str, Family] = {
    "buy_eat": Family(
        lambda r: {"a": r.randint(2, 9), "b": r.randint(2, 9), "c": r.randint(1, 5)},
        lambda p: p["a"] + p["b"] - p["c"],
        lambda p: (
            f"Mia has {p['a']} cookies. She bakes {p['b']} more cookies, then eats {p['c']} cookies. "
            "How many cookies does she have now?"
        ),
        (
            (
                "Ben has 4 pears. He buys 3 more pears, then eats 2 pears. How many pears does he have now?",
                "Ben starts with 4 pears. He buys 3 more, so 4 + 3 = 7. He eats 2, so 7 - 2 = 5. The answer is 5.",
            ),
            (
                "Ada has 6 plums. She picks 5 more plums, then gives away 4 plums. How many plums does she have now?",
                "Ada starts with 6 plums. She picks 5 more, so 6 + 5 = 11. She gives away 4, so 11 - 4 = 7. The answer is 7.",
            ),
        ),
    ),
    "boxes_loose": Family(
        lambda r: {"a": r.randint(2, 9), "b": r.randint(2, 4), "c": r.randint(1, 9)},
        lambda p: p["a"] * p["b"] + p["c"],
        lambda p: (
            f"There are {p['b']} boxes with {p['a']} pencils in each box, and {p['c']} loose pencils. "
            "How many pencils are there in all?"
        ),
        (
            (
                "There are 3 bags with 5 marbles in each bag, and 4 loose marbles. How many marbles are there in all?",
                "The bags hold 3 * 5 = 15 marbles. With the 4 loose ones, 15 + 4 = 19. The answer is 19.",
            ),
            (
                "There are 2 jars with 6 buttons in each jar, and 3 loose buttons. How many buttons are there in all?",
                "The jars hold 2 * 6 = 12 buttons. With the 3 loose ones, 12 + 3 = 15. The answer is 15.",
            ),
        ),
    ),
    "buy_buy": Family(
        lambda r: {"a": r.randint(2, 9), "b": r.randint(2, 9), "c": r.randint(2, 9)},
        lambda p: p["a"] + p["b"] + p["c"],
        lambda p: (
            f"Leo has {p['a']} stamps. He buys {p['b']} more stamps, then his aunt gives him {p['c']} stamps. "
            "How many stamps does he have now?"
        ),
        (
            (
                "Ben has 4 pears. He buys 3 more pears, then his uncle gives him 2 pears. How many pears does he have now?",
                "Ben starts with 4 pears. He buys 3 more, so 4 + 3 = 7. He gets 2, so 7 + 2 = 9. The answer is 9.",
            ),
            (
                "Ada has 6 plums. She picks 5 more plums, then her friend gives her 4 plums. How many plums does she have now?",
                "Ada starts with 6 plums. She picks 5 more, so 6 + 5 = 11. She gets 4, so 11 + 4 = 15. The answer is 15.",
            ),
        ),
    ),
    "eat_buy": Family(
        lambda r: {"a": r.randint(6, 12), "c": r.randint(1, 5), "b": r.randint(2, 9)},
        lambda p: p["a"] - p["c"] + p["b"],
        lambda p: (
            f"Max has {p['a']} grapes. He eats {p['c']} grapes, then buys {p['b']} more grapes. How many grapes does he have now?"
        ),
        (
            (
                "Ben has 9 pears. He eats 2 pears, then buys 3 more pears. How many pears does he have now?",
                "Ben starts with 9 pears. He eats 2, so 9 - 2 = 7. He buys 3 more, so 7 + 3 = 10. The answer is 10.",
            ),
            (
                "Ada has 8 plums. She eats 3 plums, then picks 6 more plums. How many plums does she have now?",
                "Ada starts with 8 plums. She eats 3, so 8 - 3 = 5. She picks 6 more, so 5 + 6 = 11. The answer is 11.",
            ),
        ),
    ),
    "buy": Family(
        lambda r: {"a": r.randint(2, 19), "b": r.randint(2, 19)},
        lambda p: p["a"] + p["b"],
        lambda p: f"Zoe has {p['a']} beads. She buys {p['b']} more beads. How many beads does she have now?",
        (
            (
                "Ben has 4 pears. He buys 3 more pears. How many pears does he have now?",
                "Ben starts with 4 pears. He buys 3 more, so 4 + 3 = 7. The answer is 7.",
            ),
            (
                "Ada has 12 plums. She picks 9 more plums. How many plums does she have now?",
                "Ada starts with 12 plums. She picks 9 more, so 12 + 9 = 21. The answer is 21.",
            ),
        ),
    ),
}


def answer(family: str, params: Params) -> int:
    """The answer of a ``family`` item with these numbers (what the test recomputes)."""
    return FAMILIES[family].solve(params)


def items(
    per_family: int = PER_FAMILY, seed: int = SEED, names: list[str] | None = None, shots: int = SHOTS
) -> list[dict[str, object]]:
    """``per_family`` distinct items of each family (all of ``FAMILIES`` unless ``names``)."""
    rng = random.Random(seed)
    out: list[dict[str, object]] = []
    for name in names or list(FAMILIES):
        fam = FAMILIES[name]
        seen: set[tuple[int, ...]] = set()
        for _ in range(100 * per_family):  # bounded: a family with too few distinct items stops short
            if len(seen) >= per_family:
                break
            params = fam.draw(rng)
            key = tuple(params.values())
            if key in seen:
                continue
            seen.add(key)
            ident = f"{name}-{len(seen):03d}"
            out.append({"id": ident, "prompt": fam.prompt(params, shots), "answer": fam.solve(params), "family": name,
                        "params": params, "split": split_of(ident)})  # fmt: skip
    return out


def main(argv: list[str]) -> None:
    path = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name("reasoning.jsonl")
    with path.open("w", encoding="utf-8") as f:
        for item in items():
            f.write(json.dumps(item) + "\n")


if __name__ == "__main__":
    main(sys.argv)
