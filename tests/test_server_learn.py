"""Learning while serving (``ServerSettings(learn=True)``, ``nbest serve --learn``): refits
after K choices and on the timer, hot swaps under concurrent requests, the guardrail, undo,
scoped fallback, client rerankers, the flags. Scripted engine, a real SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbest import Orchestrator
from nbest.cli import main
from nbest.rerankers import RankerConfig
from nbest.rerankers.ranker import normalize
from nbest.server import PreferenceStore, ServerSettings, create_app
from nbest.server.learn import Learner
from nbest.server.prefs import StorageError
from tests.batch_engines import seed_answers
from tests.scripted import ScriptedEngine, Step
from tests.serving import by_index, running

ROOT = Path(__file__).resolve().parent.parent

on_loop = pytest.mark.asyncio(loop_scope="session")

BASE = RankerConfig(rerankers=["vote=0.2", "logprob"])
"""The server's ranker: the log-probability outweighs the vote, so the lone "B" ranks first."""

STEPS = by_index({0: Step("B", mean_logprob=-0.2)}, Step("A", mean_logprob=-1.5))
"""Candidate 0 says "B" (likely tokens); the others say "A" (the majority)."""


def learn_settings(**given: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "max_n": 8, "learn": True, "learn_min": 4, "learn_every": 2, "learn_interval_s": 0, "learn_gap_s": 0,
    }  # fmt: skip
    return ServerSettings(**{**values, **given})


