"""The machine a process runs on and the CPU target its kernels are compiled for (docs/design.md,
"Result files"): recorded in every result file and in the benchmark's header, so that numbers from
mixed machines can be told apart (a fused multiply-add gives the same bits everywhere, but SIMD
reductions compiled for another vector width round differently).

Imports llvmlite and Numba's configuration only: reading it compiles nothing.
"""

from __future__ import annotations

import functools
import platform

# the widest SIMD instruction set among a CPU's features, widest first
_ISA_FLAGS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4.2", "SSE4.2"), ("neon", "NEON"))
# what an LLVM CPU name named in NUMBA_CPU_NAME compiles for (x86 names; others are recorded by name only)
_TARGET_ISA = {**dict.fromkeys(("haswell", "broadwell", "skylake", "znver1", "znver2", "znver3", "alderlake",
                                "x86-64-v3"), "AVX2"),
               **dict.fromkeys(("skylake-avx512", "cascadelake", "cooperlake", "icelake-client", "icelake-server",
                                "tigerlake", "sapphirerapids", "znver4", "znver5", "x86-64-v4"), "AVX-512"),
               **dict.fromkeys(("x86-64", "generic"), "SSE2")}


def widest_isa(features: dict) -> str:
    """The widest SIMD instruction set named in an LLVM feature map (``{"avx2": True, ...}``)."""
    return next((name for flag, name in _ISA_FLAGS if features.get(flag)), "scalar")


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the platform's processor name elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        model = ""
    return model or platform.processor() or platform.machine()


def compiled_for() -> dict:
    """``cpu_model``, ``cpu_target`` (the LLVM CPU Numba compiles for: ``NUMBA_CPU_NAME`` where set,
    else this host's) and ``cpu_isa`` (the widest SIMD that target has: the host's features unless
    ``NUMBA_CPU_NAME`` names another CPU)."""
    import llvmlite.binding as ll
    from numba.core import config

    host = ll.get_host_cpu_name()
    named = config.CPU_NAME
    if named and named != "host":
        isa = _TARGET_ISA.get(named, "as named by cpu_target")
        target = named + (f" ({config.CPU_FEATURES})" if config.CPU_FEATURES else "")
    else:
        isa = widest_isa(ll.get_host_cpu_features())
        target = host
    return {"cpu_model": cpu_model(), "cpu_target": target, "cpu_isa": isa}


def cache_sizes() -> dict:
    """This core's data and unified caches from Linux's sysfs (``{"L1d": "48K", "L2": "1024K", ...}``;
    empty where it cannot be read): what tile sizes and the held-update threshold are set against."""
    from pathlib import Path

    out = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind != "Instruction":
            out[f"L{level}{'d' if kind == 'Data' else ''}"] = size
    return out
