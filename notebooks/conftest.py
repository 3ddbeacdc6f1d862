"""The notebooks run as tests (nbmake) on their own data folder and hub cache, offline and quiet.

The environment is set around each notebook only (a kernel inherits it when it starts) and restored afterwards, so
that it never leaks into the other tests of the session (e.g. HF_HUB_OFFLINE would stop the hub tests' clients).
"""

from __future__ import annotations

import os
import tempfile

import pytest

_DATA = tempfile.mkdtemp(prefix="kintsugi-notebooks-")
_ENV = {
    "KINTSUGI_DATA_DIR": _DATA,
    "KINTSUGI_HUB_CACHE_DIR": os.path.join(_DATA, "hub"),
    "KINTSUGI_DEVICE": "cpu",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "DO_NOT_TRACK": "1",
}
_SAVED: dict[str, str | None] = {}


def pytest_runtest_setup(item: pytest.Item) -> None:
    for name, value in _ENV.items():
        _SAVED[name] = os.environ.get(name)
        os.environ[name] = value


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    for name, value in _SAVED.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _SAVED.clear()
