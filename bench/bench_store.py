"""Model-store benchmarks: resume cost, full-verification throughput against sha256sum, quick-check time.

Run: ``python bench/bench_store.py [--size-mb 1024] [--download-mb 256]``. Everything runs on loopback and a
scratch folder (removed at the end); the verification file is at least 1 GiB unless told otherwise.
Targets: resuming a download cut at 90 % transfers <= 1.1x the file in total; full verification >= 0.8x the
throughput of coreutils ``sha256sum`` on the same file; the quick check in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from huggingface_hub import constants

from components.chaos.loopback_hub import HubServer
from components.store.cache import HubCache
from components.store.download import CancelToken, DownloadEvent
from components.store.integrity import full_check, quick_check
from components.store.model_store import ModelStore
from recovery.errors import GenerationCancelledError

REPO = "bench/model"
WEIGHTS = "weights.safetensors"


def write_safetensors(path: Path, size: int) -> None:
    """A valid safetensors file of about ``size`` bytes: one U8 tensor of pseudo-random bytes."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    block = os.urandom(16 * 1024 * 1024)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        for start in range(0, size, len(block)):
            f.write(block[: min(len(block), size - start)])


def bench_resume(scratch: Path, size_mb: int) -> None:
    folder = scratch / "download-model"
    folder.mkdir()
    write_safetensors(folder / WEIGHTS, size_mb * 2**20)
    (folder / "config.json").write_text("{}")
    file_size = (folder / WEIGHTS).stat().st_size
    constants.DOWNLOAD_CHUNK_SIZE = 1024 * 1024
    with HubServer() as hub:
        hub.add_revision(REPO, folder)
        store = ModelStore(scratch / "dl-cache", scratch / "dl-state", endpoint=hub.url, token=False, reserve_bytes=0)
        token = CancelToken()

        def cut_at_90(event: DownloadEvent) -> None:
            if event.path == WEIGHTS and event.bytes_done >= 0.9 * file_size:
                token.cancel()

        try:
            store.download(REPO, on_event=cut_at_90, cancel=token)
        except GenerationCancelledError:
            pass
        while any(r.status == 0 for r in hub.log):  # let the server notice the hang-up and log what it sent
            time.sleep(0.01)
        first = sum(r.body_bytes for r in hub.fetched() if r.filename == WEIGHTS)
        hub.clear()
        started = time.perf_counter()
        store.download(REPO)
        seconds = time.perf_counter() - started
        second = sum(r.body_bytes for r in hub.fetched() if r.filename == WEIGHTS)
    total = first + second
    print(
        f"resume: file {file_size / 2**20:.0f} MiB, cancelled at 90% written (server had sent "
        f"{first / file_size:.1%}); "
        f"finishing transferred {second / 2**20:.1f} MiB ({second / file_size:.1%}) in {seconds:.2f} s; "
        f"total {total / file_size:.3f}x the file (target <= 1.1x)"
    )


def best_of(runs: int, fn) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_verify(scratch: Path, size_mb: int) -> None:
    folder = scratch / "verify-model"
    folder.mkdir()
    write_safetensors(folder / WEIGHTS, size_mb * 2**20)
    cache = HubCache(scratch / "v-cache", scratch / "v-state")
    manifest = cache.import_folder(REPO, folder)
    shutil.rmtree(folder)
    blob = cache.blob_path(REPO, manifest.entry(WEIGHTS).blob_name)
    size = blob.stat().st_size
    ours = best_of(3, lambda: full_check(cache, manifest))
    assert full_check(cache, manifest).ok
    coreutils = best_of(3, lambda: subprocess.run(["sha256sum", str(blob)], check=True, capture_output=True))
    quick = best_of(5, lambda: quick_check(cache, manifest))
    gb = size / 1e9
    print(
        f"full verification: {size / 2**30:.2f} GiB in {ours:.3f} s = {gb / ours:.2f} GB/s; sha256sum "
        f"{coreutils:.3f} s = {gb / coreutils:.2f} GB/s; ratio {coreutils / ours:.2f}x (target >= 0.8x)"
    )
    print(f"quick check on the same file: {quick * 1000:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="verification file size (MiB, >= 1024)")
    parser.add_argument("--download-mb", type=int, default=256, help="download file size (MiB)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="kintsugi-bench-store-"))
    try:
        bench_resume(scratch, args.download_mb)
        bench_verify(scratch, args.size_mb)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
