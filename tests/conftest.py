"""Suite-wide guards: nothing in the tests may reach the network or a user's real caches."""
import os

import pytest


@pytest.fixture(autouse=True)
def _offline_and_isolated(tmp_path_factory, monkeypatch):
    # Tests that need a loopback Hub override these themselves.
    monkeypatch.setenv("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "1"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    yield
