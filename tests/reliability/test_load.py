"""Concurrent load on the real app: 20 gradio_client clients at once, some with bad requests, a small queue."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

CLIENTS = 20
GOOD = ("a paper boat", "", "kintsugi/tiny-wan-random", 64, 64, 5, 1, 5.0, 1, 8)
BAD = ("", "", "kintsugi/tiny-wan-random", 64, 64, 5, 1, 5.0, 1, 8)  # empty prompt: a fault in the request


@pytest.fixture(scope="module")
def app_url(api_app_url: str) -> str:
    """The session's ``python app.py`` (tests/conftest.py), shared with the API tests (tests/test_app.py)."""
    return api_app_url


def _one(url: str, index: int, together: threading.Barrier | None = None) -> tuple[str, str]:
    """(outcome, text): ``video``, ``busy`` (queue full), ``refused`` (catalogued error) or ``other``. With
    ``together``, the request is sent once every client is connected, so that they all arrive at once (however warm
    the shared app's worker already is)."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    try:
        client = Client(url, verbose=False)
        if together is not None:
            together.wait(timeout=90)
        video, _panel = client.predict(*(BAD if index % 5 == 0 else GOOD), api_name="/generate")
        return "video", video
    except AppError as exc:
        text = str(exc)
        return ("refused" if "What you can do" in text else "other"), text
    except Exception as exc:  # the queue-full answer arrives as a client-side error with gradio's message
        text = str(exc)
        return ("busy" if "queue is full" in text.lower() else "other"), f"{type(exc).__name__}: {text}"


def test_twenty_clients_each_get_a_video_or_a_clear_answer(app_url: str) -> None:
    """20 simultaneous requests (every 5th one invalid) against a queue of 6: each ends, within two minutes, in a
    video, the catalogued refusal, or "queue is full" — nothing hangs, nothing answers with raw text; afterwards
    the app still serves a request (no deadlock)."""
    started, together = time.monotonic(), threading.Barrier(CLIENTS)
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        outcomes = list(pool.map(lambda i: _one(app_url, i, together), range(CLIENTS)))
    elapsed = time.monotonic() - started
    kinds = [kind for kind, _text in outcomes]
    assert "other" not in kinds, [text for kind, text in outcomes if kind == "other"]
    assert kinds.count("video") >= 1 and kinds.count("busy") >= 1
    assert all(kind == "refused" for (kind, _t), i in zip(outcomes, range(CLIENTS)) if i % 5 == 0 and kind != "busy")
    assert elapsed < 120
    assert _one(app_url, 1)[0] == "video"
    print(
        f"\nload: {CLIENTS} clients in {elapsed:.1f} s → "
        + ", ".join(f"{kind} {kinds.count(kind)}" for kind in ("video", "refused", "busy"))
    )
