"""Benchmarks of the recovery layer: classification latency per error, engine overhead, metrics at 100k rows.

Targets: classification < 20 µs median per error; engine overhead on a successful call < 1 ms.
Run: ``python bench/bench_recovery.py``.
"""

from __future__ import annotations

import errno
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
import torch
from huggingface_hub.utils import hf_raise_for_status

import recovery
from recovery import AttemptRow, EnhancedErrorRecovery, MetricsStore, classify_exception


def caught(action: Callable[[], object]) -> BaseException:
    try:
        action()
    except BaseException as exc:
        return exc
    raise AssertionError("expected an exception")


def hub(status: int, code: str | None = None) -> BaseException:
    headers = {"X-Error-Code": code} if code else {}
    request = httpx2.Request("GET", "https://huggingface.co/api/models/acme/video")
    return caught(lambda: hf_raise_for_status(httpx2.Response(status, headers=headers, request=request)))


def median_us(action: Callable[[], object], runs: int = 2000) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        action()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def errors() -> dict[str, BaseException]:
    return {
        "our OutOfMemoryError": recovery.OutOfMemoryError("oom", phase="decode"),
        "torch CPU allocator": caught(lambda: torch.empty(2**60, dtype=torch.uint8)),
        "torch.OutOfMemoryError": torch.OutOfMemoryError("CUDA out of memory"),
        "hub GatedRepoError": hub(403, "GatedRepo"),
        "hub HfHubHTTPError 503": hub(503),
        "OSError ENOSPC": OSError(errno.ENOSPC, "No space left on device"),
        "ModuleNotFoundError": caught(lambda: __import__("kintsugi_no_such_module")),
        "httpx2 ConnectError": caught(lambda: httpx2.get("http://127.0.0.1:9/")),
        "unknown KeyError": KeyError("tokenizer"),
    }


def bench_classification() -> None:
    print("classification latency (median of 2000, target < 20 µs)")
    for name, error in errors().items():
        print(f"  {name:28s} {median_us(lambda error=error: classify_exception(error)):7.2f} µs")
    classifier = recovery.Classifier()
    error = errors()["our OutOfMemoryError"]
    print(f"  {'categorize + /proc probe':28s} {median_us(lambda: classifier.categorize(error)):7.2f} µs")
    bench_corpus()


def bench_corpus() -> None:
    """The real-error corpus of the tests: the median over its cases of each case's median, and the slowest."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.recovery.test_recovery_real_errors import CASES, build

    per_case = sorted(
        (median_us(lambda error=build(case)[0]: classify_exception(error), runs=200), case["id"]) for case in CASES
    )
    middle = statistics.median(value for value, _case in per_case)
    print(
        f"  real-error corpus ({len(CASES)} cases): median {middle:.2f} µs, slowest {per_case[-1][0]:.2f} µs "
        f"({per_case[-1][1]})"
    )


def bench_engine() -> None:
    engine = EnhancedErrorRecovery(probe=None)
    attempt = lambda parameters, info: 1  # noqa: E731
    bare = median_us(lambda: attempt({}, None), 5000)
    wrapped = median_us(lambda: engine.run(attempt, {"frames": 9}), 5000)
    print(f"engine overhead on a successful call: {wrapped - bare:.1f} µs (target < 1000 µs)")


def bench_metrics() -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = MetricsStore(Path(folder) / "m.sqlite", max_rows=100_000, clock=lambda: 2e9)
        rows = [
            AttemptRow(
                f"c{i}",
                1,
                ("vram_exhaustion", "network_connectivity_loss")[i % 2],
                "medium",
                ("immediate_retry", "parameter_adjustment", "intelligent_fallback")[i % 3],
                bool(i % 4),
                0.01 * (i % 50),
                2e9 - i - 1,
                2e9 - i,
            )
            for i in range(100_000)
        ]
        start = time.perf_counter()
        store.record_many(rows)
        print(f"metrics: 100,000 rows inserted in {time.perf_counter() - start:.2f} s")
        one = AttemptRow("x", 1, "vram_exhaustion", "medium", "immediate_retry", True, 0.1, 2e9 - 1, 2e9)
        print(f"  one insert + retention at 100k rows: {median_us(lambda: store.record(one), 200):.0f} µs")
        for query in (
            "success_rate_by_strategy",
            "failures_over_time",
            "recovery_time_distribution",
            "strategy_effectiveness",
        ):
            start = time.perf_counter()
            getattr(store, query)()
            print(f"  {query:28s} {1000 * (time.perf_counter() - start):7.1f} ms")
        store.close()


if __name__ == "__main__":
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}")
    bench_classification()
    bench_engine()
    bench_metrics()
