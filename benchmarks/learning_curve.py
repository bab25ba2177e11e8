"""Learning curve: a simulated person's choices teach ``nbest serve --learn`` to rank their way.

Starts ``nbest serve --learn`` on the embedded default model as a subprocess on
127.0.0.1 (a free port, a fresh preference database), waits until ``/healthz``
says it can serve, then plays a person through the HTTP API on a labelled set
(``--data``):

``capitals`` (the default)
    "What is the capital of X?" for the countries of ``benchmarks/data/capitals.tsv``
    (a person accepts a candidate that names the capital, any listed spelling, as a
    word of its text).
``reasoning``
    the word problems of ``examples/data/reasoning.jsonl`` (a worked example, then the
    question; each request stops at ``Question:``, 80 tokens at most): a person accepts a
    candidate whose final number is the answer, read by nbest's own matching
    (:class:`nbest.evaluation.matching.Matcher`, the last number as the vote extracts it).
    The choices are made on the ``tuning`` split (81 problems), agreement is measured on
    60 problems of the ``heldout`` split, one seed. Each request plans 8 candidates over
    ``ladder:0.3-0.7``, the setting picked on the tuning split with
    ``benchmarks/learning_replay.py``: there the default ranker's top candidate is right
    in 32 % of the Results, the log-probability alone's in 41 %, the best mix of the
    logged scores and features in 44 %, the oracle 64 % (with 4 candidates over 0.1-0.7
    or 0.2-1.0 the best mix was only 6-8 points above the default). The server also logs
    the ``arithmetic`` check at weight 0 (:data:`REASONING_RERANKERS`): whether a
    candidate's calculations hold and its answer follows from them; with it the best
    mix on tuning reaches 49 %.

On the capitals, the default setting is one where the ranking has something to learn: each request
plans its 4 candidates over a temperature ladder (0.3 to 1.2, 16 tokens), and the
server ranks with the log-probability and MBR consensus (chrF) at equal weights, a
plausible first guess of an operator (the vote is listed at weight 0, see
:data:`DEFAULT_RERANKERS`: the ranking before learning is that of the two). How far
learning can lead is bounded by what the logged scores and features can tell: on
696 Results of this set (116 countries x 6 seeds) the best linear mix of the
log-probability, MBR, the vote and the four features (10,000 directions tried) is
the log-probability alone, 65.8 % against 58.0 % for the default and 69.4 % for
the oracle; so about 8 points are there to win on average. With MBR alone before
learning (``--reranker mbr --reranker logprob=0 --reranker vote=0``: the ranking of
MBR decoding, the other two scored at weight 0) 12 are. With the server's own
default (``--reranker logprob``) the model is already as good a judge of its
candidates as those features can make it (README, "Performance"). Every run prints
each logged score's agreement alone on its held-out Results, for that reason.

The countries are split once (a fixed seed) into a training part and a held-out
part (the word problems: by their own splits, see above). The person asks a training
question (``POST /v1/nbest``, a new seed each time round) and picks (``POST /v1/choices``
with the Result's id): a candidate they accept when there is one (the first they read, in the order shown), else a random
one; with probability ``--noise`` a random one whatever the candidates say. Like the
choice page, the pick names the card's members (``group``: the candidates with the
same answer, from the Result's ``answers``).

Agreement is measured on the held-out questions with no choice logged: the share
of Results whose top candidate the person accepts. Each held-out question is asked
with the same seeds at every checkpoint, so the candidates are the same and only
the ranking differs. Checkpoints: before learning, then after 25, 50, 100 and 200
choices (``--choices``), each once the refit those choices made due has been applied
(``/v1/ranker`` reports no refit pending). The oracle is the share of held-out
Results with any accepted candidate: no ranker can do better. Generating the held-out
candidates again at each checkpoint moves them a little (seeded sampling on the CPU build
varies with the batch), so each checkpoint also re-ranks the *first* checkpoint's candidates
with the ranker ``/v1/ranker`` reports (column "same cands"): the ranking's change alone.

It prints the curve (agreement, the ranker version, its weights), saves a PNG
(``--png``), and ends with ``ratio: A`` = agreement after the last checkpoint /
agreement before learning (goal: after 100 choices at least 10 points above
before; 1.0 = learning changed nothing).

    python benchmarks/learning_curve.py [--data capitals|reasoning] [--choices 200] [--noise 0.1] [--n 4]
        [--max-tokens 16] [--strategy ladder:0.3-1.2] [--reranker logprob --reranker mbr --reranker vote=0]
        [--when-none random|skip] [--seed 0] [--png PATH] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from nbest.evaluation.matching import Matcher
from nbest.rerankers.registry import RankerConfig
from nbest.types import Request, Result

DATA = Path(__file__).resolve().parent / "data" / "capitals.tsv"
REASONING = Path(__file__).resolve().parent.parent / "examples" / "data" / "reasoning.jsonl"
CHECKPOINTS = (25, 50, 100, 200)
REASONING_STRATEGY = "ladder:0.3-0.7"
"""The word problems' candidates (8 of them): from cool (the likeliest worked solution) to warm (other
routes, more often wrong), chosen on the tuning split (``benchmarks/learning_replay.py``)."""
_MATCHER = Matcher("auto")
"""Numeric answers: the last number of the text, normalised, equals the gold one (``nbest eval``'s rule)."""
DEFAULT_STRATEGY = "ladder:0.3-1.2"
"""Candidates from cool (mostly right when the model knows) to hot (mostly not)."""
DEFAULT_RERANKERS = ("logprob", "mbr", "vote=0")
"""The server's ranker before learning: the log-probability and MBR consensus (chrF), equal weights,
and the vote at weight 0: it ranks nothing until learning raises it, but it clusters the
candidates by meaning, so the Result's answers (the page's cards) put "Paris." and "The capital
of France is Paris." on one card, and a pick says "this answer", not "this phrasing"."""
REASONING_RERANKERS = (*DEFAULT_RERANKERS, "arithmetic=0")
"""The word problems' ranker before learning: the same, plus the arithmetic check at weight 0 (whether
a candidate's written calculations hold, its answer follows from them, it uses the question's
numbers): logged with every candidate, so choices can teach its weight, while the ranking before
learning stays that of the log-probability and MBR."""


@dataclass(frozen=True)
class Item:
    """One labelled question: the prompt and the answers a person accepts."""

    prompt: str
    answers: tuple[str, ...]
    number: bool = False
    """The answers are numbers: a candidate is accepted when the number it ends on is one of
    them (nbest's own matching, as ``nbest eval`` and the vote read it), not when it names one."""
    split: str = ""
    """The labelled set's split this item belongs to (``tuning`` or ``heldout``; "" when it has none)."""


def load_capitals(path: Path = DATA) -> list[Item]:
    """The labelled set: one question per country line (``country<TAB>capital|alternative``)."""
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        country, capitals = line.split("\t")
        items.append(Item(f"What is the capital of {country}?", tuple(capitals.split("|"))))
    return items


def load_reasoning(path: Path = REASONING) -> list[Item]:
    """The word problems of ``examples/data/reasoning.jsonl``: each prompt (a worked example, then
    the question, ending in ``Solution:``) with its numeric answer and its split.

    Raises:
        ValueError: a line without a prompt, a numeric answer or a split (the line is named).
    """
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        answer = row.get("answer")
        if not isinstance(row.get("prompt"), str) or isinstance(answer, bool) or not isinstance(answer, (int, float)):
            raise ValueError(f"{path.name}:{number}: needs a text 'prompt' and a numeric 'answer'")
        if row.get("split") not in ("tuning", "heldout"):
            raise ValueError(f"{path.name}:{number}: 'split' must be tuning or heldout (got {row.get('split')!r})")
        items.append(Item(row["prompt"], (str(row["answer"]),), number=True, split=row["split"]))
    return items


def split_reasoning(items: Sequence[Item], heldout: int, seed: int = 0) -> tuple[list[Item], list[Item]]:
    """(training, held-out) of the word problems: the choices are made on the ``tuning`` split,
    ``heldout`` problems of the ``heldout`` split (drawn with ``seed``) measure; no prompt is on both sides.

    Raises:
        ValueError: more held-out problems asked for than the split has.
    """
    train = [i for i in items if i.split == "tuning"]
    pool = [i for i in items if i.split == "heldout"]
    if heldout > len(pool):
        raise ValueError(f"--heldout: at most {len(pool)} (the heldout split), got {heldout}")
    random.Random(seed).shuffle(pool)
    return train, pool[:heldout]


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


def accepts(item: Item, text: str) -> bool:
    """Whether the person accepts ``text``: it names one of the item's answers as whole words, or,
    for a numeric item, the number it ends on is the answer (:class:`nbest.evaluation.matching.Matcher`).

    >>> item = Item("What is the capital of Brazil?", ("Brasilia", "Brasília"))
    >>> accepts(item, "The capital of Brazil is Brasília."), accepts(item, "Brasilian cities")
    (True, False)
    >>> sum_item = Item("Ben has 4 pears and buys 3 more. How many?", ("7",), number=True)
    >>> accepts(sum_item, "4 + 3 = 7. The answer is 7."), accepts(sum_item, "7 pears, minus 2 eaten: 5.")
    (True, False)
    """
    if item.number:
        return _MATCHER.correct(text, item.answers)
    folded = _fold(text)
    return any(re.search(rf"\b{re.escape(_fold(answer))}\b", folded) for answer in item.answers)


def split(items: Sequence[Item], heldout: int, seed: int = 0) -> tuple[list[Item], list[Item]]:
    """(training, held-out): ``heldout`` items drawn with ``seed``, the rest for training."""
    order = list(items)
    random.Random(seed).shuffle(order)
    return order[heldout:], order[:heldout]


@dataclass(frozen=True)
class Dataset:
    """A labelled set the benchmark can run on, with the request settings that suit it."""

    load: Callable[[], list[Item]]
    split: Callable[[Sequence[Item], int, int], tuple[list[Item], list[Item]]]
    accepts: str
    """What the person accepts, in words (printed)."""
    strategy: str
    max_tokens: int
    heldout: int
    seeds: int
    stop: tuple[str, ...] = ()
    n: int = 4
    rerankers: tuple[str, ...] = DEFAULT_RERANKERS
    """The server's ranker when ``--reranker`` is not given."""


DATASETS: dict[str, Dataset] = {
    "capitals": Dataset(load_capitals, split, "naming the capital", DEFAULT_STRATEGY, 16, 40, 2),
    "reasoning": Dataset(
        load_reasoning,
        split_reasoning,
        "whose final number is the answer",
        REASONING_STRATEGY,
        80,
        60,
        1,
        ("Question:",),
        8,
        REASONING_RERANKERS,
    ),
}
"""``--data``: the capitals (short answers in words) and the word problems (a worked solution
ending in a number; the choices on the ``tuning`` split, measured on ``heldout``)."""


@dataclass
class Person:
    """Picks a candidate it accepts (the first in the order shown), else a random one;
    with probability ``noise`` a random one whatever the candidates say."""

    noise: float = 0.1
    seed: int = 0
    skip_none: bool = False
    """When no candidate is right, make no choice (instead of a random one)."""
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def choose(self, item: Item, result: dict[str, Any]) -> tuple[int, list[int]] | None:
        """(chosen candidate index, the members of its card) for one Result (its JSON);
        None when the person makes no choice (``skip_none`` and nothing right)."""
        shown = [c for c in result["candidates"] if c.get("error") is None]
        good = [c for c in shown if accepts(item, c["text"])]
        if not good and self.skip_none:
            return None
        keep = bool(good) and self.rng.random() >= self.noise
        chosen = good[0]["index"] if keep else self.rng.choice(shown)["index"]
        for answer in result.get("answers") or []:
            if chosen in answer["support"]:
                return chosen, sorted(answer["support"])
        return chosen, [chosen]


def top_accepted(item: Item, result: dict[str, Any]) -> bool:
    """The Result's top candidate is one the person accepts."""
    best = result.get("best")
    return best is not None and accepts(item, best["text"])


def top_by_score(result: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The candidate that score ``name`` alone puts first (ties: the lower index, as the Ranker
    breaks them); None when no candidate has that score."""
    scored = [c for c in result["candidates"] if c.get("error") is None and (c.get("scores") or {}).get(name) is not None]
    return min(scored, key=lambda c: (-c["scores"][name], c["index"])) if scored else None


def alone(jobs: Sequence[tuple[Item, int]], results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Agreement each logged score would reach alone on these Results: where reweighting can lead.

    >>> item = Item("What is the capital of France?", ("Paris",))
    >>> result = {"candidates": [{"index": 0, "text": "Lyon", "scores": {"a": 1.0, "b": 0.0}},
    ...                          {"index": 1, "text": "Paris", "scores": {"a": 0.0, "b": 2.0}}]}
    >>> alone([(item, 0)], [result])
    {'a': 0.0, 'b': 1.0}
    """
    names = sorted({k for r in results for c in r["candidates"] for k in (c.get("scores") or {})})
    out = {}
    for name in names:
        tops = [top_by_score(r, name) for r in results]
        out[name] = sum(t is not None and accepts(item, t["text"]) for (item, _), t in zip(jobs, tops, strict=True)) / len(jobs)
    return out


def any_accepted(item: Item, result: dict[str, Any]) -> bool:
    """Some candidate of the Result is one the person accepts (the oracle)."""
    return any(c.get("error") is None and accepts(item, c["text"]) for c in result["candidates"])


@dataclass
class Point:
    """One checkpoint of the curve."""

    choices: int
    agreement: float
    oracle: float
    version: int | None
    weights: list[dict[str, Any]]
    kept_out: int
    alone: dict[str, float] = field(default_factory=dict)
    """Agreement of each logged score alone on the same held-out Results."""
    fixed: float | None = None
    """Agreement of the server's current ranker on the *first* checkpoint's held-out candidates,
    re-ranked here with the config ``/v1/ranker`` reports: every checkpoint judged on the same
    candidates, so only the ranking differs (generating them again moves them a little: seeded
    sampling on the CPU build varies with the batch)."""


@dataclass
class Settings:
    """What every request asks for."""

    n: int = 4
    max_tokens: int = 16
    temperature: float = 1.0
    strategy: str | None = None
    """The strategy each request names (None: the server's, every candidate at ``temperature``)."""
    seeds: int = 2
    """Seeds each held-out question is asked with."""
    concurrency: int = 4
    stop: list[str] = field(default_factory=list)
    """Stop strings of every request (the word problems: ``Question:``, where the model would start another)."""


async def _nbest(client: httpx.AsyncClient, item: Item, seed: int, s: Settings) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": item.prompt, "n": s.n, "params": {"temperature": s.temperature, "max_tokens": s.max_tokens, "seed": seed},
    }  # fmt: skip
    if s.strategy:
        body["strategy"] = s.strategy
    if s.stop:
        body["params"]["stop"] = s.stop
    r = await client.post("/v1/nbest", json=body)
    r.raise_for_status()
    result: dict[str, Any] = r.json()
    return result


async def _gather(client: httpx.AsyncClient, jobs: Sequence[tuple[Item, int]], s: Settings) -> list[dict[str, Any]]:
    limit = asyncio.Semaphore(s.concurrency)

    async def one(item: Item, seed: int) -> dict[str, Any]:
        async with limit:
            return await _nbest(client, item, seed, s)

    return list(await asyncio.gather(*(one(item, seed) for item, seed in jobs)))


def heldout_jobs(heldout: Sequence[Item], s: Settings) -> list[tuple[Item, int]]:
    """(question, seed) of every held-out request: the same seeds at every checkpoint."""
    return [(item, 1_000_000 + 1_000 * i + 100 * k) for i, item in enumerate(heldout) for k in range(s.seeds)]


async def rerank_agreement(jobs: Sequence[tuple[Item, int]], results: Sequence[dict[str, Any]], config: dict[str, Any]) -> float:
    """Share of ``results`` (Result JSON) whose top candidate, re-ranked by the ranker ``config``
    (a RankerConfig as JSON, what ``/v1/ranker`` reports) builds, the person accepts."""
    ranker = RankerConfig.parse(config).to_ranker()
    hits = 0
    for (item, _), raw in zip(jobs, results, strict=True):
        result = Result.model_validate(raw)
        ok = [c for c in result.candidates if c.ok]
        ranked = await ranker.rank(Request(prompt=result.prompt, n=result.n), ok) if ok else None
        top = next((c for c in ranked.candidates if c.rank == 1), None) if ranked else None
        hits += top is not None and accepts(item, top.text)
    return hits / len(jobs)


async def measure(
    client: httpx.AsyncClient,
    heldout: Sequence[Item],
    s: Settings,
    choices: int,
    first: tuple[Sequence[tuple[Item, int]], Sequence[dict[str, Any]]] | None = None,
) -> tuple[Point, list[dict[str, Any]]]:
    """Agreement on the held-out questions now (nothing logged), and the Results it was measured on;
    with ``first`` (the first checkpoint's jobs and Results) also the current ranker's on those."""
    jobs = heldout_jobs(heldout, s)
    results = await _gather(client, jobs, s)
    hits = [top_accepted(item, r) for (item, _), r in zip(jobs, results, strict=True)]
    oracle = [any_accepted(item, r) for (item, _), r in zip(jobs, results, strict=True)]
    versions = {r.get("ranker_version") for r in results}
    ranker = (await client.get("/v1/ranker")).json()
    base_jobs, base_results = first if first is not None else (jobs, results)
    config = ranker.get("config")
    fixed = await rerank_agreement(base_jobs, base_results, config) if config else None
    point = Point(
        choices=choices,
        agreement=sum(hits) / len(hits),
        oracle=sum(oracle) / len(oracle),
        version=versions.pop() if len(versions) == 1 else None,
        weights=ranker.get("weights", []),
        kept_out=len(ranker.get("kept_out", [])),
        alone=alone(jobs, results),
        fixed=fixed,
    )
    return point, results


async def settled(client: httpx.AsyncClient, timeout: float = 120.0) -> None:
    """Wait until the server has no refit pending (the choices so far are learned from)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ranker = (await client.get("/v1/ranker")).json()
        if not ranker.get("learning") or ranker.get("next_refit_in", 0) > 0:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"a refit was still pending after {timeout:g} s")


async def run_curve(
    client: httpx.AsyncClient,
    train: Sequence[Item],
    heldout: Sequence[Item],
    person: Person,
    s: Settings,
    checkpoints: Sequence[int] = CHECKPOINTS,
    log: Any = print,
) -> list[Point]:
    """The person's choices through ``client`` (a learning server), with the held-out
    agreement before learning and at each checkpoint (a number of choices)."""
    point, results = await measure(client, heldout, s, 0)
    first = (heldout_jobs(heldout, s), results)
    points = [point]
    log(_row(points[-1]))
    made = asked = 0
    for target in sorted(checkpoints):
        while made < target:
            batch = min(s.concurrency, target - made)
            jobs = [(train[(asked + j) % len(train)], 7 + 1_000 * (asked + j)) for j in range(batch)]
            asked += batch
            if asked > 50 * target:
                raise RuntimeError(f"the person found a right candidate in too few of {asked} Results to make {target} choices")
            for (item, _), result in zip(jobs, await _gather(client, jobs, s), strict=True):
                picked = person.choose(item, result)
                if picked is None:
                    continue
                chosen, group = picked
                r = await client.post("/v1/choices", json={"result_id": result["id"], "chosen": chosen, "group": group})
                r.raise_for_status()
                made += 1
        await settled(client)
        points.append((await measure(client, heldout, s, made, first))[0])
        log(_row(points[-1]))
    return points


def _row(p: Point) -> str:
    version = "-" if p.version is None else str(p.version)
    fixed = "-" if p.fixed is None else f"{100 * p.fixed:.1f} %"
    return f"{p.choices:>7}  {100 * p.agreement:>8.1f} %  {fixed:>10}  {100 * p.oracle:>6.1f} %  {version:>7}  {p.kept_out:>8}"


def describe_weights(weights: Sequence[dict[str, Any]]) -> list[str]:
    return [f"  {w['name']:<22} {w['weight']:+.3f}  {w.get('meaning', '')}" for w in weights]


def save_png(points: Sequence[Point], path: Path, title: str) -> None:
    """The learning curve (agreement and the oracle against choices) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p.choices for p in points]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(xs, [100 * p.agreement for p in points], marker="o", label="learned ranker (top-1 accepted)")
    ax.axhline(100 * points[0].agreement, color="grey", linestyle=":", label="before learning")
    ax.plot(xs, [100 * p.oracle for p in points], color="green", linestyle="--", label="oracle (any accepted)")
    ax.set_xlabel("choices logged")
    ax.set_ylabel("held-out agreement (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def history(db: Path) -> str:
    """How many versions the refits saved, by status (``nbest prefs history`` in one line)."""
    from nbest.server.prefs import PreferenceStore

    with PreferenceStore(db) as store:
        statuses = Counter(v.status for v in store.versions())
    return ", ".join(f"{count} {status}" for status, count in sorted(statuses.items())) or "none"


def _cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--choices", type=int, default=200, help="choices the person makes (checkpoints 25, 50, 100, 200 up to it)")
    p.add_argument("--noise", type=float, default=0.1, help="probability that a choice is a random candidate")
    p.add_argument(
        "--when-none",
        choices=("random", "skip"),
        default="random",
        help="when no candidate is right, the person picks a random one or makes no choice",
    )
    p.add_argument("--n", type=int, default=None, help="candidates per request [capitals 4, reasoning 8]")
    p.add_argument(
        "--data",
        choices=tuple(DATASETS),
        default="capitals",
        help="labelled set: capitals (116 countries) or reasoning (word problems, examples/data/reasoning.jsonl)",
    )
    p.add_argument("--max-tokens", type=int, default=None, help="most new tokens per candidate [capitals 16, reasoning 80]")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (without a strategy that sets it)")
    p.add_argument(
        "--strategy",
        default=None,
        help=f"strategy of every request ('fixed': all at --temperature) [capitals {DEFAULT_STRATEGY}, "
        f"reasoning {REASONING_STRATEGY}]",
    )
    p.add_argument(
        "--reranker",
        action="append",
        default=None,
        help=f"the server's ranker (repeatable) [capitals: {' '.join(DEFAULT_RERANKERS)}; "
        f"reasoning: {' '.join(REASONING_RERANKERS)}]",
    )
    p.add_argument("--heldout", type=int, default=None, help="questions held out for measuring [capitals 40, reasoning 60]")
    p.add_argument("--seeds", type=int, default=None, help="seeds each held-out question is asked with [capitals 2, reasoning 1]")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    p.add_argument("--learn-every", type=int, default=5, help="nbest serve --learn-every")
    p.add_argument("--learn-min", type=int, default=20, help="nbest serve --learn-min")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of the person")
    p.add_argument(
        "--png", type=Path, default=Path(tempfile.gettempdir()) / "nbest-learning-curve.png", help="where the curve is saved"
    )
    p.add_argument("--quick", action="store_true", help="a small run: 30 choices, 12 held-out countries, one seed")
    args = p.parse_args(argv)
    if not 0 <= args.noise <= 1:
        p.error("--noise: a probability in [0, 1]")
    data = DATASETS[args.data]
    args.reranker = args.reranker or list(data.rerankers)
    args.n = data.n if args.n is None else args.n
    args.max_tokens = data.max_tokens if args.max_tokens is None else args.max_tokens
    args.strategy = data.strategy if args.strategy is None else args.strategy
    args.heldout = data.heldout if args.heldout is None else args.heldout
    args.seeds = data.seeds if args.seeds is None else args.seeds
    for name, value, low in (
        ("--n", args.n, 2),
        ("--max-tokens", args.max_tokens, 1),
        ("--heldout", args.heldout, 1),
        ("--seeds", args.seeds, 1),
    ):
        if value < low:
            p.error(f"{name}: a whole number >= {low}")
    if args.quick:
        args.choices, args.heldout, args.seeds = min(args.choices, 30), min(args.heldout, 12), 1
    try:
        train, _ = data.split(data.load(), args.heldout, args.seed)
    except ValueError as exc:
        p.error(str(exc))
    if not train:
        p.error(f"--heldout: {args.heldout} leaves no question to make choices on")
    return args


def checkpoints_for(total: int) -> list[int]:
    """The checkpoints up to ``total`` choices (``total`` itself is always one).

    >>> checkpoints_for(200), checkpoints_for(30), checkpoints_for(60)
    ([25, 50, 100, 200], [25, 30], [25, 50, 60])
    """
    return sorted({c for c in CHECKPOINTS if c < total} | {total})


async def _main(args: argparse.Namespace, base: str) -> list[Point]:
    data = DATASETS[args.data]
    items = data.load()
    train, heldout = data.split(items, args.heldout, args.seed)
    strategy = None if args.strategy == "fixed" else args.strategy
    s = Settings(args.n, args.max_tokens, args.temperature, strategy, args.seeds, args.concurrency, list(data.stop))
    print(f"labelled set: {len(items)} {args.data}, {len(train)} for choices, {len(heldout)} held out x {s.seeds} seeds")
    print(f"person: accepts a candidate {data.accepts}; noise {args.noise:g}; when none is right: {args.when_none}")
    plan = f"strategy {s.strategy}" if s.strategy else f"temperature {s.temperature:g}"
    stop = f", stop {s.stop}" if s.stop else ""
    print(f"requests: n={s.n}, {plan}, max_tokens {s.max_tokens}{stop}; server ranker: {' + '.join(args.reranker)}")
    print()
    print(
        f"{'choices':>7}  {'agreement':>10}  {'same cands':>10}  {'oracle':>8}  {'version':>7}  {'kept-out':>8}"
        "  (same cands: re-ranking the first checkpoint's candidates; kept-out: the last 3 at most)"
    )
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        person = Person(args.noise, args.seed, skip_none=args.when_none == "skip")
        points = await run_curve(client, train, heldout, person, s, checkpoints_for(args.choices))
        print()
        print("weights before learning:")
        print("\n".join(describe_weights(points[0].weights)))
        print(f"weights after {points[-1].choices} choices (version {points[-1].version}):")
        print("\n".join(describe_weights(points[-1].weights)))
        print("each score alone on the held-out Results (before learning / after the last checkpoint):")
        for name, value in points[0].alone.items():
            print(f"  {name:<22} {100 * value:5.1f} % / {100 * points[-1].alone.get(name, float('nan')):5.1f} %")
    return points


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"CPU: {_cpu()}")
    from load import nbest_server  # the benchmarks' one way to start `nbest serve` (this script's folder is on the path)

    extra = ["--learn", *(arg for name in args.reranker for arg in ("--reranker", name))]
    extra += ["--learn-every", str(args.learn_every), "--learn-min", str(args.learn_min), "--learn-interval", "0"]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nbest-learning-") as tmp, nbest_server(Path(tmp), extra) as (base, _):
        print(f"server ready after {time.monotonic() - started:.0f} s")
        points = asyncio.run(_main(args, base))
        print(f"versions saved: {history(Path(tmp) / 'preferences.db')}")
    plan = f"T={args.temperature:g}" if args.strategy == "fixed" else args.strategy
    title = f"{args.data}, n={args.n}, {plan}, ranker {' + '.join(args.reranker)}, noise {args.noise:g}"
    save_png(points, args.png, title)
    before = points[0].agreement
    print(f"curve saved to {args.png}; {time.monotonic() - started:.0f} s in all")
    at = {p.choices: p.agreement for p in points}
    if 100 in at:
        print(f"after 100 choices: {100 * (at[100] - before):+.1f} points (goal: +10)")
        fixed = {p.choices: p.fixed for p in points}
        if fixed.get(0) is not None and fixed.get(100) is not None:
            print(f"after 100 choices, on the same candidates: {100 * (fixed[100] - fixed[0]):+.1f} points")
    print(f"ratio: {points[-1].agreement / before:.3f}" if before > 0 else "ratio: nan")


if __name__ == "__main__":
    main()
