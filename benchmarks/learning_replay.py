"""How far can the ranking learn on a labelled set? Results collected once, then measured and replayed offline.

``benchmarks/learning_curve.py`` measures learning through a live ``nbest serve --learn``:
hours of generation on a CPU, and one draw of its held-out questions per run. Before a
set and a setting are worth that, this script answers two cheaper questions on Results
generated once through the orchestrator (the same strategy, rerankers and settings the
server would use):

``collect``
    generates the Results of a labelled set (``--data reasoning``: the word problems of
    ``examples/data/reasoning.jsonl``; ``capitals``) for one strategy and some seeds, ranked
    by the benchmark's default ranker (``logprob`` + ``mbr``, ``vote=0``), and appends
    them to a JSONL file (one line per Result: the item's id, split, seed and the Result).
``bounds``
    what the scores and features logged with each candidate can tell, per split: the
    default ranker's agreement with the simulated person (its top candidate accepted),
    each score or feature alone, the best linear mix of them (random directions, reranker
    weights >= 0, feature weights signed, searched in-sample: an upper bound for what a
    learner of those weights can reach) and the oracle (any candidate accepted). Learning
    has something to win only where the best mix is well above the default.
``replay``
    the benchmark's protocol with the real :class:`~nbest.server.learn.Learner` on a
    :class:`~nbest.server.prefs.PreferenceStore`: the simulated person of
    ``learning_curve.py`` picks on training Results (its choices logged as the server logs
    them, a refit when one is due), and the held-out Results are re-ranked by the
    learner's current ranker (:meth:`~nbest.rerankers.RankerConfig.to_ranker`) at each
    checkpoint. Training and held-out Results come from disjoint prompts (the set's own
    splits, or ``--folds`` random halves of one split).

    python benchmarks/learning_replay.py collect --split tuning --strategy ladder:0.2-1.0 --seed 7 --seed 1007 -o /tmp/r.jsonl
    python benchmarks/learning_replay.py bounds /tmp/r.jsonl [--reranker logprob --reranker arithmetic=0 ...]
    python benchmarks/learning_replay.py replay /tmp/r.jsonl [--folds 8] [--noise 0.1] [--png PATH]

``benchmarks/data/reasoning_tuning_n8_ladder0.3-0.7.jsonl.gz`` holds the 81 Results of the
word problems' ``tuning`` split the README's figures for ``--data reasoning`` were chosen on
(n = 8 over ``ladder:0.3-0.7``, 80 tokens, stop ``Question:``, seed 7): ``bounds`` and
``replay`` run on it without an engine.

``bounds`` and ``replay`` take ``--reranker`` (repeatable; default ``logprob mbr vote=0``):
the score columns of ``bounds`` and the ranker ``replay`` starts from. A score the stored
candidates lack (``arithmetic`` on a file collected before it existed) is computed once
per Result when the file is loaded (:func:`fill_scores`), so the columns and the logged
choices the Learner fits on carry it.

``replay`` ends with ``ratio: A`` = mean held-out agreement after the last checkpoint /
before learning.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning_curve import (
    CHECKPOINTS,
    DEFAULT_RERANKERS,
    Item,
    Person,
    accepts,
    any_accepted,
    load_capitals,
    load_reasoning,
)

from nbest.errors import ConfigError
from nbest.rerankers.cluster import question_text
from nbest.rerankers.features import feature_values
from nbest.rerankers.ranker import normalize
from nbest.rerankers.registry import RankerConfig, build_ranker, reranker_config
from nbest.server.fit import DEFAULT_FEATURES
from nbest.types import Request, Result

SCORES = ("mean_logprob", "mbr_chrf", "vote")
"""The logged scores of the default ranker, in the order the bounds list them (with other
``--reranker``s: :func:`score_names`)."""
STOP = {"reasoning": ["Question:"], "capitals": []}
"""Stop strings per set: a worked solution ends where the model starts a next question."""
MAX_TOKENS = {"reasoning": 80, "capitals": 16}


@dataclass
class Logged:
    """One collected Result with the item it answers."""

    item: Item
    key: str
    """The item's id (reasoning) or its prompt (capitals): Results of one item share it."""
    seed: int
    result: Result

    @property
    def json(self) -> dict[str, Any]:
        return self.result.model_dump(mode="json")


