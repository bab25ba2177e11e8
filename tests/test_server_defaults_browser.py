"""The choice page against ``nbest serve --until/--wave/--prune``: its "the server's default"
choice says what that default is (from ``GET /v1/settings``) and leaves the field out of the
body (the server applies its own: it prunes), "no" sends null (nothing is pruned)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nbest import Orchestrator
from nbest.server import PreferenceStore, ServerSettings, create_app
from tests.scripted import ScriptedEngine, Step, toks
from tests.serving import by_index, running
from tests.test_server_browser import CHROMIUM, XSS, browser  # noqa: F401  (the fixture)

playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs {CHROMIUM} (make browser)")
PLAIN = "the server's default"


def _labels(page, until: str, prune: str) -> None:  # type: ignore[no-untyped-def]
    """Wait until the first options of Stop early and Prune read ``until`` and ``prune``."""
    playwright_sync.expect(page.locator("#until option").first).to_have_text(until, timeout=10_000)
    playwright_sync.expect(page.locator("#prune option").first).to_have_text(prune, timeout=10_000)


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
        _labels(page, f"{PLAIN}: none (all N)", f"{PLAIN}: prune hard (low)")
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


@pytest.mark.parametrize(
    ("settings", "until", "prune"),
    [
        (
            ServerSettings(until="esc:4", wave=4, prune="high"),
            "stop when 4 in a row agree (esc:4, waves of 4)",
            "prune mildly (high)",
        ),
        (
            ServerSettings(until="beta:0.95", prune="0.5:4:32"),
            "stop when the answer is clear (beta:0.95)",
            "prune, keep 50 % (0.5:4:32)",
        ),
        (ServerSettings(until="confidence:0.8:candidate"), "stop when confident enough (confidence:0.8:candidate)", "none"),
        (ServerSettings(), "none (all N)", "none"),
    ],
    ids=["esc-waves-high", "beta-share", "confidence", "unset"],
)
def test_the_page_says_what_the_servers_default_is(browser, settings: ServerSettings, until: str, prune: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    engine = ScriptedEngine()
    app = create_app(lambda: Orchestrator(engine, close_engines=False), settings, prefs=PreferenceStore(":memory:"))
    with running(app) as url:
        page = browser.new_page()
        page.goto(url + "/")
        _labels(page, f"{PLAIN}: {until}", f"{PLAIN}: {prune}")
        assert page.locator("#until").input_value() == "" and page.locator("#prune").input_value() == ""
        page.close()
    assert engine.history == []  # reading the defaults generates nothing


def test_the_servers_words_are_text_and_bounded(browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    # a server (or a proxy) that sends what the page has no words for, markup included: shown as text, cut
    engine = ScriptedEngine()
    app = create_app(lambda: Orchestrator(engine, close_engines=False), ServerSettings(), prefs=PreferenceStore(":memory:"))
    until = XSS + "x" * 100
    body = json.dumps({"until": until, "wave": 3, "prune": "<b>keep-some</b>"})
    with running(app) as url:
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.route("**/v1/settings", lambda route: route.fulfill(status=200, content_type="application/json", body=body))
        page.goto(url + "/")
        _labels(page, f"{PLAIN}: {until[:79]}…, waves of 3", f"{PLAIN}: <b>keep-some</b>")
        assert page.locator("img").count() == 0 and page.locator("b").count() == 0
        assert dialogs == []
        page.close()


def test_without_the_api_key_the_label_stays_plain_until_it_is_typed(browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    engine = ScriptedEngine(respond=by_index({}, Step("4", mean_logprob=-0.2)))
    settings = ServerSettings(api_key="k-42", until="esc:2")
    app = create_app(lambda: Orchestrator(engine, close_engines=False), settings, prefs=PreferenceStore(":memory:"))
    with running(app) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        # the page itself comes with the key (as from a proxy that signs users in), its field stays empty:
        # the page's own requests carry no key until one is typed
        signed = {"authorization": "Bearer k-42"}
        page.route(url + "/", lambda route: route.continue_(headers={**route.request.headers, **signed}))
        with page.expect_response("**/v1/settings") as refused:
            page.goto(url + "/")
        assert refused.value.status == 401
        assert page.locator("#apikey").input_value() == ""
        assert page.locator("#until option").first.text_content() == PLAIN
        assert page.locator("#prune option").first.text_content() == PLAIN
        assert not page.locator("#status").inner_text()  # a refused look-up is no error to show
        page.fill("#apikey", "k-42")
        page.fill("#prompt", "What is 2 + 2?")
        page.fill("#n", "4")
        page.select_option("#rerankers", ["vote"])
        page.click("#go")  # the key field's change: the defaults are asked again, with the key
        _labels(page, f"{PLAIN}: stop when 2 in a row agree (esc:2)", f"{PLAIN}: none")
        page.wait_for_selector("#cards[data-ranked]", timeout=20_000)
        assert "sampling stopped after 2 of 4" in page.locator("#status").inner_text()  # the server's esc:2
        page.close()
