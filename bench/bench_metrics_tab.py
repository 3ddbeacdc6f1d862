"""Benchmark of the metrics tab: ``dashboard(store)`` at the retention limit (100,000 attempts, 100,000 runs).

The store is filled with a realistic month: most requests succeed at once; out-of-memory failures dominate and
are rescued by smaller settings (less quality kept), network and download failures by retries. ``dashboard`` is
timed cold (first call on a freshly opened store, in a process that has not built a figure yet) and warm.
Target: < 1 s. Run: ``python bench/bench_metrics_tab.py``.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import_started = time.perf_counter()
import pandas as pd
import plotly

from components.views import charts
from recovery import DEFAULT_STRATEGY_MAP, EnhancedFailureType
from recovery.metrics import AttemptRow, MetricsStore, RunRow

IMPORT_S = time.perf_counter() - import_started
NOW = 1_750_000_000.0
MONTH_S = 30 * 86400
ROWS = 100_000
TARGET_S = 1.0
# First failure of a request (None: it worked at once), with weights.
FIRST_FAILURES = {
    None: 70,
    "vram_exhaustion": 14,
    "network_connectivity_loss": 4,
    "model_download_failure": 3,
    "generation_pipeline_error": 3,
    "model_loading_timeout": 2,
    "bandwidth_limitation": 1,
    "system_resource_error": 1,
    "model_corruption_detected": 1,
    "storage_space_insufficient": 1,
}
SEVERITY = {"storage_space_insufficient": "high", "system_resource_error": "high", "bandwidth_limitation": "low"}


def month_of_rows(rng: random.Random) -> tuple[list[RunRow], list[AttemptRow]]:
    """100,000 runs over 30 days and the recovery attempts of those that failed (cut at 100,000)."""
    runs: list[RunRow] = []
    attempts: list[AttemptRow] = []
    kinds, weights = zip(*FIRST_FAILURES.items())
    for index in range(ROWS):
        started = NOW - MONTH_S + 60 + rng.random() * (MONTH_S - 3600)
        failure = rng.choices(kinds, weights)[0]
        if failure is None:
            runs.append(
                RunRow(
                    f"r{index}",
                    started,
                    started + rng.uniform(5, 90),
                    True,
                    1,
                    quality_kept=1.0,
                    model_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
                )
            )
            continue
        plan = [strategy.value for strategy in DEFAULT_STRATEGY_MAP[EnhancedFailureType(failure)]]
        tries = 1 + min(rng.choices((1, 2, 3, 4), (50, 30, 15, 5))[0], len(plan) - 1)
        ok = rng.random() < 0.8
        clock = started
        first_failed_at = None
        for number in range(1, tries + (0 if ok else 1)):
            clock += rng.uniform(2, 60)
            first_failed_at = first_failed_at or clock
            walked = plan[: min(len(plan) - 1, rng.choice((1, 2, 3)))]
            for step, strategy in enumerate(walked, 1):
                success = step == len(walked) and (number < tries - 1 or ok)
                duration = rng.lognormvariate(0, 1.5)
                clock += duration
                if len(attempts) < ROWS:
                    attempts.append(
                        AttemptRow(
                            f"r{index}",
                            number,
                            failure,
                            SEVERITY.get(failure, "medium"),
                            strategy,
                            success,
                            duration,
                            clock - duration,
                            clock,
                        )
                    )
        degraded = ok and rng.random() < 0.2
        quality = 0.5 ** (tries - 2) * rng.choice((1.0, 0.75, 0.5)) if failure == "vram_exhaustion" else 1.0
        runs.append(
            RunRow(
                f"r{index}",
                started,
                clock + rng.uniform(5, 90),
                ok,
                tries,
                degraded,
                failure,
                None if ok else failure,
                quality if ok else None,
                "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
                first_failed_at,
            )
        )
    return runs, attempts


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    print(f"python {sys.version.split()[0]}, pandas {pd.__version__}, plotly {plotly.__version__}")
    print(f"imports (pandas, plotly, charts): {IMPORT_S:.2f} s (once per process, not part of the target)")
    runs, attempts = month_of_rows(random.Random(7))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "metrics.sqlite"
        store = MetricsStore(path, clock=lambda: NOW)
        insert_s = timed(lambda: (store.record_many(attempts), store.record_runs(runs)))
        print(
            f"filled {store.count():,} attempts and {store.count_runs():,} runs in {insert_s:.2f} s "
            f"({path.stat().st_size / 2**20:.1f} MiB + WAL)"
        )
        store.close()

        store = MetricsStore(path, clock=lambda: NOW)
        cold = timed(lambda: charts.dashboard(store))
        warm = [timed(lambda: charts.dashboard(store)) for _ in range(7)]
        verdict = "ok" if max(cold, statistics.median(warm)) < TARGET_S else "OVER TARGET"
        print(
            f"dashboard(store): cold {1000 * cold:.0f} ms, warm median {1000 * statistics.median(warm):.0f} ms "
            f"(min {1000 * min(warm):.0f}, max {1000 * max(warm):.0f}); target < {1000 * TARGET_S:.0f} ms: "
            f"{verdict}"
        )

        board = charts.dashboard(store)
        bucket = board.bucket_seconds
        print(f"  bucket {bucket} s; summary {board.summary}")
        print("  queries (warm):")
        for name, query in (
            ("time_span", store.time_span),
            ("runs_over_time", lambda: store.runs_over_time(bucket)),
            ("success_rate_by_strategy", store.success_rate_by_strategy),
            ("failures_over_time", lambda: store.failures_over_time(bucket)),
            ("recovery_time_histogram", store.recovery_time_histogram),
            ("oom_rescue", store.oom_rescue),
            ("strategy_effectiveness", store.strategy_effectiveness),
            ("recent_events(50)", lambda: store.recent_events(50)),
            ("summary", store.summary),
        ):
            print(f"    {name:26s} {1000 * min(timed(query) for _ in range(3)):7.1f} ms")
        print("  figures (warm, from the query results):")
        frames = {
            "runs_over_time": (charts.runs_over_time_chart, store.runs_over_time(bucket)),
            "success_rate": (charts.success_rate_chart, store.success_rate_by_strategy()),
            "failures_over_time": (charts.failures_over_time_chart, store.failures_over_time(bucket)),
            "recovery_time": (charts.recovery_time_chart, store.recovery_time_histogram()),
            "oom_rescue": (charts.oom_rescue_chart, store.oom_rescue()),
            "effectiveness": (charts.effectiveness_chart, store.strategy_effectiveness()),
        }
        for name, (chart, frame) in frames.items():
            size = len(chart(frame).to_json())
            best = min(timed(lambda chart=chart, frame=frame: chart(frame)) for _ in range(3))
            print(f"    {name:26s} {1000 * best:7.1f} ms, {size / 1024:6.1f} KiB JSON")
        store.close()


if __name__ == "__main__":
    main()
