"""Start ``python app.py`` for real on a free loopback port, with its own data folder, for API and browser tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_app(data_dir: Path, tiny_model: Path, **env: str) -> Iterator[str]:
    """The app's URL once it answers; the hub is a closed port (offline); extra ``KINTSUGI_*`` settings in env."""
    shutil.copytree(tiny_model, data_dir / "models" / "tiny-wan-random")
    port = free_port()
    environment = {
        **os.environ,
        "KINTSUGI_DATA_DIR": str(data_dir),
        "KINTSUGI_HUB_CACHE_DIR": str(data_dir / "hub"),
        "GRADIO_SERVER_PORT": str(port),
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "KINTSUGI_DEVICE": "cpu",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("app.py did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
