"""``benchmarks/learning_curve.py``: its simulated person, split and curve, on a learning app
over a scripted engine (the benchmark itself runs ``nbest serve --learn`` on the real model)."""

from __future__ import annotations

import doctest
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from nbest import Orchestrator
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
    tokens = next(w for w in points[-1].weights if w["name"] == "feature:tokens")
    assert tokens["weight"] < 0 and "shorter" in tokens["meaning"]
    assert "current" in lc.history(tmp_path / "prefs.db")
    png = tmp_path / "curve.png"
    lc.save_png(points, png, "scripted")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
