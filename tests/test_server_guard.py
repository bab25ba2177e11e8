"""The server's front door: POST bodies must be JSON (415), the Host must be one the
server answers for (421: DNS rebinding), a browser POST from another site is refused
(403), the page cannot be framed, and the API key stays out of the access log."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from nbest.server.guard import RedactApiKey, allowed_hosts_for
from nbest.server.settings import ServerSettings
from tests.scripted import ScriptedEngine
from tests.test_server import serving

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ServerSettings(max_n=8, allowed_hosts=allowed_hosts_for("127.0.0.1"))

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
async def test_post_bodies_must_be_json(scripted: ScriptedEngine, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    async with serving(scripted) as client:
        for path in ("/v1/nbest", "/v1/chat/completions", "/v1/choices"):
            r = await client.post(path, content=b'{"prompt": "x", "n": 1}', headers=headers)
            assert r.status_code == 415, r.text
            assert r.json()["error"]["param"] == "content-type"
            assert "send application/json" in r.json()["error"]["message"]
        assert scripted.history == []
        ok = {"content-type": "application/json; charset=utf-8"}
        assert (await client.post("/v1/nbest", content=b'{"prompt": "x", "n": 1}', headers=ok)).status_code == 200


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:8000", 200),
        ("localhost:8000", 200),
        ("LOCALHOST", 200),
        ("[::1]:8000", 200),
        ("attacker.example:8000", 421),  # DNS rebinding: the attacker's name now points here
        ("127.0.0.1.attacker.example", 421),
        ("", 421),
    ],
)
async def test_host_must_be_one_the_server_answers_for(scripted: ScriptedEngine, host: str, status: int) -> None:
    async with serving(scripted, LOCAL) as client:
        r = await client.post("/v1/nbest", json={"prompt": "x", "n": 1}, headers={"host": host})
        assert r.status_code == status, r.text
        if status == 421:
            assert r.json()["error"]["param"] == "host"
            assert (await client.get("/v1/models", headers={"host": host})).status_code == 421
            assert (await client.get("/", headers={"host": host})).status_code == 421
            assert (await client.get("/healthz", headers={"host": host})).status_code == 200  # probes use addresses


async def test_allowed_hosts_take_subdomains_and_a_wildcard(scripted: ScriptedEngine) -> None:
    settings = ServerSettings(allowed_hosts=allowed_hosts_for("0.0.0.0", [".example.com"]))
    async with serving(scripted, settings) as client:
        for host, status in (("nbest.example.com", 200), ("example.com", 200), ("badexample.com", 421)):
            assert (await client.get("/v1/models", headers={"host": host})).status_code == status, host
    async with serving(scripted, ServerSettings(allowed_hosts=("*",))) as client:
        assert (await client.get("/v1/models", headers={"host": "anything.test"})).status_code == 200


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("http://127.0.0.1:8000", 200),  # the choice page itself
        ("https://evil.example", 403),  # a cross-site form or fetch
        ("http://127.0.0.1:9999", 403),  # another local app
        ("null", 403),  # a sandboxed frame or a file
        ("http://localhost:8000", 200),  # the same server by another local name ...
        ("http://localhost:9999", 403),  # ... but not another local app
        ("http://nbest.example.com", 200),  # a name given in allowed_hosts (a reverse proxy)
        ("http://nbest.example.com:x", 403),
    ],
)
async def test_browser_posts_from_other_sites_are_refused(scripted: ScriptedEngine, origin: str, status: int) -> None:
    settings = ServerSettings(max_n=8, allowed_hosts=allowed_hosts_for("127.0.0.1", ["nbest.example.com"]))
    async with serving(scripted, settings) as client:
        headers = {"host": "127.0.0.1:8000", "origin": origin}
        r = await client.post("/v1/nbest", json={"prompt": "x", "n": 1}, headers=headers)
        assert r.status_code == status, r.text
        if status == 403:
            assert r.json()["error"]["param"] == "origin"
            assert scripted.history == []
        assert (await client.get("/v1/models", headers=headers)).status_code == 200  # reading is not posting


async def test_the_page_cannot_be_framed(scripted: ScriptedEngine) -> None:
    async with serving(scripted) as client:
        r = await client.get("/")
        assert r.status_code == 200
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"


def test_allowed_hosts_follow_the_bound_address() -> None:
    assert allowed_hosts_for("127.0.0.1") == ("localhost", "127.0.0.1", "::1")
    assert allowed_hosts_for("10.0.0.5") == ("localhost", "127.0.0.1", "::1", "10.0.0.5")
    assert allowed_hosts_for("::") is None  # a wildcard bind cannot know its names
    assert allowed_hosts_for("0.0.0.0", ["nbest.example.com"]) == ("localhost", "127.0.0.1", "::1", "nbest.example.com")


def test_api_key_is_redacted_after_uvicorn_configures_logging() -> None:
    logger = logging.getLogger("uvicorn.access")
    redact = RedactApiKey()
    logger.addFilter(redact)
    try:
        uvicorn.Config(FastAPI(), log_level="info")  # configures logging as uvicorn.run does
        seen: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
        logger.addHandler(handler)
        try:
            logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/?x=1&API_KEY=s3cret", "1.1", 200)
        finally:
            logger.removeHandler(handler)
    finally:
        logger.removeFilter(redact)
    assert seen == ['127.0.0.1:5 - "GET /?x=1&API_KEY=REDACTED HTTP/1.1" 200']


@pytest.mark.slow
def test_serve_keeps_the_key_out_of_its_log_and_checks_the_host(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "tests.cli_with_engine", "seed_answers", "serve", "--port", "0"]
    argv += ["--api-key", "s3cret-key", "--db", str(tmp_path / "prefs.db")]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # access log: stdout
    assert proc.stdout is not None
    try:
        deadline, seen, url = time.monotonic() + 60, [], None
        while url is None and time.monotonic() < deadline and (line := proc.stdout.readline()):
            seen.append(line)
            if found := re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line):
                url = found.group(1)
        assert url is not None, "".join(seen)
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/", params={"api_key": "s3cret-key"}).status_code == 200
            r = client.get("/v1/models", headers={"host": "rebound.example", "x-api-key": "s3cret-key"})
            assert r.status_code == 421
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=30)
    log = "".join(seen) + rest
    assert "GET /?api_key=REDACTED HTTP/1.1" in log
    assert "s3cret-key" not in log
