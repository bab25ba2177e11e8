"""The choice page against a server that learns from choices (``ServerSettings(learn=True)``):
picks made on the page change the order of the next Result the page shows, and the page
says what the ranking learned. A real browser (see tests/test_server_browser.py) and a
real uvicorn server with the scripted engine."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from nbest import Orchestrator
from nbest.server import PreferenceStore, ServerSettings, create_app
from tests import test_server_browser as shared
from tests.scripted import ScriptedEngine, Step
from tests.serving import by_index, running

browser = shared.browser
"""Chromium driven by Playwright (skipped without them, as there)."""
pytestmark = shared.pytestmark

LONG = "The answer is four: two plus two makes four, as anyone who counts on their fingers will find out."
MEDIUM = "Two plus two makes four."
SHORT = "Four."
# the default ranker (mean log-prob) puts the long answer first and the short one last
STEPS = {
    0: Step(LONG, mean_logprob=-0.2, tokens=24),
    1: Step(MEDIUM, mean_logprob=-0.4, tokens=7),
    2: Step(SHORT, mean_logprob=-0.6, tokens=2),
}
ROUNDS = 8
"""Most picks before the test gives up on the ranking learning."""


def _ask(page) -> list[str]:  # type: ignore[no-untyped-def]
    """Generate on the page; the ranked cards' texts, top first."""
    page.click("#go")
    page.wait_for_selector("#cards[data-ranked]", timeout=20_000)
    cards = page.locator("#cards .card")
    return [cards.nth(i).locator(":scope > .body").inner_text() for i in range(cards.count())]


def test_picks_on_the_page_move_the_short_answer_to_the_top(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    engine = ScriptedEngine(respond=by_index(STEPS))
    db = tmp_path / "prefs.db"
    settings = ServerSettings(learn=True, learn_every=2, learn_min=2, learn_interval_s=0, learn_gap_s=0)
    app = create_app(lambda: Orchestrator(engine, close_engines=False), settings, prefs=PreferenceStore(db))
    with running(app) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(url + "/")
        # a learning server ranks with its learned ranking: the page preselects no reranker and says so
        page.wait_for_selector("#ranker-note:not([hidden])", timeout=10_000)
        assert "learns from the choices made here (version 0" in page.locator("#ranker-note").inner_text()
        assert page.locator("#rerankers").evaluate("s => s.selectedOptions.length") == 0
        page.fill("#prompt", "What is 2 + 2?")
        page.fill("#n", "3")
        page.fill("#user", "ann")
        assert _ask(page) == [LONG, MEDIUM, SHORT]
        assert page.evaluate("current.metadata") == {"user": "ann"}  # a server learning per user ranks for her
        assert "(ranking version 0)" in page.locator("#status").inner_text()

        # the first pick: saved, and the page says how many more before the ranking learns
        page.locator('#cards .card[data-index="2"]').locator("button.choose").click()
        page.wait_for_selector("#loop:not([hidden])", timeout=10_000)
        assert page.locator("#loop-text").inner_text() == "Choice saved; 1 more choice before the ranking learns."
        assert page.locator("#undo").is_visible()

        messages = []
        for _ in range(ROUNDS):
            order = _ask(page)
            if order[0] == SHORT:
                break
            page.locator('#cards .card[data-index="2"]').locator("button.choose").click()
            page.wait_for_selector("#loop:not([hidden])", timeout=15_000)
            messages.append(page.locator("#loop-text").inner_text())
        assert order[0] == SHORT, (order, messages)
        assert any(m.startswith("ranking updated:") for m in messages), messages
        status = page.locator("#status").inner_text()
        assert "(ranking version 0)" not in status and "(ranking version " in status
        assert "learns from the choices made here (version 0" not in page.locator("#ranker-note").inner_text()

        # a new Result names the learned version that ranked it
        version = httpx.get(url + "/v1/ranker").json()["version"]
        assert version >= 1 and f"(ranking version {version})" in status
        page.close()
    picked = sqlite3.connect(db).execute("SELECT chosen, user FROM choices WHERE withdrawn IS NULL").fetchall()
    assert picked and set(picked) == {(2, "ann")}
