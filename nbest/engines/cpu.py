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

The matrix products run in oneDNN, so a ``ONEDNN_MAX_CPU_ISA`` below bf16's
instructions (``AVX2``, ``AVX512_CORE``...) makes bf16 emulated on any CPU:
:func:`read_cpu_info` leaves out the flags such a cap forbids.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = [
    "AUTO",
    "BIND_ALL_BELOW",
    "DEFAULT_KV_CACHE_GIB",
    "NATIVE_BF16_FLAGS",
    "ONEDNN_ISA_CAPS",
    "CompileChoice",
    "CpuInfo",
    "choose_compile",
    "compile_marker",
    "cpu_engine_defaults",
    "cpu_environment",
    "effective_environment",
    "inductor_cache_dir",
    "package_version",
    "read_cpu_info",
    "record_compiled_start",
    "vllm_version",
]

AUTO = "auto"
"""``enforce_eager="auto"``: nbest chooses (see :func:`choose_compile`); vLLM never sees it."""

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""CPU flags (as ``/proc/cpuinfo`` names them) that compute bfloat16 natively."""

_AVX512 = ("avx512", "amx")
_BF16 = ("avx512_bf16", "avx512_fp16", "amx")
_AMX = ("amx",)
ONEDNN_ISA_CAPS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(["SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2"], _AVX512),
    **dict.fromkeys(["AVX512_CORE", "AVX512_CORE_VNNI"], _BF16),
    **dict.fromkeys(["AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512"], _AMX),
}
"""``ONEDNN_MAX_CPU_ISA`` values (oneDNN's names) -> prefixes of the CPU flags oneDNN will not use
under that cap. Values not listed (``AVX512_CORE_AMX``, ``ALL``...) take nothing away."""

DEFAULT_KV_CACHE_GIB = "2"
"""KV-cache size on CPU (``VLLM_CPU_KVCACHE_SPACE``) unless the environment sets one."""

BIND_ALL_BELOW = 8
"""With fewer physical cores than this, vLLM's worker computes on all of them (see :func:`cpu_environment`)."""


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
    core_ids: tuple[int, ...] = ()
    """One logical CPU per physical core, of those this process may run on (empty: unknown)."""
    isa_cap: str | None = None
    """``ONEDNN_MAX_CPU_ISA=...`` when that cap took flags away (they are not in ``flags``)."""

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


def read_cpu_info(
    cpuinfo: Path = Path("/proc/cpuinfo"),
    meminfo: Path = Path("/proc/meminfo"),
    sysfs: Path = Path("/sys/devices/system/cpu"),
    environ: Mapping[str, str] | None = None,
) -> CpuInfo:
    """Read the CPU's model, flags, usable cores and available memory (Linux; elsewhere what can be known).

    The flags are those oneDNN may use: a ``ONEDNN_MAX_CPU_ISA`` cap in ``environ``
    (default: this process's environment) removes the ones above it (:data:`ONEDNN_ISA_CAPS`).
    """
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
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    flags, cap = _capped(flags, os.environ if environ is None else environ)
    return CpuInfo(
        model=model, flags=flags, cores=len(usable), memory_gib=memory, core_ids=_one_per_core(usable, sysfs), isa_cap=cap
    )


def _capped(flags: frozenset[str], environ: Mapping[str, str]) -> tuple[frozenset[str], str | None]:
    """``flags`` without those a ``ONEDNN_MAX_CPU_ISA`` cap forbids, and the cap if it took any.

    >>> _capped(frozenset({"avx2", "avx512f", "amx_bf16"}), {"ONEDNN_MAX_CPU_ISA": "avx2"})
    (frozenset({'avx2'}), 'ONEDNN_MAX_CPU_ISA=AVX2')
    """
    value = environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    removed = ONEDNN_ISA_CAPS.get(value, ())
    kept = frozenset(flag for flag in flags if not flag.startswith(removed)) if removed else flags
    return kept, (f"ONEDNN_MAX_CPU_ISA={value}" if kept != flags else None)


def _one_per_core(cpus: list[int], sysfs: Path) -> tuple[int, ...]:
    """The first of each group of SMT siblings among ``cpus`` (sysfs' ``thread_siblings_list``);
    a CPU whose siblings are unknown counts as a core of its own."""
    kept: list[int] = []
    seen: set[int] = set()
    for cpu in cpus:
        if cpu in seen:
            continue
        try:
            siblings = set(_parse_id_list((sysfs / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text()))
        except (OSError, ValueError):
            siblings = {cpu}
        seen |= siblings
        kept.append(cpu)
    return tuple(kept)


def _parse_id_list(text: str) -> list[int]:
    """``"0-2,5"`` -> ``[0, 1, 2, 5]``."""
    ids: list[int] = []
    for part in text.strip().split(","):
        low, _, high = part.partition("-")
        ids.extend(range(int(low), int(high or low) + 1))
    return ids


def _id_list(ids: tuple[int, ...]) -> str:
    """``(0, 1, 2, 5)`` -> ``"0-2,5"`` (how ``VLLM_CPU_OMP_THREADS_BIND`` lists CPUs)."""
    parts: list[str] = []
    start = prev = ids[0]
    for cpu in [*ids[1:], None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(parts)


def cpu_engine_defaults(info: CpuInfo | None = None) -> dict[str, Any]:
    """Engine arguments for vLLM's CPU platform on this CPU (the caller's own arguments win).

    - ``dtype``: bfloat16 where the CPU computes it natively, else float32;
    - ``enable_chunked_prefill=False``: vllm-cpu 0.32 kills its engine on seeded
      sampling once chunked prefill splits a prompt ("CPU Generator does not use offset");
    - ``enforce_eager=True``: a one-off run starts fastest eager (measured on an idle
      2-core Xeon, 8 x 256 tokens: whole ``nbest run`` 42-46 s eager, 50 s compiled with a
      warm compile cache, 77 s with a cold one). ``enforce_eager="auto"`` (what ``nbest serve``,
      ``batch`` and ``eval`` ask for) compiles once the compile cache is warm: :func:`choose_compile`.
    """
    info = info or read_cpu_info()
    return {
        "enable_chunked_prefill": False,
        "enforce_eager": True,
        "dtype": "bfloat16" if info.native_bf16 else "float32",
    }


def cpu_environment(
    engine_args: Mapping[str, Any], info: CpuInfo | None = None, share: tuple[int, int] = (0, 1)
) -> dict[str, str]:
    """Environment variables vLLM's CPU platform reads, for an engine started with ``engine_args``
    as engine ``share[0]`` of ``share[1]`` local CPU engines in this process (the caller sets
    each only where the environment has none: the user's own setting wins).

    - ``VLLM_CPU_KVCACHE_SPACE``: :data:`DEFAULT_KV_CACHE_GIB` GiB of KV cache;
    - ``VLLM_CPU_OMP_THREADS_BIND``: on fewer than :data:`BIND_ALL_BELOW` physical cores, one
      worker (no tensor or pipeline parallelism) computes with an OpenMP thread on each of them.
      vLLM's ``auto`` keeps one core for its other processes, which on 2 cores halves the
      compute: measured on an idle 2-core Xeon (``benchmarks/cpu_defaults.py``), nbest's default
      engine 117 tok/s with ``auto``, 173 with both cores; on bigger machines ``auto`` (which
      also knows NUMA nodes and SMT siblings) stays. Several engines of one worker in one
      process (:meth:`nbest.engines.vllm.VLLMEngine.share_cpu`, which the orchestrator calls
      for its engines) split the physical cores into contiguous blocks, one block each, on any
      number of cores (more engines than cores: one core each, round robin). Bound to the same
      cores, their OpenMP threads wait on each other: two engines of one orchestrator, each
      with 4 of 8 candidates, made 39-46 tok/s in all bound to both cores of a 2-core Xeon,
      95-111 with one core each (``benchmarks/engine_sharing.py``);
    - ``VLLM_USE_AOT_COMPILE=0`` for a compiled engine (``enforce_eager`` false): vllm-cpu
      0.32 saves its ahead-of-time compiled model but cannot load it on the CPU ("Compiling
      model again due to a load failure ... 'function' object has no attribute
      'finalize_loading'"), so every "warm" start compiled the model again; without AOT
      compilation torch's own caches serve the second start (measured by
      ``benchmarks/compile_start.py`` on a loaded 2-core Xeon: the compile and warm-up phase
      504 s -> 151 s, the whole start 620 s -> 282 s, decode speed unchanged).

    >>> two = CpuInfo(model="Xeon", flags=frozenset(), cores=2, core_ids=(0, 1))
    >>> cpu_environment({"enforce_eager": True}, two)
    {'VLLM_CPU_KVCACHE_SPACE': '2', 'VLLM_CPU_OMP_THREADS_BIND': '0-1'}
    >>> cpu_environment({"enforce_eager": False}, two)["VLLM_USE_AOT_COMPILE"]
    '0'
    >>> cpu_environment({"tensor_parallel_size": 2}, two)
    {'VLLM_CPU_KVCACHE_SPACE': '2'}
    >>> cpu_environment({}, two, share=(1, 2))["VLLM_CPU_OMP_THREADS_BIND"]
    '1'
    """
    info = info or read_cpu_info()
    env = {"VLLM_CPU_KVCACHE_SPACE": DEFAULT_KV_CACHE_GIB}
    one_worker = all(int(engine_args.get(k) or 1) == 1 for k in ("tensor_parallel_size", "pipeline_parallel_size"))
    index, count = share
    if one_worker and info.core_ids and (count > 1 or len(info.core_ids) < BIND_ALL_BELOW):
        env["VLLM_CPU_OMP_THREADS_BIND"] = _id_list(_block(info.core_ids, index, count))
    if not engine_args.get("enforce_eager", True):
        env["VLLM_USE_AOT_COMPILE"] = "0"
    return env


def effective_environment(chosen: Mapping[str, str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What an engine started with ``chosen`` (:func:`cpu_environment`) gets: the value
    ``environ`` (default: this process's environment) has, where it has one, else nbest's.

    >>> effective_environment({"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": "0-1"},
    ...                       {"VLLM_CPU_OMP_THREADS_BIND": "auto"})
    {'VLLM_CPU_KVCACHE_SPACE': '2', 'VLLM_CPU_OMP_THREADS_BIND': 'auto'}
    """
    environ = os.environ if environ is None else environ
    return {name: environ.get(name, value) for name, value in chosen.items()}


def _block(cores: tuple[int, ...], index: int, count: int) -> tuple[int, ...]:
    """Block ``index`` of ``cores`` split into ``count`` contiguous blocks as even as can be
    (one core each, round robin, when there are more blocks than cores).

    >>> [_block((0, 1, 2, 3, 4), i, 2) for i in range(2)]
    [(0, 1), (2, 3, 4)]
    >>> [_block((0, 1), i, 3) for i in range(3)]
    [(0,), (1,), (0,)]
    """
    n = len(cores)
    if count >= n:
        return (cores[index % n],)
    return cores[index * n // count : (index + 1) * n // count]


# -- compiling once the cache is warm ------------------------------------------
#
# A compiled model decodes 1.2-2x faster on a CPU with native bf16, but its first
# start compiles for a minute or more. With ``VLLM_USE_AOT_COMPILE=0`` (see
# cpu_environment) a second start of the same configuration is served by torch
# inductor's caches and costs ~10 s more than an eager start. nbest cannot ask
# inductor whether a configuration is cached without importing torch, so it
# leaves a marker beside inductor's cache when a compiled engine has started:
# a marker present means that cache held this configuration (wiping the cache
# wipes the marker with it).


def inductor_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where torch inductor keeps compiled graphs and kernels: ``TORCHINDUCTOR_CACHE_DIR``,
    else torch's default ``<tmp>/torchinductor_<user>`` (as ``torch._inductor`` computes it).

    >>> str(inductor_cache_dir({"TORCHINDUCTOR_CACHE_DIR": "/data/inductor"}))
    '/data/inductor'
    """
    environ = os.environ if environ is None else environ
    configured = environ.get("TORCHINDUCTOR_CACHE_DIR")
    if configured:
        return Path(configured).absolute()
    try:
        user = getpass.getuser()
    except (KeyError, ModuleNotFoundError, OSError):
        user = f"uid_{os.getuid()}" if hasattr(os, "getuid") else "unknown_user"
    return Path(tempfile.gettempdir()) / ("torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", user))


def package_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (None: not installed)."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def vllm_version() -> str | None:
    """The installed vLLM: the CPU build (``vllm-cpu``) or the GPU one (``vllm``)."""
    return package_version("vllm-cpu") or package_version("vllm")


_NOT_IN_KEY = frozenset({"enforce_eager", "disable_log_stats"})
"""Engine arguments that do not change the compiled graphs."""


def _compile_key(model: str, engine_args: Mapping[str, Any]) -> dict[str, Any]:
    """What a compiled configuration is: the model folder (or id), every engine argument but
    ``enforce_eager`` and ``disable_log_stats``, and the vLLM and torch versions."""
    return {
        "model": str(Path(model).resolve()) if Path(model).exists() else model,
        "args": {k: v for k, v in engine_args.items() if k not in _NOT_IN_KEY},
        "vllm": vllm_version(),
        "torch": package_version("torch"),
    }


def _marker_path(key: Mapping[str, Any], environ: Mapping[str, str] | None) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return inductor_cache_dir(environ) / "nbest-compiled" / f"{digest}.json"


def compile_marker(model: str, engine_args: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Path:
    """The marker a compiled start of ``model`` with ``engine_args`` leaves in inductor's cache:
    its name hashes the configuration (:func:`_compile_key`), so a marker says this very
    configuration compiled here before."""
    return _marker_path(_compile_key(model, engine_args), environ)


def record_compiled_start(
    model: str, engine_args: Mapping[str, Any], start_s: float, environ: Mapping[str, str] | None = None
) -> Path | None:
    """Leave the marker of :func:`compile_marker` after a compiled engine started (None: not writable)."""
    key = _compile_key(model, engine_args)
    marker = _marker_path(key, environ)
    record = {**key, "start_s": round(start_s, 1), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        partial = marker.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(record, default=str, indent=1), encoding="utf-8")
        partial.replace(marker)
    except OSError:
        return None
    return marker


@dataclass(frozen=True)
class CompileChoice:
    """What ``enforce_eager="auto"`` resolved to, and why."""

    enforce_eager: bool
    reason: str


def choose_compile(
    model: str, engine_args: Mapping[str, Any], info: CpuInfo | None = None, environ: Mapping[str, str] | None = None
) -> CompileChoice:
    """``enforce_eager="auto"`` on the CPU: compile when both hold

    - the CPU computes bfloat16 natively (measured there: see the README's "Real models on
      GPUs"; in float32 compiling gained 5 % on the same Xeon, and 3 % raw, nothing through
      nbest, with the Xeon run as a CPU without AVX-512, where nbest computes in float32), and
    - this configuration compiled here before (its :func:`compile_marker` exists), so the
      start costs ~10 s more than eager instead of a minute or more;

    else run eager. ``engine_args`` are the ones the engine starts with (defaults included).

    >>> xeon = CpuInfo(model="Xeon", flags=frozenset({"avx512_bf16"}), cores=2)
    >>> choose_compile("/nowhere", {"dtype": "bfloat16"}, xeon, {"TORCHINDUCTOR_CACHE_DIR": "/nowhere"}).reason
    'eager: no warm compile cache for this configuration (nbest models prepare --compile warms it)'
    """
    info = info or read_cpu_info()
    if not info.native_bf16:
        return CompileChoice(True, "eager: this CPU computes bfloat16 without native instructions")
    if engine_args.get("dtype") not in (None, "auto", "bfloat16", "bf16"):
        return CompileChoice(True, f"eager: compiling pays in bfloat16, not {engine_args['dtype']}")
    marker = compile_marker(model, engine_args, environ)
    if not marker.is_file():
        return CompileChoice(
            True, "eager: no warm compile cache for this configuration (nbest models prepare --compile warms it)"
        )
    return CompileChoice(False, f"compiled: warm compile cache ({marker.parent.parent})")
