"""The balancer and health of a fleet, on fake OpenAI-compatible servers:
least outstanding, caps, weights, failover exactly once, all down, recovery."""

from __future__ import annotations

import random
import time
from collections import Counter

import anyio
import httpx
import pytest

from nbest import EngineError, Orchestrator
from nbest.engines.fleet import Endpoint, Fleet
from nbest.engines.openai import OpenAIEngine
from nbest.types import Result
from tests.fake_openai import MODEL, FakeFleet, until

pytestmark = pytest.mark.asyncio(loop_scope="session")


def engine(fleet: FakeFleet, endpoints: list[object] | None = None, **kwargs: object) -> OpenAIEngine:
    return OpenAIEngine(
        endpoints or fleet.urls,  # type: ignore[arg-type]
        model=MODEL,
        transport=fleet.transport,
        backoff=(backoff := float(kwargs.pop("backoff", 0.02))),  # type: ignore[arg-type]
        max_backoff=max(0.1, backoff),
        **kwargs,  # type: ignore[arg-type]
    )


def assert_each_once(result: Result, n: int, seed: int) -> None:
    """Every candidate present once, succeeded, with its own seed's text."""
    assert sorted(c.index for c in result.candidates) == list(range(n))
    assert all(c.ok for c in result.candidates), [c.error for c in result.candidates if not c.ok]
    for c in result.candidates:
        assert c.text.endswith(f"seed={seed + c.index}")


def test_least_outstanding_then_weight_then_fewest_sent() -> None:
    a, b, c = Endpoint("http://a/v1"), Endpoint("http://b/v1", weight=2), Endpoint("http://c/v1")
    fleet = Fleet([a, b, c])
    a.in_flight, b.in_flight, c.in_flight = 1, 2, 0
    assert fleet.pick() is c  # load with one more: a 2/1, b 3/2, c 1/1
    c.in_flight = 1
    assert fleet.pick() is b  # a 2/1, b 3/2, c 2/1
    b.healthy = False
    a.sent = 5
    assert fleet.pick() is c  # a and c tie on load; c has been sent less
    a.max_concurrency = c.max_concurrency = 1
    assert fleet.pick() is None


@pytest.mark.parametrize(
    ("failures", "low", "high"),
    [(1, 0.25, 0.5), (2, 0.5, 1.0), (3, 1.0, 2.0), (4, 1.5, 3.0), (6, 1.5, 3.0)],  # 0.5 * 2**(k-1), capped at 3, jitter [0.5, 1]
)
def test_probe_backoff_is_exponential_with_jitter_and_capped(failures: int, low: float, high: float) -> None:
    ep = Endpoint("http://a/v1")
    fleet = Fleet([ep], backoff=0.5, max_backoff=3.0, rng=random.Random(failures))
    for _ in range(failures):
        ep.retry_at = 0.0  # the probe is due: its failure counts
        fleet.mark_down(ep, "boom")
    delay = ep.retry_at - time.monotonic()
    assert ep.failures == failures and not ep.healthy
    assert low - 0.05 <= delay <= high


def test_failures_of_requests_already_in_flight_do_not_lengthen_the_backoff() -> None:
    ep = Endpoint("http://a/v1")
    fleet = Fleet([ep], backoff=10, max_backoff=60)
    for i in range(5):
        fleet.mark_down(ep, f"reset {i}")
    assert ep.failures == 1 and ep.last_error == "reset 4"
    fleet.mark_up(ep)
    assert ep.healthy and ep.failures == 0


async def test_equal_servers_share_the_load_evenly() -> None:
    fleet = FakeFleet("a:1", "b:1", "c:1")
    for server in fleet.servers.values():
        server.delay = 0.05
    async with Orchestrator(engine(fleet)) as orch:
        result = await orch.generate("Q?", n=30, seed=0)
    assert_each_once(result, 30, 0)
    assert [len(s.served) for s in fleet.servers.values()] == [10, 10, 10]


async def test_weights_split_the_load() -> None:
    fleet = FakeFleet("a:1", "b:1")
    fleet["a:1"].delay = fleet["b:1"].delay = 0.05
    e = engine(fleet, [{"url": fleet["a:1"].url, "weight": 2}, fleet["b:1"].url])
    async with Orchestrator(e) as orch:
        result = await orch.generate("Q?", n=30, seed=0)
    assert_each_once(result, 30, 0)
    assert (len(fleet["a:1"].served), len(fleet["b:1"].served)) == (20, 10)


async def test_per_endpoint_cap_holds() -> None:
    fleet = FakeFleet("a:1", "b:1")
    fleet["a:1"].delay = fleet["b:1"].delay = 0.02
    async with Orchestrator(engine(fleet, max_concurrency=3)) as orch:
        result = await orch.generate("Q?", n=24, seed=0)
    assert_each_once(result, 24, 0)
    assert fleet["a:1"].max_in_flight == 3 and fleet["b:1"].max_in_flight == 3


