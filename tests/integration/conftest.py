"""Fixtures shared by the integration tests (they run against the local environment)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client, config

REPO_ROOT = Path(__file__).resolve().parents[2]


# One line per fault case (tests/integration/test_faults.py), repeated at the end of the run.
FAULT_LINES: list[str] = []


@pytest.fixture
def fault_report() -> Callable[..., None]:
    """Record how a fault case ended: what it left behind, when the system was usable again."""

    def report(case: str, left_behind: str, usable_after: float, person_needed: str = "no") -> None:
        line = (
            f"fault: {case} | left behind: {left_behind} | usable again after {usable_after:.0f} s"
            f" | person needed: {person_needed}"
        )
        FAULT_LINES.append(line)
        print(line)

    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FAULT_LINES:
        terminalreporter.section("faults")
        for line in FAULT_LINES:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that reset the cluster to empty run first, so no other test loses the state it built."""
    items.sort(key=lambda item: item.get_closest_marker("empty_cluster") is None)


@pytest.fixture(scope="session")
def cert_manager_crds() -> None:
    """cert-manager's CRDs, as make local-up installs them with cert-manager itself (tools/localenv/acme.py)."""
    api = config.new_client_from_config(config_file=str(REPO_ROOT / ".local" / "kubeconfig"))
    ext = client.ApiextensionsV1Api(api)
    for name in ("certificates.cert-manager.io", "clusterissuers.cert-manager.io", "issuers.cert-manager.io"):
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        assert any(c.type == "Established" and c.status == "True" for c in conditions), (
            f"CRD {name} is not Established: is the acme component up (make local-up)?"
        )
