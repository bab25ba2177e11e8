"""The README's Python blocks and the scripts in examples/ run, on the scripted engine.

Conventions (README authors: keep to them, and add a check below for a new block):

- Every ```python block of README.md is one test, named after the heading above
  it (``example``, ``scaling-out``, ``scaling-out-2`` ...).
- ``VLLMEngine.default()`` returns a :class:`ScriptedEngine` whose replies suit
  the README's prompts (:func:`reply`); ``VLLMEngine(...)`` with a model name is
  the real class (building one is cheap: the engine starts on first use).
- Each block runs with ``__name__ == "__main__"``, so a whole script's
  ``if __name__ == "__main__": anyio.run(...)`` runs.
- A block after the first continues the README's first example: it runs with
  that example's imports, may use top-level ``await``, and then finds ``orch``,
  an open Orchestrator on the scripted engine.
- The address ``http://127.0.0.1:8000`` (``nbest serve``) stands for a test
  server on a free port, serving the scripted engine.
- A block that cannot run on its own (a call signature, a sketch, a module of
  another package) starts with a line ``# fragment`` (``# fragment: why``) and
  is skipped. Keep them rare.
- An example that runs on Ray is listed in ``RAY_EXAMPLES``: it runs on a local
  cluster started for it, whose workers' ``VLLMEngine.default()`` is the
  scripted engine too.
- Every block and every ``examples/*.py`` needs a check in ``README_CHECKS`` or
  ``EXAMPLE_CHECKS``: what it printed or produced, not only that it ran.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import os
import re
import runpy
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

import nbest
from nbest import Orchestrator, VLLMEngine
from nbest.engines.openai import OpenAIEngine
from nbest.metrics import diversity
from nbest.server import PreferenceStore, ServerSettings, create_app
from nbest.types import Prompt, SamplingParams
from tests.fake_openai import FakeFleet
from tests.ray_processes import ray_processes, wait_ray_gone
from tests.scripted import ScriptedEngine, Step
from tests.serving import running

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples"
SERVED_AT = "http://127.0.0.1:8000"
FRAGMENT = "# fragment"

# -- the scripted replies --------------------------------------------------------------------------

REPLIES: dict[str, list[str]] = {
    # best-of-N arithmetic: six of eight candidates say 51
    "pens cost": [
        "17 pens cost 17 * 3 = 51 dollars.",
        "The answer is 51.",
        "17 * 3 = 41",
        "51",
        "They cost 51 dollars.",
        "20 dollars.",
        "3 * 17 = 51",
        "51 dollars.",
    ],
    "2 + 2": ["4"],
    "Der Hund": [
        "The dog sleeps in the garden.",
        "The dog is sleeping in the garden.",
        "The dog sleeps in the yard.",
        "A dog is asleep in the garden.",
        "The dog sleeps in the garden!",
        "In the garden, the dog sleeps.",
        "The hound sleeps in the garden.",
        "Dog garden sleep.",
    ],
    "coffee shop": ["The Cosy Bean", "Hearth & Mug", "The Warm Cup", "Bean There", "Snug Roast", "Velvet Brew"],
    "Name a cat": ["Whiskers.", "Mittens.", "Whiskers.", "Tom."],
    "17 * 3": ["51", "The answer is 51.", "17 * 3 = 51", "41"],
}
"""Replies by a phrase of the prompt's last user message, taken in turn by candidate index."""


