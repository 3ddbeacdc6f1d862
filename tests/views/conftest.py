"""The Models tab's actions are tested against the store's loopback hub and store (``tests/store/conftest.py``)."""

from tests.store.conftest import (  # noqa: F401 - fixtures, registered by being named here
    hub,
    hub_client_settings,
    model_v1,
    model_v2,
    sleeps,
    store,
)
