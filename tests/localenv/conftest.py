"""Fixtures for tests that run against the local environment (`make local-up`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def kubeconfig() -> Path:
    """The kubeconfig of the cluster under test: $THINKUS_KUBECONFIG or $KUBECONFIG, else .local/kubeconfig."""
    env = os.environ.get("THINKUS_KUBECONFIG") or os.environ.get("KUBECONFIG")
    path = Path(env.split(os.pathsep)[0]).expanduser() if env else ROOT / ".local" / "kubeconfig"
    assert path.is_file(), f"no kubeconfig at {path}: bring the local environment up first"
    return path
