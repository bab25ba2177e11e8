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


async def test_black_hole_in_a_fleet_of_two_every_candidate_completes_once_on_the_healthy_endpoint() -> None:
    fleet = FakeFleet("real:1")
    fleet["real:1"].delay = 0.02
    async with serve(fleet, "real:1") as port:
        hole = LoopbackProxy(port)
        await hole.start()
        engine = OpenAIEngine([hole.url, f"http://127.0.0.1:{port}/v1"], model=MODEL, read_timeout=0.5,
                              connect_timeout=0.5, backoff=5, max_backoff=5)  # fmt: skip
        try:
            async with Orchestrator(engine) as orch:
                await hole.stop()  # both endpoints answered at start; now the first one goes silent
                hole.black_hole = True
                await hole.start()
                with anyio.fail_after(30):  # a hang guard, not a timing claim
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
    assert not hole_endpoint.healthy and "read_timeout=0.5 s" in (hole_endpoint.last_error or "")
