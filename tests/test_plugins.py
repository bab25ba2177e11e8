"""Third-party kinds through entry points: a reranker plugin (tests/plugins/nbest_shout.py),
installed as a real distribution on the path, works from ``nbest run --reranker``,
from ``/v1/nbest`` and from config files, and is unknown without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nbest import Orchestrator
from nbest.engines import ENGINES
from nbest.plugins import load_plugins
from nbest.rerankers import RERANKERS, RankerConfig, build_ranker
from nbest.server import PreferenceStore, ServerSettings, create_app
from nbest.strategies import STRATEGIES
from tests.scripted import ScriptedEngine, Step
from tests.serving import by_index

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).resolve().parent / "plugins"


def install(tmp_path: Path) -> Path:
    """A site folder holding the ``nbest-shout`` distribution: metadata and its entry point."""
    site = tmp_path / "site"
    info = site / "nbest_shout-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nbest-shout\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[nbest.rerankers]\nshout = nbest_shout:ShoutConfig\n")
    return site


@pytest.fixture
def shout_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The distribution on sys.path for this test; the registries as they were afterwards."""
    for registry in (RERANKERS, STRATEGIES, ENGINES):
        monkeypatch.setattr(registry, "_kinds", dict(registry._kinds))
        monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.syspath_prepend(str(install(tmp_path)))
    monkeypatch.syspath_prepend(str(PLUGINS))
    try:
        yield
    finally:
        sys.modules.pop("nbest_shout", None)


def run_cli(tmp_path: Path, *args: str, plugin: bool = True) -> subprocess.CompletedProcess[str]:
    paths = [str(install(tmp_path)), str(PLUGINS), str(ROOT)] if plugin else [str(ROOT)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    argv = [sys.executable, "-m", "tests.cli_with_engine", "seed_answers", "run", "hi", "-n", "3", "--seed", "0", *args]
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_nbest_run_takes_the_plugin_reranker_as_short_form_and_as_config_file(tmp_path: Path) -> None:
    # seed s answers "The answer is <s mod 3>.": only seed 1's text holds a "1"
    proc = run_cli(tmp_path, "--reranker", "shout:1", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["best"]["text"] == "The answer is 1." and result["best"]["scores"] == {"shout": 1.0}
    assert result["ranker"]["rerankers"] == [{"kind": "shout", "weight": 1.0, "mark": "1"}]

    config = tmp_path / "shout.yaml"
    config.write_text("kind: shout\nmark: '2'\n")
    proc = run_cli(tmp_path, "--reranker", f"@{config}", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["best"]["text"] == "The answer is 2."

    proc = run_cli(tmp_path, "--reranker", "shout:1", plugin=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "unknown reranker 'shout'" in proc.stderr


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.usefixtures("shout_installed")
async def test_a_client_may_ask_for_the_plugin_reranker_over_http(scripted: ScriptedEngine) -> None:
    assert "shout" not in RERANKERS.kinds()  # nothing is loaded at import time
    scripted.respond = by_index({0: Step("calm."), 1: Step("loud!!"), 2: Step("bold!")})
    async with Orchestrator(scripted) as orch:
        app = create_app(orch, ServerSettings(), prefs=PreferenceStore(":memory:"))  # loads the plugins
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://nbest.test") as client:
            for spec in ("shout", {"kind": "shout", "mark": "!"}):
                r = await client.post("/v1/nbest", json={"prompt": "x", "n": 3, "rerankers": [spec]})
                assert r.status_code == 200, r.text
                assert [c["text"] for c in r.json()["candidates"]] == ["loud!!", "bold!", "calm."]
            r = await client.post("/v1/nbest", json={"prompt": "x", "n": 3, "rerankers": ["shout", "cross:/tmp/m"]})
            assert r.status_code == 422 and "not offered to clients" in r.json()["error"]["message"]


@pytest.mark.usefixtures("shout_installed")
def test_a_ranker_config_file_names_the_plugin_kind(tmp_path: Path) -> None:
    assert load_plugins()["rerankers"] == ["shout"]
    assert load_plugins()["rerankers"] == []  # once
    path = tmp_path / "ranker.json"
    path.write_text(json.dumps({"rerankers": [{"kind": "shout", "mark": "?", "weight": 2}, "logprob"], "temperature": 0.5}))
    config = RankerConfig.load(path)
    ranker = config.to_ranker()
    assert [r.name for r in ranker.rerankers] == ["shout", "mean_logprob"] and ranker.weights == [2.0, 1.0]
    assert RankerConfig.of(ranker) == config  # round trip: the plugin's config comes back exactly
    assert RankerConfig.of(build_ranker(["shout:?=2", "logprob"])) == config.model_copy(
        update={"temperature": 1.0, "normalize": "auto"}
    )


def test_the_readme_shows_this_plugin_file() -> None:
    """The README's plugin is a fragment (it would register "shout" for every later test): this is its proof."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8").split("## Writing a plugin", 1)[1]
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    first, _, code = block.partition("\n")
    assert first.startswith("# fragment")
    assert code == (PLUGINS / "nbest_shout.py").read_text(encoding="utf-8")
