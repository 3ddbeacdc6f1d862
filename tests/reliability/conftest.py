"""Fixtures for the reliability tests: the real app as a process we can kill, and the REST API in-process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.app_process import ROOT, free_port


def children_of(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (the app's generation worker), read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@dataclass
class AppProcess:
    """``python app.py`` started for real: its URL, process and data folder; stderr goes to ``log``."""

    url: str
    process: subprocess.Popen
    data_dir: Path
    log: Path

    def kill_hard(self) -> None:
        """``kill -9`` the app, as the OOM killer or a pulled plug would; its orphaned worker is ended too."""
        workers = children_of(self.process.pid)
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@contextmanager
def started_app(data_dir: Path, tiny_model: Path, *, log: Path | None = None, **env: str) -> Iterator[AppProcess]:
    """Start the app on ``data_dir`` (reusable across starts: the embedded model is copied only once)."""
    model_dir = data_dir / "models" / "tiny-wan-random"
    if not model_dir.exists():
        shutil.copytree(tiny_model, model_dir)
    port = free_port()
    log = log or data_dir.parent / f"app-{port}.log"
    environment = {
        **os.environ,
        "KINTSUGI_DATA_DIR": str(data_dir),
        "KINTSUGI_HUB_CACHE_DIR": str(data_dir / "hub"),
        "GRADIO_SERVER_PORT": str(port),
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "KINTSUGI_DEVICE": "cpu",
        **env,
    }
    with open(log, "ab") as stderr:
        process = subprocess.Popen(
            [sys.executable, "app.py"], cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=stderr
        )
    app = AppProcess(f"http://127.0.0.1:{port}/", process, data_dir, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(app.url, timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"app.py did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield app
    finally:
        if process.poll() is None:
            workers = children_of(process.pid)
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for pid in workers:  # normally gone with the app; never left behind
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture(scope="session")
def api_client(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[object]:
    """A ``TestClient`` of the app's own server (``app.build_server()``) on a fresh data folder, in-process; the
    hub is a closed port. Requests rejected by validation never start the worker."""
    from starlette.testclient import TestClient

    data_dir = tmp_path_factory.mktemp("api-data")
    shutil.copytree(tiny_model, data_dir / "models" / "tiny-wan-random")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "KINTSUGI_DATA_DIR": str(data_dir),
            "KINTSUGI_HUB_CACHE_DIR": str(data_dir / "hub"),
            "KINTSUGI_DEVICE": "cpu",
            "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        }.items():
            patch.setenv(name, value)
        import app

        app._service = None
        client = TestClient(app.build_server(), raise_server_exceptions=False)
        try:
            yield client
        finally:
            if app._service is not None:
                app._service.close()
                app._service = None
