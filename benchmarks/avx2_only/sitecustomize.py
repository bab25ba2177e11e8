"""Run a benchmark as on a CPU without AVX-512 or AMX (``cpu_defaults.py --isa avx2``).

Python imports this module at start-up in every process whose ``PYTHONPATH``
holds this folder, vLLM's engine-core and worker processes included. It hides
AVX-512 and AMX from torch's CPU capability report, which is what vLLM reads to
pick its kernels (``_C_AVX2`` instead of the AVX-512 build) and its attention
path. The benchmark also sets ``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN's matrix
products; nbest's dtype choice reads it) and ``ATEN_CPU_CAPABILITY=avx2``
(torch's own vectorised kernels). The CPU's frequency, caches and memory stay
this machine's, so figures are an emulation, not a measurement of another CPU.
"""

import os

if os.environ.get("NBEST_BENCH_ISA") == "avx2":
    import torch.cpu

    _capabilities = torch.cpu.get_capabilities

    def _without_avx512() -> dict:
        found = dict(_capabilities())
        return {name: False if name.startswith(("avx512", "amx")) else on for name, on in found.items()}

    torch.cpu.get_capabilities = _without_avx512
