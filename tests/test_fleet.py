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


def test_backoff_after_ten_thousand_failures_is_finite_and_capped() -> None:
    ep = Endpoint("http://a/v1")
    fleet = Fleet([ep], backoff=0.5, max_backoff=30.0)
    for _ in range(10_000):
        ep.retry_at = 0.0
        fleet.mark_down(ep, "refused")
    assert ep.failures == 10_000
    assert 15.0 - 0.05 <= ep.retry_at - time.monotonic() <= 30.0
    assert fleet.delay(10**100) == 30.0


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


async def test_failed_connection_moves_the_endpoints_other_requests_at_once() -> None:
    # a resets the connection of its first request and hangs on the others:
    # they are moved to b when a is marked down, not left to their own timeout.
    fleet = FakeFleet("a:1", "b:1")
    a = fleet["a:1"]
    original = fleet.handle

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.netloc == b"a:1" and request.url.path.endswith("completions"):
            if not a.bodies:
                a.bodies.append({})
                await anyio.sleep(0.1)
                raise httpx.ReadError("connection reset by peer", request=request)
            a.delay = 60
        return await original(request)

    fleet.transport.handler = handle
    async with Orchestrator(engine(fleet, backoff=5), timeout=30) as orch:
        result = await orch.generate("Q?", n=6, seed=0)
    assert_each_once(result, 6, 0)
    assert a.cancelled == 2 and a.served == []  # a got 3 of 6 at first: one reset, two moved


async def test_one_requests_500_leaves_the_others_on_that_endpoint_running() -> None:
    fleet = FakeFleet("a:1", "b:1")
    a = fleet["a:1"]
    a.delay = fleet["b:1"].delay = 0.3
    original = fleet.handle

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.netloc == b"a:1" and request.url.path.endswith("completions") and not a.bodies:
            a.bodies.append({})
            await anyio.sleep(0.05)
            return httpx.Response(500, json={"error": {"message": "CUDA error"}})
        return await original(request)

    fleet.transport.handler = handle
    e = engine(fleet, backoff=5)
    async with Orchestrator(e, timeout=30) as orch:
        result = await orch.generate("Q?", n=6, seed=0)
    assert_each_once(result, 6, 0)
    assert a.cancelled == 0 and len(a.served) == 2  # a got 3 of 6: one 500 (served on b), two finished on a
    assert len(fleet["b:1"].served) == 4
    assert e.endpoints[0].healthy and e.endpoints[0].strikes == 0  # its later successes wiped the strike


@pytest.mark.parametrize("reply", ["not_json", "no_choices", "http_404", "http_500"])
async def test_fast_but_wrong_endpoint_stops_being_preferred(reply: str) -> None:
    fleet = FakeFleet("a:1", "b:1")
    a, b = fleet["a:1"], fleet["b:1"]
    b.delay = 0.05  # the healthy endpoint is slower than the wrong one
    if reply.startswith("http_"):
        a.status = int(reply.removeprefix("http_"))
    else:
        a.reply = reply
    e = engine(fleet, backoff=5, max_concurrency=8)
    async with Orchestrator(e, max_in_flight=8) as orch:
        result = await orch.generate("Q?", n=32, seed=0)
        assert_each_once(result, 32, 0)
        assert sorted(b.served) == list(range(32)) and a.served == []  # type: ignore[type-var]
        first = len(a.bodies)
        assert 3 <= first <= 8 + 3, first  # the first wave, then it is down (without the strikes: 31 of 32)
        assert not e.endpoints[0].healthy and e.endpoints[0].strikes >= 3
        again = await orch.generate("Q?", n=16, seed=100)
    assert_each_once(again, 16, 100)
    assert len(a.bodies) == first  # down: not tried again before its probe


async def test_refused_request_waits_for_an_endpoint_that_has_not_refused_it() -> None:
    # b is busy (cap 1) when a refuses: the candidate waits for b rather than asking a again
    fleet = FakeFleet("a:1", "b:1")
    a, b = fleet["a:1"], fleet["b:1"]
    a.status = 404
    b.delay = 0.1
    e = engine(fleet, backoff=5, max_concurrency=1)
    async with Orchestrator(e) as orch:
        result = await orch.generate("Q?", n=4, seed=0)
    assert_each_once(result, 4, 0)
    assert sorted(b.served) == [0, 1, 2, 3] and a.served == []  # type: ignore[type-var]
    assert e.endpoints[0].strikes >= 1


async def test_wrong_endpoint_back_from_the_probe_is_on_probation() -> None:
    fleet = FakeFleet("a:1", "b:1")
    a, b = fleet["a:1"], fleet["b:1"]
    a.reply = "not_json"
    a.delay = b.delay = 0.05
    e = engine(fleet, backoff=0.05, max_concurrency=8)
    ep = e.endpoints[0]
    async with Orchestrator(e, max_in_flight=16) as orch:
        assert_each_once(await orch.generate("Q?", n=16, seed=0), 16, 0)
        assert not ep.healthy
        failures = ep.failures
        await until(lambda: ep.healthy)  # /models answers: the probe brings it back, on probation
        assert e.fleet.on_probation(ep) and e.fleet.cap(ep) == 1
        a.max_in_flight = 0
        assert_each_once(await orch.generate("Q?", n=16, seed=100), 16, 100)
        assert a.max_in_flight == 1  # one request at a time while on probation
        assert ep.failures > failures  # its next strike took it down again, with a longer backoff
        a.reply = "ok"
        await until(lambda: ep.healthy)
        await orch.generate("Q?", n=16, seed=200)
    assert ep.strikes == 0 and ep.failures == 0 and not e.fleet.on_probation(ep) and a.served


