"""The notebooks run as tests (nbmake) on their own data folder and hub cache, offline and quiet."""

from __future__ import annotations

import os
import tempfile

_DATA = tempfile.mkdtemp(prefix="kintsugi-notebooks-")
os.environ.setdefault("KINTSUGI_DATA_DIR", _DATA)
os.environ.setdefault("KINTSUGI_HUB_CACHE_DIR", os.path.join(_DATA, "hub"))
os.environ.setdefault("KINTSUGI_DEVICE", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")
