"""``benchmarks/learning_curve.py``: its simulated person, split and curve, on a learning app
over a scripted engine (the benchmark itself runs ``nbest serve --learn`` on the real model)."""

from __future__ import annotations

import asyncio
import doctest
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from nbest import Orchestrator, strategies
from nbest.rerankers.registry import build_ranker
from nbest.server import PreferenceStore, ServerSettings, create_app
from nbest.types import Prompt, SamplingParams
from tests.scripted import ScriptedEngine, Step

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("learning_curve", ROOT / "benchmarks" / "learning_curve.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["learning_curve"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


lc = _bench()


def test_docstring_examples() -> None:
    outcome = doctest.testmod(lc)
    assert outcome.failed == 0 and outcome.attempted >= 3


def test_labelled_set_and_split() -> None:
    items = lc.load_capitals()
    assert len(items) >= 100 and len({i.prompt for i in items}) == len(items)
    train, heldout = lc.split(items, 40, seed=0)
    assert len(heldout) == 40 and not {i.prompt for i in train} & {i.prompt for i in heldout}
    assert lc.split(items, 40, seed=0) == (train, heldout)
    canberra = next(i for i in items if "Australia" in i.prompt)
    assert lc.accepts(canberra, "It is Canberra.") and not lc.accepts(canberra, "Sydney")


def _result(texts: list[str]) -> dict[str, Any]:
    candidates = [{"index": i, "text": t, "error": None} for i, t in enumerate(texts)]
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault(t, []).append(i)
    return {"candidates": candidates, "answers": [{"answer": t, "support": s} for t, s in groups.items()]}


def test_person_picks_an_accepted_candidate_and_its_card() -> None:
    item = lc.Item("What is the capital of France?", ("Paris",))
    result = _result(["Lyon", "Paris", "Paris", "Nice"])
    assert lc.Person(noise=0.0).choose(item, result) == (1, [1, 2])
    picks = [lc.Person(noise=0.0, seed=s).choose(item, _result(["Lyon", "Nice"])) for s in range(20)]
    assert {p[0] for p in picks if p is not None} == {0, 1} and None not in picks  # nothing acceptable: a random one
    assert lc.Person(noise=0.0, skip_none=True).choose(item, _result(["Lyon", "Nice"])) is None  # or no choice
    assert lc.Person(noise=1.0, skip_none=True).choose(item, result) is not None
    noisy = lc.Person(noise=1.0, seed=3)
    assert {p[0] for _ in range(40) if (p := noisy.choose(item, result)) is not None} == {0, 1, 2, 3}


def _capital(items: list[Any]) -> dict[str, str]:
    return {item.prompt: item.answers[0] for item in items}


@pytest.mark.asyncio(loop_scope="session")
async def test_curve_rises_when_the_features_carry_the_persons_taste(scripted: ScriptedEngine, tmp_path: Path) -> None:
    """One candidate in four names the capital in a short answer; the others ramble about a
    wrong city with likelier tokens: the log-probability ranks a wrong one first, and the
    person's choices teach the ranker to prefer short answers."""
    items = lc.load_capitals()[:30]
    capital = _capital(items)

    def respond(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        text = prompt if isinstance(prompt, str) else prompt[-1].content
        if (params.seed or 0) % 4 == 0:
            return Step(f"{capital[str(text)]}.", mean_logprob=-1.5, tokens=3)
        return Step("It is a big city called Springfield, I think", mean_logprob=-0.4, tokens=12)

    scripted.respond = respond
    settings = ServerSettings(max_n=8, learn=True, learn_min=10, learn_every=5, learn_interval_s=0, learn_gap_s=0)
    train, heldout = lc.split(items, 10, seed=0)
    async with Orchestrator(scripted, max_n=8) as orch:
        app = create_app(orch, settings, prefs=PreferenceStore(tmp_path / "prefs.db"))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://nbest.test", timeout=30) as client,
        ):
            lines: list[str] = []
            points = await lc.run_curve(
                client, train, heldout, lc.Person(noise=0.0), lc.Settings(n=4, seeds=1), checkpoints=[10, 20], log=lines.append
            )
    assert [p.choices for p in points] == [0, 10, 20] and len(lines) == 3
    assert points[0].agreement == 0.0 and points[0].version == 0
    assert points[-1].agreement == 1.0 and points[-1].version and points[-1].version >= 1
    assert all(p.oracle == 1.0 for p in points)
    # the same first candidates re-ranked with each checkpoint's config from /v1/ranker agree with the served figure
    assert [p.fixed for p in points] == [p.agreement for p in points] == [0.0, points[1].agreement, 1.0]
    tokens = next(w for w in points[-1].weights if w["name"] == "feature:tokens")
    assert tokens["weight"] < 0 and "shorter" in tokens["meaning"]
    assert "current" in lc.history(tmp_path / "prefs.db")
    png = tmp_path / "curve.png"
    lc.save_png(points, png, "scripted")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_word_problems_split_by_their_own_splits() -> None:
    items = lc.load_reasoning()
    assert len(items) == 200 and all(i.number and len(i.answers) == 1 for i in items)
    train, heldout = lc.split_reasoning(items, 60, seed=0)
    assert {i.split for i in train} == {"tuning"} and {i.split for i in heldout} == {"heldout"}
    assert len(train) == sum(i.split == "tuning" for i in items) and len(heldout) == 60
    assert not {i.prompt for i in train} & {i.prompt for i in heldout}
    assert lc.split_reasoning(items, 60, seed=0) == (train, heldout) != lc.split_reasoning(items, 60, seed=1)
    with pytest.raises(ValueError, match="--heldout: at most 119"):
        lc.split_reasoning(items, 500)


def test_reasoning_rejects_a_line_without_a_numeric_answer(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Q", "answer": "ten", "split": "tuning"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: needs a text 'prompt' and a numeric 'answer'"):
        lc.load_reasoning(bad)
    bad.write_text('{"prompt": "Q", "answer": 10, "split": "train"}\n')
    with pytest.raises(ValueError, match="'split' must be tuning or heldout"):
        lc.load_reasoning(bad)


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ("Mia starts with 6. She bakes 6 more, so 6 + 6 = 12. She eats 2, so 12 - 2 = 10. The answer is 10.", True),
        ("6 + 6 = 12. The answer is 10.\n\nNow solve this one the same way.\n", True),  # trailing text without a number
        ("The answer is 10.0", True),  # normalised as nbest eval and the vote read numbers
        ("6 + 6 = 12, 12 - 2 = 10. So she has 10, then 10 - 2 = 8.", False),  # the number it ends on is the answer
        ("The answer is 100.", False),
        ("She has ten cookies.", False),  # no number to read
    ],
)
def test_word_problem_acceptance_reads_the_final_number(text: str, accepted: bool) -> None:
    item = lc.Item("Mia has 6 cookies. She bakes 6 more, then eats 2. How many?", ("10",), number=True)
    assert lc.accepts(item, text) is accepted


