"""Linux's ``/proc``, read in one place: memory of the machine (``/proc/meminfo``) and of a process
(``/proc/<pid>/status``), the CPU's feature flags, and the reset of a process's peak resident memory. Stdlib only.

The recovery engine's default probe reads the machine's memory here; the video domain reads its worker's address
space (what a ``RLIMIT_AS`` cap counts) and peak memory here too. Values are bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["cpu_flags", "meminfo", "process_status", "reset_peak_rss"]


def _kib_fields(path: str, wanted: Iterable[str]) -> dict[str, int]:
    """``Key: <n> kB`` lines of a ``/proc`` file as bytes, for the keys in ``wanted`` that it has."""
    keys = set(wanted)
    values: dict[str, int] = {}
    with open(path, encoding="ascii") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in keys:
                values[key] = int(rest.split()[0]) * 1024
    return values


def meminfo(*keys: str) -> dict[str, int]:
    """Fields of ``/proc/meminfo`` in bytes (default ``MemTotal`` and ``MemAvailable``); raises ``OSError`` where
    there is no ``/proc``."""
    return _kib_fields("/proc/meminfo", keys or ("MemTotal", "MemAvailable"))


def process_status(*keys: str, pid: int | str = "self") -> dict[str, int]:
    """Memory fields of ``/proc/<pid>/status`` in bytes: ``VmSize`` (address space), ``VmPeak`` (its peak),
    ``VmHWM`` (peak resident memory), ``VmRSS``; raises ``OSError`` where there is no ``/proc``."""
    return _kib_fields(f"/proc/{pid}/status", keys or ("VmSize", "VmPeak", "VmHWM", "VmRSS"))


def cpu_flags() -> frozenset[str]:
    """The first CPU's feature flags from ``/proc/cpuinfo`` (``avx2``, ``amx_bf16`` ...); empty where unreadable."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key.strip() == "flags":
                    return frozenset(rest.split())
    except OSError:
        pass
    return frozenset()


def reset_peak_rss() -> bool:
    """Reset this process's ``VmHWM`` (peak resident memory) to its current RSS; ``False`` where the kernel
    does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    return True