def _user_text(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return next((m.content for m in reversed(prompt) if m.role == "user"), "")


def reply(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
    """The scripted engine's reply: the prompt's phrase picks the list, the candidate index the text;
    a cold candidate (temperature below 0.5) gives the first, as a model gives its likeliest answer."""
    index = int(request_id.rsplit("-", 1)[1])
    text = _user_text(prompt)
    texts = next((texts for phrase, texts in REPLIES.items() if phrase in text), [f"reply {index}"])
    pick = 0 if params.temperature < 0.5 else index % len(texts)
    return Step(texts[pick], mean_logprob=-0.5 - 0.05 * index, tokens=6)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> ScriptedEngine:
    """The scripted engine, and ``VLLMEngine.default()`` returning it."""
    scripted = ScriptedEngine(name="smollm2-135m-instruct", respond=reply)
    monkeypatch.setattr(VLLMEngine, "default", lambda *args, **kwargs: scripted)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables at a fixed width
    return scripted


def numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", text)]


# -- README blocks ---------------------------------------------------------------------------------


@dataclass
class Block:
    id: str
    line: int
    code: str


def readme_blocks() -> list[Block]:
    """The ```python blocks of README.md, named after the heading above each."""
    blocks: list[Block] = []
    seen: Counter[str] = Counter()
    heading = "top"
    lines = README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            if line[3:].strip() == "python":
                slug = re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")
                seen[slug] += 1
                name = slug if seen[slug] == 1 else f"{slug}-{seen[slug]}"
                blocks.append(Block(name, i + 2, "\n".join(lines[i + 1 : end]) + "\n"))
            i = end + 1
            continue
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        i += 1
    return blocks


BLOCKS = readme_blocks()


def first_example_imports() -> str:
    """The import statements of the README's first Python block."""
    tree = ast.parse(BLOCKS[0].code)
    return "\n".join(ast.unparse(node) for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom))


@dataclass
class Run:
    """What a block or an example left behind."""

    out: str
    namespace: dict[str, Any]
    engine: ScriptedEngine
    fleet: FakeFleet | None = None


def run_block(block: Block, engine: ScriptedEngine, capsys: pytest.CaptureFixture[str], fleet: FakeFleet | None) -> Run:
    # padded so that a traceback names the README's own line numbers
    source = "\n" * (block.line - 1) + block.code
    code = compile(source, str(README), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    if block is not BLOCKS[0]:
        exec(first_example_imports(), namespace)
    if code.co_flags & inspect.CO_COROUTINE:

        async def continued() -> None:
            async with Orchestrator(engine, close_engines=False) as orch:
                namespace["orch"] = orch
                await eval(code, namespace)

        anyio.run(continued, backend="asyncio")
    else:
        exec(code, namespace)
    return Run(capsys.readouterr().out, namespace, engine, fleet)


def check_example(run: Run) -> None:
    text, confidence = run.out.strip().rsplit(" ", 1)
    assert 51 in numbers(text), f"the majority answer 51 should win, got {text!r}"
    assert 0 < float(confidence) <= 1
    params = [call.params for call in run.engine.history]
    assert len(params) == 8
    assert sorted(p.seed for p in params) == list(range(8))
    assert min(p.temperature for p in params) == pytest.approx(0.3)
    assert max(p.temperature for p in params) == pytest.approx(1.2)


def check_adaptive(run: Run) -> None:
    result = run.namespace["result"]
    # the README's comment: four votes for "4" give P = 31/32 >= 0.95 after the first wave of four
    assert result.samples_used == 4
    assert len(result.candidates) == 4 and result.n == 32
    assert result.answers[0].answer == "4" and len(result.answers[0].support) == 4
    assert all(call.params.temperature == 0.2 for call in run.engine.history)


def zscores(candidates: list[Any], name: str) -> list[float]:
    values = [c.scores[name] for c in candidates]
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    return [(v - mean) / std for v in values]


def check_translation(run: Run) -> None:
    result = run.namespace["result"]
    assert len(result.candidates) == 8 and all(c.ok for c in result.candidates)
    assert [c.rank for c in result.candidates] == list(range(1, 9))
    assert all(set(c.scores) == {"mbr_chrf", "source_sim"} for c in result.candidates)
    assert result.metadata["source_lang"] == "German" and result.metadata["target_lang"] == "English"
    # ranked by the sum of the two scores, each z-normalised over the candidates
    combined = [sum(zscores(result.candidates, name)[i] for name in ("mbr_chrf", "source_sim")) for i in range(8)]
    assert [c.score for c in result.candidates] == pytest.approx(combined)
    assert combined == sorted(combined, reverse=True)
    # the outlier is the translation the others agree with least
    assert min(result.candidates, key=lambda c: c.scores["mbr_chrf"]).text == "Dog garden sleep."


def check_openai_client(run: Run) -> None:
    content, confidence = run.out.strip().rsplit(" ", 1)
    assert content in REPLIES["Name a cat"]
    assert 0 < float(confidence) <= 1
    calls = run.engine.history
    assert len(calls) == 4 and {c.params.max_tokens for c in calls} == {32}


def check_tensor_parallel(run: Run) -> None:
    engine = run.namespace["engine"]
    assert isinstance(engine, VLLMEngine) and not engine.started
    assert engine.model == "Qwen/Qwen2.5-32B-Instruct"
    assert engine.engine_args == {"tensor_parallel_size": 4}


def check_fleet(run: Run) -> None:
    result = run.namespace["result"]
    assert run.fleet is not None
    assert len(result.candidates) == 16 and all(c.ok for c in result.candidates)
    served = {host: len(server.served) for host, server in run.fleet.servers.items()}
    assert sum(served.values()) == 16
    assert all(count > 0 for count in served.values()), served
    hosts = {c.text.split(" ")[0] for c in result.candidates}
    assert hosts == set(run.fleet.servers)


def check_gpu_engine(run: Run) -> None:
    engine = run.namespace["engine"]
    assert isinstance(engine, VLLMEngine) and not engine.started
    assert engine.model == "Qwen/Qwen2.5-7B-Instruct"
    assert engine.engine_args == {"tensor_parallel_size": 2, "max_model_len": 8192}


README_CHECKS: dict[str, Callable[[Run], None]] = {
    "example": check_example,
    "adaptive-early-stopping": check_adaptive,
    "translation": check_translation,
    "serving-and-the-choice-ui": check_openai_client,
    "scaling-out": check_tensor_parallel,
    "scaling-out-2": check_fleet,
    "real-models-on-gpus": check_gpu_engine,
}

FLEET_HOSTS = ("10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000")


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block(
    block: Block, engine: ScriptedEngine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if block.code.startswith(FRAGMENT):
        pytest.skip("marked as a fragment")
    assert block.id in README_CHECKS, f"README.md:{block.line}: add a check for this block to README_CHECKS"
    fleet = None
    if "OpenAIEngine(" in block.code:
        # the fleet's addresses lead to fake servers that serve the block's model
        fleet = FakeFleet(*FLEET_HOSTS)
        for server in fleet.servers.values():
            server.models = ["Qwen/Qwen2.5-7B-Instruct"]
        monkeypatch.setattr(nbest, "OpenAIEngine", functools.partial(OpenAIEngine, transport=fleet.transport))
    if SERVED_AT in block.code:
        settings = ServerSettings(model_name="smollm2-135m-instruct")
        app = create_app(lambda: Orchestrator(engine, close_engines=False), settings, prefs=PreferenceStore(":memory:"))
        with running(app) as url:
            run = run_block(Block(block.id, block.line, block.code.replace(SERVED_AT, url)), engine, capsys, fleet)
    else:
        run = run_block(block, engine, capsys, fleet)
    README_CHECKS[block.id](run)


def test_readme_checks_name_existing_blocks() -> None:
    assert set(README_CHECKS) == {b.id for b in BLOCKS if not b.code.startswith(FRAGMENT)}


# -- examples/*.py ---------------------------------------------------------------------------------


def check_best_of_n(run: Run) -> None:
    lines = run.out.splitlines()
    assert lines[0].startswith("Q: A shop sells pens")
    best = re.search(r"best: #(\d+) \(confidence (\d\.\d\d)\)", run.out)
    assert best is not None, run.out
    assert 0 < float(best[2]) <= 1
    answers = [line for line in lines if line.startswith("answer ")]
    assert 1 <= len(answers) <= 3
    # six of the eight scripted candidates answer 51: the vote share is the answer's confidence
    assert answers[0].startswith("answer '51': confidence 0.75, candidates ")
    support = ast.literal_eval(answers[0].split("candidates ", 1)[1])
    assert len(support) == 6 and int(best[1]) in support
    assert len(run.engine.history) == 8 and {c.params.max_tokens for c in run.engine.history} == {96}


def check_strategies_tour(run: Run) -> None:
    strategies = run.namespace["STRATEGIES"]
    for name, strategy in strategies.items():
        assert f"{name}: {strategy.kind}" in run.out, name  # each plan's table
    assert "diversity over 6 candidates" in run.out
    printed = [ast.literal_eval(m) for m in re.findall(r"^  #\d (.*)$", run.out, flags=re.MULTILINE)]
    assert len(printed) == len(strategies) * 6
    # the diversity table measures the candidates printed above it
    for k, name in enumerate(strategies):
        row = next(line for line in run.out.splitlines() if line.startswith(f"│ {name} "))
        cells = [float(cell) for cell in (c.strip() for c in row.split("│")[2:-1])]
        measured = diversity(printed[6 * k : 6 * k + 6])
        assert cells[:3] == [round(v, 2) for v in (measured.distinct_1, measured.distinct_2, measured.self_bleu or 0.0)], name
        assert 0 < cells[3] <= 2, name  # mean cosine distance of the MiniLM embeddings
    # cold candidates repeat the likeliest reply: the ladder's two coldest ones make it less diverse than Fixed(t=0.7)
    assert printed[6] == printed[7] == "The Cosy Bean" and len(set(printed[:6])) == 6
    calls = run.engine.history
    assert len(calls) == 24
    assert [c.params.temperature for c in calls[6:12]] == pytest.approx([0.0, 0.28, 0.56, 0.84, 1.12, 1.4])
    assert ["grumpy pirate" in str(c.prompt) for c in calls[18:]] == [False, False, True, False, False, True]


def check_translate_rerank(run: Run) -> None:
    lines = run.out.splitlines()
    assert lines[0] == "German: Der Hund schläft im Garten."
    ranked = [re.fullmatch(r"(\d+)\. \[(\d\.\d\d)\] (.+?)    \((.*)\)", line) for line in lines[1:]]
    assert len(ranked) == 8 and all(ranked), run.out
    assert [int(m[1]) for m in ranked if m] == list(range(1, 9))
    assert sum(float(m[2]) for m in ranked if m) == pytest.approx(1.0, abs=0.05)
    assert all("mbr_chrf=" in m[4] and "source_sim=" in m[4] for m in ranked if m)
    assert {m[3] for m in ranked if m} == set(REPLIES["Der Hund"])
    params = [c.params for c in run.engine.history]
    assert {p.temperature for p in params} == {0.7} and {p.max_tokens for p in params} == {60}


def check_ray_data_stage(run: Run) -> None:
    lines = run.out.splitlines()
    assert len(lines) == 9, run.out
    ids = [line.split(":", 1)[0] for line in lines[:8]]
    assert ids == [f"arith-{i:02d}" for i in range(1, 9)]  # file order
    # "17 * 3": three of the four scripted candidates say 51; elsewhere four different numbers
    assert lines[2] == "arith-03: 51 (vote share 0.75, right)"
    assert all(
        re.fullmatch(r"arith-\d\d: [0-3] \(vote share 0\.25, wrong, expected \d+\)", line)
        for line in lines[:8]
        if line != lines[2]
    )
    assert lines[8] == "1 of 8 right"


EXAMPLE_CHECKS: dict[str, Callable[[Run], None]] = {
    "best_of_n.py": check_best_of_n,
    "ray_data_stage.py": check_ray_data_stage,
    "strategies_tour.py": check_strategies_tour,
    "translate_rerank.py": check_translate_rerank,
}

RAY_EXAMPLES = {"ray_data_stage.py"}
"""Examples that run on Ray: a local cluster whose workers make ``VLLMEngine.default()`` the scripted engine too."""


def scripted_default_in_ray_workers() -> None:
    """Ray's worker setup hook for :data:`RAY_EXAMPLES` (runs in each worker process)."""
    scripted = functools.partial(ScriptedEngine, name="smollm2-135m-instruct", respond=reply)
    VLLMEngine.default = lambda *args, **kwargs: scripted()  # type: ignore[method-assign,assignment]


@contextlib.contextmanager
def local_ray() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized(), "another test left Ray running"
    before = ray_processes()
    # the hook is unpickled before the driver's sys.path reaches the worker: tests/ goes on PYTHONPATH
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    hook = {"worker_process_setup_hook": scripted_default_in_ray_workers, "env_vars": env}
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", runtime_env=hook)
    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars)
    context.enable_progress_bars = False
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        ray.shutdown()
        left = wait_ray_gone(ray_processes() - before)
        assert not left, f"Ray processes still alive after shutdown: {left}"


SCRIPTS = sorted(EXAMPLES.glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_example(
    script: Path, engine: ScriptedEngine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert script.name in EXAMPLE_CHECKS, f"add a check for {script.name} to EXAMPLE_CHECKS"
    monkeypatch.setattr(sys, "argv", [str(script)])
    monkeypatch.chdir(EXAMPLES)
    with local_ray() if script.name in RAY_EXAMPLES else contextlib.nullcontext():
        namespace = runpy.run_path(str(script), run_name="__main__")
    EXAMPLE_CHECKS[script.name](Run(capsys.readouterr().out, namespace, engine))


def test_example_checks_name_existing_scripts() -> None:
    assert set(EXAMPLE_CHECKS) == {s.name for s in SCRIPTS}
