"""The choice page in a real browser (Playwright driving the machine's Chromium)
against a real uvicorn server with the scripted engine."""

from __future__ import annotations

import ctypes
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from nbest import Orchestrator
from nbest.server import PreferenceStore, ServerSettings, create_app
from tests.scripted import ScriptedEngine, Step, Tok
from tests.serving import by_index, running

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-breakpad",
    "--disable-crash-reporter",
]
XSS = "<img src=x onerror=alert(1)>"

playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"needs {CHROMIUM} (make browser)")


def _subreaper(on: bool) -> None:
    """While on, the browser's double-forked helpers (crashpad, zygotes) are adopted here, so they can be reaped."""
    ctypes.CDLL(None, use_errno=True).prctl(36, int(on), 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _reap_browser_leftovers() -> list[psutil.Process]:
    """Wait for the browser processes adopted by this process; the ones still running."""
    leftovers = [p for p in psutil.Process().children() if "chrom" in p.name()]
    _, alive = psutil.wait_procs(leftovers, timeout=10)
    return alive


@pytest.fixture
def browser() -> Iterator[object]:
    _subreaper(True)
    try:
        with playwright_sync.sync_playwright() as pw:
            chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                yield chromium
            finally:
                chromium.close()
        assert _reap_browser_leftovers() == []
    finally:
        _subreaper(False)


@pytest.mark.parametrize("api_key", [None, "k-42"])
def test_choose_a_candidate_in_the_page(browser, tmp_path: Path, api_key: str | None) -> None:  # type: ignore[no-untyped-def]
    engine = ScriptedEngine(
        respond=by_index(
            {
                0: Step("The answer is 4.", mean_logprob=-0.4, delay=0.2),
                1: Step(XSS, mean_logprob=-0.1, delay=0.4),
                2: Step("Here:\n```python\nprint(2 + 2)\n```\nIt prints 4.", mean_logprob=-0.9, delay=2.0),
            }
        )
    )
    db = tmp_path / "prefs.db"
    app = create_app(
        lambda: Orchestrator(engine, close_engines=False), ServerSettings(api_key=api_key), prefs=PreferenceStore(db)
    )
    with running(app) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(url + (f"/?api_key={api_key}" if api_key else "/"))
        assert page.url == url + "/"  # the key leaves the address bar
        page.fill("#prompt", "What is 2 + 2?")
        page.fill("#n", "3")
        page.select_option("#strategy", "ladder:0.3-1.2")
        page.click("#go")
        # cards stream in before the slow candidate finishes, unranked ...
        page.wait_for_selector(".card", timeout=20_000)
        assert page.locator(".card[data-rank]").count() == 0
        assert "Generating" in page.locator("#status").inner_text()
        # ... then all carry their rank
        page.wait_for_selector('.card[data-rank="3"]', timeout=20_000)
        cards = page.locator(".card")
        assert cards.count() == 3
        # reordered by rank: the XSS text has the best log-prob
        assert [cards.nth(i).get_attribute("data-index") for i in range(3)] == ["1", "0", "2"]
        assert [cards.nth(i).get_attribute("data-rank") for i in range(3)] == ["1", "2", "3"]
        # model text shows as text, never as markup
        assert cards.nth(0).locator(".body").inner_text() == XSS
        assert page.locator("#cards img").count() == 0
        assert cards.nth(2).locator("pre").inner_text() == "print(2 + 2)\n"
        assert cards.nth(1).locator(".spec").inner_text().startswith("ladder[t=0.30] T=0.3")
        assert "confidence" in cards.nth(0).locator(".meta").inner_text()
        if os.environ.get("NBEST_SCREENSHOT"):
            page.screenshot(path=os.environ["NBEST_SCREENSHOT"], full_page=True)
        # edit the second-ranked one and choose it
        second = cards.nth(1)
        second.locator("button.edit").click()
        second.locator("textarea.edited").fill("4")
        second.locator("button.choose").click()
        page.wait_for_selector(".card.chosen", timeout=10_000)
        assert "Saved choice 1: candidate 0" in page.locator("#status").inner_text()
        assert dialogs == []

        # a second round: rank all three by moving cards, then submit the order
        page.click("#go")
        page.wait_for_selector('.card[data-rank="3"]', timeout=20_000)
        cards.nth(2).locator("button.up").click()  # 1, 0, 2 -> 1, 2, 0
        cards.nth(0).locator("button.down").click()  # -> 2, 1, 0
        page.click("#submit-ranking")
        page.wait_for_selector(".card.chosen", timeout=10_000)
        assert "ranking 2 > 1 > 0" in page.locator("#status").inner_text()
        page.close()
    rows = sqlite3.connect(db).execute("SELECT chosen, chosen_rank, edited_text, prompt, ranking FROM choices").fetchall()
    assert rows == [(0, 2, "4", '"What is 2 + 2?"', None), (2, 3, None, '"What is 2 + 2?"', "[2, 1, 0]")]
    texts = dict(sqlite3.connect(db).execute("SELECT idx, text FROM candidates").fetchall())
    assert texts[1] == XSS


def _ranked_page(browser, url: str, n: int):  # type: ignore[no-untyped-def]
    """A page that asked for ``n`` candidates and shows them ranked."""
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(url + "/")
    page.fill("#prompt", "What is 2 + 2?")
    page.fill("#n", str(n))
    page.click("#go")
    page.wait_for_selector("#cards[data-ranked]", timeout=20_000)
    return page


def test_a_choice_is_kept_when_the_server_forgot_the_result(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # the server remembers no result (as after a restart): the page sends the whole Result instead
    engine = ScriptedEngine(respond=by_index({0: Step("four", mean_logprob=-0.1), 1: Step("4", mean_logprob=-0.5)}))
    db = tmp_path / "prefs.db"
    app = create_app(
        lambda: Orchestrator(engine, close_engines=False), ServerSettings(remember_results=0), prefs=PreferenceStore(db)
    )
    posted: list[dict[str, object]] = []
    with running(app) as url:
        page = _ranked_page(browser, url, 2)
        page.on("request", lambda r: posted.append(r.post_data_json) if r.url.endswith("/v1/choices") else None)
        page.locator(".card").nth(1).locator("button.choose").click()
        page.wait_for_selector(".card.chosen", timeout=10_000)
        assert "Saved choice 1: candidate 1" in page.locator("#status").inner_text()
        page.close()
    assert [("result_id" in p, "result" in p) for p in posted] == [(True, False), (False, True)]
    sent = posted[1]["result"]
    assert isinstance(sent, dict) and len(sent["candidates"]) == 2
    assert all(c["token_logprobs"] is None and c["text"] for c in sent["candidates"])  # the bulk stays home
    rows = sqlite3.connect(db).execute("SELECT chosen, chosen_rank, n FROM choices").fetchall()
    assert rows == [(1, 2, 2)]
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM candidates").fetchone() == (2,)


def test_the_page_says_when_a_stream_or_a_choice_fails(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    engine = ScriptedEngine(
        respond=by_index({0: Step("an answer", mean_logprob=-0.3), 1: Step("another answer", mean_logprob=-0.5)})
    )
    db = tmp_path / "prefs.db"
    app = create_app(lambda: Orchestrator(engine, close_engines=False), ServerSettings(), prefs=PreferenceStore(db))
    with running(app) as url:
        page = _ranked_page(browser, url, 2)
        card = page.locator(".card").nth(0)
        # a proxy answers the choice with an HTML error page
        page.route("**/v1/choices", lambda route: route.fulfill(status=502, content_type="text/html", body="<h1>down</h1>"))
        card.locator("button.choose").click()
        page.wait_for_selector("#status.error", timeout=10_000)
        assert "Could not save the choice: HTTP 502" in page.locator("#status").inner_text()
        assert page.locator(".card.chosen").count() == 0
        # the network drops the request
        page.unroute("**/v1/choices")
        page.route("**/v1/choices", lambda route: route.abort())
        page.locator("#status").evaluate("node => { node.textContent = ''; node.className = ''; }")
        card.locator("button.choose").click()
        page.wait_for_selector("#status.error", timeout=10_000)
        assert "network error" in page.locator("#status").inner_text()
        # back online: the same choice goes through
        page.unroute("**/v1/choices")
        card.locator("button.choose").click()
        page.wait_for_selector(".card.chosen", timeout=10_000)
        assert "Saved choice 1" in page.locator("#status").inner_text()
        # Undo while the log cannot be written: the page says so, and Undo stays
        refused = '{"error": {"message": "the choice was not withdrawn (send it again later): disk I/O error"}}'
        page.route(
            "**/v1/choices/1/withdraw", lambda route: route.fulfill(status=503, content_type="application/json", body=refused)
        )
        page.click("#undo")
        page.wait_for_selector("#loop.error", timeout=10_000)
        assert "Could not withdraw choice 1: the choice was not withdrawn" in page.locator("#loop-text").inner_text()
        assert page.locator("#undo").is_enabled() and page.locator(".card.chosen").count() == 1
        page.unroute("**/v1/choices/1/withdraw")

        # the stream ends (a dropped connection, a proxy timeout) before the ranked event
        def truncated(route) -> None:  # type: ignore[no-untyped-def]
            response = route.fetch()
            body = response.text()
            route.fulfill(response=response, body=body[: body.index("event: ranked")])

        page.route("**/v1/nbest/stream", truncated)
        page.click("#go")
        page.wait_for_selector("#status.error", timeout=20_000)
        assert "ended before the candidates were ranked (2 of 2 arrived)" in page.locator("#status").inner_text()
        assert page.locator(".card[data-rank]").count() == 0 and page.locator("button.choose").count() == 0
        assert not page.locator("#go").is_disabled()
        page.close()
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM choices").fetchone() == (1,)


PARIS = "The capital is Paris."


def test_equal_answers_show_as_one_card_and_a_choice_can_be_undone(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # three of four candidates give the same sentence (up to case, spacing and punctuation)
    engine = ScriptedEngine(
        respond=by_index(
            {
                0: Step(PARIS, mean_logprob=-0.5),
                1: Step("Lyon.", mean_logprob=-0.2),
                2: Step(PARIS, mean_logprob=-0.3),
                3: Step("the capital is  paris", mean_logprob=-0.4),
            }
        )
    )
    db = tmp_path / "prefs.db"
    app = create_app(lambda: Orchestrator(engine, close_engines=False), ServerSettings(), prefs=PreferenceStore(db))
    with running(app) as url:
        page = _ranked_page(browser, url, 4)
        cards = page.locator(".card")
        assert cards.count() == 2  # two distinct options, not four cards
        group, lyon = cards.nth(0), cards.nth(1)
        # the group comes first (its confidence is the sum of three), shown by its best-ranked member
        assert group.locator(".support").inner_text() == "3 of 4"
        assert group.get_attribute("data-index") == "2" and group.get_attribute("data-members") == "2,3,0"
        assert group.locator(":scope > .body").inner_text() == PARIS
        assert lyon.get_attribute("data-index") == "1" and lyon.locator(".support").count() == 0
        group_conf = float(group.locator(":scope > .head .meta").inner_text().split("confidence ")[1].rstrip("%"))
        lyon_conf = float(lyon.locator(":scope > .head .meta").inner_text().split("confidence ")[1].split("%")[0])
        assert group_conf > lyon_conf
        assert "into 2 distinct options" in page.locator("#status").inner_text()
        # the members are one click away: a real button that says whether it is expanded
        toggle = group.locator("button.members-toggle")
        assert toggle.get_attribute("aria-expanded") == "false"
        assert not group.locator(".members").is_visible()
        toggle.focus()
        page.keyboard.press("Enter")
        assert toggle.get_attribute("aria-expanded") == "true"
        members = group.locator(".member")
        assert [members.nth(i).get_attribute("data-index") for i in range(3)] == ["2", "3", "0"]
        assert [members.nth(i).locator(".rank").inner_text() for i in range(3)] == ["rank 2", "rank 3", "rank 4"]
        assert members.nth(1).locator(".body").inner_text() == "the capital is  paris"
        assert "confidence" in members.nth(0).locator(".meta").inner_text()

        # a pick on the group: the candidate shown, and the group
        group.locator(".actions button.choose").click()
        page.wait_for_selector(".card.chosen", timeout=10_000)
        assert "Saved choice 1: candidate 2, one of 3 with this answer (ranker's rank 2)" in page.locator("#status").inner_text()
        assert page.locator("#loop-text").inner_text() == "Choice saved."  # this server does not learn
        assert members.nth(0).locator("button").is_disabled()
        listed = httpx.get(url + "/v1/choices").json()
        assert [(c["chosen"], c["group"]) for c in listed["data"]] == [(2, [2, 3, 0])]

        # undo: the choice is withdrawn, and the page lets the person pick again
        page.click("#undo")
        page.wait_for_selector("#undo", state="hidden", timeout=10_000)
        assert "Choice 1 withdrawn" in page.locator("#loop-text").inner_text()
        assert page.locator(".card.chosen").count() == 0
        assert httpx.get(url + "/v1/choices").json()["data"] == []

        # one member picked by itself: that candidate, with its group
        members.nth(2).locator("button.choose-member").click()
        page.wait_for_selector(".member.chosen", timeout=10_000)
        assert "Saved choice 2: candidate 0" in page.locator("#status").inner_text()
        page.close()
    rows = sqlite3.connect(db).execute("SELECT id, chosen, chosen_rank, grp, withdrawn IS NOT NULL FROM choices").fetchall()
    assert [(*row[:3], json.loads(row[3]), row[4]) for row in rows] == [(1, 2, 2, [2, 3, 0], 1), (2, 0, 4, [2, 3, 0], 0)]


def test_a_pruned_candidate_shows_apart_and_cards_are_labelled_by_position(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.scripted import toks

    # "low" pruning: 4 warm-up candidates, windows of 16 tokens, keep 10 %. The warm-up candidates'
    # groups are all 3.0, so the threshold is 3.0; candidate 4's first full window is at 1.0: it
    # is stopped at its 16th token of 20. Candidate 3 answers apart, at a better log-prob.
    steady = Step(stream=toks([(" 4", 3.0)] * 16), token_delay=0.001)
    engine = ScriptedEngine(
        respond=by_index(
            {
                0: steady,
                1: steady,
                2: steady,
                3: Step(stream=[*toks([(" 5", 3.0)] * 16)[:15], Tok(" 5", -0.01, {" 5": -0.01, "x": -5.99})]),
                4: Step(stream=toks([(" 7", 1.0)] * 20), token_delay=0.001),
            }
        )
    )
    app = create_app(lambda: Orchestrator(engine, close_engines=False), ServerSettings(), prefs=PreferenceStore(":memory:"))
    with running(app) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(url + "/")
        page.fill("#prompt", "What is 2 + 2?")
        page.fill("#n", "5")
        page.select_option("#prune", "low")
        page.select_option("#rerankers", ["vote", "logprob"])
        page.click("#go")
        page.wait_for_selector("#cards[data-ranked]", timeout=20_000)
        cards = page.locator(".card")
        assert cards.count() == 2 and page.locator('.card[data-index="4"]').count() == 0  # no card for it
        assert [cards.nth(i).locator(":scope > .head .rank").inner_text() for i in range(2)] == ["option 1", "option 2"]
        assert cards.nth(0).locator(".support").inner_text() == "3 of 4"  # the pruned one did not vote
        pruned = page.locator("#pruned .pruned-item")
        assert page.locator("#pruned").is_visible() and pruned.count() == 1
        assert pruned.nth(0).locator("summary").inner_text() == "Candidate 4: pruned after 16 tokens"
        assert not pruned.nth(0).locator(".body").is_visible()  # collapsed
        assert pruned.nth(0).locator("button").count() == 0  # not choosable
        assert "1 pruned" in page.locator("#status").inner_text()
        page.close()
