"""NBestStage: the Ray Data stage (nbest/distributed/stage.py).

Called directly (no Ray) for the columns, the per-row errors and the
constructor's checks; through ``Dataset.map_batches`` on a local Ray cluster
with a scripted engine (``engine_factory``) for the pipeline; once on the real
embedded engine inside a Ray Data actor, against the same requests run in
this process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import numpy as np
import pytest

from nbest.distributed import ReplicaSpec, engine_configs
from nbest.distributed.stage import OUTPUT_COLUMNS, NBestStage, stage_spec
from nbest.engines.base import Engine
from nbest.errors import ConfigError, EngineDeadError
from nbest.types import Prompt, SamplingParams
from tests.conftest import engine_processes, wait_gone
from tests.ray_processes import ray_processes, wait_ray_gone
from tests.scripted import ScriptedEngine, Step

FACTORY = "tests.test_ray_stage:echo"


def _echo(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
    text = prompt if isinstance(prompt, str) else prompt[-1].content
    if "fail" in text:
        return Step(error=RuntimeError("scripted failure"))
    return Step(text=f"echo {text} #{params.seed}", tokens=3, mean_logprob=-0.1 * (params.seed or 0))


def echo(spec: object = None) -> dict[str, Engine]:
    """Candidate with seed s answers "echo <last user message> #s" (a prompt holding "fail" fails)."""
    return {"default": ScriptedEngine(respond=_echo)}


BUILT: list[ScriptedEngine] = []


def dies_on_first_engine(spec: object = None) -> dict[str, Engine]:
    """As ``echo``, but the first engine built dies on a prompt holding "die"."""

    def respond(prompt: Prompt, params: SamplingParams, request_id: str) -> Step:
        if first and "die" in str(prompt):
            return Step(error=EngineDeadError("engine core died", engine="scripted"))
        return _echo(prompt, params, request_id)

    first = not BUILT
    BUILT.append(ScriptedEngine(respond=respond))
    return {"default": BUILT[-1]}


@pytest.fixture
def stage() -> Iterator[NBestStage]:
    made = NBestStage(engine_factory=FACTORY, n=3, seed=10, rerankers=["logprob"], id_column="id")
    yield made
    made.close()


# -- called directly -------------------------------------------------------------------------------


def test_columns_order_and_values(stage: NBestStage) -> None:
    batch = {"id": np.array(["a", "b", "c"], dtype=object), "prompt": np.array(["one", "two", "three"], dtype=object)}
    out = stage(batch)
    assert list(out) == ["id", "prompt", *OUTPUT_COLUMNS]
    assert list(out["id"]) == ["a", "b", "c"] and list(out["request_id"]) == ["a", "b", "c"]
    # the highest mean log-prob is seed 10 (-1.0 beats -1.1, -1.2)
    assert list(out["best_text"]) == ["echo one #10", "echo two #10", "echo three #10"]
    assert list(out["error"]) == [None, None, None]
    for i, prompt in enumerate(["one", "two", "three"]):
        candidates = json.loads(out["candidates"][i])
        assert [c["text"] for c in candidates] == [f"echo {prompt} #{s}" for s in (10, 11, 12)]
        assert [c["rank"] for c in candidates] == [1, 2, 3]
        assert candidates[0]["confidence"] == pytest.approx(out["confidence"][i])
        answers = json.loads(out["answers"][i])
        assert sum(len(a["support"]) for a in answers) == 3
        assert {"answer", "confidence", "support"} <= set(answers[0])


def test_one_bad_row_does_not_fail_the_batch(stage: NBestStage) -> None:
    prompts = np.array(["fine", "", None, "please fail", float("nan"), "also fine"], dtype=object)
    ids = np.array([1, 2, 3, 4, 5, 6], dtype=object)
    out = stage({"prompt": prompts, "id": ids})
    errors = list(out["error"])
    assert errors[0] is None and errors[5] is None
    assert "must not be empty" in errors[1]
    assert errors[2] == errors[4] == "prompt: missing"
    assert errors[3] == "every candidate failed: RuntimeError: scripted failure"
    assert [t is None for t in out["best_text"]] == [False, True, True, True, True, False]
    assert out["confidence"][3] is None and out["confidence"][0] > 0
    # the failed prompt's Result is still there: its candidates carry the errors
    assert [c["error"] for c in json.loads(out["candidates"][3])] == ["RuntimeError: scripted failure"] * 3
    assert out["request_id"][3] == "4" and out["request_id"][1] is None
    assert out["answers"][1] is None and out["candidates"][1] is None


def test_bad_ids_are_row_errors(stage: NBestStage) -> None:
    ids = np.array(["ok", " ", 2.5, True, None], dtype=object)
    out = stage({"prompt": np.array(["p"] * 5, dtype=object), "id": ids})
    assert out["error"][0] is None and out["request_id"][0] == "ok"
    assert all(e.startswith("id: give a non-empty text or an integer") for e in out["error"][1:4])
    assert out["error"][4] is None and len(out["request_id"][4]) == 16  # no id: a fresh one


def test_chat_messages_and_fresh_ids() -> None:
    made = NBestStage(engine_factory=FACTORY, n=2, seed=0)
    try:
        messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
        column = np.empty(2, dtype=object)
        column[0] = np.array(messages, dtype=object)  # as Ray Data hands over a list<struct> cell
        column[1] = [{"role": "user", "content": ""}]
        out = made({"prompt": column})
        assert out["best_text"][0] == "echo hi #0"
        assert out["error"][0] is None and "messages are all empty" in out["error"][1]
        assert len(out["request_id"][0]) == 16
    finally:
        made.close()


def test_pandas_batches(stage: NBestStage) -> None:
    pd = pytest.importorskip("pandas")
    out = stage(pd.DataFrame({"id": ["x", "y"], "prompt": ["p", "q"], "extra": [1, 2]}))
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["id", "prompt", "extra", *OUTPUT_COLUMNS]
    assert list(out["best_text"]) == ["echo p #10", "echo q #10"]


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ({"text": np.array(["a"])}, "prompt: no such column in the batch (columns: text)"),
        ({"prompt": np.array(["a"])}, "id: no such column in the batch (columns: prompt)"),
        ({"prompt": np.array(["a"]), "id": np.array([1]), "error": np.array([0])}, "error: the batch already has this column"),
    ],
)
def test_bad_batches(stage: NBestStage, batch: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        stage(batch)


def test_a_dead_engine_fails_the_batch_and_the_next_one_gets_new_engines() -> None:
    BUILT.clear()
    made = NBestStage(engine_factory="tests.test_ray_stage:dies_on_first_engine", n=2, seed=0)
    try:
        with pytest.raises(EngineDeadError, match="engine core died"):
            made({"prompt": np.array(["fine", "die now"], dtype=object)})
        assert len(BUILT) == 1 and BUILT[0].closed  # the dead one closed...
        out = made({"prompt": np.array(["fine", "die now"], dtype=object)})  # ...a new one answers the retry
        assert list(out["best_text"]) == ["echo fine #0", "echo die now #0"]
        assert len(BUILT) == 2 and not BUILT[1].closed
    finally:
        made.close()
    assert BUILT[1].closed


def test_closed_stage_refuses_work(stage: NBestStage) -> None:
    stage.close()
    stage.close()  # idempotent
    with pytest.raises(ConfigError, match="closed"):
        stage({"prompt": np.array(["a"]), "id": np.array([1])})


# -- the constructor -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "parameter", "message"),
    [
        ({"temprature": 0.5}, "temprature", "not a replica setting; allowed: model, engine"),
        ({"model": "m", "engine_factory": FACTORY}, "engine_factory", "give one of model, engine, engines, engine_factory"),
        ({"spec": {"engine_factory": FACTORY}, "rerankers": ["vote"]}, "rerankers", "give it inside spec"),
        ({"spec": {"engine_factory": "nocolon"}}, "engine_factory", "module:callable"),
        ({"spec": {}}, "engines", "exactly one of engines or engine_factory"),
        ({"spec": 3}, "spec", "give a ReplicaSpec or its dict"),
        ({"engine_factory": "tests.nowhere:f"}, "engine_factory", "cannot load"),
        ({"engine_factory": FACTORY, "n": 0}, "n", "n"),
        ({"engine_factory": FACTORY, "n": 1000}, "n", "1000"),
        ({"engine_factory": FACTORY, "temperature": -1}, "temperature", "temperature"),
        ({"engine_factory": FACTORY, "top_p": 0}, "top_p", "top_p"),
        (
            {"engine_factory": FACTORY, "rerankers": ["logprob", "nosuch"]},
            "rerankers[1]",
            "^rerankers\\[1\\]: unknown reranker 'nosuch'",
        ),
        ({"engine_factory": FACTORY, "rerankers": "vote"}, "rerankers", "give a list of short forms"),
        ({"engine_factory": FACTORY, "strategy": "ladder:9-1"}, "strategy", "^strategy: low: must be <= high"),
        ({"engine_factory": FACTORY, "strategy": "nosuch"}, "strategy", "^strategy: unknown strategy"),
        ({"engine_factory": FACTORY, "until": "beta:2"}, "until", "^until 'beta:2': threshold"),
        ({"engine_factory": FACTORY, "wave": 4}, "wave", "only used with a stopping rule"),
        ({"engine_factory": FACTORY, "concurrency": 0}, "concurrency", "concurrency"),
        ({"engine_factory": FACTORY, "prompt_column": ""}, "prompt_column", "give a column name"),
        ({"engine_factory": FACTORY, "id_column": "prompt"}, "id_column", "must differ from prompt_column"),
        ({"engine": 5}, "engine", "short form"),
        ({"engine": "nosuch:x"}, "engine", "^engine: unknown engine 'nosuch'"),
        ({"engines": ["x"]}, "engines", "engines file's path or a mapping"),
        ({"engines": "/nonexistent/engines.yaml"}, "engines", "^engines: engines file not found"),
        ({"engines": {"a": "nosuch"}}, "engines", "^engines: engines.a: unknown engine"),
        ({"model": ""}, "model", "Hugging Face id"),
    ],
)
def test_constructor_errors(kwargs: dict[str, Any], parameter: str | None, message: str) -> None:
    before = engine_processes()
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        NBestStage(**kwargs)
    if parameter is not None:
        assert caught.value.parameter == parameter
    assert engine_processes() == before  # nothing started


def test_spec_round_trip_and_friendly_keys() -> None:
    spec = stage_spec(model="Qwen/Qwen2.5-0.5B-Instruct", rerankers=["vote:number"], concurrency=4, until="beta:0.9")
    assert spec.engines is not None and spec.engines.engines["default"].model_dump()["model"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert stage_spec(spec.model_dump(mode="json")) == spec
    assert stage_spec(spec) is spec
    assert stage_spec().engines == engine_configs(None)  # the embedded default
    fleet = stage_spec(engine="openai:http://10.0.0.1:8000/v1,http://10.0.0.2:8000/v1")
    assert fleet.engines is not None and len(fleet.engines.engines["default"].model_dump()["endpoints"]) == 2
    routes = stage_spec(engines={"small": "vllm", "big": {"kind": "vllm", "model": "Qwen/Qwen2.5-7B-Instruct"}})
    assert routes.engines is not None and list(routes.engines.engines) == ["small", "big"]
    assert isinstance(ReplicaSpec.parse(routes.model_dump(mode="json")), ReplicaSpec)


def test_stage_with_a_spec_and_a_stopping_rule() -> None:
    spec = ReplicaSpec(engine_factory=FACTORY, until="confidence:0.1", wave=2, rerankers=["logprob"])
    made = NBestStage(spec.model_dump(mode="json"), n=8, seed=0)
    try:
        out = made({"prompt": np.array(["q"], dtype=object)})
        candidates = json.loads(out["candidates"][0])
        assert len(candidates) == 2  # the first wave was enough
    finally:
        made.close()


# -- through Ray Data ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_data() -> Iterator[Any]:
    """Ray Data on a local cluster (the machine's 2 CPUs), results in input order.
    A cluster another test module left running is reused (and left running)."""
    ray = pytest.importorskip("ray")
    data = pytest.importorskip("ray.data")
    started = not ray.is_initialized()
    before = ray_processes()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    context = data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars)
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    try:
        yield data
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        if started:
            ray.shutdown()
            left = wait_ray_gone(ray_processes() - before)
            assert not left, f"Ray processes (a stage's actor among them?) still alive after shutdown: {left}"


def test_map_batches_on_a_local_cluster(ray_data: Any) -> None:
    rows: list[dict[str, Any]] = [{"id": f"r{i}", "prompt": f"question {i}", "kept": i} for i in range(10)]
    rows[3]["prompt"] = "   "
    rows[7]["prompt"] = "this one should fail"
    ds = ray_data.from_items(rows).map_batches(
        NBestStage,
        fn_constructor_kwargs={"engine_factory": FACTORY, "n": 2, "seed": 5, "id_column": "id", "rerankers": ["logprob"]},
        compute=ray_data.ActorPoolStrategy(size=1),
        batch_size=4,
    )
    out = ds.take_all()
    assert [r["kept"] for r in out] == list(range(10))  # every row, in order, its columns kept
    assert set(out[0]) == {"id", "prompt", "kept", *OUTPUT_COLUMNS}
    assert [r["request_id"] for r in out if r["error"] is None] == [f"r{i}" for i in range(10) if i not in (3, 7)]
    for i, row in enumerate(out):
        if i in (3, 7):
            continue
        assert row["best_text"] == f"echo question {i} #5"
        assert [c["text"] for c in json.loads(row["candidates"])] == [f"echo question {i} #5", f"echo question {i} #6"]
        assert 0.5 < row["confidence"] < 1
    assert "must not be empty" in out[3]["error"] and out[3]["best_text"] is None
    assert out[7]["error"] == "every candidate failed: RuntimeError: scripted failure" and out[7]["confidence"] is None


def test_map_batches_constructor_error_names_the_argument(ray_data: Any) -> None:
    ds = ray_data.from_items([{"prompt": "a"}]).map_batches(
        NBestStage,
        fn_constructor_kwargs={"engine_factory": FACTORY, "temperature": -1},
        compute=ray_data.ActorPoolStrategy(size=1),
    )
    with pytest.raises(Exception, match="temperature"):
        ds.take_all()


# -- the real engine -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_embedded_model_in_a_ray_data_actor_matches_in_process(ray_data: Any, vllm_engine: Any) -> None:
    """Greedy candidates from the stage's own engine (in a Ray actor) equal those of the same
    requests run here on the session engine."""
    from nbest.orchestrator import Orchestrator

    prompts = ["What is 2 + 2?", "Name a colour."]
    before = {p.pid for p in engine_processes()}
    ds = ray_data.from_items([{"prompt": p} for p in prompts]).map_batches(
        NBestStage,
        fn_constructor_kwargs={"n": 2, "max_tokens": 8, "temperature": 0.0, "seed": 0},
        compute=ray_data.ActorPoolStrategy(size=1),
        batch_size=2,
    )
    out = await anyio.to_thread.run_sync(ds.take_all)
    assert [r["error"] for r in out] == [None, None]
    async with Orchestrator(vllm_engine, close_engines=False) as orch:
        here = await orch.generate_many(prompts, n=2, max_tokens=8, temperature=0.0, seed=0)
    for row, result in zip(out, here, strict=True):
        assert [c["text"] for c in json.loads(row["candidates"])] == [c.text for c in result.candidates]
        assert result.best is not None and row["best_text"] == result.best.text
    # the actor's engine processes end with the actor (Ray Data retires it when the dataset is done)
    started = [p for p in engine_processes() if p.pid not in before]
    assert not await anyio.to_thread.run_sync(wait_gone, started, 30.0)


def test_a_replica_spec_names_its_own_fields_in_errors() -> None:
    from nbest.distributed.replica import ReplicaSpec, run_options
    from nbest.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^until 'beta:2': threshold") as info:
        run_options(ReplicaSpec(engine_factory=FACTORY, until="beta:2"))
    assert info.value.parameter == "until"
    with pytest.raises(ConfigError, match=r"^prune") as info:
        run_options(ReplicaSpec(engine_factory=FACTORY, prune="lots"))
    assert info.value.parameter == "prune"
