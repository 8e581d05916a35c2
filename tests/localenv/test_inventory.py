"""inventories/local points every later role at the real local services."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ansible import run_playbook
from tools.localenv import _secrets
from tools.localenv._proc import Context

pytestmark = pytest.mark.localenv
PLAYBOOK = Path(__file__).parent / "playbooks" / "inventory_reaches_services.yml"


def test_local_inventory_reaches_registry_postgres_and_kubernetes(tmp_path: Path) -> None:
    docker_config = tmp_path / "docker"
    docker_config.mkdir(mode=0o700)
    result = run_playbook(
        PLAYBOOK, inventory="inventories/local", verbosity=3, env={"PROBE_DOCKER_CONFIG": str(docker_config)}
    )
    assert result.rc == 0, result.output[-3000:]
    assert "db=thinkus nodes=4" in result.output  # three kwok nodes and the real one
    for name, value in _secrets.load(Context()).items():
        if name.endswith(("password", "secret_key")):
            assert value not in result.output, f"{name} leaked into -vvv output"