@pytest.mark.parametrize("fleet_size", [1, 2])
async def test_request_refused_everywhere_fails_without_striking_anyone(fleet_size: int) -> None:
    fleet = FakeFleet(*["a:1", "b:1"][:fleet_size])
    for server in fleet.servers.values():
        server.status = 400
    e = engine(fleet)
    async with Orchestrator(e) as orch:
        for _ in range(4):
            result = await orch.generate("Q?", n=3, seed=0)
            assert all("HTTP 400" in (c.error or "") for c in result.candidates)
    assert all(ep.healthy and ep.strikes == 0 for ep in e.endpoints)
    # a refused request is confirmed on a second endpoint when there is one, never more
    assert sum(len(s.bodies) for s in fleet.servers.values()) == 4 * 3 * fleet_size


async def test_black_hole_endpoint_fails_on_its_read_timeout_and_its_requests_move() -> None:
    fleet = FakeFleet("hole:1", "b:1")
    fleet["hole:1"].reply = "black_hole"
    fleet["b:1"].delay = 0.02
    e = engine(fleet, backoff=5, read_timeout=0.3)
    async with Orchestrator(e) as orch:
        with anyio.fail_after(20):  # a hang guard, not a timing claim
            result = await orch.generate("Q?", n=8, seed=0)
    assert_each_once(result, 8, 0)
    assert sorted(fleet["b:1"].served) == list(range(8))  # type: ignore[type-var]
    assert fleet["hole:1"].bodies and fleet["hole:1"].in_flight == 0
    assert "read_timeout=0.3 s" in (e.endpoints[0].last_error or "")


async def test_candidate_generating_longer_than_the_read_timeout_is_not_a_failure() -> None:
    fleet = FakeFleet("a:1")
    fleet["a:1"].token_delay = 0.3  # each token within the read timeout, the whole answer past it
    e = engine(fleet, read_timeout=0.5)
    async with Orchestrator(e) as orch:
        result = await orch.generate("Q?", n=2, seed=0)
    assert_each_once(result, 2, 0)
    assert e.endpoints[0].healthy and e.endpoints[0].strikes == 0


async def test_candidate_past_request_timeout_fails_without_blaming_the_endpoint() -> None:
    fleet = FakeFleet("a:1", "b:1")
    fleet["a:1"].token_delay = fleet["b:1"].token_delay = 0.3
    e = engine(fleet, read_timeout=5, request_timeout=0.2)
    async with Orchestrator(e) as orch:
        result = await orch.generate("Q?", n=2, seed=0)
    assert all("request_timeout=0.2 s" in (c.error or "") for c in result.candidates)
    assert all(ep.healthy and ep.strikes == 0 for ep in e.endpoints)
    assert len(fleet["a:1"].bodies) + len(fleet["b:1"].bodies) == 2  # not retried


async def test_server_that_does_not_stream_still_works() -> None:
    fleet = FakeFleet("a:1")
    fleet["a:1"].json_only = True
    async with Orchestrator(engine(fleet)) as orch:
        result = await orch.generate("Q?", n=3, seed=0)
    assert_each_once(result, 3, 0)


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


async def test_probe_loop_survives_an_exception_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    fleet = FakeFleet("a:1", "b:1")
    a = fleet["a:1"]
    a.down = True
    original = fleet.handle
    broken = [True]

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.netloc == b"a:1" and request.url.path == "/v1/models" and not a.down and broken[0]:
            broken[0] = False
            raise RuntimeError("a bug in the transport")
        return await original(request)

    fleet.transport.handler = handle
    e = engine(fleet, backoff=0.02)
    async with Orchestrator(e) as orch:
        await orch.generate("Q?", n=2, seed=0)
        a.down = False
        await until(lambda: e.endpoints[0].healthy)  # the probe went on after the error
        assert e._probe is not None and not e._probe.done()
        real_due = e.fleet.due
        calls = [0]

        def due() -> list[Endpoint]:
            calls[0] += 1
            if calls[0] == 1:
                raise OverflowError("a bug in the balancer")
            return real_due()

        e.fleet.due = due  # type: ignore[method-assign]
        await until(lambda: calls[0] >= 2, timeout=10)
        assert not e._probe.done()
    assert not broken[0]
    assert "probing http://a:1/v1 failed" in caplog.text and "RuntimeError: a bug in the transport" in caplog.text
    assert "the endpoint probe failed; probing goes on" in caplog.text and "OverflowError" in caplog.text


async def test_endpoint_that_never_answers_its_probe_does_not_hold_the_others_back() -> None:
    fleet = FakeFleet("hang:1", "b:1", "c:1")
    hang, b = fleet["hang:1"], fleet["b:1"]
    hang.down = b.down = True
    original = fleet.handle

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.netloc == b"hang:1" and not hang.down:
            await anyio.sleep_forever()  # accepts the probe, never answers it
        return await original(request)

    fleet.transport.handler = handle
    e = engine(fleet, backoff=0.02, connect_timeout=0.2)
    async with e:
        hang.down = b.down = False
        await until(lambda: e.endpoints[1].healthy)  # probed after the hanging one gave up
        await until(lambda: "GET /models: no answer within 0.4 s" in (e.endpoints[0].last_error or ""))
    assert not e.endpoints[0].healthy


async def test_aclose_stops_the_probe() -> None:
    fleet = FakeFleet("a:1", "b:1")
    fleet["a:1"].down = True
    e = engine(fleet)
    await e.start()
    probe = e._probe
    assert probe is not None and not probe.done()
    await e.aclose()
    assert probe.done() and e._probe is None
