"""Fleet faults over real loopback sockets: a fake OpenAI-compatible server
served by uvicorn, and a proxy in front of it that turns into a black hole
(accepts connections, never answers)."""

from __future__ import annotations

import anyio
import pytest

from nbest import Orchestrator
from nbest.engines.openai import OpenAIEngine
from tests.fake_openai import MODEL, FakeFleet, serve
from tests.loopback_proxy import LoopbackProxy

pytestmark = pytest.mark.asyncio(loop_scope="session")

READ_TIMEOUT_S = 5.0
"""How long the engine waits for bytes before it gives an endpoint up (see the test)."""


async def test_black_hole_in_a_fleet_of_two_every_candidate_completes_once_on_the_healthy_endpoint() -> None:
    fleet = FakeFleet("real:1")
    fleet["real:1"].delay = 0.02
    async with serve(fleet, "real:1") as port:
        hole = LoopbackProxy(port)
        await hole.start()
        # The healthy endpoint shares this event loop: on a loaded machine a wait for its
        # bytes can stall for a second, and a read_timeout it missed would send a candidate
        # twice. READ_TIMEOUT_S is far above such stalls; the hole costs it once. The probe
        # backoff outlasts the test, so the hole's last error stays its read timeout.
        engine = OpenAIEngine([hole.url, f"http://127.0.0.1:{port}/v1"], model=MODEL, read_timeout=READ_TIMEOUT_S,
                              connect_timeout=READ_TIMEOUT_S, backoff=120, max_backoff=120)  # fmt: skip
        try:
            async with Orchestrator(engine) as orch:
                await hole.stop()  # both endpoints answered at start; now the first one goes silent
                hole.black_hole = True
                await hole.start()
                with anyio.fail_after(60):  # a hang guard, not a timing claim
                    result = await orch.generate("Q?", n=8, seed=0)
                    again = await orch.generate("Q?", n=8, seed=100)
        finally:
            await hole.stop()
    for res, seed in ((result, 0), (again, 100)):
        assert sorted(c.index for c in res.candidates) == list(range(8))
        assert all(c.ok for c in res.candidates), [c.error for c in res.candidates]
        assert {c.text for c in res.candidates} == {f"real:1 seed={seed + i}" for i in range(8)}
    assert sorted(fleet["real:1"].served) == [*range(8), *range(100, 108)]  # type: ignore[type-var]  # each once
    assert hole.held > 0  # requests did go into the black hole
    hole_endpoint = engine.endpoints[0]
    assert not hole_endpoint.healthy and f"read_timeout={READ_TIMEOUT_S:g} s" in (hole_endpoint.last_error or "")
