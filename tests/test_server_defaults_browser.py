"""The choice page against ``nbest serve --prune``: its "the server's default" choice leaves
``prune`` out of the body (the server prunes), "no" sends null (nothing is pruned)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nbest import Orchestrator
from nbest.server import PreferenceStore, ServerSettings, create_app
from tests.scripted import ScriptedEngine, Step, toks
from tests.serving import by_index, running
from tests.test_server_browser import CHROMIUM, browser  # noqa: F401  (the fixture)

pytest.importorskip("playwright.sync_api", reason="pip install playwright")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs {CHROMIUM} (make browser)")


def test_the_page_uses_or_turns_off_the_servers_pruning(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    # "low" pruning (4 warm-up candidates, windows of 16, keep 10 %): the warm-up groups are all 3.0,
    # candidate 4's first full window is at 1.0, so the server's pruning stops it at its 16th token
    steady = Step(stream=toks([(" 4", 3.0)] * 16), token_delay=0.001)
    weak = Step(stream=toks([(" 7", 1.0)] * 20), token_delay=0.001)
    engine = ScriptedEngine(respond=by_index({0: steady, 1: steady, 2: steady, 3: steady, 4: weak}))
    settings = ServerSettings(prune="low")
    app = create_app(lambda: Orchestrator(engine, close_engines=False), settings, prefs=PreferenceStore(":memory:"))
    with running(app) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(url + "/")
        assert page.locator("#prune").input_value() == ""  # the server's default, preselected
        page.fill("#prompt", "What is 2 + 2?")
        page.fill("#n", "5")
        page.select_option("#rerankers", ["vote"])
        page.click("#go")
        page.wait_for_selector("#cards[data-ranked]", timeout=20_000)
        assert page.locator("#pruned .pruned-item").count() == 1
        assert "1 pruned" in page.locator("#status").inner_text()
        assert len(engine.aborted) == 1

        page.select_option("#prune", "off")  # "no": null in the body, whatever the server's default
        page.click("#go")
        page.wait_for_selector("#cards[data-ranked]", timeout=20_000)
        assert page.locator("#pruned").is_hidden()
        assert "pruned" not in page.locator("#status").inner_text()
        assert len(engine.aborted) == 1  # nothing stopped this time
        assert all(call.params.top_logprobs == 0 for call in engine.history[-5:])  # no alternatives asked for
        page.close()
