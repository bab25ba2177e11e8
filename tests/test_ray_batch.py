"""``nbest batch --ray`` and ``nbest eval --ray``: replicas on a local Ray cluster.

One cluster for the module (``ray.init`` with 2 CPUs), shut down at the end with
no Ray process left behind. The replicas build scripted engines from
``tests.ray_engines`` (an engine factory the replicas import); one slow test runs
the real embedded engine inside a replica.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from nbest.batch import open_output, read_input, run_batch
from nbest.cli import main
from nbest.cli.options import EngineFactory
from nbest.distributed import RayOptions, ReplicaPool, ReplicaSpec, build_orchestrator, engine_configs
from nbest.distributed.replica import environ_for
from nbest.engines.vllm import VLLMEngine
from nbest.errors import ConfigError
from nbest.orchestrator import Orchestrator
from nbest.types import Request, SamplingParams
from tests import batch_engines, ray_engines
from tests.ray_processes import ray_processes, wait_ray_gone
from tests.test_batch import read_results, write_lines

CLUSTER = ("raylet", "gcs_server")
"""A cluster's own processes (its workers come and go with the tests' work)."""

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    before = ray_processes()  # another cluster on this machine is not ours
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    ours = ray_processes() - before
    assert ours, "ray.init started no raylet: the leak check below would prove nothing"
    try:
        yield
    finally:
        ray.shutdown()
        left = wait_ray_gone(ray_processes() - before)  # the cluster and every worker it started
        assert not left, f"Ray processes still alive after shutdown: {left}"


def prompts(count: int) -> list[object]:
    return [{"id": f"q{i}", "prompt": f"question {i}"} for i in range(count)]


RAY = ["--ray", "--replica-cpus", "0.5"]


def texts(results: list[dict[str, object]]) -> dict[str, list[str]]:
    return {str(r["id"]): [c["text"] for c in r["candidates"]] for r in results}  # type: ignore[attr-defined]


# -- batch ------------------------------------------------------------------------------------------


def test_every_prompt_is_written_once_as_without_ray_and_bad_lines_go_to_the_errors_file(
    cluster: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", [*prompts(10), "{not json", {"id": "q3b", "prompt": "p", "n": 3}])
    args = ["-n", "2", "--seed", "5", "--reranker", "vote"]
    main(["batch", str(inp), "-o", str(tmp_path / "ray.jsonl"), *args, *RAY, "--replicas", "2"],
         engine_factory=ray_engines.answers)  # fmt: skip
    err = capsys.readouterr().err
    main(["batch", str(inp), "-o", str(tmp_path / "local.jsonl"), *args], engine_factory=ray_engines.answers)
    on_ray, local = read_results(tmp_path / "ray.jsonl"), read_results(tmp_path / "local.jsonl")
    assert sorted(r["id"] for r in on_ray) == sorted([f"q{i}" for i in range(10)] + ["q3b"])
    assert texts(on_ray) == texts(local)  # same seeds, same candidates
    assert {r["id"]: r["best"]["text"] for r in on_ray} == {r["id"]: r["best"]["text"] for r in local}  # type: ignore[index]
    errors = [json.loads(line) for line in (tmp_path / "ray.jsonl.errors.jsonl").read_text().splitlines()]
    assert [e["line"] for e in errors] == [11]
    assert "11/11 prompts" in err and "replicas 2/2 ready" in err


def test_a_run_resumes_on_ray_after_an_interrupted_one(cluster: None, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", prompts(8))
    out = tmp_path / "out.jsonl"
    write_lines(tmp_path / "first.jsonl", prompts(3))
    main(["batch", str(tmp_path / "first.jsonl"), "-o", str(out), "-n", "2"], engine_factory=ray_engines.answers)
    done = out.read_bytes()
    with out.open("ab") as f:
        f.write(b'{"id": "q3", "prompt": "question 3", "n": 2, "candi')  # torn by a crash mid-write
    main(["batch", str(inp), "-o", str(out), "-n", "2", "--concurrency", "1", *RAY], engine_factory=ray_engines.answers)
    assert out.read_bytes().startswith(done)  # what was there stays, byte for byte
    # one replica running one prompt at a time: the rest in input order, each once
    ids = [r["id"] for r in read_results(out)]
    assert sorted(ids[:3]) == ["q0", "q1", "q2"] and ids[3:] == [f"q{i}" for i in range(3, 8)]


@pytest.mark.parametrize(
    ("factory", "why"),
    [(ray_engines.dies_once, "its process or node was lost"), (ray_engines.engine_dies_once, "the engine core died")],
    ids=["process", "engine"],
)
def test_the_prompts_of_a_replica_that_dies_run_again_each_once(
    cluster: None,
    factory: EngineFactory,
    why: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    marker = tmp_path / "died"
    monkeypatch.setenv("NBEST_TEST_DIE_MARKER", str(marker))
    monkeypatch.setenv("NBEST_TEST_DIE_AFTER", "7")  # a few prompts in, others in flight on it
    monkeypatch.setenv("NBEST_TEST_DELAY", "0.05")
    inp = write_lines(tmp_path / "in.jsonl", prompts(16))
    out = tmp_path / "out.jsonl"
    main(["batch", str(inp), "-o", str(out), "-n", "2", "--concurrency", "2", *RAY, "--replicas", "2"],
         engine_factory=factory)  # fmt: skip
    assert marker.exists()  # a replica did die
    ids = [r["id"] for r in read_results(out)]
    assert sorted(ids) == sorted(f"q{i}" for i in range(16))  # every prompt, none twice
    err = capsys.readouterr().err
    assert f"died ({why}); its requests go to the others, starting another (1 of --max-restarts 3)" in err


def test_when_no_restart_is_left_the_run_stops_and_resumes_later(
    cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NBEST_TEST_DIE_MARKER", str(tmp_path / "died"))
    monkeypatch.setenv("NBEST_TEST_DIE_AFTER", "5")
    inp = write_lines(tmp_path / "in.jsonl", prompts(12))
    out = tmp_path / "out.jsonl"
    argv = ["batch", str(inp), "-o", str(out), "-n", "1", "--concurrency", "1", *RAY]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--max-restarts", "0"], engine_factory=ray_engines.dies_once)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("nbest: error: every replica died and no restart is left (0 of")
    first = read_results(out)  # every line written is whole
    assert len(first) < 12
    main(argv, engine_factory=ray_engines.dies_once)  # the marker is there: nothing dies now
    assert sorted(r["id"] for r in read_results(out)) == sorted(f"q{i}" for i in range(12))


def test_a_replica_that_cannot_start_fails_the_run_with_its_error(
    cluster: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", prompts(2))
    with pytest.raises(SystemExit) as info:
        main(["batch", str(inp), "-o", str(tmp_path / "out.jsonl"), *RAY], engine_factory=ray_engines.fails_to_start)
    assert info.value.code == 1
    assert "model weights not found" in capsys.readouterr().err
    assert (tmp_path / "out.jsonl").read_text() == ""


def test_a_request_the_replicas_cannot_serve_stops_the_run_before_any_starts(tmp_path: Path) -> None:
    spec = ReplicaSpec(engine_factory="tests.ray_engines:answers", strategy={"kind": "fixed", "engine": "elsewhere"})
    pool = ReplicaPool(spec, RayOptions())
    with pytest.raises(ConfigError, match=r"requests\[0\] \(a\): .*unknown engine 'elsewhere'"):
        pool.check([Request(id="a", prompt="p", n=2)])


def test_ctrl_c_stops_the_cluster_and_the_output_resumes(cluster: None, tmp_path: Path) -> None:
    inp = write_lines(tmp_path / "in.jsonl", prompts(40))
    out = tmp_path / "out.jsonl"
    before = ray_processes(CLUSTER)
    env = {**os.environ, "NBEST_TEST_DELAY": "0.3", "PYTHONPATH": str(ROOT)}
    argv = ["batch", str(inp), "-o", str(out), "-n", "1", "--concurrency", "1", "--ray", "--replica-cpus", "0.5"]
    proc = subprocess.Popen([sys.executable, "-m", "tests.cli_with_engine", "slow_scripted", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 2):
            time.sleep(0.2)
        assert out.exists() and out.read_bytes().count(b"\n") >= 2, "no result came"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    assert err.decode().strip().splitlines()[-1] == "nbest: error: interrupted"
    left = wait_ray_gone(ray_processes(CLUSTER) - before)  # the cluster it started went with it
    assert not left, f"Ray processes left: {left}"
    first = read_results(out)
    assert 2 <= len(first) < 40
    main(["batch", str(inp), "-o", str(out), "-n", "1", *RAY], engine_factory=batch_engines.slow_scripted)
    assert sorted(r["id"] for r in read_results(out)) == sorted(f"q{i}" for i in range(40))


# -- eval -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [["--greedy"], ["--until", "beta:0.8", "--wave", "2"]], ids=["greedy", "until"])
def test_eval_on_ray_gives_the_report_it_gives_without(cluster: None, extra: list[str], tmp_path: Path) -> None:
    data = write_lines(tmp_path / "data.jsonl", [{"id": f"i{k}", "prompt": f"q{k}", "answer": str(k % 3)} for k in range(6)])
    args = ["eval", str(data), "--answer-field", "answer", "-n", "4", *extra, "--reranker", "logprob",
            "--reranker", "vote:number"]  # fmt: skip
    main([*args, "--report", str(tmp_path / "local.json")], engine_factory=batch_engines.seed_answers)
    main([*args, "--report", str(tmp_path / "ray.json"), *RAY, "--replicas", "2"], engine_factory=batch_engines.seed_answers)
    local, on_ray = (json.loads((tmp_path / name).read_text()) for name in ("local.json", "ray.json"))
    for report in (local, on_ray):  # wall times differ from run to run
        report.pop("generate_s", None)
        for level in report["levels"]:
            for method in level["rerankers"].values():
                method.pop("engine_s", None)
    assert on_ray == local


# -- options ----------------------------------------------------------------------------------------


def test_without_ray_installed_ray_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    inp = write_lines(tmp_path / "in.jsonl", prompts(1))
    with pytest.raises(SystemExit) as info:
        main(["batch", str(inp), "-o", str(tmp_path / "out.jsonl"), "--ray"], engine_factory=ray_engines.answers)
    assert info.value.code == 2
    assert capsys.readouterr().err == "nbest: error: --ray needs Ray: pip install 'nbest[ray]'\n"
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--replicas", "2"], "--replicas: only used with --ray"),
        (["-v"], "--verbose: only used with --ray"),
        (["--ray", "--replica-gpus", "4"], "--replica-gpus: a replica needs 4 GPU(s); the cluster has 0"),
        (["--ray", "--replicas", "1000"], "--replicas: 1000 replicas of 1 CPU(s) need 1000; the cluster has 2"),
        (["--ray", "127.0.0.1:9"], "--ray: no Ray cluster at 127.0.0.1:9 (Connection refused)"),  # nothing listens there
    ],
)
def test_ray_options_are_checked_before_work_starts(
    cluster: None, argv: list[str], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", prompts(1))
    with pytest.raises(SystemExit) as info:
        main(["batch", str(inp), "-o", str(tmp_path / "out.jsonl"), *argv], engine_factory=ray_engines.answers)
    assert info.value.code == 2
    assert words in capsys.readouterr().err


def test_a_factory_the_replicas_cannot_import_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = write_lines(tmp_path / "in.jsonl", prompts(1))
    with pytest.raises(SystemExit) as info:
        main(
            ["batch", str(inp), "-o", str(tmp_path / "out.jsonl"), "--ray"], engine_factory=lambda options: ray_engines.answers()
        )
    assert info.value.code == 2
    assert "--ray: the engine factory must be a module-level function" in capsys.readouterr().err


def test_the_spec_carries_the_engine_options_as_configs() -> None:
    spec = ReplicaSpec(engines=engine_configs("Qwen/Qwen2.5-0.5B-Instruct"), rerankers=["vote=2"], until="beta:0.9", wave=2)
    again = ReplicaSpec.parse(spec.model_dump_json())
    assert again == spec
    assert again.engines is not None and again.engines.engines["default"].model_dump()["model"] == "Qwen/Qwen2.5-0.5B-Instruct"
    orch = build_orchestrator(spec.model_copy(update={"engines": None, "engine_factory": "tests.ray_engines:answers"}))
    assert [r.name for r in orch.ranker.rerankers] == ["vote"]


# -- the real engine in a replica -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_the_embedded_engine_in_a_replica_gives_the_texts_it_gives_in_process(
    cluster: None, vllm_engine: VLLMEngine, tmp_path: Path
) -> None:
    inp = write_lines(tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"What is {i} + {i}?"} for i in range(3)])
    base = Request(prompt="(per line)", n=2, params=SamplingParams(seed=11, max_tokens=8))
    log, _ = open_output(tmp_path / "local.jsonl")
    with log:
        async with Orchestrator(vllm_engine, close_engines=False) as orch:
            await run_batch(orch, read_input(inp, base, max_n=64).requests, log)
    argv = ["batch", str(inp), "-o", str(tmp_path / "ray.jsonl"), "-n", "2", "--seed", "11", "--max-tokens", "8",
            "--ray", "--replicas", "1"]  # fmt: skip
    await anyio.to_thread.run_sync(main, argv)  # the command runs its own event loop
    assert texts(read_results(tmp_path / "ray.jsonl")) == texts(read_results(tmp_path / "local.jsonl"))


def test_an_engines_file_reaches_the_replicas_as_configs_with_the_keys_it_names(tmp_path: Path) -> None:
    (tmp_path / "engines.yaml").write_text(
        "engines:\n  local: vllm\n  fleet: {kind: openai, endpoints: [http://10.0.0.1:8000/v1], api_key_env: FLEET_KEY}\n"
    )
    configs = engine_configs(None, (), str(tmp_path / "engines.yaml"))
    spec = ReplicaSpec(engines=configs, environ=environ_for(configs, {"FLEET_KEY": "s3cret", "OTHER": "x"}))
    assert spec.environ == {"FLEET_KEY": "s3cret"}  # only what the configs read
    orch = build_orchestrator(ReplicaSpec.parse(spec.model_dump_json()))  # as a replica gets it
    assert sorted(orch.engines) == ["default", "fleet", "local"]
    with pytest.raises(ConfigError, match="--engines: the file names the engines"):
        engine_configs("some/model", (), str(tmp_path / "engines.yaml"))
