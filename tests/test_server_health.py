"""Health that tells the truth, a dead engine restarted, and ids the server issues
(scripted engines; the real engine's fault test is in test_server_restart_vllm.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest

from nbest.engines import Health, HealthReporting, OpenAIEngine
from nbest.errors import EngineDeadError, EngineError
from nbest.orchestrator import Orchestrator
from nbest.server.app import create_app
from nbest.server.prefs import PreferenceStore
from nbest.server.settings import ServerSettings
from nbest.server.supervisor import RestartPolicy, engine_health
from tests.scripted import ScriptedEngine, Step
from tests.test_server import serving

pytestmark = pytest.mark.asyncio(loop_scope="session")

FAST_POLICY = RestartPolicy(check_interval_s=0.02, backoff_s=0.01, max_backoff_s=0.05, retry_after_s=3)


@dataclass
class MortalEngine(ScriptedEngine):
    """A scripted engine that can die (as vLLM's does when its engine core exits)
    and whose start can be held back."""

    dead: bool = False
    gate: anyio.Event | None = None
    starting: anyio.Event = field(default_factory=anyio.Event)

    async def start(self) -> None:
        self.starting.set()
        if self.gate is not None:
            await self.gate.wait()

    def health(self) -> Health:
        if self.closed:
            return Health(ok=False, detail="closed", restart=True)
        if self.dead:
            return Health(ok=False, detail=f"engine {self.name} died", restart=True)
        return Health(ok=True)


@contextlib.asynccontextmanager
async def app_with_factory(
    factory: Callable[[], Orchestrator], policy: RestartPolicy = FAST_POLICY
) -> AsyncIterator[httpx.AsyncClient]:
    """The app owning its orchestrator (lifespan on), and an in-process client."""
    app = create_app(factory, ServerSettings(max_n=8), prefs=PreferenceStore(":memory:"), restart=policy)
    transport = httpx.ASGITransport(app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield client


async def wait_status(client: httpx.AsyncClient, status: str, timeout: float = 10.0) -> dict[str, object]:
    with anyio.fail_after(timeout):
        while True:
            body: dict[str, object] = (await client.get("/healthz")).json()
            if body["status"] == status:
                return body
            await anyio.sleep(0.01)


def test_engines_report_health_through_a_protocol() -> None:
    engine = MortalEngine()
    assert isinstance(engine, HealthReporting)
    assert not isinstance(ScriptedEngine(), HealthReporting)
    orch = Orchestrator({"a": engine, "b": ScriptedEngine()})
    assert engine_health(orch).ok
    engine.dead = True
    assert engine_health(orch) == Health(ok=False, detail="engine scripted died", restart=True)


def test_an_all_down_fleet_is_unhealthy_but_heals_itself() -> None:
    engine = OpenAIEngine(["http://a:8000/v1", "http://b:8000/v1"], model="m")
    assert engine.health().ok
    for endpoint in engine.endpoints:
        endpoint.healthy = False
    health = engine.health()
    assert not health.ok and not health.restart and "every endpoint" in health.detail


async def test_a_dead_engine_is_restarted_and_requests_meanwhile_get_503() -> None:
    built: list[MortalEngine] = []
    restarting = anyio.Event()

    def factory() -> Orchestrator:
        engine = MortalEngine(name=f"engine{len(built)}")
        if built:  # the restart is held until the test lets it through
            engine.gate = anyio.Event()
            restarting.set()
        built.append(engine)
        return Orchestrator(engine)

    async with app_with_factory(factory) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok", "model": "nbest"}
        assert (await client.post("/v1/nbest", json={"prompt": "hi", "n": 2})).status_code == 200
        built[0].dead = True
        body = await wait_status(client, "restarting")
        assert "engine0 died" in str(body["detail"])
        with anyio.fail_after(10):
            await restarting.wait()
            await built[1].starting.wait()  # the new engine is starting
        r = await client.get("/healthz")
        assert r.status_code == 503 and r.headers["retry-after"] == "3"
        r = await client.post("/v1/nbest", json={"prompt": "hi", "n": 2})
        assert r.status_code == 503 and r.headers["retry-after"] == "3", r.text
        assert "restarting" in r.json()["error"]["message"]
        r = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 503 and r.headers["retry-after"] == "3", r.text
        assert built[0].closed  # the dead engine was closed before the new one started
        assert built[1].gate is not None
        built[1].gate.set()
        body = await wait_status(client, "ok")
        assert body["engine_restarts"] == 1
        r = await client.post("/v1/nbest", json={"prompt": "hi", "n": 2})
        assert r.status_code == 200, r.text
        assert {call.request_id.rsplit("-", 1)[0] for call in built[1].history} == {r.json()["id"]}
        metrics = (await client.get("/metrics")).text
        assert "nbest_engine_restarts_total 1.0" in metrics
        assert "nbest_engine_up 1.0" in metrics
    assert built[1].closed and len(built) == 2


async def test_a_request_that_meets_a_dead_engine_gets_503_and_starts_the_restart() -> None:
    built: list[MortalEngine] = []

    def factory() -> Orchestrator:
        engine = MortalEngine(name=f"engine{len(built)}")
        built.append(engine)
        return Orchestrator(engine)

    # a long check interval: the restart is started by the failed request, not by the timer
    async with app_with_factory(factory, FAST_POLICY.model_copy(update={"check_interval_s": 60.0})) as client:

        def respond(prompt: object, params: object, request_id: str) -> Step:
            built[0].dead = True
            return Step(error=EngineDeadError("engine core exited", engine="engine0"))

        built[0].respond = respond
        r = await client.post("/v1/nbest", json={"prompt": "hi", "n": 2})
        assert r.status_code == 503 and r.headers["retry-after"] == "3", r.text
        assert "EngineDeadError" in r.json()["error"]["message"]
        await wait_status(client, "ok", timeout=5)
        assert len(built) == 2
        assert (await client.post("/v1/nbest", json={"prompt": "hi", "n": 2})).status_code == 200


async def test_restarts_are_bounded_then_the_server_says_dead(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    first = MortalEngine()

    def factory() -> Orchestrator:
        calls.append(1)
        if len(calls) > 1:
            raise EngineError("out of memory", engine="vllm")
        return Orchestrator(first)

    async with app_with_factory(factory, FAST_POLICY.model_copy(update={"max_attempts": 3})) as client:
        first.dead = True
        body = await wait_status(client, "dead")
        assert "restart 3 of 3 failed: EngineError: out of memory" in str(body["detail"])
        assert len(calls) == 4
        r = await client.get("/healthz")
        assert r.status_code == 503 and "retry-after" not in r.headers
        assert (await client.post("/v1/nbest", json={"prompt": "hi"})).status_code == 503
        assert "nbest_engine_up 0.0" in (await client.get("/metrics")).text
    assert "giving up on the engine after 3 failed restarts" in caplog.text


async def test_an_engine_that_dies_soon_after_every_restart_is_given_up_on(caplog: pytest.LogCaptureFixture) -> None:
    built: list[MortalEngine] = []

    def factory() -> Orchestrator:
        engine = MortalEngine(name=f"engine{len(built)}", dead=bool(built))  # every restart is born dying
        built.append(engine)
        return Orchestrator(engine)

    async with app_with_factory(factory, FAST_POLICY.model_copy(update={"max_attempts": 3})) as client:
        built[0].dead = True
        body = await wait_status(client, "dead")
        assert "engine restart 3 of 3 died" in str(body["detail"]), body
        assert len(built) == 4  # the first engine and three restarts, not a loop
        assert all(e.closed for e in built)
    assert "giving up on the engine after 3 failed restarts" in caplog.text


async def wait_restarts(client: httpx.AsyncClient, restarts: int, timeout: float = 10.0) -> dict[str, object]:
    """/healthz once it is ok after ``restarts`` restarts."""
    with anyio.fail_after(timeout):
        while True:
            body: dict[str, object] = (await client.get("/healthz")).json()
            if body["status"] == "ok" and body.get("engine_restarts", 0) == restarts:
                return body
            await anyio.sleep(0.01)


async def test_a_restarted_engine_that_lived_long_enough_resets_the_count() -> None:
    built: list[MortalEngine] = []

    def factory() -> Orchestrator:
        engine = MortalEngine(name=f"engine{len(built)}")
        built.append(engine)
        return Orchestrator(engine)

    # stable after 0 s: each restart that opened counts as healthy, so deaths never add up
    policy = FAST_POLICY.model_copy(update={"max_attempts": 1, "stable_s": 0.0})
    async with app_with_factory(factory, policy) as client:
        for i in range(3):
            built[i].dead = True
            body = await wait_restarts(client, i + 1)
            assert body["status"] == "ok" and len(built) == i + 2
        assert (await client.get("/healthz")).json()["engine_restarts"] == 3


async def test_an_engine_that_fails_to_start_on_a_restart_is_closed() -> None:
    @dataclass
    class Broken(MortalEngine):
        async def start(self) -> None:
            raise EngineError("out of memory", engine=self.name)

    built: list[MortalEngine] = []

    def factory() -> Orchestrator:
        # a fleet of two: the first starts, the second fails; nothing may stay started
        engines = {"a": MortalEngine(name="a"), "b": Broken(name="b")} if built else {"a": MortalEngine(name="first")}
        built.extend(engines.values())
        return Orchestrator(engines)

    async with app_with_factory(factory, FAST_POLICY.model_copy(update={"max_attempts": 1})) as client:
        built[0].dead = True
        body = await wait_status(client, "dead")
        assert "restart 1 of 1 failed: EngineError: out of memory" in str(body["detail"])
        assert [e.closed for e in built] == [True, True, True]


async def test_a_failed_first_start_fails_the_server_start() -> None:
    def factory() -> Orchestrator:
        raise EngineError("no model here", engine="vllm")

    with pytest.raises(EngineError, match="no model here"):
        async with app_with_factory(factory):
            pass


async def test_an_open_orchestrator_with_a_dead_engine_is_reported_dead() -> None:
    engine = MortalEngine()
    async with Orchestrator(engine) as orch:
        app = create_app(orch, ServerSettings(), prefs=PreferenceStore(":memory:"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost") as client:
            assert (await client.get("/healthz")).status_code == 200
            engine.dead = True
            r = await client.get("/healthz")
            assert r.status_code == 503 and r.json()["status"] == "dead"
            assert (await client.post("/v1/nbest", json={"prompt": "hi"})).status_code == 503


# -- ids the server issues


async def test_two_clients_with_the_same_id_get_their_own_results(scripted: ScriptedEngine) -> None:
    async with serving(scripted) as client:
        scripted.respond = lambda prompt, params, request_id: Step(text=f"about {prompt[-1].content}", delay=0.05)  # type: ignore[union-attr]
        replies: dict[str, dict[str, Any]] = {}

        async def post(prompt: str) -> None:  # at the same time: both in flight on the engine together
            replies[prompt] = (await client.post("/v1/nbest", json={"id": "mine", "prompt": prompt, "n": 2})).json()

        async with anyio.create_task_group() as tg:
            for prompt in ("apples", "pears"):
                tg.start_soon(post, prompt)
        ra, rb = replies["apples"], replies["pears"]
        assert scripted.max_running == 4 and not scripted.aborted
        assert {c["text"] for c in ra["candidates"]} == {"about apples"}
        assert ra["id"] != rb["id"] and "mine" not in (ra["id"], rb["id"])
        assert ra["metadata"]["client_id"] == rb["metadata"]["client_id"] == "mine"
        assert {call.request_id.rsplit("-", 1)[0] for call in scripted.history} == {ra["id"], rb["id"]}
        # a choice can name a result only by the id the server issued
        r = await client.post("/v1/choices", json={"result_id": "mine", "chosen": 0})
        assert r.status_code == 404 and r.json()["error"]["param"] == "result_id"
        r = await client.post("/v1/choices", json={"result_id": ra["id"], "chosen": 0})
        assert r.status_code == 201 and r.json()["request_id"] == ra["id"]
        stored = (await client.get("/v1/choices")).json()["data"][0]
        assert stored["result"]["prompt"] == "apples"


async def test_streams_and_openai_routes_use_server_ids(scripted: ScriptedEngine) -> None:
    async with serving(scripted) as client:
        r = await client.post("/v1/nbest/stream", json={"id": "x", "prompt": "hi", "n": 2})
        assert r.status_code == 200
        assert '"id": "x"' not in r.text.split("\n\n")[0] and '"client_id":"x"' in r.text
        r = await client.post("/v1/completions", json={"prompt": "hi", "n": 2})
        ident = r.json()["nbest"]["id"]
        assert ident.startswith("nb-") and len(ident) == 35