@contextlib.asynccontextmanager
async def learning(engine: ScriptedEngine, db: Path, settings: ServerSettings | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The app on an open orchestrator with its lifespan running (the refit loop), and a client."""
    engine.respond = STEPS
    async with Orchestrator(engine, max_n=32, rerankers=BASE.to_ranker()) as orch:
        app = create_app(orch, settings or learn_settings(), prefs=PreferenceStore(db))
        transport = httpx.ASGITransport(app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://nbest.test", timeout=30) as c,
        ):
            c.app = app  # type: ignore[attr-defined]
            yield c


async def ask(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/nbest", json={"prompt": "pick", "n": 4, **body})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def choose_a(client: httpx.AsyncClient, result: dict[str, Any], **body: Any) -> dict[str, Any]:
    """The person picks an "A" (the majority), shown as one card with the other "A"s."""
    group = sorted(c["index"] for c in result["candidates"] if c["text"] == "A")
    r = await client.post("/v1/choices", json={"result_id": result["id"], "chosen": group[0], "group": group, **body})
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def check_ranked_by(result: dict[str, Any], config: RankerConfig) -> None:
    """The Result records ``config`` and its scores are that config's: no half-built ranker."""
    assert RankerConfig.parse(result["ranker"]) == config
    ok = [c for c in result["candidates"] if c["error"] is None]
    combined = [0.0] * len(ok)
    for rc in config.rerankers:
        for i, value in enumerate(normalize([c["scores"][rc.reranker_name()] for c in ok], config.normalize)):
            combined[i] += rc.weight * value
    assert [c["score"] for c in ok] == pytest.approx(combined, abs=1e-9)
    assert [c["rank"] for c in ok] == list(range(1, len(ok) + 1))
    assert all(a["score"] >= b["score"] for a, b in itertools.pairwise(ok))


def config_of(db: Path, version: int) -> RankerConfig:
    if version == 0:
        return BASE
    with PreferenceStore(db) as store:
        saved = next(v for v in store.versions() if v.version == version)
    return RankerConfig.parse(saved.config)


@on_loop
async def test_refit_after_every_k_choices_changes_the_next_ranking(scripted: ScriptedEngine, tmp_path: Path) -> None:
    db = tmp_path / "prefs.db"
    async with learning(scripted, db) as client:
        first = await ask(client)
        assert first["ranker_version"] == 0 and first["best"]["text"] == "B"
        check_ranked_by(first, BASE)
        replies = [await choose_a(client, first)]
        for _ in range(3):
            replies.append(await choose_a(client, await ask(client)))
        before = [r["learning"] for r in replies[:3]]
        assert [b["updated"] for b in before] == [False] * 3 and {b["version"] for b in before} == {0}
        assert [b["next_refit_in"] for b in before] == [3, 2, 1]
        assert all(b["message"] is None for b in before)
        done = replies[3]["learning"]
        assert done["updated"] is True and done["version"] >= 1, done
        assert done["message"].startswith("ranking updated:") and "from 4 choices" in done["message"]
        assert done["choices"] == 4 and done["next_refit_in"] == 2

        after = await ask(client)
        assert after["ranker_version"] == done["version"]
        assert after["best"]["text"] == "A"  # the choices changed the order
        check_ranked_by(after, config_of(db, done["version"]))

        shown = (await client.get("/v1/ranker")).json()
        assert shown["learning"] is True and shown["version"] == done["version"] and shown["choices"] == 4
        assert shown["agreement"] is not None and shown["next_refit_in"] == 2
        names = {w["name"] for w in shown["weights"]}
        assert {"vote", "mean_logprob"} <= names and all(w["meaning"] for w in shown["weights"])

    with PreferenceStore(db) as store:  # the group was logged with the choice
        assert [c.group for c in store][-1] == [1, 2, 3]


@on_loop
async def test_the_timer_refits_a_scope_with_new_choices(scripted: ScriptedEngine, tmp_path: Path) -> None:
    settings = learn_settings(learn_every=1000, learn_interval_s=0.2)
    async with learning(scripted, tmp_path / "prefs.db", settings) as client:
        for _ in range(4):
            reply = await choose_a(client, await ask(client))
            assert reply["learning"]["updated"] is False and reply["learning"]["message"] is None
        deadline = time.monotonic() + 20
        while (result := await ask(client))["ranker_version"] == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert (await client.get("/v1/ranker")).json()["version"] == result["ranker_version"]


@on_loop
async def test_a_worse_refit_is_kept_out(
    scripted: ScriptedEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import nbest.server.learn as learn

    real = learn.fit_choices

    def worse(*args: Any, **kwargs: Any) -> Any:
        report = real(*args, **kwargs)
        report.agreement_fitted, report.agreement_prior = 0.25, 0.75  # the refit agrees less on held-out choices
        return report

    monkeypatch.setattr(learn, "fit_choices", worse)
    db = tmp_path / "prefs.db"
    async with learning(scripted, db) as client:
        with caplog.at_level(logging.INFO, logger="nbest.server"):
            for _ in range(4):
                reply = (await choose_a(client, await ask(client)))["learning"]
        assert reply["updated"] is False and reply["version"] == 0
        assert reply["message"] == (
            "kept the current ranking: the refit agreed with 25 % of held-out choices, the current one with 75 %"
        )
        assert "kept the current ranking" in caplog.text
        result = await ask(client)
        assert result["ranker_version"] == 0 and result["best"]["text"] == "B"
        check_ranked_by(result, BASE)
        shown = (await client.get("/v1/ranker")).json()
        assert shown["version"] == 0
        assert [(k["status"], k["agreement"], k["baseline"]) for k in shown["kept_out"]] == [("kept-out", 0.25, 0.75)]


@on_loop
async def test_a_refit_that_fails_keeps_the_current_ranker(
    scripted: ScriptedEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: Learner, scope_key: str = "global") -> Any:
        raise RuntimeError("the fit blew up")

    monkeypatch.setattr(Learner, "refit", broken)
    async with learning(scripted, tmp_path / "prefs.db") as client:
        with caplog.at_level(logging.ERROR, logger="nbest.server"):
            for _ in range(4):
                reply = (await choose_a(client, await ask(client)))["learning"]
        assert reply["updated"] is False and reply["version"] == 0 and reply["message"] is None
        assert "the fit blew up" in caplog.text and "the current ranker stays" in caplog.text
        assert (await ask(client))["ranker_version"] == 0
        assert (await client.get("/healthz")).status_code == 200
        monkeypatch.undo()  # the refit is still due: the next choice brings it
        reply = (await choose_a(client, await ask(client)))["learning"]
        assert reply["updated"] is True and (await ask(client))["ranker_version"] == reply["version"] >= 1


@on_loop
async def test_refits_are_spaced_however_fast_choices_arrive(scripted: ScriptedEngine, tmp_path: Path) -> None:
    settings = learn_settings(learn_min=2, learn_every=1, learn_gap_s=0.5)
    async with learning(scripted, tmp_path / "prefs.db", settings) as client:
        results = [await ask(client) for _ in range(12)]
        started = time.monotonic()
        replies = await asyncio.gather(*(choose_a(client, r) for r in results))  # every choice makes a refit due
        elapsed = time.monotonic() - started
        rounds = client.app.state.service.learning.rounds  # type: ignore[attr-defined]
        assert 1 <= rounds <= 1 + elapsed / 0.5, (rounds, elapsed)  # choices arriving together share a round
        assert any(r["learning"]["updated"] for r in replies)


@on_loop
async def test_a_choice_is_saved_when_learning_cannot_read_the_log(
    scripted: ScriptedEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(self: Learner, scope_key: str = "global") -> Any:
        raise StorageError("preference log: cannot read the ranker history: disk I/O error")

    async with learning(scripted, tmp_path / "prefs.db") as client:
        monkeypatch.setattr(Learner, "due", unreadable)
        monkeypatch.setattr(Learner, "next_refit_in", unreadable)
        reply = await choose_a(client, await ask(client))
        assert reply["id"] == 1 and reply["learning"] == {
            "version": 0, "updated": False, "message": None, "choices": 0, "next_refit_in": 0,
        }  # fmt: skip
        assert (await client.get("/v1/choices")).json()["total"] == 1


@on_loop
async def test_undo_withdraws_a_choice(scripted: ScriptedEngine, tmp_path: Path) -> None:
    db = tmp_path / "prefs.db"
    async with learning(scripted, db) as client:
        for _ in range(3):
            reply = await choose_a(client, await ask(client))
        assert reply["learning"]["next_refit_in"] == 1
        ident = reply["id"]
        r = await client.post(f"/v1/choices/{ident}/withdraw", json={})
        assert r.status_code == 200 and r.json() == {"id": ident, "withdrawn": True}
        assert (await client.post(f"/v1/choices/{ident}/withdraw", json={})).json() == {"id": ident, "withdrawn": True}
        unknown = await client.post("/v1/choices/999/withdraw", json={})
        assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "id"
        assert (await client.get("/v1/choices")).json()["total"] == 2
        assert (await client.get("/v1/ranker")).json()["next_refit_in"] == 2  # the undone choice does not count
        reply = await choose_a(client, await ask(client))
        assert reply["learning"]["updated"] is False and reply["learning"]["next_refit_in"] == 1
    with PreferenceStore(db) as store:  # kept in the log, marked
        assert store.count() == 3 and store.count(include_withdrawn=True) == 4


@on_loop
async def test_scopes_fall_back_to_the_wider_one(scripted: ScriptedEngine, tmp_path: Path) -> None:
    db = tmp_path / "prefs.db"
    async with learning(scripted, db, learn_settings(learn_scope="task")) as client:
        for _ in range(4):
            reply = await choose_a(client, await ask(client, metadata={"task": "math"}))
        assert reply["learning"]["updated"] is True
        with PreferenceStore(db) as store:
            math_version = store.current_version("task:math")
            global_version = store.current_version("global")
        assert math_version is not None and global_version is not None
        assert reply["learning"]["version"] == math_version.version != global_version.version

        math = await ask(client, metadata={"task": "math"})
        assert math["ranker_version"] == math_version.version
        check_ranked_by(math, RankerConfig.parse(math_version.config))
        poetry = await ask(client, metadata={"task": "poetry"})  # no choices of its own: the global ranker
        assert poetry["ranker_version"] == global_version.version
        check_ranked_by(poetry, RankerConfig.parse(global_version.config))

        shown = (await client.get("/v1/ranker", params={"task": "poetry"})).json()
        assert shown["scope"] == "task:poetry" and shown["ranked_by"] == "global" and shown["version"] == global_version.version
        assert (await client.get("/v1/ranker", params={"task": "math"})).json()["version"] == math_version.version
        long = await client.post("/v1/nbest", json={"prompt": "x", "metadata": {"task": "t" * 201}})
        assert long.status_code == 422 and long.json()["error"]["param"] == "metadata.task"


@on_loop
async def test_saved_versions_rank_after_a_restart_and_a_rollback_is_picked_up(
    scripted: ScriptedEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbest.server.ranker_api as ranker_api

    monkeypatch.setattr(ranker_api, "POLL_S", 0.05)
    db = tmp_path / "prefs.db"
    async with learning(scripted, db) as client:
        versions = []
        for _ in range(6):
            reply = (await choose_a(client, await ask(client)))["learning"]
            if reply["updated"]:
                versions.append(reply["version"])
        assert len(versions) == 2
    async with learning(scripted, db) as client:  # a new server on the same log
        assert (await ask(client))["ranker_version"] == versions[-1]
        with PreferenceStore(db) as store:  # `nbest prefs rollback` in another process
            restored = store.rollback(versions[0])
        deadline = time.monotonic() + 20
        while (result := await ask(client))["ranker_version"] != restored.version:
            assert time.monotonic() < deadline, result["ranker_version"]
            await asyncio.sleep(0.05)
        check_ranked_by(result, config_of(db, versions[0]))


@on_loop
async def test_client_rerankers_bypass_learning(scripted: ScriptedEngine, tmp_path: Path) -> None:
    async with learning(scripted, tmp_path / "prefs.db") as client:
        for _ in range(4):
            reply = await choose_a(client, await ask(client))
        assert reply["learning"]["updated"] is True
        own = await ask(client, rerankers=["logprob"])
        assert own["ranker_version"] is None and own["best"]["text"] == "B"
        assert RankerConfig.parse(own["ranker"]).rerankers == RankerConfig(rerankers=["logprob"]).rerankers
        assert (await ask(client))["best"]["text"] == "A"


@on_loop
async def test_without_learning_nothing_changes(scripted: ScriptedEngine, tmp_path: Path) -> None:
    async with learning(scripted, tmp_path / "prefs.db", ServerSettings(max_n=8)) as client:
        result = await ask(client)
        assert result["ranker_version"] is None
        reply = await choose_a(client, result)
        assert reply["learning"] is None
        shown = (await client.get("/v1/ranker")).json()
        assert shown["learning"] is False and shown["version"] is None
        assert RankerConfig.parse(shown["config"]) == BASE
        assert [(w["name"], w["weight"]) for w in shown["weights"]] == [("vote", 0.2), ("mean_logprob", 1.0)]


def test_hot_swap_under_concurrent_requests(tmp_path: Path) -> None:
    """Requests in flight while refits swap rankers in: each Result is ranked by one whole
    ranker, the one its version names. A real socket; the server stops cleanly."""
    db = tmp_path / "prefs.db"
    engine = ScriptedEngine(respond=by_index({0: Step("B", mean_logprob=-0.2, delay=0.01)}, Step("A", mean_logprob=-1.5)))
    results: list[dict[str, Any]] = []
    choices: list[dict[str, Any]] = []

    async def scenario(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            stop = asyncio.Event()

            async def asker() -> None:
                while not stop.is_set():
                    results.append(await ask(client))

            async def chooser() -> None:
                for _ in range(16):
                    choices.append((await choose_a(client, await ask(client)))["learning"])
                stop.set()

            await asyncio.gather(*(asker() for _ in range(6)), chooser())

    async def serve() -> None:
        async with Orchestrator(engine, max_n=32, rerankers=BASE.to_ranker()) as orch:
            app = create_app(orch, learn_settings(max_concurrent=64), prefs=PreferenceStore(db))
            with running(app) as url:
                await scenario(url)

    asyncio.run(serve())
    versions = {c["version"] for c in choices if c["updated"]}
    assert len(versions) >= 3, choices  # refits at 4, 6, 8 ... choices
    seen = {r["ranker_version"] for r in results}
    assert len(seen) >= 3, seen
    configs = {v: config_of(db, v) for v in seen}
    for result in results:
        check_ranked_by(result, configs[result["ranker_version"]])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--learn", "--learn-every", "0"], "--learn-every: Input should be greater than or equal to 1"),
        (["--learn", "--learn-min", "1"], "--learn-min"),
        (["--learn", "--learn-interval", "-1"], "--learn-interval"),
        (["--learn", "--learn-scope", "team"], "Invalid value for '--learn-scope'"),
        (["--learn-every", "5"], "--learn-every: only with --learn"),
    ],
)
def test_serve_learn_flags_are_checked(args: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", *args], engine_factory=seed_answers)
    err = capsys.readouterr().err
    assert info.value.code == 2 and words in err and err.count("\n") == 1, err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
def test_nbest_serve_learn_serves_the_learned_ranker(tmp_path: Path) -> None:
    """``nbest serve --learn`` in a process: /v1/ranker reports learning, choices refit it."""
    port = _free_port()
    env = {**os.environ, "NBEST_HOME": str(tmp_path)}
    argv = ["serve", "--port", str(port), "--db", str(tmp_path / "p.db"), "--reranker", "vote=0.2", "--reranker", "logprob"]
    argv += ["--learn", "--learn-min", "2", "--learn-every", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.cli_with_engine", "seed_answers", *argv],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.1)
        shown = httpx.get(f"{url}/v1/ranker").json()
        assert shown["learning"] is True and shown["version"] == 0 and shown["min_choices"] == 2
        for _ in range(2):
            result = httpx.post(f"{url}/v1/nbest", json={"prompt": "q", "n": 3}, timeout=30).json()
            last = max(result["candidates"], key=lambda c: c["rank"])  # the person disagrees with the ranker
            reply = httpx.post(f"{url}/v1/choices", json={"result_id": result["id"], "chosen": last["index"]}, timeout=30)
            assert reply.status_code == 201, reply.text
        learning = reply.json()["learning"]
        assert learning["updated"] is True, learning
        assert (
            httpx.post(f"{url}/v1/nbest", json={"prompt": "q", "n": 3}, timeout=30).json()["ranker_version"]
            == (learning["version"])
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
@on_loop
async def test_choices_on_the_real_engine_refit_the_next_ranking(vllm_engine: Any, tmp_path: Path) -> None:
    db = tmp_path / "prefs.db"
    settings = learn_settings(learn_min=2, learn_every=1)
    async with Orchestrator(vllm_engine, close_engines=False, rerankers=BASE.to_ranker()) as orch:
        app = create_app(orch, settings, prefs=PreferenceStore(db))
        transport = httpx.ASGITransport(app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://nbest.test", timeout=300) as client,
        ):
            body = {"prompt": "Name a colour.", "n": 3, "params": {"max_tokens": 6, "seed": 5}}
            for _ in range(2):
                result = (await client.post("/v1/nbest", json=body)).json()
                assert result["ranker_version"] == 0
                last = max((c for c in result["candidates"] if c["error"] is None), key=lambda c: c["rank"])
                r = await client.post("/v1/choices", json={"result_id": result["id"], "chosen": last["index"]})
                assert r.status_code == 201, r.text
            learning = r.json()["learning"]
            assert learning["updated"] is True and learning["version"] >= 1, learning  # the ranker agreed with none
            after = (await client.post("/v1/nbest", json=body)).json()
            assert after["ranker_version"] == learning["version"]
            check_ranked_by(after, config_of(db, learning["version"]))


@on_loop
async def test_openai_routes_rank_by_the_users_learned_ranker(scripted: ScriptedEngine, tmp_path: Path) -> None:
    db = tmp_path / "prefs.db"
    async with learning(scripted, db, learn_settings(learn_scope="user")) as client:
        for _ in range(4):
            reply = await choose_a(client, await ask(client, metadata={"user": "ana"}))
        assert reply["learning"]["updated"] is True
        with PreferenceStore(db) as store:
            ana = store.current_version("user:ana")
        assert ana is not None
        service = client.app.state.service  # type: ignore[attr-defined]
        r = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "pick"}], "n": 4, "user": "ana"}
        )
        assert r.status_code == 200, r.text
        result = next(reversed(service.results.values()))
        assert result.metadata["user"] == "ana" and result.ranker_version == ana.version
        r = await client.post("/v1/completions", json={"prompt": "pick", "n": 4, "user": "bo"})
        assert r.status_code == 200, r.text
        result = next(reversed(service.results.values()))
        assert result.metadata["user"] == "bo" and result.ranker_version != ana.version
        r = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "pick"}], "user": "u" * 201})
        assert r.status_code == 422 and r.json()["error"]["param"] == "user", r.text
