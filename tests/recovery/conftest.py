"""Fixtures for the recovery tests: reset global switches, a fake clock, loopback servers, engine helpers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

import recovery
from recovery import Adjustment, EnhancedErrorRecovery, ErrorContext, RecoveryEvent


class FakeClock:
    """A clock that moves only when told to (or by ``sleep``)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class FrameHalver:
    """A ParameterAdjuster that halves ``frames`` down to 1, then gives up."""

    def __init__(self) -> None:
        self.calls = 0

    def adjust(self, ctx: ErrorContext, parameters: Mapping[str, Any]) -> Adjustment | None:
        self.calls += 1
        frames = parameters["frames"]
        if frames <= 1:
            return None
        return Adjustment({**parameters, "frames": frames // 2}, [f"frames {frames} → {frames // 2} to fit memory"])


def oom_above_17(parameters: Mapping[str, Any], info: recovery.AttemptInfo) -> str:
    """An attempt that runs out of memory for more than 17 frames."""
    if parameters["frames"] > 17:
        raise recovery.OutOfMemoryError("decode ran out of memory", phase="decode", device="cpu")
    return f"video with {parameters['frames']} frames"


@pytest.fixture
def halver() -> FrameHalver:
    return FrameHalver()


@pytest.fixture
def recorded() -> list[RecoveryEvent]:
    return []


@pytest.fixture
def make_engine(clock: FakeClock, recorded: list[RecoveryEvent]) -> Any:
    """Build an engine on the fake clock whose events land in ``recorded``."""

    def build(**options: Any) -> EnhancedErrorRecovery:
        options.setdefault("probe", None)
        engine = EnhancedErrorRecovery(clock=clock, sleep=clock.sleep, **options)
        engine.bus.subscribe(recorded.append)
        return engine

    return build


def _serve(listener: socket.socket, mode: str, stop: threading.Event) -> None:
    listener.settimeout(0.05)
    held: list[socket.socket] = []
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except OSError:
            continue
        if mode == "close":  # answer 10 of 100 promised bytes, then hang up
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            conn.close()
        else:  # "stall": read the request, never answer
            held.append(conn)
    for conn in held:
        conn.close()


@pytest.fixture
def loopback() -> Iterator[Any]:
    """Start a loopback HTTP server that drops the body mid-transfer ("close") or never answers ("stall")."""
    stops: list[tuple[threading.Event, socket.socket, threading.Thread]] = []

    def start(mode: str) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        stop = threading.Event()
        thread = threading.Thread(target=_serve, args=(listener, mode, stop), daemon=True)
        thread.start()
        stops.append((stop, listener, thread))
        return f"http://127.0.0.1:{listener.getsockname()[1]}/"

    yield start
    for stop, listener, thread in stops:
        stop.set()
        thread.join(2)
        listener.close()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL where nothing listens."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def oom_attempt() -> Any:
    return oom_above_17