def items_of(data: str) -> dict[str, Item]:
    """The labelled set ``data`` by key (see :attr:`Logged.key`)."""
    if data == "reasoning":
        rows = [json.loads(line) for line in Path(__file__).resolve().parent.parent.joinpath(
            "examples", "data", "reasoning.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]  # fmt: skip
        return {row["id"]: item for row, item in zip(rows, load_reasoning(), strict=True)}
    if data == "capitals":
        return {item.prompt: item for item in load_capitals()}
    raise SystemExit(f"--data: {data!r}; use reasoning or capitals")


def load(path: Path, rerankers: Sequence[str] = ()) -> tuple[str, list[Logged]]:
    """The set's name and the Results of a ``collect`` file (gzipped when its name ends in ``.gz``),
    their candidates scored by each of ``rerankers`` whose score they lack (:func:`fill_scores`)."""
    text = gzip.decompress(path.read_bytes()).decode("utf-8") if path.suffix == ".gz" else path.read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not rows:
        raise SystemExit(f"{path}: no Results")
    data = rows[0]["data"]
    items = items_of(data)
    logged = [Logged(items[r["key"]], r["key"], r["seed"], Result.model_validate(r["result"])) for r in rows]
    if rerankers:
        asyncio.run(fill_scores(logged, rerankers))
    return data, logged


def score_names(rerankers: Sequence[str]) -> tuple[str, ...]:
    """The score each reranker short form logs (``mbr`` -> ``mbr_chrf``), in order: the
    score columns of :func:`table` and :func:`bounds`.

    Raises:
        SystemExit: a short form that is not a reranker (the registry's message).
    """
    try:
        return tuple(reranker_config(spec).reranker_name() for spec in rerankers)
    except ConfigError as exc:
        raise SystemExit(f"--reranker: {exc}") from None


async def fill_scores(pool: Sequence[Logged], rerankers: Sequence[str]) -> int:
    """Score the stored candidates with each of ``rerankers`` whose score they lack
    (a file collected before a reranker existed), once per Result through the reranker's
    own ``score``, so :func:`table`'s columns and the Learner's logged choices carry it.
    Returns how many Results gained a score.

    Raises:
        SystemExit: a short form that is not a reranker.
    """
    try:
        built = build_ranker(list(rerankers)).rerankers
    except ConfigError as exc:
        raise SystemExit(f"--reranker: {exc}") from None
    filled = 0
    for x in pool:
        ok = [c for c in x.result.candidates if c.ok]
        request = Request(prompt=x.result.prompt, n=x.result.n)
        missing = [r for r in built if ok and any(r.name not in c.scores for c in ok)]
        for reranker in missing:
            for c, score in zip(ok, await reranker.score(request, ok), strict=True):
                c.scores[reranker.name] = score.value
        filled += bool(missing)
    return filled


# -- collect ---------------------------------------------------------------------------


async def _collect(args: argparse.Namespace) -> None:
    from nbest import Orchestrator, VLLMEngine, strategies

    items = items_of(args.data)
    keys = [k for k, item in items.items() if args.split in ("all", item.split or "all")]
    if args.limit:
        keys = keys[: args.limit]
    ranker = build_ranker(list(args.reranker))
    strategy = strategies.parse_spec(args.strategy)
    async with Orchestrator(VLLMEngine.default()) as orch:
        for seed in args.seed:
            started = time.monotonic()
            results = await orch.generate_many(
                [items[k].prompt for k in keys], n=args.n, strategy=strategy, rerankers=ranker,
                max_tokens=args.max_tokens or MAX_TOKENS[args.data], temperature=args.temperature,
                stop=STOP[args.data] or None, seed=seed, concurrency=8,
            )  # fmt: skip
            with args.output.open("a", encoding="utf-8") as out:
                for key, result in zip(keys, results, strict=True):
                    row = {
                        "data": args.data,
                        "key": key,
                        "split": items[key].split,
                        "seed": seed,
                        "strategy": args.strategy,
                        "n": args.n,
                    }
                    out.write(json.dumps({**row, "result": result.model_dump(mode="json")}) + "\n")
            print(f"seed {seed}: {len(keys)} Results in {time.monotonic() - started:.0f} s", flush=True)


# -- bounds ----------------------------------------------------------------------------


@dataclass
class Table:
    """One Result's z-normalised columns (scores, then features) and who is accepted."""

    z: np.ndarray  # candidates x columns
    indices: list[int]
    good: np.ndarray  # bool per candidate


def table(logged: Logged, features: Sequence[str] = DEFAULT_FEATURES, scores: Sequence[str] = SCORES) -> Table | None:
    """The columns the learner sees (as :mod:`nbest.server.fit` builds them): the logged
    ``scores`` (a missing one is the worst), then ``features``; None with < 2 candidates."""
    ok = [c for c in logged.result.candidates if c.ok]
    if len(ok) < 2:
        return None
    question = question_text(logged.result.prompt)
    columns = [normalize([c.scores.get(name) for c in ok], "zscore") for name in scores]
    columns += [normalize(list(feature_values(f, ok, question)), "zscore") for f in features]
    z = np.array([[col[i] for col in columns] for i in range(len(ok))], dtype=float)
    return Table(z, [c.index for c in ok], np.array([accepts(logged.item, c.text) for c in ok]))


def mix_agreement(tables: Sequence[Table], w: np.ndarray) -> float:
    """Share of Results whose top candidate under weights ``w`` is accepted (ties: the lower index)."""
    hits = 0
    for t in tables:
        s = t.z @ w
        top = min(range(len(s)), key=lambda i: (-s[i], t.indices[i]))
        hits += bool(t.good[top])
    return hits / len(tables) if tables else 0.0


def bounds(pool: Sequence[Logged], directions: int = 10_000, seed: int = 0, scores: Sequence[str] = SCORES) -> dict[str, Any]:
    """Default, each column alone (+ and −), best random mix, oracle: shares of ``pool``.
    The score columns are ``scores`` (the names of the ``--reranker``s, :func:`score_names`)."""
    tables = [t for t in (table(x, scores=scores) for x in pool) if t is not None]
    names = [*scores, *(f"feature:{f}" for f in DEFAULT_FEATURES)]
    k = len(names)
    out: dict[str, Any] = {
        "results": len(pool),
        "default": sum(x.result.best is not None and accepts(x.item, x.result.best.text) for x in pool) / len(pool),
        "oracle": sum(any_accepted(x.item, x.json) for x in pool) / len(pool),
    }
    alone = {}
    for j, name in enumerate(names):
        for sign in (1.0, -1.0) if name.startswith("feature:") else (1.0,):
            w = np.zeros(k)
            w[j] = sign
            alone[("-" if sign < 0 else "") + name] = mix_agreement(tables, w) * len(tables) / len(pool)
    out["alone"] = alone
    rng = np.random.default_rng(seed)
    best, best_w = -1.0, np.zeros(k)
    for _ in range(directions):
        w = rng.normal(size=k)
        w[: len(scores)] = np.abs(w[: len(scores)])
        value = mix_agreement(tables, w)
        if value > best:
            best, best_w = value, w
    out["best_mix"] = best * len(tables) / len(pool)
    out["best_weights"] = {n: round(float(v / np.abs(best_w).sum()), 3) for n, v in zip(names, best_w, strict=True)}
    return out


# -- replay ----------------------------------------------------------------------------


async def _top_accepted(pool: Sequence[Logged], config: RankerConfig) -> float:
    """Held-out agreement of the ranker ``config`` builds, re-ranking the logged candidates."""
    ranker = config.to_ranker()
    hits = 0
    for x in pool:
        request = Request(prompt=x.result.prompt, n=x.result.n)
        ranked = await ranker.rank(request, [c for c in x.result.candidates if c.ok])
        top = next((c for c in ranked.candidates if c.rank == 1), None)
        hits += top is not None and accepts(x.item, top.text)
    return hits / len(pool)


async def replay_once(
    train: Sequence[Logged],
    heldout: Sequence[Logged],
    person: Person,
    checkpoints: Sequence[int],
    rerankers: Sequence[str] = DEFAULT_RERANKERS,
    every: int = 5,
    min_choices: int = 20,
    seed: int = 0,
) -> list[tuple[int, float]]:
    """(choices, held-out agreement) before learning and at each checkpoint: the person
    picks on ``train`` (in order, round and round), each choice logged and a refit made
    when due, as the learning server does."""
    from nbest.server.learn import Learner
    from nbest.server.prefs import PreferenceStore

    base = RankerConfig(rerankers=list(rerankers))
    with tempfile.TemporaryDirectory(prefix="nbest-replay-") as tmp, PreferenceStore(Path(tmp) / "p.db") as store:
        learner = Learner(store, base, min_choices=min_choices, every=every, seed=seed)
        curve = [(0, await _top_accepted(heldout, base))]
        made = asked = 0
        for target in sorted(checkpoints):
            while made < target:
                if asked > 50 * target:
                    raise RuntimeError(f"too few Results with a right candidate to make {target} choices")
                x = train[asked % len(train)]
                asked += 1
                picked = person.choose(x.item, x.json)
                if picked is None:
                    continue
                chosen, group = picked
                store.record(x.result, chosen=chosen, group=group)
                made += 1
                if learner.due():
                    learner.refit()
            curve.append((made, await _top_accepted(heldout, learner.current()[1])))
    return curve


def folds(pool: Sequence[Logged], count: int, heldout: int | None, seed: int) -> list[tuple[list[Logged], list[Logged]]]:
    """(training, held-out) Results per fold, split by item so no prompt is on both sides:
    the set's splits when the pool has both (``heldout``: how many held-out items), else
    random halves of the pool's items."""
    keys = sorted({x.key for x in pool})
    splits = {x.item.split for x in pool}
    out = []
    for f in range(count):
        rng = random.Random(seed + f)
        if {"tuning", "heldout"} <= splits:
            held_keys = sorted({x.key for x in pool if x.item.split == "heldout"})
            rng.shuffle(held_keys)
            held = set(held_keys[: heldout or len(held_keys)])
            train_keys = {x.key for x in pool if x.item.split == "tuning"}
        else:
            order = keys[:]
            rng.shuffle(order)
            held = set(order[: heldout or len(order) // 2])
            train_keys = set(order) - held
        train = [x for x in pool if x.key in train_keys]
        rng.shuffle(train)
        out.append((train, [x for x in pool if x.key in held]))
    return out


# -- command line ---------------------------------------------------------------------


def _pct(v: float) -> str:
    return f"{100 * v:5.1f} %"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="generate and save Results")
    c.add_argument("--data", default="reasoning", choices=("reasoning", "capitals"))
    c.add_argument("--split", default="all", choices=("all", "tuning", "heldout"))
    c.add_argument("--strategy", default="ladder:0.2-1.0")
    c.add_argument("--n", type=int, default=4)
    c.add_argument("--temperature", type=float, default=1.0, help="the base temperature (the 'fixed' strategy's)")
    c.add_argument("--max-tokens", type=int, default=0, help="0: the set's default (reasoning 80, capitals 16)")
    c.add_argument("--seed", type=int, action="append", help="request seed (repeatable) [default: 7]")
    c.add_argument("--limit", type=int, default=0, help="the first N items only")
    c.add_argument("--reranker", action="append", help=f"[default: {' '.join(DEFAULT_RERANKERS)}]")
    c.add_argument("-o", "--output", type=Path, required=True)
    b = sub.add_parser("bounds", help="default, each score alone, best mix, oracle")
    b.add_argument("files", type=Path, nargs="+")
    b.add_argument("--directions", type=int, default=10_000)
    b.add_argument(
        "--reranker",
        action="append",
        help="a score column (repeatable; a score the stored candidates lack is computed) "
        f"[default: {' '.join(DEFAULT_RERANKERS)}]",
    )
    r = sub.add_parser("replay", help="the learning curve with the real Learner on saved Results")
    r.add_argument("files", type=Path, nargs="+")
    r.add_argument("--folds", type=int, default=8)
    r.add_argument("--heldout", type=int, default=0, help="held-out items per fold (0: all of the split, or half)")
    r.add_argument("--noise", type=float, default=0.1)
    r.add_argument("--when-none", choices=("random", "skip"), default="random")
    r.add_argument(
        "--reranker",
        action="append",
        help="the ranker before learning (repeatable; a score the stored candidates lack is computed) "
        f"[default: {' '.join(DEFAULT_RERANKERS)}]",
    )
    r.add_argument("--choices", type=int, default=200)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--png", type=Path, default=None)
    args = p.parse_args(argv)
    if args.command == "collect":
        args.seed = args.seed or [7]
        args.reranker = args.reranker or list(DEFAULT_RERANKERS)
        asyncio.run(_collect(args))
        return
    rerankers = args.reranker or list(DEFAULT_RERANKERS)
    scores = score_names(rerankers)
    pools = [load(f, rerankers) for f in args.files]
    data = pools[0][0]
    pool = [x for _, logged in pools for x in logged]
    if args.command == "bounds":
        by_split: dict[str, list[Logged]] = {}
        for x in pool:
            by_split.setdefault(x.item.split or "all", []).append(x)
        if len(by_split) > 1:
            by_split["all"] = pool
        for name, part in by_split.items():
            found = bounds(part, args.directions, scores=scores)
            print(f"{data} {name}: {found['results']} Results")
            print(f"  default {_pct(found['default'])}   best mix {_pct(found['best_mix'])}   oracle {_pct(found['oracle'])}")
            print("  alone: " + ", ".join(f"{k} {_pct(v)}" for k, v in found["alone"].items()))
            print(f"  best mix weights: {found['best_weights']}")
        return
    if not 0 <= args.noise <= 1:
        p.error("--noise: a probability in [0, 1]")
    checkpoints = [c for c in CHECKPOINTS if c <= args.choices]
    curves = []
    for f, (train, held) in enumerate(folds(pool, args.folds, args.heldout or None, args.seed)):
        person = Person(args.noise, args.seed + f, skip_none=args.when_none == "skip")
        curve = asyncio.run(replay_once(train, held, person, checkpoints, rerankers, seed=args.seed + f))
        oracle = sum(any_accepted(x.item, x.json) for x in held) / len(held)
        line = " / ".join(_pct(a) for _, a in curve)
        print(f"fold {f}: {line}   (oracle {_pct(oracle)}, {len(held)} held out)", flush=True)
        curves.append(curve)
    mean = [(curves[0][i][0], float(np.mean([cv[i][1] for cv in curves]))) for i in range(len(curves[0]))]
    print("mean:   " + " / ".join(_pct(a) for _, a in mean) + "   at " + ", ".join(str(c) for c, _ in mean) + " choices")
    at = dict(mean)
    if 100 in at:
        gains = [dict(cv)[100] - cv[0][1] for cv in curves]
        spread = f"folds {100 * min(gains):+.1f} to {100 * max(gains):+.1f}"
        print(f"after 100 choices: {100 * (at[100] - mean[0][1]):+.1f} points ({spread})")
    if args.png:
        from learning_curve import Point, save_png

        points = [Point(c, a, 0.0, None, [], 0) for c, a in mean]
        save_png(points, args.png, f"{data} replay, {len(curves)} folds, ranker {' + '.join(rerankers)}")
    print(f"ratio: {mean[-1][1] / mean[0][1]:.3f}" if mean[0][1] > 0 else "ratio: nan")


if __name__ == "__main__":
    main()