def test_data_defaults_follow_the_set() -> None:
    reasoning = lc.parse_args(["--data", "reasoning"])
    assert (reasoning.n, reasoning.max_tokens, reasoning.heldout, reasoning.seeds) == (8, 80, 60, 1)
    assert reasoning.strategy == lc.REASONING_STRATEGY and lc.DATASETS["reasoning"].stop == ("Question:",)
    capitals = lc.parse_args([])
    assert (capitals.data, capitals.n, capitals.max_tokens, capitals.heldout, capitals.seeds, capitals.strategy) == (
        "capitals", 4, 16, 40, 2, lc.DEFAULT_STRATEGY,
    )  # fmt: skip
    assert lc.parse_args(["--data", "reasoning", "--max-tokens", "40"]).max_tokens == 40
    for bad in (
        ["--heldout", "0"],
        ["--n", "1"],
        ["--data", "poems"],
        ["--heldout", "116"],
        ["--data", "reasoning", "--heldout", "120"],
    ):
        with pytest.raises(SystemExit):
            lc.parse_args(bad)


def _replay_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("learning_replay", ROOT / "benchmarks" / "learning_replay.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["learning_replay"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.asyncio(loop_scope="session")
async def test_replay_learns_the_vote_on_word_problems(scripted: ScriptedEngine) -> None:
    """Two candidates in four reach the right number in different words, at low log-probability;
    two wrong ones are near copies of each other (MBR's favourites) and likelier: the default
    ranker (log-probability + MBR) never puts a right one first, the vote always would, and the
    real Learner, fed the person's choices, finds it."""
    lr = _replay_module()
    items = lc.load_reasoning()[:40]
    gold = {item.prompt: int(item.answers[0]) for item in items}

    def respond(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        answer = gold[str(prompt if isinstance(prompt, str) else prompt[-1].content)]
        k = (params.seed or 0) % 4
        if k == 0:
            return Step(f" Adding and taking away gives {answer}. The answer is {answer}.", mean_logprob=-1.6, tokens=14)
        if k == 1:
            return Step(f" So {answer}. The answer is {answer}.", mean_logprob=-1.4, tokens=9)
        wrong = answer + k
        return Step(f" She starts with the cookies and gets more cookies, so {wrong}. The answer is {wrong}.", mean_logprob=-0.3)

    scripted.respond = respond
    async with Orchestrator(scripted, max_n=8) as orch:
        results = await orch.generate_many(
            [item.prompt for item in items], n=4, strategy=strategies.parse_spec("ladder:0.2-1.0"),
            rerankers=build_ranker(list(lc.DEFAULT_RERANKERS)), seed=0,
        )  # fmt: skip
    pool = [lr.Logged(item, str(i), 0, result) for i, (item, result) in enumerate(zip(items, results, strict=True))]
    found = lr.bounds(pool, directions=200)
    assert (found["default"], found["oracle"], found["alone"]["vote"], found["best_mix"]) == (0.0, 1.0, 1.0, 1.0)
    assert found["alone"]["mean_logprob"] == 0.0
    train, heldout = pool[:30], pool[30:]
    curve = await lr.replay_once(train, heldout, lc.Person(noise=0.0), [20, 40], every=5, min_choices=10)
    assert [c for c, _ in curve] == [0, 20, 40]
    assert curve[0][1] == 0.0 and curve[-1][1] == 1.0
    (fold_train, fold_held), *_ = lr.folds(pool, 2, None, seed=0)
    assert {x.item.split for x in fold_held} == {"heldout"} and {x.item.split for x in fold_train} == {"tuning"}
    assert len(fold_held) + len(fold_train) == len(pool)


def test_the_stored_word_problem_results_load_and_bound() -> None:
    """The Results the README's word-problem setting was chosen on, replayable without an engine."""
    lr = _replay_module()
    data, pool = lr.load(ROOT / "benchmarks" / "data" / "reasoning_tuning_n8_ladder0.3-0.7.jsonl.gz")
    assert data == "reasoning" and len(pool) == 81 and {x.item.split for x in pool} == {"tuning"}
    assert all(x.result.n == 8 for x in pool)
    found = lr.bounds(pool, directions=20)
    assert found["default"] <= found["alone"]["mean_logprob"] <= found["oracle"]
    assert round(found["default"], 3) == 0.321 and round(found["oracle"], 3) == 0.642


def test_replay_scores_stored_results_that_lack_the_check() -> None:
    """The stored word-problem Results predate the arithmetic check: the loader scores them, and the
    bounds list it as a column (alone it picks a right answer more often than the default ranker)."""
    lr = _replay_module()
    rerankers = ["logprob", "arithmetic=0"]
    _, pool = lr.load(ROOT / "benchmarks" / "data" / "reasoning_tuning_n8_ladder0.3-0.7.jsonl.gz", rerankers)
    assert all("arithmetic" in c.scores for x in pool for c in x.result.candidates if c.ok)
    assert lr.score_names(rerankers) == ("mean_logprob", "arithmetic")
    found = lr.bounds(pool, directions=20, scores=lr.score_names(rerankers))
    assert set(found["alone"]) >= {"mean_logprob", "arithmetic"} and "vote" not in found["alone"]
    assert found["alone"]["arithmetic"] > found["default"]
    assert asyncio.run(lr.fill_scores(pool, rerankers)) == 0  # nothing left to fill
