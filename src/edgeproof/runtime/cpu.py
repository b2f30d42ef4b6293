"""The machine: CPU name and the instruction-set features that change numerical results."""

from __future__ import annotations

import functools
import os
import platform

__all__ = ["cpu_flags", "cpu_name", "has_vnni"]


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform``), with core count."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return f"{name} ({os.cpu_count()} logical cores)"


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where it cannot be read), read once per
    process (static int8 asks for every layer whether weights need the reduced range)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_vnni() -> bool | None:
    """Whether this x86-64 CPU has VNNI (``avx512_vnni`` or ``avx_vnni``); ``None`` when the
    machine is not x86-64 or its flags cannot be read."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    flags = cpu_flags()
    if not flags:
        return None
    return bool({"avx512_vnni", "avx_vnni"} & flags)