async def test_slow_endpoint_gets_fewer_requests() -> None:
    fleet = FakeFleet("slow:1", "fast:1")
    fleet["slow:1"].delay, fleet["fast:1"].delay = 0.25, 0.01
    async with Orchestrator(engine(fleet, max_concurrency=2)) as orch:
        result = await orch.generate("Q?", n=40, seed=0)
    assert_each_once(result, 40, 0)
    slow, fast = len(fleet["slow:1"].served), len(fleet["fast:1"].served)
    assert slow + fast == 40 and fast >= 4 * slow, (slow, fast)


async def test_endpoint_down_from_the_start_is_skipped() -> None:
    fleet = FakeFleet("a:1", "b:1")
    fleet["a:1"].down = True
    async with Orchestrator(engine(fleet, backoff=5)) as orch:
        result = await orch.generate("Q?", n=8, seed=0)
    assert_each_once(result, 8, 0)
    assert len(fleet["b:1"].served) == 8


@pytest.mark.parametrize("failure", ["dies_mid_request", "http_503", "goes_down"])
async def test_failover_completes_every_candidate_exactly_once(failure: str) -> None:
    fleet = FakeFleet("a:1", "b:1")
    a, b = fleet["a:1"], fleet["b:1"]
    a.delay = b.delay = 0.05
    if failure == "dies_mid_request":
        a.fail_after_delay = True
    elif failure == "http_503":
        a.status = 503
    async with Orchestrator(engine(fleet, backoff=5)) as orch:
        if failure == "goes_down":
            a.delay = 0.3

            async def pull_the_plug() -> None:
                await until(lambda: a.in_flight > 0)
                a.down = True

            async with anyio.create_task_group() as tg:
                tg.start_soon(pull_the_plug)
                result = await orch.generate("Q?", n=12, seed=100)
        else:
            result = await orch.generate("Q?", n=12, seed=100)
    assert_each_once(result, 12, 100)
    assert a.served == [] and sorted(b.served) == list(range(100, 112))  # type: ignore[type-var]
    assert len(a.bodies) > 0  # requests did go to a first
    assert Counter(c.text for c in result.candidates).most_common(1)[0][1] == 1


async def test_failed_endpoint_moves_its_other_requests_at_once() -> None:
    # a answers its first request with 500 and hangs on the others: they are
    # moved to b when a is marked down, not left to their own timeout.
    fleet = FakeFleet("a:1", "b:1")
    a = fleet["a:1"]
    original = fleet.handle

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.netloc == b"a:1" and request.url.path.endswith("completions"):
            if not a.bodies:
                a.bodies.append({})
                await anyio.sleep(0.1)
                return httpx.Response(500, json={"error": {"message": "CUDA error"}})
            a.delay = 60
        return await original(request)

    fleet.transport.handler = handle
    async with Orchestrator(engine(fleet, backoff=5), timeout=30) as orch:
        result = await orch.generate("Q?", n=6, seed=0)
    assert_each_once(result, 6, 0)
    assert a.cancelled == 2 and a.served == []  # a got 3 of 6 at first: one 500, two moved


async def test_all_endpoints_down_is_an_engine_error_naming_them_within_the_timeout() -> None:
    fleet = FakeFleet("a:1", "b:1")
    e = engine(fleet, backoff=0.05, down_timeout=0.5)
    async with Orchestrator(e) as orch:
        fleet["a:1"].down = fleet["b:1"].down = True
        with anyio.fail_after(20), pytest.raises(EngineError) as info:  # a hang guard, not a timing claim
            await orch.generate("Q?", n=4, seed=0)
    message = str(info.value)
    assert "all 2 endpoint(s) are down" in message
    assert "http://a:1/v1 (down: ConnectError: connection refused)" in message
    assert "http://b:1/v1 (down: ConnectError: connection refused)" in message


async def test_every_attempt_failing_fails_the_candidate_after_max_attempts() -> None:
    fleet = FakeFleet("a:1", "b:1")
    fleet["a:1"].status = fleet["b:1"].status = 502  # /models answers: the probe keeps bringing them back
    async with Orchestrator(engine(fleet, max_attempts=3, down_timeout=5)) as orch:
        result = await orch.generate("Q?", n=1, seed=0)
    (c,) = result.candidates
    assert "failed on 3 attempt(s)" in (c.error or "") and c.error is not None and c.error.count("HTTP 502") == 3


async def test_recovered_endpoint_is_brought_back_by_the_probe() -> None:
    fleet = FakeFleet("a:1", "b:1")
    a = fleet["a:1"]
    a.down = True
    e = engine(fleet, backoff=0.02)
    async with Orchestrator(e) as orch:
        first = await orch.generate("Q?", n=4, seed=0)
        assert a.served == [] and not e.endpoints[0].healthy
        a.down = False
        await until(lambda: e.endpoints[0].healthy)
        fleet["b:1"].delay = a.delay = 0.02
        second = await orch.generate("Q?", n=8, seed=50)
    assert_each_once(first, 4, 0)
    assert_each_once(second, 8, 50)
    assert len(a.served) == 4 and e.endpoints[0].failures == 0


async def test_aclose_stops_the_probe() -> None:
    fleet = FakeFleet("a:1", "b:1")
    fleet["a:1"].down = True
    e = engine(fleet)
    await e.start()
    probe = e._probe
    assert probe is not None and not probe.done()
    await e.aclose()
    assert probe.done() and e._probe is None
